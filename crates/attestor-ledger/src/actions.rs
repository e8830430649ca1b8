//! Automated actions: what the ledger runs when an incident opens (`fire`) or resolves
//! (`resolve`): a command getting the incident as JSON on stdin, or a webhook it is POSTed
//! to. Each action runs in a task of its own, so a slow or hanging one never delays the
//! alerts and actions after it; at most `max_concurrent_actions` attempts run at once.
//! An attempt is bounded by the action's timeout (a command is then killed with its whole
//! process group, so a script's children go too), a failed one is retried with exponential
//! backoff, and the action ends with one [`ActionOutcome`]: logged, appended to
//! `actions.jsonl` in the state directory, and handed to the dispatcher's callback.
//!
//! Actions come from the global `[[alerts.actions]]` list and from each tenant's
//! `[tenants.NAME.actions]` hooks (`on_drift`, `on_invalid` and their `_resolved` forms),
//! which run for that tenant's incidents only. Their syntax is checked when the
//! configuration is parsed; [`check_usable`] checks, once, as the ledger starts, that each
//! webhook's host resolves and accepts connections and that each command is an executable.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use attestor_net::http::{HttpClient, HttpError};
use attestor_net::tls::{web_client_config, TlsError};
pub use attestor_verify::api::{ActionOutcome, ActionPhase, AlertKind, Incident};
use tracing::Level;

/// Attempts running at once unless `alerts.max_concurrent_actions` says otherwise.
pub const DEFAULT_MAX_CONCURRENT_ACTIONS: usize = 8;
/// The longest an attempt may be given: past an hour an action is a job, not a response.
pub const MAX_ACTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most retries an action may have (the backoff doubles up to 32 s between them).
pub const MAX_ACTION_RETRIES: u32 = 10;
/// How long start-up waits for a webhook's host to resolve, then to accept a connection.
pub const WEBHOOK_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read from a webhook (its body is not used).
const MAX_WEBHOOK_ANSWER: usize = 64 * 1024;
/// The file outcomes are appended to, in the state directory.
pub const ACTIONS_RECORD: &str = "actions.jsonl";

/// An automated response to one kind of incident.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The incident kind that triggers it.
    pub on: AlertKind,
    /// When: as the incident opens (the default) or as it resolves.
    #[serde(default = "fire")]
    pub phase: ActionPhase,
    /// A command (argv, no shell) run with the payload on stdin; exit 0 is success.
    #[serde(default)]
    pub command: Vec<String>,
    /// Or an `http://` or `https://` URL the payload is POSTed to; 2xx is success.
    pub webhook: Option<String>,
    /// CAs (PEM) an `https://` webhook's certificate must chain to, instead of the public
    /// web roots.
    pub ca: Option<PathBuf>,
    #[serde(default = "default_action_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_action_retries")]
    pub retries: u32,
    /// Set for a tenant's hook: only that tenant's incidents run it.
    #[serde(skip)]
    pub tenant: Option<String>,
    /// The name outcomes carry: `on_drift`, ... for a tenant's hooks, `alerts.actions[N]`
    /// for the global list (set when the configuration is parsed).
    #[serde(skip)]
    pub hook: String,
}

fn fire() -> ActionPhase {
    ActionPhase::Fire
}
fn default_action_timeout() -> u64 {
    10
}
fn default_action_retries() -> u32 {
    2
}

/// A tenant's hooks: argv lists run with the payload on stdin, for that tenant's incidents.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantActions {
    /// As a policy-drift or zero-retention-change incident opens (e.g. a rollback).
    #[serde(default)]
    pub on_drift: Vec<String>,
    /// As an invalid-attestation incident opens.
    #[serde(default)]
    pub on_invalid: Vec<String>,
    /// As a drift incident resolves.
    #[serde(default)]
    pub on_drift_resolved: Vec<String>,
    /// As an invalid-attestation incident resolves.
    #[serde(default)]
    pub on_invalid_resolved: Vec<String>,
    #[serde(default = "default_action_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_action_retries")]
    pub retries: u32,
}

/// The kinds `on_drift` answers: both are the agent's configuration changing under it.
const DRIFT_KINDS: [AlertKind; 2] = [AlertKind::PolicyDrift, AlertKind::ZeroRetentionChange];

impl TenantActions {
    /// The hooks as actions scoped to `tenant`.
    pub fn into_actions(self, tenant: &str) -> Vec<ActionConfig> {
        let hooks = [
            (
                "on_drift",
                self.on_drift,
                &DRIFT_KINDS[..],
                ActionPhase::Fire,
            ),
            (
                "on_drift_resolved",
                self.on_drift_resolved,
                &DRIFT_KINDS[..],
                ActionPhase::Resolve,
            ),
            (
                "on_invalid",
                self.on_invalid,
                &[AlertKind::InvalidAttestation][..],
                ActionPhase::Fire,
            ),
            (
                "on_invalid_resolved",
                self.on_invalid_resolved,
                &[AlertKind::InvalidAttestation][..],
                ActionPhase::Resolve,
            ),
        ];
        let mut actions = Vec::new();
        for (hook, command, kinds, phase) in hooks {
            if command.is_empty() {
                continue;
            }
            for kind in kinds {
                actions.push(ActionConfig {
                    on: *kind,
                    phase,
                    command: command.clone(),
                    webhook: None,
                    ca: None,
                    timeout_seconds: self.timeout_seconds,
                    retries: self.retries,
                    tenant: Some(tenant.to_string()),
                    hook: format!("tenants.{tenant}.actions.{hook}"),
                });
            }
        }
        actions
    }
}

/// Why an action's configuration is refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ActionConfigError {
    #[error("{hook}: set exactly one of command and webhook")]
    CommandOrWebhook { hook: String },
    #[error("{hook}: timeout_seconds must be 1..={}", MAX_ACTION_TIMEOUT.as_secs())]
    Timeout { hook: String },
    #[error("{hook}: retries must be at most {MAX_ACTION_RETRIES}")]
    Retries { hook: String },
    #[error("{hook}: ca is for an https:// webhook")]
    CaWithoutHttps { hook: String },
    #[error("{hook}: webhook {url:?} is unusable: {reason}")]
    WebhookUrl {
        hook: String,
        url: String,
        reason: &'static str,
    },
    #[error("{hook}: webhook host {host:?} does not resolve: {source}")]
    Unresolvable {
        hook: String,
        host: String,
        source: std::io::Error,
    },
    #[error("{hook}: webhook {target} does not accept connections: {source}")]
    Unreachable {
        hook: String,
        target: String,
        source: std::io::Error,
    },
    #[error("{hook}: webhook CA: {source}")]
    Ca { hook: String, source: TlsError },
    #[error("{hook}: program {program:?} is not found on PATH")]
    ProgramNotFound { hook: String, program: String },
    #[error("{hook}: {path} is not an executable file")]
    NotExecutable { hook: String, path: PathBuf },
}

/// A webhook URL's scheme, host and port, or why it cannot be used.
fn webhook_target(url: &str) -> Result<(bool, String, u16), &'static str> {
    let uri: hyper::Uri = url.parse().map_err(|_| "not a URL")?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http:// and https:// are supported"),
    };
    let authority = uri.authority().ok_or("no host")?;
    let host = authority.host().trim_matches(['[', ']']);
    if host.is_empty() {
        return Err("no host");
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((https, host.to_string(), port))
}

impl ActionConfig {
    /// What it runs, as outcomes, logs and incidents name it: a webhook by its origin only,
    /// since many carry their secret in the path, query or user part.
    pub fn describe(&self) -> String {
        match &self.webhook {
            None => self.command.join(" "),
            Some(url) => match webhook_target(url) {
                Ok((https, host, port)) => {
                    let scheme = if https { "https" } else { "http" };
                    format!("{scheme}://{host}:{port}/…")
                }
                Err(_) => "webhook".to_string(),
            },
        }
    }

    fn runs_for(&self, phase: ActionPhase, incident: &Incident) -> bool {
        self.on == incident.kind
            && self.phase == phase
            && self.tenant.as_ref().is_none_or(|t| *t == incident.tenant)
    }

    /// Checks what can be checked without the network or the file system.
    pub fn check_syntax(&self) -> Result<(), ActionConfigError> {
        let hook = || self.hook.clone();
        if self.command.is_empty() == self.webhook.is_none() {
            return Err(ActionConfigError::CommandOrWebhook { hook: hook() });
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > MAX_ACTION_TIMEOUT.as_secs() {
            return Err(ActionConfigError::Timeout { hook: hook() });
        }
        if self.retries > MAX_ACTION_RETRIES {
            return Err(ActionConfigError::Retries { hook: hook() });
        }
        let https = match &self.webhook {
            Some(url) => {
                webhook_target(url)
                    .map_err(|reason| ActionConfigError::WebhookUrl {
                        hook: hook(),
                        url: url.chars().take(200).collect(),
                        reason,
                    })?
                    .0
            }
            None => false,
        };
        if self.ca.is_some() && !https {
            return Err(ActionConfigError::CaWithoutHttps { hook: hook() });
        }
        Ok(())
    }

    /// Checks that the action can run: a webhook's host resolves and accepts a TCP
    /// connection (within [`WEBHOOK_CHECK_TIMEOUT`] each) and its CA file loads; a
    /// command's program is an executable file.
    pub async fn check_usable(&self) -> Result<(), ActionConfigError> {
        self.check_syntax()?;
        let hook = || self.hook.clone();
        let Some(url) = &self.webhook else {
            return check_program(&self.command[0], hook());
        };
        let (_, host, port) =
            webhook_target(url).map_err(|reason| ActionConfigError::WebhookUrl {
                hook: hook(),
                url: url.clone(),
                reason,
            })?;
        if let Some(ca) = &self.ca {
            web_client_config(Some(ca)).map_err(|source| ActionConfigError::Ca {
                hook: hook(),
                source,
            })?;
        }
        let unresolvable = |source| ActionConfigError::Unresolvable {
            hook: hook(),
            host: host.clone(),
            source,
        };
        let addresses: Vec<_> = tokio::time::timeout(
            WEBHOOK_CHECK_TIMEOUT,
            tokio::net::lookup_host((&*host, port)),
        )
        .await
        .map_err(|_| unresolvable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unresolvable)?
        .collect();
        let mut last = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        for address in addresses {
            match tokio::time::timeout(
                WEBHOOK_CHECK_TIMEOUT,
                tokio::net::TcpStream::connect(address),
            )
            .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = std::io::ErrorKind::TimedOut.into(),
            }
        }
        Err(ActionConfigError::Unreachable {
            hook: hook(),
            target: format!("{host}:{port}"),
            source: last,
        })
    }
}

/// Finds `program` as spawning it would (a path, or a name searched on `PATH`) and checks
/// that it is an executable file.
fn check_program(program: &str, hook: String) -> Result<(), ActionConfigError> {
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return match executable(&path) {
            true => Ok(()),
            false => Err(ActionConfigError::NotExecutable { hook, path }),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        true => Ok(()),
        false => Err(ActionConfigError::ProgramNotFound {
            hook,
            program: program.to_string(),
        }),
    }
}

/// Checks every action as the ledger starts (see [`ActionConfig::check_usable`]).
pub async fn check_usable(actions: &[ActionConfig]) -> Result<(), ActionConfigError> {
    for action in actions {
        action.check_usable().await?;
    }
    Ok(())
}

/// Why one attempt of an action failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ActionError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot give {program} its input or wait for it: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited with {status}")]
    Exit {
        program: String,
        status: std::process::ExitStatus,
    },
    #[error("timed out after {timeout:?}: killed with its process group")]
    Timeout { timeout: Duration },
    #[error("webhook TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the webhook answered {0}")]
    Status(hyper::StatusCode),
}

/// Retries `attempt` `retries` times after a failure, with exponential backoff (1 s,
/// doubling, at most 32 s); each attempt bounds its own time. Returns the attempts made
/// and the last failure, if none succeeded.
pub(crate) async fn with_retries<F, Fut, E>(
    retries: u32,
    mut attempt: F,
) -> (u32, Result<(), String>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut last = String::new();
    for n in 0..=retries {
        if n > 0 {
            tokio::time::sleep(backoff(n)).await;
        }
        match attempt().await {
            Ok(()) => return (n + 1, Ok(())),
            Err(e) => last = e.to_string(),
        }
    }
    (retries + 1, Err(last))
}

fn backoff(retry: u32) -> Duration {
    Duration::from_secs(1 << (retry - 1).min(5))
}

/// POSTs JSON to an `http://` or `https://` URL (trusting the CAs in `ca`, or the public
/// web roots) within `timeout`, connection included; 2xx is success.
pub(crate) async fn post_json(
    url: &str,
    body: &[u8],
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<(), ActionError> {
    let tls = match url.starts_with("https://") {
        true => Some(web_client_config(ca)?),
        false => None,
    };
    let client = HttpClient::new(url, tls)?
        .with_timeout(timeout)
        .with_max_answer(MAX_WEBHOOK_ANSWER);
    let path = url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_string()))
        .unwrap_or_else(|| "/".to_string());
    let answer = client
        .request(hyper::Method::POST, &path, Some(body.to_vec()))
        .await?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(ActionError::Status(answer.status))
    }
}

/// Kills a command's process group when dropped while armed: on a timeout, and when the
/// runtime drops a running attempt. Disarmed once the command was waited for, since its
/// group id may then be reused.
struct GroupKill(Option<rustix::process::Pid>);

impl GroupKill {
    fn kill(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `argv` with `payload` on stdin, in a process group of its own, for at most
/// `timeout`; past it the whole group is killed.
async fn run_command(
    argv: &[String],
    payload: &[u8],
    timeout: Duration,
) -> Result<(), ActionError> {
    let (program, args) = argv.split_first().ok_or_else(|| ActionError::Spawn {
        program: String::new(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let io = |source| ActionError::Io {
        program: program.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ActionError::Spawn {
            program: program.clone(),
            source,
        })?;
    // Declared after the child, so dropped before it: the leader is not yet reaped and
    // the group id is still ours.
    let mut group = GroupKill(
        child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?)),
    );
    let stdin = child.stdin.take();
    let ran = tokio::time::timeout(timeout, async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input may still succeed.
            match stdin.write_all(payload).await {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        child.wait().await
    })
    .await;
    match ran {
        Ok(waited) => {
            group.0 = None;
            let status = waited.map_err(io)?;
            if status.success() {
                Ok(())
            } else {
                Err(ActionError::Exit {
                    program: program.clone(),
                    status,
                })
            }
        }
        Err(_) => {
            group.kill();
            child.wait().await.map_err(io)?;
            Err(ActionError::Timeout { timeout })
        }
    }
}

async fn attempt(action: &ActionConfig, payload: &[u8]) -> Result<(), ActionError> {
    let timeout = Duration::from_secs(action.timeout_seconds.max(1));
    match &action.webhook {
        Some(url) => post_json(url, payload, action.ca.as_deref(), timeout).await,
        None => run_command(&action.command, payload, timeout).await,
    }
}

/// What the dispatcher is told of each action's end.
pub type OnOutcome = Arc<dyn Fn(ActionOutcome) + Send + Sync>;

/// Runs the configured actions for incidents; one per ledger.
pub struct ActionRunner {
    actions: Vec<Arc<ActionConfig>>,
    permits: Arc<Semaphore>,
    record: Arc<tokio::sync::Mutex<PathBuf>>,
    runtime: tokio::runtime::Handle,
}

impl ActionRunner {
    /// A runner of `actions` on the current tokio runtime, `max_concurrent` attempts at
    /// once, appending outcomes to `state_dir/actions.jsonl`.
    pub fn start(actions: &[ActionConfig], max_concurrent: usize, state_dir: &Path) -> Self {
        ActionRunner {
            actions: actions.iter().cloned().map(Arc::new).collect(),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            record: Arc::new(tokio::sync::Mutex::new(state_dir.join(ACTIONS_RECORD))),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Starts every action configured for `incident` in `phase` and returns how many;
    /// never waits for them. Each ends with one outcome passed to `on_outcome`.
    pub fn dispatch(
        &self,
        phase: ActionPhase,
        incident: &Incident,
        ear: Option<String>,
        on_outcome: OnOutcome,
    ) -> usize {
        let payload: Arc<[u8]> = serde_json::to_vec(&json!({
            "phase": phase, "tenant": incident.tenant, "agent_id": incident.agent_id,
            "incident": incident, "ear": ear,
        }))
        .unwrap_or_default()
        .into();
        let about = Arc::new(json!({
            "incident": incident.id, "kind": incident.kind.name(),
            "tenant": incident.tenant, "agent_id": incident.agent_id,
        }));
        let mut started = 0;
        for action in self.actions.iter().filter(|a| a.runs_for(phase, incident)) {
            started += 1;
            self.runtime.spawn(run(
                action.clone(),
                phase,
                payload.clone(),
                self.permits.clone(),
                self.record.clone(),
                about.clone(),
                on_outcome.clone(),
            ));
        }
        started
    }
}

async fn run(
    action: Arc<ActionConfig>,
    phase: ActionPhase,
    payload: Arc<[u8]>,
    permits: Arc<Semaphore>,
    record: Arc<tokio::sync::Mutex<PathBuf>>,
    about: Arc<serde_json::Value>,
    on_outcome: OnOutcome,
) {
    // The timeout bounds the attempt itself, not its wait for a permit, and the permit is
    // not held through the backoff.
    let (attempts, result) = with_retries(action.retries, || async {
        let _permit = permits.acquire().await;
        attempt(&action, &payload).await
    })
    .await;
    let outcome = ActionOutcome {
        hook: action.hook.clone(),
        phase,
        action: action.describe(),
        ok: result.is_ok(),
        attempts,
        error: result.err(),
        at_ms: attestor_verify::time::now_ms(),
    };
    let line = json!({"at_ms": outcome.at_ms, "about": *about, "outcome": outcome});
    // The record's fields as the line's (nested objects as JSON text, see logging).
    attestor_net::event_at!(
        if outcome.ok {
            Level::INFO
        } else {
            Level::ERROR
        },
        "action-run",
        at_ms = outcome.at_ms,
        json.about = %line["about"],
        json.outcome = %line["outcome"],
    );
    let path = record.lock().await;
    let appended = async {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*path)
            .await?;
        file.write_all(format!("{line}\n").as_bytes()).await?;
        file.sync_data().await
    };
    if let Err(e) = appended.await {
        tracing::error!(event = "action-record-failed", error = %e);
    }
    drop(path);
    on_outcome(outcome);
}
