//! The ledger's process lifecycle, as the agent has `Attestor::start_heartbeat`: open the
//! ledger, serve its API and operations listener (with the enforcement point), watch for
//! gaps, keep the enforcement view current, reload on SIGHUP (TLS
//! files, a prepared checkpoint key), and stop cleanly on SIGTERM or SIGINT, every
//! acknowledged batch durable and the latest checkpoint remembered.

use std::sync::Arc;

use attestor_net::tls::{self, TlsError};
use thiserror::Error;
use tracing::Level;

use crate::config::LedgerConfig;
use crate::enforce::{self, Enforcer};
use crate::keyfiles::{self, KeyFileError};
use crate::service::{Ledger, StartError};
use crate::{dashboard, monitor, server, tiles, witnessing};

/// Why the ledger could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot read the dashboard token {path}: {source}")]
    DashboardToken {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving stopped: {0}")]
    Serve(std::io::Error),
    #[error("an action cannot run: {0}")]
    Action(#[from] crate::actions::ActionConfigError),
}

/// Runs the ledger `config` describes until SIGTERM or SIGINT.
pub fn run(config: &LedgerConfig) -> Result<(), DaemonError> {
    let tls = tls::server_config(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let (tls_reload, tls) = tokio::sync::watch::channel(tls);
    let token: Option<Arc<str>> = match &config.ops.dashboard_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| DaemonError::DashboardToken {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .into(),
        ),
        None => None,
    };
    // Connections are descriptors; a refusal to raise the limit only leaves it as it was.
    let open_files = server::raise_open_file_limit().ok().flatten();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let writer = runtime.block_on(async {
        // A response that cannot run would only be found out during an incident.
        crate::actions::check_usable(&config.alerts.actions).await?;
        let (ledger, writer) = Ledger::open(config)?;
        // Auditors need this key to check checkpoints; keep a copy beside the state.
        keyfiles::write_vkey(&config.state_dir, &ledger.verifier_key())?;
        let listener = bind(config.listen).await?;
        let enforcer = Arc::new(Enforcer::new(&config.enforcement, config.max_gap));
        if let Some(address) = config.ops.listen {
            let ops = bind(address).await?;
            let (ledger, enforcer) = (ledger.clone(), enforcer.clone());
            tokio::spawn(attestor_net::ops::serve(
                ops,
                move |asked| {
                    let decided = enforce::answer(&enforcer, &asked);
                    let (ledger, token) = (ledger.clone(), token.clone());
                    async move {
                        match decided {
                            Some(page) => page,
                            None => dashboard::ops_page(ledger, token, asked).await,
                        }
                    }
                },
                std::future::pending(),
            ));
        }
        if let Some(address) = config.log.public_listen {
            let public = bind(address).await?;
            let ledger = ledger.clone();
            tokio::spawn(attestor_net::ops::serve(
                public,
                move |asked| tiles::page(ledger.clone(), asked),
                std::future::pending(),
            ));
        }
        if let Some(dir) = &config.log.tiles_dir {
            tokio::spawn(tiles::mirror(Arc::downgrade(&ledger), dir.clone()));
        }
        witnessing::start(&ledger, &config.log.witnesses);
        tracing::info!(
            event = "ledger-started",
            listen = %config.listen,
            ops = config.ops.listen.map(|a| a.to_string()),
            public = config.log.public_listen.map(|a| a.to_string()),
            log_size = ledger.store().len().ok(),
            sequencer = ledger.is_sequencer(),
            verifier_key = %ledger.verifier_key(),
            open_files_limit = open_files,
        );
        let outage = monitor::raise_outage(&ledger).await;
        tokio::spawn(monitor::watch_gaps(Arc::downgrade(&ledger), outage));
        tokio::spawn(enforce::keep_current(enforcer, ledger.store().clone()));
        tokio::spawn(reload_on_hangup(config.clone(), ledger.clone(), tls_reload));
        server::serve(
            ledger.clone(),
            listener,
            tls,
            config.limits,
            attestor_net::shutdown::termination(),
        )
        .await
        .map_err(DaemonError::Serve)?;
        ledger.remember_checkpoint(&config.state_dir)?;
        Ok::<_, DaemonError>(writer)
    })?;
    // Dropping the runtime drops the tasks holding the ledger, so the writer drains and
    // ends; every acknowledged batch is already durable.
    drop(runtime);
    let _ = writer.join();
    tracing::info!(event = "ledger-stopped");
    Ok(())
}

async fn bind(address: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::Listen { address, source })
}

/// On SIGHUP: the TLS files and the tenants' appraisal policies are read again (new
/// connections and submissions use them) and a checkpoint key `attestor ledger rotate-key`
/// prepared is taken. A failed reload keeps what was loaded.
async fn reload_on_hangup(
    config: LedgerConfig,
    ledger: Arc<Ledger>,
    tls: tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        let tls_result = tls::server_config(&config.tls.ca, &config.tls.cert, &config.tls.key)
            .map(|new| tls.send_replace(new));
        let appraisal_result = ledger.reload_appraisals().await;
        let (ledger, config) = (ledger.clone(), config.clone());
        let key_result = tokio::task::spawn_blocking(move || ledger.rotate_checkpoint_key(&config))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let level = if tls_result.is_ok() && key_result.is_ok() && appraisal_result.is_ok() {
            Level::INFO
        } else {
            Level::ERROR
        };
        let appraisal_policies = match appraisal_result {
            Ok(changed) if changed.is_empty() => "unchanged".to_string(),
            Ok(changed) => format!("changed for {}", changed.join(", ")),
            Err(e) => format!("kept the loaded policies: {e}"),
        };
        let checkpoint_key = match key_result {
            Ok(Some(vkey)) => format!("rotated to {vkey}"),
            Ok(None) => "unchanged".to_string(),
            Err(e) => e,
        };
        attestor_net::event_at!(
            level,
            "ledger-reloaded",
            tls = tls_result
                .map(|_| "reloaded".to_string())
                .unwrap_or_else(|e| e.to_string()),
            appraisal_policies,
            checkpoint_key,
        );
    }
}
