//! `attestor loadgen`: drives a real ledger with N simulated agents.
//!
//! **Only the TPM is simulated** ([`soft_tpm`]): everything else is what a real agent does.
//! Each simulated agent has its own mTLS client certificate (issued by the operator's CA,
//! identity in the URI SAN), its own EK (certified by the loadgen EK CA), AK and sealed
//! signing key; it enrols through the ledger's two-step credential activation, keeps its
//! connection open, and per heartbeat attests (DSSE envelope signed by the sealed key, quote
//! over the firmware and measured PCRs bound to the envelope and nonce, event log,
//! certification) and submits, with the nonce the ledger handed out with its previous
//! answer as the agent does (the first one, and after a failure, from the nonce endpoint). The ledger verifies with its real, unmodified
//! pipeline; it accepts these agents only because its firmware profile names the loadgen
//! EK CA (`attestor loadgen ek-ca`), which must never be done for a production ledger.

mod pki;
mod report;
mod soft_tpm;

use attestor_net::http::HttpError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestor_agent::client::{ClientError, LedgerClient, NonceCarrier};
use attestor_ledger::store::Verdict;
use attestor_net::tls::{self, AgentIdentity};
use attestor_verify::api::{EnrollProof, EnrollRequest};
use attestor_verify::bundle::{
    Bundle, Evidence, SealedKeyEvidence, SignedAttest, TpmEvidence, BUNDLE_TYPE,
};
use attestor_verify::claims::{Claims, EpsilonLimits, Statement, PAYLOAD_TYPE};
use attestor_verify::dsse::{self, Envelope};
use attestor_verify::evidence::tpm::eventlog::{
    measurement_digest, EventLog, MeasurementEvent, EVENT_POLICY_KERNEL_CONFIG,
};
use attestor_verify::evidence::tpm::{wire, HashAlg};
use attestor_verify::evidence::tpm_commitment;
use clap::{Args, Subcommand};
use thiserror::Error;

use pki::{Issuer, PkiError, FIRMWARE_PCRS, MEASURED_PCR};
use report::{Outcome, Recorder, Report};
use soft_tpm::{SoftTpm, SoftTpmError};

/// How the load is paced.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Submissions per second, all agents together, on a fixed schedule.
    Rate(f64),
    /// Every agent attests again as soon as its previous answer arrives.
    Max,
}

fn parse_pace(text: &str) -> Result<f64, String> {
    if text == "max" {
        return Ok(0.0);
    }
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("a positive number of submissions per second, or `max`".into()),
    }
}

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    long_about = "Load generator: N simulated agents enrol with a real ledger and attest \
                  through its real verification pipeline. ONLY THE TPM IS SIMULATED (keys in \
                  this process's memory, EK certified by the loadgen EK CA); mTLS, enrollment, \
                  nonces, DSSE envelopes, quotes and event logs are the real protocol. Point \
                  the ledger's `profile` at the loadgen profile (`attestor loadgen ek-ca DIR`) \
                  for a load test only, never in production."
)]
pub(crate) struct LoadgenArgs {
    #[command(subcommand)]
    command: Option<LoadgenCommand>,
    /// Ledger endpoint, https://HOST:PORT.
    #[arg(long, required = true)]
    ledger: Option<String>,
    /// CA certificate of the ledger's PKI (`attestor pki init`'s ca.pem): trusted for the
    /// ledger's certificate and issuer of the agents' client certificates.
    #[arg(long, required = true)]
    ca_cert: Option<PathBuf>,
    /// That CA's key (ca.key).
    #[arg(long, required = true)]
    ca_key: Option<PathBuf>,
    /// Loadgen EK CA certificate (from `attestor loadgen ek-ca`).
    #[arg(long, required = true)]
    ek_ca_cert: Option<PathBuf>,
    /// Loadgen EK CA key.
    #[arg(long, required = true)]
    ek_ca_key: Option<PathBuf>,
    /// Tenant of every simulated agent (must be configured on the ledger).
    #[arg(long, default_value = "loadgen")]
    tenant: String,
    /// Agent ids are PREFIX-0 .. PREFIX-(N-1).
    #[arg(long, default_value = "loadgen")]
    agent_prefix: String,
    /// Number of simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Submissions per second, all agents together, or `max` (closed loop: each agent
    /// attests again as soon as it has its answer).
    #[arg(long, default_value = "max", value_parser = parse_pace)]
    rate: f64,
    /// Seconds to run the heartbeats for (after enrollment).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// policy_hash (hex) the agents claim [default: the one the ledger expects of the
    /// tenant, asked over GET /v1/tenant].
    #[arg(long)]
    policy_hash: Option<String>,
    /// Process id of the ledger, to report its CPU time and memory (read from /proc).
    #[arg(long)]
    ledger_pid: Option<u32>,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// Seconds a request may take before it counts as a transport error.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Ask the nonce endpoint before every heartbeat, as agents that predate nonces
    /// handed out with receipts do: two requests per heartbeat, for comparison.
    #[arg(long)]
    nonce_per_heartbeat: bool,
}

#[derive(Subcommand)]
enum LoadgenCommand {
    /// Create the loadgen EK CA (ek-ca.pem, ek-ca.key) and a firmware profile naming it
    /// (loadgen-profile.toml) in DIR, for the ledger under test.
    EkCa { dir: PathBuf },
}

/// Why a load test could not run (errors of single submissions are counted, not raised).
#[derive(Debug, Error)]
pub(crate) enum LoadgenError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("simulated TPM: {0}")]
    SoftTpm(#[from] SoftTpmError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Identity(#[from] attestor_verify::identity::IdentityError),
    #[error("ledger: {0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("enrolling {agent}: {source}")]
    Enroll {
        agent: String,
        source: Box<LoadgenError>,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

/// Runs `attestor loadgen`.
pub(crate) fn run(args: LoadgenArgs) -> Result<(), LoadgenError> {
    if let Some(LoadgenCommand::EkCa { dir }) = &args.command {
        let profile = pki::create_ek_ca(dir)?;
        outln!(
            "loadgen EK CA in {}; point the ledger under test at {} (load tests only)",
            dir.display(),
            profile.display()
        )?;
        return Ok(());
    }
    let missing = |what: &str| LoadgenError::Usage(format!("--{what} is required"));
    let endpoint = args.ledger.clone().ok_or_else(|| missing("ledger"))?;
    let ca = Issuer::load(
        args.ca_cert.as_deref().ok_or_else(|| missing("ca-cert"))?,
        args.ca_key.as_deref().ok_or_else(|| missing("ca-key"))?,
    )?;
    let ek_ca = Issuer::load(
        args.ek_ca_cert
            .as_deref()
            .ok_or_else(|| missing("ek-ca-cert"))?,
        args.ek_ca_key
            .as_deref()
            .ok_or_else(|| missing("ek-ca-key"))?,
    )?;
    if args.agents == 0 || args.duration.is_nan() || args.duration <= 0.0 {
        return Err(LoadgenError::Usage(
            "--agents and --duration must be positive".into(),
        ));
    }
    // One kept-alive connection per simulated agent: a descriptor each.
    attestor_ledger::server::raise_open_file_limit().map_err(LoadgenError::Runtime)?;
    let pace = if args.rate > 0.0 {
        Pace::Rate(args.rate)
    } else {
        Pace::Max
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadgenError::Runtime)?;
    let report = runtime.block_on(load_test(&args, &endpoint, &ca, &ek_ca, pace))?;
    if args.json {
        outln!("{}", report.to_json())?;
    } else {
        out!("{}", report.to_text())?;
    }
    Ok(())
}

/// What one simulated agent's host runs: the policy kernel's measured configuration.
struct Host {
    policy_hash: String,
    kernel_config: Vec<u8>,
}

impl Host {
    fn kernel_config_hash(&self) -> Vec<u8> {
        soft_tpm::sha384(&self.kernel_config)
    }
}

/// One simulated agent: its connection, its simulated TPM and what it has measured.
struct SimAgent {
    client: LedgerClient,
    /// The nonce the ledger handed out with the previous answer (none with
    /// `--nonce-per-heartbeat`).
    nonces: NonceCarrier,
    tpm: SoftTpm,
    event_log: EventLog,
    ek_certificates: Vec<Vec<u8>>,
    /// The AK certificate the ledger issued at enrollment, carried as an agent does.
    ak_certificates: Vec<Vec<u8>>,
    certification: SignedAttest,
    host: Arc<Host>,
}

async fn load_test(
    args: &LoadgenArgs,
    endpoint: &str,
    ca: &Issuer,
    ek_ca: &Issuer,
    pace: Pace,
) -> Result<Report, LoadgenError> {
    let timeout = Duration::from_secs(args.timeout);
    let ids: Vec<String> = (0..args.agents)
        .map(|i| format!("{}-{i}", args.agent_prefix))
        .collect();
    let policy_hash = match &args.policy_hash {
        Some(hash) => hash.to_ascii_lowercase(),
        None => {
            let probe = client_for(endpoint, ca, &args.tenant, &ids[0], timeout)?;
            probe.tenant().await?.policy_hash
        }
    };
    let host = Arc::new(Host {
        policy_hash,
        kernel_config: format!(
            "attestor loadgen simulated policy kernel, tenant {}",
            args.tenant
        )
        .into_bytes(),
    });

    let enroll_started = Instant::now();
    let agents = enrol_all(args, endpoint, ca, ek_ca, &ids, &host, timeout).await?;
    let enrollment = enroll_started.elapsed();

    let recorder = Recorder::start(args.ledger_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let count = agents.len();
    let tasks: Vec<_> = agents
        .into_iter()
        .enumerate()
        .map(|(i, mut agent)| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for k in 0usize.. {
                    let due = match pace {
                        Pace::Rate(rate) => {
                            started + Duration::from_secs_f64((k * count + i) as f64 / rate)
                        }
                        Pace::Max => Instant::now(),
                    };
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let outcome = agent.heartbeat(due).await;
                    recorder.record(outcome);
                }
            })
        })
        .collect();
    for task in tasks {
        // A panicked agent task loses only its own samples; the rest still report.
        let _ = task.await;
    }
    Ok(recorder.finish(args, pace, enrollment, started.elapsed()))
}

fn client_for(
    endpoint: &str,
    ca: &Issuer,
    tenant: &str,
    agent_id: &str,
    timeout: Duration,
) -> Result<LedgerClient, LoadgenError> {
    let identity = AgentIdentity::new(tenant, agent_id)?;
    let (cert, key) = ca.agent_certificate(&identity)?;
    let config =
        tls::client_config_from_pem(ca.cert_pem().as_bytes(), cert.as_bytes(), key.as_bytes())?;
    Ok(LedgerClient::new(endpoint, config)?.with_timeout(timeout))
}

/// Enrols every agent, `--enroll-concurrency` at a time.
async fn enrol_all(
    args: &LoadgenArgs,
    endpoint: &str,
    ca: &Issuer,
    ek_ca: &Issuer,
    ids: &[String],
    host: &Arc<Host>,
    timeout: Duration,
) -> Result<Vec<SimAgent>, LoadgenError> {
    let mut agents = Vec::with_capacity(ids.len());
    for batch in ids.chunks(args.enroll_concurrency.max(1)) {
        let mut pending = Vec::with_capacity(batch.len());
        for id in batch {
            let client = client_for(endpoint, ca, &args.tenant, id, timeout)?;
            let nonces = if args.nonce_per_heartbeat {
                NonceCarrier::never()
            } else {
                NonceCarrier::new(timeout)
            };
            let agent = SimAgent::new(client, nonces, ek_ca, id, host.clone())?;
            pending.push((id.clone(), tokio::spawn(agent.enrol())));
        }
        for (id, task) in pending {
            let enrolled = task
                .await
                .map_err(|e| LoadgenError::Usage(format!("enrollment task of {id}: {e}")))?;
            agents.push(enrolled.map_err(|source| LoadgenError::Enroll {
                agent: id,
                source: Box::new(source),
            })?);
        }
    }
    Ok(agents)
}

impl SimAgent {
    fn new(
        client: LedgerClient,
        nonces: NonceCarrier,
        ek_ca: &Issuer,
        agent_id: &str,
        host: Arc<Host>,
    ) -> Result<SimAgent, LoadgenError> {
        let kch = host.kernel_config_hash();
        let mut tpm = SoftTpm::boot(
            &pki::firmware_digests(),
            MEASURED_PCR,
            std::slice::from_ref(&kch),
        )?;
        let event_log = EventLog {
            events: vec![MeasurementEvent {
                pcr: MEASURED_PCR,
                event_type: EVENT_POLICY_KERNEL_CONFIG.into(),
                // Only the quoted bank: a verifier refuses digests it cannot replay.
                digests: [(
                    HashAlg::Sha384,
                    hex::encode(measurement_digest(HashAlg::Sha384, &kch)),
                )]
                .into(),
                data: hex::encode(&kch),
                timestamp: attestor_verify::time::now_secs(),
            }],
        };
        let ek_certificates = vec![ek_ca.ek_certificate(agent_id, tpm.ek_point())?];
        let certification = tpm.certify_sealed_key()?;
        Ok(SimAgent {
            client,
            nonces,
            tpm,
            event_log,
            ek_certificates,
            ak_certificates: Vec::new(),
            certification,
            host,
        })
    }

    /// The two enrollment steps, as the agent makes them (this also opens the connection
    /// the agent then keeps).
    async fn enrol(mut self) -> Result<SimAgent, LoadgenError> {
        let request = EnrollRequest {
            ek_certificates: self.ek_certificates.clone(),
            ek_public: self.tpm.ek_public().to_vec(),
            ak_public: self.tpm.ak_public().to_vec(),
        };
        let challenge = self.client.enroll_begin(&request).await?;
        let secret = self
            .tpm
            .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)?;
        let enrolled = self.client.enroll_finish(&EnrollProof { secret }).await?;
        self.ak_certificates = [enrolled.ak_certificate]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        Ok(self)
    }

    /// One heartbeat: nonce (carried, or asked for), attestation, submission; timed from
    /// when it was due.
    async fn heartbeat(&mut self, due: Instant) -> Outcome {
        let nonce = match self.nonces.next(&self.client).await {
            Ok(nonce) => nonce,
            Err(e) => return Outcome::failed(format!("nonce:{}", error_kind(&e))),
        };
        let body = match self.attest(&nonce) {
            Ok(bundle) => bundle.to_json(),
            Err(e) => return Outcome::failed(format!("loadgen:{e}")),
        };
        let sent = Instant::now();
        let answer = self.nonces.submit(&self.client, &body).await;
        let submit = sent.elapsed();
        let heartbeat = due.elapsed();
        match answer {
            Ok(r) if r.verdict == Verdict::Accepted => Outcome::answered(None, submit, heartbeat),
            Ok(r) => {
                let reason = r.reason.unwrap_or_else(|| "unspecified".into());
                Outcome::answered(Some(format!("refused:{reason}")), submit, heartbeat)
            }
            Err(e) => Outcome::failed(format!("submit:{}", error_kind(&e))),
        }
    }

    /// What `Agent::attest` produces, with the simulated TPM in place of the real one.
    fn attest(&mut self, nonce: &[u8]) -> Result<Bundle, LoadgenError> {
        let claims = claims(&self.host);
        let payload = Statement::new(claims)
            .to_json()
            .map_err(|e| LoadgenError::Usage(e.to_string()))?;
        let pae = dsse::pae(PAYLOAD_TYPE, &payload);
        let fixed = self.tpm.sign_sealed(&pae)?;
        let (r, s) = fixed.split_at(fixed.len() / 2);
        let sig =
            dsse::p384_asn1_from_fixed(r, s).map_err(|e| LoadgenError::Usage(e.to_string()))?;
        let envelope = Envelope {
            payload_type: PAYLOAD_TYPE.into(),
            payload,
            signatures: vec![dsse::Signature {
                keyid: hex::encode(wire::object_name(self.tpm.sealed_public(), HashAlg::Sha384)),
                sig,
            }],
        };
        let mut selection = FIRMWARE_PCRS.to_vec();
        selection.push(MEASURED_PCR);
        let (quote, values) = self.tpm.quote(&tpm_commitment(nonce, &pae), &selection)?;
        Ok(Bundle {
            bundle_type: BUNDLE_TYPE.into(),
            envelope,
            nonce: nonce.to_vec(),
            evidence: Evidence::Tpm(TpmEvidence {
                quote,
                pcr_bank: HashAlg::Sha384,
                pcrs: values
                    .into_iter()
                    .map(|(pcr, v)| (pcr, hex::encode(v)))
                    .collect::<BTreeMap<_, _>>(),
                event_log: self.event_log.clone(),
                firmware_event_log: Vec::new(),
                ak_public: self.tpm.ak_public().to_vec(),
                sealed_key: SealedKeyEvidence {
                    public: self.tpm.sealed_public().to_vec(),
                    certification: self.certification.clone(),
                },
                ek_certificates: self.ek_certificates.clone(),
                ek_public: self.tpm.ek_public().to_vec(),
                ak_certificates: self.ak_certificates.clone(),
            }),
        })
    }
}

/// Plausible claims of a healthy policy kernel (the runtime counters are not what is
/// measured here).
fn claims(host: &Host) -> Claims {
    Claims {
        attestation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: attestor_verify::time::now_secs(),
        policy_hash: host.policy_hash.clone(),
        zero_retention: true,
        epsilon_limits: EpsilonLimits {
            max_epsilon: 1.0,
            max_delta: 1e-6,
            current_usage: 0.25,
            reset_interval: 86_400,
        },
        version: "1.4.2".into(),
        attestor_version: env!("CARGO_PKG_VERSION").into(),
        kernel_config_hash: hex::encode(host.kernel_config_hash()),
        capability_keys: Vec::new(),
        tenant_isolation: true,
        egress_firewall_enabled: true,
        pii_detection_enabled: true,
        total_requests: 1000,
        blocked_requests: 3,
        capability_failures: 0,
        plan_validations: 1000,
        uptime_seconds: 3600,
    }
}

/// A short, bounded label for an error: HTTP status and code, or the transport failure.
fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Refused { status, error, .. } => format!("http-{status}:{error}"),
        ClientError::Transport(HttpError::Timeout { .. }) => "transport:timeout".into(),
        ClientError::Transport(_) => "transport:unreachable".into(),
        ClientError::BadAnswer(_) | ClientError::NotText(_) => "bad-answer".into(),
        _ => "endpoint".into(),
    }
}
