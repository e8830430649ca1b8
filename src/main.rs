//! `attestor` command line: one binary, one subcommand per job.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod snp_cli;

use attestor::agent::evidence_source::EvidenceSource;
use attestor::bundle::Bundle;
use attestor::collect::{self, PolicyKernelConfig};
use attestor::config::{AgentConfig, DEFAULT_TCTI};
use attestor::profiles::Profile;
use attestor::tls::{self, AgentIdentity};
use attestor::verify::{self, Expectations};

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
    },
    /// Print the policy_hash of a policy document (to set as the expected value).
    PolicyHash {
        /// Policy document (.toml or .json).
        policy: PathBuf,
    },
    /// AMD SEV-SNP tools: verify a bare report, compute a launch measurement.
    Snp {
        #[command(subcommand)]
        command: snp_cli::SnpCommand,
    },
    /// Certificates for mutual TLS between agents and the ledger.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Quick start, NOT for production: create a CA (its key stays unencrypted in DIR),
    /// a ledger server certificate and one client certificate per agent.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key, DIR/ledger.pem, DIR/ledger.key and
    /// DIR/agents/<ID>.pem, DIR/agents/<ID>.key (keys mode 0600). Refuses to overwrite an
    /// existing CA. For production, issue certificates with the same profile from a real CA.
    Init {
        /// Directory to create the PKI in.
        dir: PathBuf,
        /// Agent to issue a client certificate for, as ID:TENANT (repeatable).
        #[arg(long = "agent", value_name = "ID:TENANT", value_parser = parse_agent,
              default_value = "agent-1:default")]
        agents: Vec<AgentIdentity>,
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
            println!("agent state ready in {}", agent.state_dir().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reseal(args) => {
            let (mut agent, kernel) = open_agent(&args)?;
            agent.reseal(&kernel).map_err(|e| e.to_string())?;
            println!(
                "signing key resealed to kernel_config_hash {}",
                hex::encode(kernel.kernel_config_hash)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Attest { agent, out, nonce } => {
            let nonce = decode_hex("--nonce", &nonce)?;
            let config = load_config(&agent.config)?;
            let status = runtime()?
                .block_on(config.status.read())
                .map_err(|e| e.to_string())?;
            let (mut agent, kernel) = open_agent_with(&agent, config)?;
            let bundle = agent
                .attest(&kernel, &status, &nonce)
                .map_err(|e| e.to_string())?;
            std::fs::write(&out, bundle.to_json())
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            bundle,
            profile,
            policy_hash,
            nonce,
        } => {
            let bytes = std::fs::read(&bundle)
                .map_err(|e| format!("cannot read {}: {e}", bundle.display()))?;
            let parsed = Bundle::from_json(&bytes).map_err(|e| e.to_string())?;
            let profile = Profile::load(&profile).map_err(|e| e.to_string())?;
            let expect = Expectations {
                policy_hash,
                nonce: decode_hex("--nonce", &nonce)?,
                now: None,
            };
            match verify::verify_bundle(&parsed, &profile, &expect) {
                Ok(v) => {
                    println!(
                        "OK: attestation {} of policy {} verified against profile {:?} ({})",
                        v.claims.attestation_id,
                        v.claims.policy_hash,
                        profile.name,
                        snp_cli::describe(&v.platform)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("FAILED {}: {}", e.check, e.reason);
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Snp { command } => snp_cli::run(command),
        Command::PolicyHash { policy } => {
            let hash = collect::policy_hash_of(&policy).map_err(|e| e.to_string())?;
            println!("{}", hex::encode(hash));
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    agents,
                    ledger_hosts,
                },
        } => {
            let paths = tls::pki_init(&dir, &agents, &ledger_hosts).map_err(|e| e.to_string())?;
            for path in paths.all() {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
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
    let tcti = args
        .tcti
        .clone()
        .or_else(|| config.tpm.tcti.clone())
        .unwrap_or_else(|| DEFAULT_TCTI.to_string());
    let agent = EvidenceSource::open(config, &tcti).map_err(|e| e.to_string())?;
    Ok((agent, kernel))
}

fn parse_agent(text: &str) -> Result<AgentIdentity, String> {
    let (id, tenant) = text
        .split_once(':')
        .ok_or_else(|| format!("expected ID:TENANT, got {text:?}"))?;
    AgentIdentity::new(tenant, id).map_err(|e| e.to_string())
}

fn decode_hex(flag: &str, text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|e| format!("{flag} is not hex: {e}"))
}
