//! The agent's heartbeat: every interval, attest and ship. Each heartbeat takes the nonce
//! the ledger handed out with its previous accepted answer (or, the first time and after
//! any failure, asks the ledger for one), has the TPM attest, writes the bundle to the
//! durable spool, then delivers the spool in order. A heartbeat that does not finish
//! within its timeout counts as failed; what it produced stays spooled.
//!
//! When the ledger is unreachable the agent still attests, with an offline nonce
//! ([`OFFLINE_NONCE_PREFIX`]), and delivery resumes with bounded exponential backoff. TPM
//! commands run on one dedicated thread, never on the async reactor.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use super::client::{ClientError, LedgerClient, NonceCarrier};
use super::evidence_source::EvidenceSource;
use super::metrics::AgentMetrics;
use super::spool::{Spool, SpoolError};
use crate::attest::AgentError;
use crate::collect::{self, CollectError};
use crate::config::{AgentConfig, EvidenceKind};
use crate::state::{read_state, write_state, StateError};
use attestor_net::ops::{metrics_page, Page};
use attestor_net::tls::{self, AgentIdentity, TlsError, TlsFiles};
use attestor_verify::api::SubmitResponse;
use attestor_verify::api::Verdict;
use attestor_verify::api::OFFLINE_NONCE_PREFIX;
use attestor_verify::evidence::tpm::akcert::AkCertificate;
use tracing::Level;

/// The spec's default heartbeat interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The spec's bound on one heartbeat.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// First delay before retrying delivery after the ledger was unreachable.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Receipts file size at which it is rotated (one previous file is kept).
const RECEIPTS_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// Why the heartbeat cannot run (a failed single heartbeat is logged, not returned).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Ledger(#[from] ClientError),
    #[error("the TPM worker thread has stopped")]
    TpmWorkerGone,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("the {task} task failed: {source}")]
    Task {
        task: &'static str,
        source: tokio::task::JoinError,
    },
    #[error("cannot encode the receipt: {0}")]
    EncodeReceipt(#[source] serde_json::Error),
    #[error("the heartbeat did not finish within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Identity(#[from] attestor_verify::identity::IdentityError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the heartbeat needs: the spec's fields first, then where things are.
#[derive(Debug, Clone)]
pub struct AttestorConfig {
    pub attestation_interval: Duration,
    /// Bound on one heartbeat; a slower one counts as failed.
    pub heartbeat_timeout: Duration,
    /// The policy hash (hex) the operator expects; a different measured one is logged as
    /// drift and still attested, so the ledger refuses it and keeps the record.
    pub policy_hash: String,
    /// The zero-retention flag the operator expects (same handling as `policy_hash`).
    pub zero_retention: bool,
    /// `https://HOST:PORT` of the ledger.
    pub ledger_endpoint: String,
    /// CA to pin and this agent's client certificate and key.
    pub ledger_tls: TlsFiles,
    /// Policy kernel files, status source, TPM settings and state directory.
    pub agent: AgentConfig,
    /// TCTI of the TPM.
    pub tcti: String,
}

impl AttestorConfig {
    /// From an agent configuration file with a `[ledger]` section. Expected values left
    /// unset in `[heartbeat]` are the ones measured now.
    pub fn from_agent_config(agent: AgentConfig, tcti: String) -> Result<Self, HeartbeatError> {
        let ledger = agent.ledger.clone().ok_or_else(|| {
            HeartbeatError::Config("the agent config has no [ledger] section".into())
        })?;
        let beat = agent.heartbeat.clone();
        let (policy_hash, zero_retention) =
            match (beat.expected_policy_hash, beat.expected_zero_retention) {
                (Some(hash), Some(zero)) => (hash.to_ascii_lowercase(), zero),
                (hash, zero) => {
                    let kernel = read_kernel(&agent)?;
                    (
                        hash.unwrap_or_else(|| hex::encode(kernel.policy_hash)),
                        zero.unwrap_or(kernel.zero_retention),
                    )
                }
            };
        Ok(AttestorConfig {
            attestation_interval: Duration::from_secs(beat.interval_seconds),
            heartbeat_timeout: Duration::from_secs(beat.timeout_seconds),
            policy_hash,
            zero_retention,
            ledger_endpoint: ledger.endpoint,
            ledger_tls: ledger.tls,
            agent,
            tcti,
        })
    }
}

fn read_kernel(agent: &AgentConfig) -> Result<collect::PolicyKernelConfig, CollectError> {
    collect::read_policy_kernel(
        &agent.policy_kernel.policy,
        &agent.policy_kernel.config_files,
    )
}

/// Stops a running heartbeat after the heartbeat in progress, if any.
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The attestation agent.
pub struct Attestor {
    config: AttestorConfig,
    stop: Arc<watch::Sender<bool>>,
    metrics: Arc<AgentMetrics>,
}

type Job = Box<dyn FnOnce(&mut EvidenceSource) + Send>;

/// The one thread that owns the TPM (or the SEV-SNP guest device).
struct TpmWorker {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl TpmWorker {
    async fn start(config: AgentConfig, tcti: String) -> Result<Self, HeartbeatError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("attestor-tpm".into())
            .spawn(move || {
                let mut agent = match EvidenceSource::open(config, &tcti) {
                    Ok(agent) => {
                        let _ = ready.send(Ok(()));
                        agent
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut agent);
                }
            })
            .map_err(|source| HeartbeatError::Io {
                action: "start",
                path: "the TPM thread".into(),
                source,
            })?;
        opened.await.map_err(|_| HeartbeatError::TpmWorkerGone)??;
        Ok(TpmWorker { jobs, thread })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut EvidenceSource) -> T + Send + 'static,
    ) -> Result<T, HeartbeatError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |agent| {
                let _ = reply.send(work(agent));
            }))
            .map_err(|_| HeartbeatError::TpmWorkerGone)?;
        answer.await.map_err(|_| HeartbeatError::TpmWorkerGone)
    }

    /// Lets the job in progress finish and closes the TPM.
    async fn stop(self) {
        drop(self.jobs);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// Which ledger and identity this TPM's AK was enrolled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EnrollmentMarker {
    endpoint: String,
    tenant: String,
    agent_id: String,
    enrolled_at_ms: u64,
}

/// A receipt as the agent keeps it.
#[derive(Serialize)]
struct KeptReceipt<'a> {
    spool_seq: u64,
    #[serde(flatten)]
    response: &'a SubmitResponse,
}

/// Everything one running heartbeat uses.
struct Running {
    config: AttestorConfig,
    metrics: Arc<AgentMetrics>,
    client: LedgerClient,
    /// The next nonce, when the ledger handed one out with its latest answer.
    nonces: NonceCarrier,
    identity: AgentIdentity,
    worker: TpmWorker,
    spool: Arc<Mutex<Spool>>,
    /// This TPM's state directory (receipts and the enrollment marker live there).
    tpm_state: PathBuf,
    enrolled: bool,
    /// When the kept AK certificate is to be renewed by enrolling again.
    renew_at: Option<SystemTime>,
}

impl Attestor {
    /// An agent with `config`; nothing is opened until [`Attestor::start_heartbeat`].
    pub fn new(config: AttestorConfig) -> Self {
        Attestor {
            config,
            stop: Arc::new(watch::channel(false).0),
            metrics: Arc::default(),
        }
    }

    /// A handle that stops [`Attestor::start_heartbeat`].
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// The agent's metrics (also served on `[heartbeat] metrics_listen`).
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        self.metrics.clone()
    }

    /// Runs the heartbeat until stopped. Fails only if the agent cannot start (TPM, TLS
    /// files, state directory); failures of single heartbeats are logged and counted.
    pub async fn start_heartbeat(&mut self) -> Result<(), HeartbeatError> {
        let mut stopped = self.stop.subscribe();
        let tls_files = &self.config.ledger_tls;
        // The client certificate is re-read when its files change: rotation without a
        // restart, used from the next connection on.
        let tls = tls::reloading_client_config(
            tls_files,
            |e| tracing::warn!(event = "client-certificate-reload-refused", error = %e),
        )?;
        let identity = own_identity(&tls_files.cert)?;
        let client = LedgerClient::new(&self.config.ledger_endpoint, tls)?
            .with_timeout(self.config.heartbeat_timeout);
        let spool_dir = self.config.agent.state_dir.join("spool");
        let spool = Spool::open(&spool_dir, self.config.agent.heartbeat.spool_capacity)?;
        let worker = TpmWorker::start(self.config.agent.clone(), self.config.tcti.clone()).await?;
        let (tpm_state, ak_certificate) = worker
            .run(|agent| {
                let certificate = agent
                    .tpm()
                    .ok()
                    .and_then(|a| a.ak_certificate().map(<[u8]>::to_vec));
                (agent.state_dir().to_path_buf(), certificate)
            })
            .await?;
        let mut running = Running {
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            client,
            nonces: NonceCarrier::for_evidence(
                self.config.agent.evidence,
                self.config.heartbeat_timeout,
            ),
            identity,
            worker,
            spool: Arc::new(Mutex::new(spool)),
            tpm_state,
            enrolled: false,
            renew_at: renewal_time(ak_certificate.as_deref()),
        };
        running.enrolled = running.enrollment_matches()?;
        let (stop_ops, ops_stopped) = oneshot::channel::<()>();
        if let Some(address) = self.config.agent.heartbeat.metrics_listen {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| HeartbeatError::Io {
                    action: "listen on",
                    path: address.to_string().into(),
                    source,
                })?;
            let metrics = self.metrics.clone();
            tokio::spawn(attestor_net::ops::serve(
                listener,
                move |asked| {
                    let metrics = metrics.clone();
                    async move {
                        match asked.path.as_str() {
                            "/metrics" => metrics_page(&asked, metrics.render()),
                            "/healthz" => Page::ok("text/plain; charset=utf-8", "ok\n"),
                            _ => Page::error(hyper::StatusCode::NOT_FOUND, "/metrics, /healthz"),
                        }
                    }
                },
                async {
                    let _ = ops_stopped.await;
                },
            ));
        }
        tracing::info!(
            event = "agent-started",
            tenant = %running.identity.tenant,
            agent = %running.identity.agent_id,
            ledger = %self.config.ledger_endpoint,
            interval_s = self.config.attestation_interval.as_secs_f64(),
            spooled = running.spool_len(),
        );

        let mut ticks = tokio::time::interval(self.config.attestation_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff: Option<Duration> = None;
        loop {
            let retry = backoff.unwrap_or(Duration::MAX);
            let beat = tokio::select! {
                _ = stopped.changed() => break,
                _ = ticks.tick() => true,
                _ = tokio::time::sleep(retry), if backoff.is_some() => false,
            };
            let started = std::time::Instant::now();
            let deadline = tokio::time::Instant::now() + self.config.heartbeat_timeout;
            let outcome = if beat {
                running.heartbeat(deadline).await
            } else {
                running.deliver_by(deadline).await
            };
            running.record_spool_depth();
            match outcome {
                Ok(()) => {
                    backoff = None;
                    if beat {
                        self.metrics.heartbeat(true, started.elapsed());
                    }
                }
                Err(e) => {
                    running.nonces.forget();
                    if beat {
                        self.metrics.heartbeat(false, started.elapsed());
                    }
                    let cap = self.config.attestation_interval;
                    backoff = Some(next_backoff(backoff, cap));
                    tracing::warn!(
                        event = if beat {
                            "heartbeat-failed"
                        } else {
                            "delivery-failed"
                        },
                        error = %e,
                        spooled = running.spool_len(),
                        retry_in_s = backoff.map(|b| b.as_secs_f64()),
                    );
                }
            }
        }
        tracing::info!(event = "agent-stopped", spooled = running.spool_len());
        running.worker.stop().await;
        let _ = stop_ops.send(());
        Ok(())
    }
}

/// Doubles the delay up to `cap`, with ±20 % jitter so a fleet does not retry in step.
fn next_backoff(previous: Option<Duration>, cap: Duration) -> Duration {
    let base = previous
        .map_or(FIRST_RETRY, |p| p.saturating_mul(2))
        .min(cap);
    let mut byte = [0u8; 1];
    let _ = SystemRandom::new().fill(&mut byte);
    let factor = 0.8 + 0.4 * f64::from(byte[0]) / 255.0;
    base.mul_f64(factor)
}

fn own_identity(cert_pem: &Path) -> Result<AgentIdentity, HeartbeatError> {
    let pem = std::fs::read_to_string(cert_pem).map_err(|source| HeartbeatError::Io {
        action: "read",
        path: cert_pem.to_path_buf(),
        source,
    })?;
    let der = attestor_verify::evidence::certchain::pem_to_der_all(&pem)
        .ok()
        .and_then(|all| all.into_iter().next())
        .ok_or_else(|| {
            HeartbeatError::Config(format!("{} holds no certificate", cert_pem.display()))
        })?;
    Ok(attestor_verify::identity::certificate_identity(&der)?)
}

/// When a kept AK certificate is due for renewal: once two thirds of its validity passed.
fn renewal_time(certificate: Option<&[u8]>) -> Option<SystemTime> {
    let certificate = AkCertificate::parse(certificate?).ok()?;
    let life = certificate
        .not_after
        .duration_since(certificate.not_before)
        .ok()?;
    certificate.not_after.checked_sub(life / 3)
}

fn offline_nonce() -> Vec<u8> {
    let mut random = [0u8; 16];
    // Without randomness the nonce is still unique enough to bind the quote; freshness
    // of offline attestations rests on the TPM clock, not on this value.
    let _ = SystemRandom::new().fill(&mut random);
    [OFFLINE_NONCE_PREFIX, &random].concat()
}

impl Running {
    fn spool_len(&self) -> usize {
        self.spool.lock().map_or(0, |s| s.len())
    }

    fn record_spool_depth(&self) {
        self.metrics.set_spool_depth(self.spool_len());
    }

    async fn with_spool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, HeartbeatError> {
        let spool = self.spool.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut spool)
        })
        .await
        .map_err(|source| HeartbeatError::Task {
            task: "spool",
            source,
        })?;
        Ok(done?)
    }

    fn marker_path(&self) -> PathBuf {
        self.tpm_state.join("enrollment.json")
    }

    fn enrollment_matches(&self) -> Result<bool, HeartbeatError> {
        let marker: Option<EnrollmentMarker> = read_state(&self.marker_path())?;
        Ok(marker.is_some_and(|m| {
            m.endpoint == self.config.ledger_endpoint
                && m.tenant == self.identity.tenant
                && m.agent_id == self.identity.agent_id
        }))
    }

    /// Enrolls with the ledger: a TPM's AK by credential activation in the TPM; an
    /// SEV-SNP guest's signing key by a report made with a ledger nonce; a confidential
    /// VM's vTPM by credential activation, then its chip by such a report.
    async fn enroll(&mut self) -> Result<(), HeartbeatError> {
        let started = std::time::Instant::now();
        let evidence = self.config.agent.evidence;
        let enrolled = if evidence == EvidenceKind::Snp {
            self.enroll_with_bundle(started).await?
        } else {
            let request = self
                .worker
                .run(|source| source.tpm()?.enrollment_request())
                .await??;
            let mut tpm_time = started.elapsed();
            let challenge = self.client.enroll_begin(&request).await?;
            let started = std::time::Instant::now();
            let proof = self
                .worker
                .run(move |source| source.tpm()?.activate(&challenge))
                .await??;
            tpm_time += started.elapsed();
            self.metrics.tpm_call("enroll", tpm_time);
            let enrolled = self.client.enroll_finish(&proof).await?;
            // This enrollment's certificate replaces any earlier one (which may name
            // another ledger or identity); none from the ledger means none is carried.
            let certificate = enrolled.ak_certificate.clone();
            self.worker
                .run(move |source| {
                    let kept = (!certificate.is_empty()).then_some(certificate.as_slice());
                    source.tpm()?.keep_ak_certificate(kept)
                })
                .await??;
            self.renew_at = renewal_time(Some(&enrolled.ak_certificate));
            if evidence == EvidenceKind::TpmSnp {
                self.enroll_with_bundle(std::time::Instant::now()).await?
            } else {
                enrolled
            }
        };
        let marker = EnrollmentMarker {
            endpoint: self.config.ledger_endpoint.clone(),
            tenant: enrolled.tenant,
            agent_id: enrolled.agent_id,
            enrolled_at_ms: enrolled.enrolled_at_ms,
        };
        write_state(&self.marker_path(), &marker)?;
        self.enrolled = true;
        tracing::info!(
            event = "enrolled",
            at_ms = marker.enrolled_at_ms,
            ak_certificate_renewal = self
                .renew_at
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        );
        Ok(())
    }

    /// Sends a bundle made with a ledger nonce to the SEV-SNP enrollment: it pins an SNP
    /// guest's key and chip, or the chip of an agent whose vTPM just enrolled.
    async fn enroll_with_bundle(
        &mut self,
        started: std::time::Instant,
    ) -> Result<attestor_verify::api::EnrolledResponse, HeartbeatError> {
        let nonce = self.client.nonce().await?;
        let status = self.config.agent.status.read().await?;
        let config = self.config.agent.clone();
        let bundle = self
            .worker
            .run(move |source| -> Result<_, HeartbeatError> {
                Ok(source.attest(&read_kernel(&config)?, &status, &nonce)?)
            })
            .await??;
        self.metrics.tpm_call("enroll", started.elapsed());
        Ok(self.client.enroll_snp(&bundle.to_json()).await?)
    }

    /// One heartbeat: attest (spooled before anything is sent), then deliver. Its ledger
    /// exchanges end by `deadline`; the attestation is made and spooled even when the
    /// ledger is too slow, so a slow ledger delays it but never loses it.
    async fn heartbeat(&mut self, deadline: tokio::time::Instant) -> Result<(), HeartbeatError> {
        let status = self.config.agent.status.read().await?;
        let asked = tokio::time::timeout_at(deadline, self.nonces.next(&self.client)).await;
        let nonce = match asked {
            Ok(Ok(nonce)) => nonce,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => HeartbeatError::Timeout(self.config.heartbeat_timeout).to_string(),
                };
                tracing::warn!(
                    event = "nonce-unavailable",
                    error = %error,
                    fallback = "offline nonce",
                );
                offline_nonce()
            }
        };
        let (agent_config, spool) = (self.config.agent.clone(), self.spool.clone());
        let tpm_started = std::time::Instant::now();
        let attesting = self.worker.run(move |agent| -> Result<_, HeartbeatError> {
            let kernel = read_kernel(&agent_config)?;
            let (document, produced) = match agent.attest(&kernel, &status, &nonce) {
                Ok(bundle) => (
                    bundle.to_json(),
                    Ok((hex::encode(kernel.policy_hash), kernel.zero_retention)),
                ),
                // The TPM refuses to sign a drifted configuration; what it still
                // quotes goes to the ledger instead, so the agent never falls silent.
                Err(AgentError::Drift {
                    pcr,
                    measured,
                    sealed_to,
                    report,
                }) => (report.to_json(), Err((pcr, measured, sealed_to))),
                Err(e) => return Err(e.into()),
            };
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            spool.push(&document)?;
            Ok(produced)
        });
        // A TPM that hangs must not stop the heartbeat silently: the attestation gets a
        // timeout of its own (what the TPM thread still finishes is spooled all the same).
        let timeout = self.config.heartbeat_timeout;
        let attested = tokio::time::timeout(timeout, attesting)
            .await
            .map_err(|_| HeartbeatError::Timeout(timeout))??;
        self.metrics.tpm_call("attest", tpm_started.elapsed());
        let (policy_hash, zero_retention) = match attested {
            Ok(Ok(measured)) => measured,
            Ok(Err((pcr, measured, sealed_to))) => {
                tracing::error!(
                    event = "kernel-config-drift",
                    pcr,
                    measured = %measured,
                    sealed_to = %sealed_to,
                    action = "the TPM refuses to sign: a drift report goes to the ledger; \
                              if the change is approved, run `attestor reseal`",
                );
                return self.deliver_by(deadline).await;
            }
            Err(e) => {
                tracing::error!(event = "attestation-failed", error = %e);
                return Err(e);
            }
        };
        self.metrics.produced();
        if policy_hash != self.config.policy_hash || zero_retention != self.config.zero_retention {
            tracing::warn!(
                event = "policy-drift",
                expected_policy_hash = %self.config.policy_hash,
                policy_hash = %policy_hash,
                expected_zero_retention = self.config.zero_retention,
                zero_retention,
            );
        }
        self.deliver_by(deadline).await
    }

    /// [`Running::deliver`], given up at `deadline`: what is not acknowledged by then
    /// stays spooled for the next attempt.
    async fn deliver_by(&mut self, deadline: tokio::time::Instant) -> Result<(), HeartbeatError> {
        let timeout = self.config.heartbeat_timeout;
        tokio::time::timeout_at(deadline, self.deliver())
            .await
            .unwrap_or(Err(HeartbeatError::Timeout(timeout)))
    }

    /// Delivers the spool oldest first; stops at the first transient failure.
    async fn deliver(&mut self) -> Result<(), HeartbeatError> {
        if !self.enrolled {
            self.enroll().await?;
        } else if self.renew_at.is_some_and(|at| SystemTime::now() >= at) {
            // The certificate still has a third of its life: a failed renewal must not
            // hold up delivery, and is tried again at the next heartbeat.
            if let Err(e) = self.enroll().await {
                tracing::warn!(event = "ak-certificate-renewal-failed", error = %e);
            }
        }
        while let Some((seq, bundle)) = self.with_spool(|s| s.oldest()).await? {
            match self.nonces.submit(&self.client, &bundle).await {
                Ok(response) => {
                    self.keep_receipt(seq, &response).await?;
                    self.metrics.delivered(response.verdict);
                    attestor_net::event_at!(
                        match response.verdict {
                            Verdict::Accepted => Level::INFO,
                            // Genuine, logged, but too old to count: an outage, not a fault.
                            Verdict::Late => Level::WARN,
                            Verdict::Refused => Level::ERROR,
                        },
                        "delivered",
                        verdict = response.verdict.as_str(),
                        reason = response.reason.as_deref(),
                        detail = response.detail.as_deref(),
                        index = response.receipt.index,
                        attestation_id = response.attestation_id.as_deref(),
                    );
                    self.with_spool(move |s| s.acknowledge(seq)).await?;
                }
                // The ledger does not know this agent (forgotten, or another ledger): enrol
                // again; the bundle stays spooled and goes next.
                Err(e) if e.code() == Some("unknown-agent") => {
                    self.enrolled = false;
                    std::fs::remove_file(self.marker_path()).ok();
                    self.enroll().await?;
                }
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => self.set_aside(seq, &bundle, &e).await?,
            }
        }
        Ok(())
    }

    /// Moves an attestation the ledger will never take out of the way, keeping it.
    async fn set_aside(
        &self,
        seq: u64,
        bundle: &[u8],
        why: &ClientError,
    ) -> Result<(), HeartbeatError> {
        let dir = self.config.agent.state_dir.join("rejected");
        let path = dir.join(format!("{}-{seq}.bundle", attestor_verify::time::now_ms()));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, bundle))
            .map_err(|source| HeartbeatError::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
        self.metrics.set_aside();
        tracing::error!(event = "set-aside", error = %why, kept_in = %path.display());
        self.with_spool(move |s| s.acknowledge(seq)).await
    }

    /// Appends the receipt to `receipts.jsonl` (fsynced), rotating it when large.
    async fn keep_receipt(
        &self,
        seq: u64,
        response: &SubmitResponse,
    ) -> Result<(), HeartbeatError> {
        use std::io::Write;
        let mut line = serde_json::to_vec(&KeptReceipt {
            spool_seq: seq,
            response,
        })
        .map_err(HeartbeatError::EncodeReceipt)?;
        line.push(b'\n');
        let path = self.tpm_state.join("receipts.jsonl");
        tokio::task::spawn_blocking(move || {
            let io = |action, source| HeartbeatError::Io {
                action,
                path: path.clone(),
                source,
            };
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > RECEIPTS_ROTATE_BYTES) {
                std::fs::rename(&path, path.with_extension("jsonl.1"))
                    .map_err(|e| io("rotate", e))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io("open", e))?;
            file.write_all(&line).map_err(|e| io("append to", e))?;
            file.sync_data().map_err(|e| io("sync", e))
        })
        .await
        .map_err(|source| HeartbeatError::Task {
            task: "receipt",
            source,
        })?
    }
}
