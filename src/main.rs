//! `attestor` command line: one binary, one subcommand per job.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[macro_use]
mod output;

mod appraise_cli;
mod export;
mod firmware_log_cli;
mod incidents_cli;
mod loadgen;
mod local_enroll;
mod snp_cli;
mod witness;

use attestor_agent::attest::AgentError;
use attestor_agent::collect::{self, PolicyKernelConfig};
use attestor_agent::config::{AgentConfig, LedgerConnection, DEFAULT_TCTI};
use attestor_agent::evidence_source::EvidenceSource;
use attestor_agent::{Attestor, AttestorConfig};
use attestor_ledger::config::LedgerConfig;
use attestor_ledger::service::open_store;
use attestor_ledger::{backup, keyfiles};
use attestor_net::tls::{self, AgentIdentity, TlsFiles};
use attestor_verify::bundle::Bundle;
use attestor_verify::drift::{is_drift_report, DriftReport};
use attestor_verify::gate;
use attestor_verify::profiles::Profile;
use query::WitnessArgs;

mod query;
use attestor_verify::checks::{self, AkTrust, Expectations};
use attestor_verify::evidence::certchain;

#[derive(Parser)]
#[command(
    name = "attestor",
    version,
    about = "Runtime attestation with a hardware root of trust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct AgentArgs {
    /// Agent configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// TPM in tss-esapi TCTI syntax, e.g. swtpm:host=127.0.0.1,port=2321
    /// [default: config's tpm.tcti, else device:/dev/tpmrm0]
    #[arg(long, env = "ATTESTOR_TCTI")]
    tcti: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Provision the signing key (TPM: AK and PCR-sealed key, after measuring the policy
    /// kernel; SNP: a key sealed to this launch). Done on first use anyway.
    Init(AgentArgs),
    /// Produce one attestation bundle.
    Attest {
        #[command(flatten)]
        agent: AgentArgs,
        /// Where to write the bundle (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Verifier nonce (hex) to fold into the evidence commitment.
        #[arg(long, default_value = "")]
        nonce: String,
    },
    /// Seal a new signing key to the current measurement (TPM) or launch (SNP), after an
    /// approved change.
    Reseal(AgentArgs),
    /// Enrol this TPM's AK with a local enrollment CA, for `verify` without a ledger:
    /// credential activation as a ledger makes it, then an AK certificate that every
    /// `attest` carries. (`attestor agent` enrols with its ledger by itself.)
    Enroll {
        #[command(flatten)]
        agent: AgentArgs,
        /// Certify with the local enrollment CA in DIR (enrollment-ca.key,
        /// enrollment-ca.pem), created on first use; trust DIR/enrollment-ca.pem when
        /// verifying [default DIR: the config's state_dir/enrollment-ca]
        #[arg(long, value_name = "DIR", num_args = 0..=1, required = true)]
        local: Option<Option<PathBuf>>,
        /// Firmware profile the EK certificate must chain to.
        #[arg(long)]
        profile: PathBuf,
        /// Agent identity to name in the certificate, as ID:TENANT [default: none].
        #[arg(long = "agent", value_name = "ID:TENANT", value_parser = parse_agent)]
        identity: Option<AgentIdentity>,
    },
    /// Verify a bundle offline; exits 0 only if every check holds.
    Verify {
        /// Bundle file (JSON).
        bundle: PathBuf,
        /// Firmware profile (TOML) with the platform's reference values.
        #[arg(long)]
        profile: PathBuf,
        /// Expected policy_hash (hex).
        #[arg(long)]
        policy_hash: Option<String>,
        /// Nonce (hex) the evidence must commit to.
        #[arg(long, default_value = "")]
        nonce: String,
        /// Accept only the AK with this TPM Name (hex, as `attestor init` prints it),
        /// certified or not.
        #[arg(long, conflicts_with = "enrollment_ca")]
        ak_name: Option<String>,
        /// Also trust this enrollment CA (PEM) to certify AKs, besides the profile's
        /// `tpm.ak_trust_anchors` (repeatable).
        #[arg(long, value_name = "PEM")]
        enrollment_ca: Vec<PathBuf>,
        /// Appraisal policy (TOML, as a ledger tenant's `appraisal`): judge the posture
        /// too; exits 1 when it is contraindicated.
        #[arg(long)]
        appraisal: Option<PathBuf>,
        /// Write the judgement as an EAR (JWT) here (needs --appraisal).
        #[arg(long, requires = "appraisal")]
        ear_out: Option<PathBuf>,
        /// Sign the EAR with this P-384 key (PKCS#8 PEM); unsigned without it.
        #[arg(long, requires = "ear_out")]
        ear_key: Option<PathBuf>,
        /// Judge freshness and certificate validity as of this time (Unix ms) instead of
        /// now: an archived bundle, at the ledger time its log entry proves.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Print a known-good machine's firmware event log as a profile's [tpm.measured_boot]
    /// reference values (Secure Boot, PK/KEK/db, boot applications), to review.
    FirmwareLog {
        /// The log: a copy of /sys/kernel/security/tpm0/binary_bios_measurements.
        log: PathBuf,
        /// Bank of the boot application digests (the profile's pcr_bank).
        #[arg(long, default_value = "sha384", value_parser = parse_bank)]
        bank: attestor_verify::evidence::tpm::HashAlg,
        /// Write the log's dbx fingerprints here, for dbx_required.
        #[arg(long)]
        dbx_out: Option<PathBuf>,
    },
    /// Print the policy_hash of a policy document (to set as the expected value).
    PolicyHash {
        /// Policy document (.toml or .json).
        policy: PathBuf,
    },
    /// Run the agent: attest every interval and ship to the ledger (until SIGTERM/SIGINT).
    Agent(AgentArgs),
    /// Run the ledger (until SIGTERM/SIGINT; SIGHUP reloads TLS files and takes a
    /// prepared checkpoint key), or one of its maintenance commands.
    #[command(args_conflicts_with_subcommands = true)]
    Ledger {
        /// Ledger configuration file (TOML).
        #[arg(long, required = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        maintenance: Option<LedgerCommand>,
    },
    /// Revoke an agent on a ledger (running or not): its submissions and re-enrollment
    /// are refused from now on.
    Revoke {
        /// Ledger configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The agent's tenant (from its certificate): agent ids are unique only within one.
        #[arg(long)]
        tenant: String,
        /// The agent id (from its certificate).
        agent: String,
    },
    /// Query the ledger's audit trail; proofs are verified when --log-key is given.
    Query {
        #[command(flatten)]
        connection: LedgerArgs,
        #[command(subcommand)]
        what: QueryCommand,
    },
    /// Incidents of your tenant: list and show them; acknowledge or resolve them with an
    /// operator certificate (spiffe://attestor/tenant/<tenant>/operator/<name>).
    Incidents {
        #[command(flatten)]
        connection: LedgerArgs,
        #[command(subcommand)]
        what: incidents_cli::IncidentsCommand,
    },
    /// Release gate: exit 0 only if every named (or enrolled) agent of the tenant has a
    /// recent accepted attestation of the expected policy and no open alert; else exit 1
    /// with what fails.
    Gate {
        #[command(flatten)]
        connection: LedgerArgs,
        /// The tenant to gate; must be the client certificate's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Agents to check, comma-separated [default: every enrolled agent].
        #[arg(long, value_delimiter = ',')]
        agents: Vec<String>,
        /// Oldest acceptable attestation, e.g. 90s, 5m, 1h.
        #[arg(long, default_value = "5m", value_parser = gate::parse_duration)]
        max_age: std::time::Duration,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Load generator: simulated agents (only their TPM is simulated) against a real ledger.
    Loadgen(loadgen::LoadgenArgs),
    /// AMD SEV-SNP tools: verify a bare report, compute a launch measurement.
    Snp {
        #[command(subcommand)]
        command: snp_cli::SnpCommand,
    },
    /// An evidence pack for auditors: one tenant's entries of a period with inclusion
    /// proofs in one checkpoint, the key history, policies, incidents and a manifest
    /// (docs/compliance.md); `export verify DIR` re-verifies a pack offline.
    Export {
        #[command(subcommand)]
        verify: Option<ExportCommand>,
        #[command(flatten)]
        connection: LedgerArgs,
        /// The tenant to export; must be the client certificate's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Start of the period (Unix ms, inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// End of the period (Unix ms, exclusive).
        #[arg(long)]
        to: Option<u64>,
        /// The pack's directory (created; must not exist).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The firmware profile in force, packed for the record.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Prove the entries in the newest checkpoint these witnesses cosigned.
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
    /// A transparency log witness (C2SP tlog-witness): cosigns a ledger's checkpoints
    /// only if each extends the last one it cosigned.
    Witness {
        /// Witness configuration file (TOML): listen, state_dir, name, [[logs]].
        #[arg(long)]
        config: PathBuf,
    },
    /// Certificates for mutual TLS between agents and the ledger.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Re-verify a pack offline: manifest, checkpoint, every proof and EAR, every kept
    /// bundle at its ledger time (with --profile); prints a summary per agent.
    Verify {
        /// The pack's directory.
        dir: PathBuf,
        /// The ledger's checkpoint verifier key you pinned (C2SP vkey text file).
        #[arg(long)]
        log_key: PathBuf,
        /// Your firmware profile: re-verify every kept bundle at its ledger time.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Require cosignatures by these witnesses.
        #[command(flatten)]
        witnesses: WitnessArgs,
        /// Silence between accepted attestations counted as a gap.
        #[arg(long, default_value = "2m", value_parser = gate::parse_duration)]
        max_gap: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Prepare a new checkpoint key (STATE/checkpoint.key.next); the running ledger takes
    /// it on SIGHUP (`systemctl reload`), recording a transition signed by both keys.
    RotateKey {
        /// Ledger configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Write a consistent snapshot of the embedded store to a new file, while the ledger
    /// runs. Keys are not in it: keep STATE/checkpoint.key separately.
    Backup {
        /// Ledger configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty state directory after verifying its log.
    Restore {
        /// Ledger configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Verifier key (C2SP vkey text file) to check the checkpoints with
        /// [default: the state directory's checkpoint.key].
        #[arg(long)]
        log_key: Option<PathBuf>,
    },
}

#[derive(Args)]
struct LedgerArgs {
    /// Take the endpoint and TLS files from this agent config's [ledger] section.
    #[arg(long, conflicts_with_all = ["ledger", "ca", "cert", "key"])]
    config: Option<PathBuf>,
    /// Ledger endpoint, https://HOST:PORT.
    #[arg(long, requires_all = ["ca", "cert", "key"])]
    ledger: Option<String>,
    /// CA certificate (PEM) the ledger's certificate must chain to.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM); its tenant scopes every answer.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The ledger's checkpoint verifier key (C2SP vkey text file); verifies every proof.
    #[arg(long)]
    log_key: Option<PathBuf>,
    /// Print the answers as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum QueryCommand {
    /// Log entries of your tenant, oldest first.
    Entries {
        #[arg(long)]
        agent: Option<String>,
        /// Attestation id.
        #[arg(long)]
        id: Option<String>,
        /// accepted, refused or late.
        #[arg(long)]
        verdict: Option<String>,
        /// From this ledger time (Unix ms, inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// Up to this ledger time (Unix ms, exclusive).
        #[arg(long)]
        to: Option<u64>,
        /// Only entries after this index (pagination cursor).
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One entry by log index.
    Entry { index: u64 },
    /// The latest accepted attestation of each agent.
    LatestHealthy,
    /// Agents of your tenant and their health.
    Agents,
    /// The latest signed checkpoint; with --since, verify it extends that older size.
    Checkpoint {
        #[arg(long)]
        since: Option<u64>,
        /// A checkpoint note kept from an earlier audit: verify the latest one extends it
        /// (catches a log rolled back, e.g. by restoring an older backup). Needs --log-key.
        #[arg(long)]
        held: Option<PathBuf>,
        /// Audit the newest checkpoint that --quorum of these witnesses cosigned instead of
        /// the newest one. Needs --log-key.
        #[command(flatten)]
        witnesses: WitnessArgs,
        /// Fail when that checkpoint was signed more than this many seconds before the
        /// newest one (witnesses down or lagging).
        #[arg(long, default_value_t = 60)]
        max_witness_lag: u64,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Quick start, NOT for production: create a CA (its key stays unencrypted in DIR),
    /// a ledger server certificate and one client certificate per agent.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key, DIR/ledger.pem, DIR/ledger.key and
    /// DIR/agents/<ID>.pem, DIR/agents/<ID>.key (keys mode 0600), and
    /// DIR/operators/<NAME>.pem, .key for each --operator. Refuses to overwrite an
    /// existing CA. For production, issue certificates with the same profile from a real CA.
    Init {
        /// Directory to create the PKI in.
        dir: PathBuf,
        /// Agent to issue a client certificate for, as ID:TENANT (repeatable).
        #[arg(long = "agent", value_name = "ID:TENANT", value_parser = parse_agent,
              default_value = "agent-1:default")]
        agents: Vec<AgentIdentity>,
        /// Operator to issue a client certificate for, as NAME:TENANT (repeatable):
        /// DIR/operators/<NAME>.pem, .key, for `attestor incidents ack|resolve`.
        #[arg(long = "operator", value_name = "NAME:TENANT", value_parser = parse_operator)]
        operators: Vec<AgentIdentity>,
        /// DNS name or IP address the ledger is reached at (repeatable).
        #[arg(long = "ledger-host", value_name = "NAME",
              default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        ledger_hosts: Vec<String>,
    },
}

fn main() -> ExitCode {
    // The TPM library logs refused commands (such as a drifted policy) to stderr by
    // itself; attestor reports them as typed errors instead.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    // Before any command runs: the daemons' events (and the ledger's stage timings) go
    // through this subscriber.
    attestor_net::logging::init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Init(args) => {
            let (mut agent, kernel) = open_agent(&args)?;
            agent.init(&kernel).map_err(|e| e.to_string())?;
            outln!("agent state ready in {}", agent.state_dir().display())?;
            if let Some((ak, sealed, bank)) = agent.tpm_algorithms().map_err(|e| e.to_string())? {
                outln!("AK {ak}, sealed key {sealed}, PCR bank {}", bank.name())?;
            }
            if let Ok(tpm) = agent.tpm() {
                let name = tpm.ak_name().map_err(|e| e.to_string())?;
                outln!("AK name {} (attestor verify --ak-name)", hex::encode(name))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Enroll {
            agent,
            local,
            profile,
            identity,
        } => {
            let profile = Profile::load(&profile).map_err(|e| e.to_string())?;
            let config = load_config(&agent.config)?;
            let ca_dir = local
                .flatten()
                .unwrap_or_else(|| config.state_dir.join("enrollment-ca"));
            let (mut source, _) = open_agent_with(&agent, config)?;
            let tpm = source.tpm().map_err(|e| e.to_string())?;
            let made = local_enroll::enroll(tpm, &ca_dir, &profile, identity.as_ref())?;
            outln!(
                "AK {} certified; certificate kept in {}",
                hex::encode(tpm.ak_name().map_err(|e| e.to_string())?),
                made.ak_certificate.display()
            )?;
            outln!(
                "verify with --enrollment-ca {} (or list it in the profile's tpm.ak_trust_anchors)",
                made.ca_certificate.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reseal(args) => {
            let (mut agent, kernel) = open_agent(&args)?;
            agent.reseal(&kernel).map_err(|e| e.to_string())?;
            outln!(
                "signing key resealed to kernel_config_hash {}",
                hex::encode(kernel.kernel_config_hash)
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Attest { agent, out, nonce } => {
            let nonce = decode_hex("--nonce", &nonce)?;
            let config = load_config(&agent.config)?;
            let status = runtime()?
                .block_on(config.status.read())
                .map_err(|e| e.to_string())?;
            let (mut agent, kernel) = open_agent_with(&agent, config)?;
            let (document, exit) = match agent.attest(&kernel, &status, &nonce) {
                Ok(bundle) => (bundle.to_json(), ExitCode::SUCCESS),
                Err(drift @ AgentError::Drift { .. }) => {
                    outln!("{drift}")?;
                    let AgentError::Drift { report, .. } = drift else {
                        unreachable!("matched above")
                    };
                    (report.to_json(), ExitCode::from(1))
                }
                Err(e) => return Err(e.to_string()),
            };
            std::fs::write(&out, document)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            outln!("wrote {}", out.display())?;
            Ok(exit)
        }
        Command::Verify {
            bundle,
            profile,
            policy_hash,
            nonce,
            ak_name,
            enrollment_ca,
            appraisal,
            ear_out,
            ear_key,
            at,
        } => {
            let now = at.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
            let bytes = std::fs::read(&bundle)
                .map_err(|e| format!("cannot read {}: {e}", bundle.display()))?;
            let mut profile = Profile::load(&profile).map_err(|e| e.to_string())?;
            if let Some(tpm) = profile.tpm.as_mut() {
                for path in &enrollment_ca {
                    let pem = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let certificates = certchain::pem_to_der_all(&pem)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    tpm.ak_trust_anchors.extend(certificates);
                }
            }
            let nonce = decode_hex("--nonce", &nonce)?;
            let ak = match ak_name {
                Some(name) => AkTrust::Name(decode_hex("--ak-name", &name)?),
                None => AkTrust::Certificate,
            };
            if is_drift_report(&bytes) {
                let report = DriftReport::from_json(&bytes).map_err(|e| e.to_string())?;
                let expect = Expectations {
                    nonce,
                    ak,
                    now,
                    ..Default::default()
                };
                return match checks::verify_drift_report(&report, &profile, &expect) {
                    Ok(drift) => {
                        outln!(
                            "DRIFT: the TPM measures kernel configuration {}, which the \
                             AK-certified sealed key is not bound to (the agent says it is \
                             sealed to {}); the report verified against profile {:?}",
                            drift.claims.kernel_config_hash,
                            drift.claims.sealed_config_hash,
                            profile.name
                        )?;
                        Ok(ExitCode::from(1))
                    }
                    Err(e) => {
                        outln!("FAILED {}: {}", e.check, e.reason)?;
                        Ok(ExitCode::from(1))
                    }
                };
            }
            let parsed = Bundle::from_json(&bytes).map_err(|e| e.to_string())?;
            if let Some(policy) = appraisal {
                // The policy hash is judged with the policy's approved hashes.
                let expect = Expectations {
                    nonce: nonce.clone(),
                    ak,
                    now,
                    ..Default::default()
                };
                let evidence = checks::verify_bundle(&parsed, &profile, &expect);
                let output = appraise_cli::EarOutput {
                    out: ear_out,
                    key: ear_key,
                };
                return appraise_cli::judge(
                    evidence,
                    &policy,
                    policy_hash.as_deref(),
                    &profile,
                    &nonce,
                    &output,
                );
            }
            let expect = Expectations {
                policy_hash,
                nonce,
                ak,
                now,
                ..Default::default()
            };
            match checks::verify_bundle(&parsed, &profile, &expect) {
                Ok(v) => {
                    outln!(
                        "OK: attestation {} of policy {} verified against profile {:?} ({})",
                        v.claims.attestation_id,
                        v.claims.policy_hash,
                        profile.name,
                        snp_cli::describe(&v.platform)
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    outln!("FAILED {}: {}", e.check, e.reason)?;
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Agent(args) => {
            let config = load_config(&args.config)?;
            let tcti = tcti_of(&args, &config);
            let config =
                AttestorConfig::from_agent_config(config, tcti).map_err(|e| e.to_string())?;
            let mut attestor = Attestor::new(config);
            let stopper = attestor.stopper();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            runtime.block_on(async move {
                tokio::spawn(async move {
                    attestor_net::shutdown::termination().await;
                    stopper.stop();
                });
                tokio::spawn(acknowledge_hangups());
                attestor.start_heartbeat().await.map_err(|e| e.to_string())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            config,
            maintenance: None,
        } => {
            let config = config.ok_or("--config is required")?;
            let config = LedgerConfig::load(&config).map_err(|e| e.to_string())?;
            attestor_ledger::daemon::run(&config).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            maintenance: Some(command),
            ..
        } => ledger_maintenance(command),
        Command::Gate {
            connection,
            tenant,
            agents,
            max_age,
            format,
        } => {
            let ledger = connection_of(&connection)?;
            runtime()?.block_on(query::gate(&ledger, tenant, &agents, max_age, &format))
        }
        Command::Revoke {
            config,
            tenant,
            agent,
        } => {
            let config = LedgerConfig::load(&config).map_err(|e| e.to_string())?;
            let store = open_store(&config).map_err(|e| e.to_string())?;
            store
                .revoke_agent(&tenant, &agent)
                .map_err(|e| e.to_string())?;
            outln!("agent {agent:?} of tenant {tenant:?} revoked")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { connection, what } => {
            runtime()?.block_on(query::run(&connection_of(&connection)?, what, &connection))
        }
        Command::Incidents { connection, what } => runtime()?.block_on(incidents_cli::run(
            &connection_of(&connection)?,
            what,
            connection.json,
        )),
        Command::Snp { command } => snp_cli::run(command),
        Command::Export {
            verify:
                Some(ExportCommand::Verify {
                    dir,
                    log_key,
                    profile,
                    witnesses,
                    max_gap,
                }),
            ..
        } => {
            let pinned = read_text(&log_key)?;
            let report = export::verify(&export::VerifyRequest {
                dir: &dir,
                log_key: pinned.trim(),
                profile: profile.as_deref(),
                witnesses: &witnesses,
                max_gap,
            });
            match report {
                Ok(report) => {
                    out!("{report}")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => {
                    outln!("FAILED {failure}")?;
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Export {
            verify: None,
            connection,
            tenant,
            from,
            to,
            out,
            profile,
            witnesses,
        } => {
            let (Some(tenant), Some(from_ms), Some(to_ms), Some(out)) = (tenant, from, to, out)
            else {
                return Err("export needs --tenant, --from, --to and --out".into());
            };
            let log_key = connection
                .log_key
                .as_ref()
                .ok_or("export needs --log-key: the pack is proven from the key you pinned")?;
            let pinned = read_text(log_key)?;
            let ledger = connection_of(&connection)?;
            runtime()?.block_on(async {
                let client = query::client_of(&ledger)?;
                export::export(
                    &client,
                    &export::ExportRequest {
                        tenant: &tenant,
                        from_ms,
                        to_ms,
                        out: &out,
                        profile: profile.as_deref(),
                        log_key: pinned.trim(),
                        witnesses: &witnesses,
                    },
                )
                .await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Witness { config } => {
            runtime()?.block_on(witness::run(&config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Loadgen(args) => loadgen::run(args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::FirmwareLog { log, bank, dbx_out } => firmware_log_cli::run(&log, bank, dbx_out),
        Command::PolicyHash { policy } => {
            let hash = collect::policy_hash_of(&policy).map_err(|e| e.to_string())?;
            outln!("{}", hex::encode(hash))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    mut agents,
                    operators,
                    ledger_hosts,
                },
        } => {
            agents.extend(operators);
            let paths = tls::pki_init(&dir, &agents, &ledger_hosts).map_err(|e| e.to_string())?;
            for path in paths.all() {
                outln!("wrote {}", path.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ledger_maintenance(command: LedgerCommand) -> Result<ExitCode, String> {
    let load = |path: &Path| LedgerConfig::load(path).map_err(|e| e.to_string());
    match command {
        LedgerCommand::RotateKey { config } => {
            let config = load(&config)?;
            let vkey = keyfiles::prepare_rotation(
                &config.state_dir,
                &config.origin,
                config.log.checkpoint_key,
            )
            .map_err(|e| e.to_string())?;
            outln!("next checkpoint key: {vkey}")?;
            outln!(
                "reload the ledger to switch (systemctl reload attestor-ledger, or kill -HUP); \
                 on PostgreSQL replicas copy {} to every replica's state directory first",
                keyfiles::NEXT_KEY_FILE
            )?;
        }
        LedgerCommand::Backup { config, out } => {
            let summary = backup::backup(&load(&config)?, &out).map_err(|e| e.to_string())?;
            outln!(
                "wrote {}: {} entries, checkpoint of size {} verified, {} key transition(s); \
                 the checkpoint key is NOT in it",
                out.display(),
                summary.entries,
                summary.checkpoint_size,
                summary.key_transitions
            )?;
        }
        LedgerCommand::Restore {
            config,
            from,
            log_key,
        } => {
            let pinned = log_key
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .map(|k| k.trim().to_string())
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                })
                .transpose()?;
            let summary = backup::restore(&load(&config)?, &from, pinned.as_deref())
                .map_err(|e| e.to_string())?;
            outln!(
                "restored {}: {} entries, Merkle root and checkpoint of size {} verified",
                from.display(),
                summary.entries,
                summary.checkpoint_size
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The agent re-reads its client certificate whenever the files change, so SIGHUP (a
/// `systemctl reload`) has nothing to do but must not end the process.
async fn acknowledge_hangups() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!(
            event = "agent-reload",
            tls = "client certificate files are re-read when they change",
        );
    }
}

/// On SIGHUP: new TLS files (server certificate, trusted client CAs) for new connections,
/// and the checkpoint key `rotate-key` prepared. A failure keeps what runs and is logged.
fn tcti_of(args: &AgentArgs, config: &AgentConfig) -> String {
    args.tcti
        .clone()
        .or_else(|| config.tpm.tcti.clone())
        .unwrap_or_else(|| DEFAULT_TCTI.to_string())
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn connection_of(args: &LedgerArgs) -> Result<LedgerConnection, String> {
    if let Some(path) = &args.config {
        return load_config(path)?
            .ledger
            .ok_or_else(|| format!("{} has no [ledger] section", path.display()));
    }
    match (&args.ledger, &args.ca, &args.cert, &args.key) {
        (Some(endpoint), Some(ca), Some(cert), Some(key)) => Ok(LedgerConnection {
            endpoint: endpoint.clone(),
            tls: TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
        }),
        _ => Err("give --config AGENT_TOML, or --ledger with --ca, --cert and --key".into()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn load_config(path: &Path) -> Result<AgentConfig, String> {
    AgentConfig::load(path).map_err(|e| e.to_string())
}

fn open_agent(args: &AgentArgs) -> Result<(EvidenceSource, PolicyKernelConfig), String> {
    open_agent_with(args, load_config(&args.config)?)
}

fn open_agent_with(
    args: &AgentArgs,
    config: AgentConfig,
) -> Result<(EvidenceSource, PolicyKernelConfig), String> {
    let kernel = collect::read_policy_kernel(
        &config.policy_kernel.policy,
        &config.policy_kernel.config_files,
    )
    .map_err(|e| e.to_string())?;
    let tcti = tcti_of(args, &config);
    let agent = EvidenceSource::open(config, &tcti).map_err(|e| e.to_string())?;
    Ok((agent, kernel))
}

fn parse_agent(text: &str) -> Result<AgentIdentity, String> {
    let (id, tenant) = text
        .split_once(':')
        .ok_or_else(|| format!("expected ID:TENANT, got {text:?}"))?;
    AgentIdentity::new(tenant, id).map_err(|e| e.to_string())
}

fn parse_operator(text: &str) -> Result<AgentIdentity, String> {
    let (name, tenant) = text
        .split_once(':')
        .ok_or_else(|| format!("expected NAME:TENANT, got {text:?}"))?;
    AgentIdentity::operator(tenant, name).map_err(|e| e.to_string())
}

fn decode_hex(flag: &str, text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|e| format!("{flag} is not hex: {e}"))
}

fn parse_bank(text: &str) -> Result<attestor_verify::evidence::tpm::HashAlg, String> {
    attestor_verify::evidence::tpm::HashAlg::pcr_bank(text).map_err(|e| e.to_string())
}
