//! A real ledger process (`attestor ledger`) on a free loopback port, with a quick-start
//! PKI, so tests can kill it (-9 too), restart it on the same state, and talk to it over
//! mutual TLS exactly as agents do.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attestor_agent::attest::Agent;
use attestor_agent::client::{ClientError, LedgerClient};
use attestor_net::tls::{self, AgentIdentity, TlsFiles};
use attestor_verify::api::EnrolledResponse;

/// How long a ledger may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What a test ledger is configured with.
#[derive(Default)]
pub struct LedgerSpec<'a> {
    /// Agents to issue client certificates for, as (agent id, tenant).
    pub agents: &'a [(&'a str, &'a str)],
    /// Operators to issue client certificates for, as (name, tenant) (quick-start PKI).
    pub operators: &'a [(&'a str, &'a str)],
    /// Tenants and their expected policy hashes.
    pub tenants: &'a [(&'a str, &'a str)],
    /// Firmware profile; `None` writes one trusting the PKI's CA as EK issuer (for
    /// tests that never enrol a TPM).
    pub profile: Option<&'a Path>,
    /// Seconds of silence before an agent is stale (the default 120 when `None`).
    pub max_gap_seconds: Option<u64>,
    /// TOML appended to the config (tables such as `[alerts]`).
    pub extra: &'a str,
    /// Keys added to every tenant's table (e.g. `appraisal = "..."`).
    pub tenant_extra: &'a str,
    /// Top-level keys of the config (before its first table).
    pub top_level: &'a str,
    /// A PKI made elsewhere ([`super::pki::create`]) instead of the quick-start one;
    /// `agents` is then unused.
    pub pki: Option<&'a Path>,
    /// Records `agents` as enrolled (with a placeholder AK no evidence can match) before
    /// the ledger starts, for tests that fill the log without a TPM: their submissions are
    /// logged as refusals of an enrolled agent.
    pub enrolled: bool,
}

/// The dashboard token every test ledger is configured with.
pub const OPS_TOKEN: &str = "test-dashboard-token";

/// A ledger process and its files.
pub struct LedgerProcess {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The plain-HTTP operations listener (`/metrics`, `/dashboard`).
    pub ops_port: u16,
    /// Environment of the next (re)start, e.g. `ATTESTOR_FAILPOINT`.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

/// GETs `path_and_query` from a plain-HTTP listener on loopback: (status, body).
pub fn http_get(port: u16, path_and_query: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        tcp,
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LedgerProcess {
    pub fn start(spec: &LedgerSpec<'_>) -> LedgerProcess {
        Self::start_with(spec, "")
    }

    /// A ledger on a PostgreSQL database (`storage = url`) with a short sequencer lease.
    pub fn start_on_postgres(
        spec: &LedgerSpec<'_>,
        url: &str,
        lease_seconds: u64,
    ) -> LedgerProcess {
        Self::start_with(
            spec,
            &format!("storage = \"{url}\"\nsequencer_lease_seconds = {lease_seconds}\n"),
        )
    }

    /// Another replica of this ledger: same configuration, PKI and checkpoint key (the
    /// replicas of one log must share it), its own port and state directory.
    pub fn replica(&self) -> LedgerProcess {
        let dir = tempfile::tempdir().unwrap();
        let (port, ops_port) = (free_port(), free_port());
        super::agent::copy_dir(&self.dir.path().join("pki"), &dir.path().join("pki"));
        std::fs::write(dir.path().join("ops.token"), OPS_TOKEN).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        for shared in [
            "checkpoint.key",
            "ear.key",
            "enrollment-ca.key",
            "enrollment-ca.pem",
        ] {
            std::fs::copy(
                self.state_dir().join(shared),
                dir.path().join("state").join(shared),
            )
            .unwrap();
        }
        let config = std::fs::read_to_string(self.dir.path().join("ledger.toml"))
            .unwrap()
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", self.port),
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", self.ops_port),
                &format!("listen = \"127.0.0.1:{ops_port}\""),
            );
        // A public listener of its own too.
        let config = match config.split_once("public_listen = \"127.0.0.1:") {
            Some((before, after)) => {
                let rest = after.split_once('"').map_or("", |(_, rest)| rest);
                format!(
                    "{before}public_listen = \"127.0.0.1:{}\"{rest}",
                    free_port()
                )
            }
            None => config,
        };
        std::fs::write(dir.path().join("ledger.toml"), config).unwrap();
        let mut replica = LedgerProcess {
            dir,
            port,
            ops_port,
            env: Vec::new(),
            child: None,
        };
        replica.restart();
        replica
    }

    fn start_with(spec: &LedgerSpec<'_>, storage: &str) -> LedgerProcess {
        let dir = tempfile::tempdir().unwrap();
        let identities: Vec<AgentIdentity> = spec
            .agents
            .iter()
            .map(|(id, tenant)| AgentIdentity::new(tenant, id).unwrap())
            .chain(
                spec.operators
                    .iter()
                    .map(|(name, tenant)| AgentIdentity::operator(tenant, name).unwrap()),
            )
            .collect();
        match spec.pki {
            Some(made) => super::agent::copy_dir(made, &dir.path().join("pki")),
            None => {
                tls::pki_init(&dir.path().join("pki"), &identities, &["127.0.0.1".into()]).unwrap();
            }
        }
        let profile = match spec.profile {
            Some(path) => path.to_path_buf(),
            None => {
                let path = dir.path().join("profile.toml");
                std::fs::write(
                    &path,
                    "name = \"test\"\n[tpm]\npcr_bank = \"sha384\"\nmeasured_pcr = 13\n\
                     firmware_pcrs = {}\nek_trust_anchors = [\"pki/ca.pem\"]\n",
                )
                .unwrap();
                path
            }
        };
        let (port, ops_port) = (free_port(), free_port());
        std::fs::write(dir.path().join("ops.token"), OPS_TOKEN).unwrap();
        let mut config = format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\norigin = \"ledger.test/attestor\"\n\
             {storage}{}profile = \"{}\"\nmax_gap_seconds = {}\n[tls]\nca = \"pki/ca.pem\"\n\
             cert = \"pki/ledger.pem\"\nkey = \"pki/ledger.key\"\n[ops]\n\
             listen = \"127.0.0.1:{ops_port}\"\ndashboard_token_file = \"ops.token\"\n",
            spec.top_level,
            profile.display(),
            spec.max_gap_seconds.unwrap_or(120),
        );
        // Tests send far more than a heartbeat's share; rate limits have tests of their own.
        for (tenant, hash) in spec.tenants {
            config.push_str(&format!(
                "[tenants.{tenant}]\npolicy_hash = \"{hash}\"\nwrites_per_second = 100000.0\n\
                 write_burst = 100000\n{}",
                spec.tenant_extra
            ));
        }
        config.push_str(spec.extra);
        std::fs::write(dir.path().join("ledger.toml"), config).unwrap();
        if spec.enrolled {
            enrol_placeholders(&dir.path().join("ledger.toml"), spec.agents);
        }
        let mut ledger = LedgerProcess {
            dir,
            port,
            ops_port,
            env: Vec::new(),
            child: None,
        };
        ledger.restart();
        ledger
    }

    /// A ledger for `fixture`'s agent as `a1` of tenant `acme`: the fixture's profile and
    /// policy hash, nothing else configured.
    pub fn for_fixture(fixture: &super::agent::AgentFixture) -> LedgerProcess {
        let policy_hash = hex::encode(fixture.kernel().policy_hash);
        LedgerProcess::start(&LedgerSpec {
            agents: &[("a1", "acme")],
            tenants: &[("acme", &policy_hash)],
            profile: Some(&fixture.profile_path),
            ..LedgerSpec::default()
        })
    }

    /// Starts the process (again, on the same state and port) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the ledger is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ledger.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_attestor"))
            .args(["ledger", "--config"])
            .arg(self.dir.path().join("ledger.toml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the ledger exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the ledger did not listen; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to `limit`) for the process to exit by itself, e.g. at a crash point;
    /// returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the ledger is not running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the ledger did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let status = child.wait().unwrap();
            assert!(status.success(), "the ledger exited with {status}");
        }
    }

    /// GETs `path_and_query` from the operations listener: (status, body).
    pub fn ops_get(&self, path_and_query: &str) -> (u16, String) {
        http_get(self.ops_port, path_and_query)
    }

    /// A series' value on `/metrics`, by its full name (`name{labels}`); None when the
    /// ledger has not exported it (a counter never incremented).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.ops_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Sends SIGHUP (reload TLS files, appraisal policies, a prepared checkpoint key).
    pub fn hang_up(&self) {
        let pid = self.pid().expect("running").to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// Reloads the ledger has logged (`ledger-reloaded` events).
    pub fn reloads(&self) -> usize {
        self.log().matches("\"ledger-reloaded\"").count()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ledger.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The PKI files of one agent.
    pub fn tls_files(&self, agent_id: &str) -> TlsFiles {
        let pki = self.dir.path().join("pki");
        TlsFiles {
            ca: pki.join("ca.pem"),
            cert: pki.join(format!("agents/{agent_id}.pem")),
            key: pki.join(format!("agents/{agent_id}.key")),
        }
    }

    /// A client presenting `agent_id`'s certificate.
    pub fn client(&self, agent_id: &str) -> LedgerClient {
        let files = self.tls_files(agent_id);
        let config = tls::client_config(&files.ca, &files.cert, &files.key).unwrap();
        LedgerClient::new(&self.endpoint(), config).unwrap()
    }

    /// `attestor SUBCOMMAND --ledger … --ca … --cert … --key …` as `agent`, for the
    /// command-line tests to add their own arguments to.
    pub fn cli(&self, subcommand: &str, agent: &str) -> Command {
        let files = self.tls_files(agent);
        let mut command = Command::new(env!("CARGO_BIN_EXE_attestor"));
        command
            .args([subcommand, "--ledger", &self.endpoint(), "--ca"])
            .arg(&files.ca)
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key);
        command
    }

    /// A client presenting operator `name`'s certificate (`pki/operators/<name>.pem`).
    pub fn operator_client(&self, name: &str) -> LedgerClient {
        let pki = self.dir.path().join("pki");
        let config = tls::client_config(
            &pki.join("ca.pem"),
            &pki.join(format!("operators/{name}.pem")),
            &pki.join(format!("operators/{name}.key")),
        )
        .unwrap();
        LedgerClient::new(&self.endpoint(), config).unwrap()
    }

    /// The checkpoint verifier key the ledger published.
    pub fn verifier_key(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("checkpoint.vkey"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Records `agents` (id, tenant) as enrolled in the store the ledger config at `config`
/// names, with a placeholder AK that no evidence matches, enrolled now (so they are not
/// stale, and raise no gap, before the allowed gap passes).
fn enrol_placeholders(config: &Path, agents: &[(&str, &str)]) {
    let config = attestor_ledger::config::LedgerConfig::load(config).unwrap();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let store = attestor_ledger::service::open_store(&config).unwrap();
    let now = attestor_verify::time::now_ms();
    for (id, tenant) in agents {
        let who = AgentIdentity::new(tenant, id).unwrap();
        let record =
            attestor_ledger::store::AgentRecord::enrolled(&who, b"no EK".to_vec(), vec![0], now);
        store.put_agent(&record).unwrap();
    }
}

/// Enrols `agent`'s TPM under `client`'s identity: credential challenge, activation, proof.
pub async fn enrol_tpm(
    agent: &mut Agent,
    client: &LedgerClient,
) -> Result<EnrolledResponse, ClientError> {
    let challenge = client
        .enroll_begin(&agent.enrollment_request().unwrap())
        .await?;
    client
        .enroll_finish(&agent.activate(&challenge).unwrap())
        .await
}

/// Every entry of the caller's tenant, paging with the cursor.
pub async fn all_entries(client: &LedgerClient) -> Vec<attestor_verify::api::EntryJson> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let query = match after {
            Some(a) => format!("limit=1000&after={a}"),
            None => "limit=1000".to_string(),
        };
        let page = client.entries(&query).await.unwrap();
        all.extend(page.entries);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

/// The heartbeat of `fixture`'s agent against `ledger` as `agent_id`, every second.
pub fn attestor_config(
    fixture: &super::agent::AgentFixture,
    ledger: &LedgerProcess,
    agent_id: &str,
) -> attestor_agent::AttestorConfig {
    let kernel = fixture.kernel();
    attestor_agent::AttestorConfig {
        attestation_interval: std::time::Duration::from_secs(1),
        heartbeat_timeout: std::time::Duration::from_secs(15),
        policy_hash: hex::encode(kernel.policy_hash),
        zero_retention: kernel.zero_retention,
        ledger_endpoint: ledger.endpoint(),
        ledger_tls: ledger.tls_files(agent_id),
        agent: fixture.config(),
        tcti: fixture.tpm.tcti(),
    }
}

/// An agent daemon heartbeating in the background, as `attestor agent` runs it.
pub struct Heartbeating {
    pub metrics: std::sync::Arc<attestor_agent::metrics::AgentMetrics>,
    stopper: attestor_agent::heartbeat::Stopper,
    running: tokio::task::JoinHandle<Result<(), attestor_agent::heartbeat::HeartbeatError>>,
}

impl Heartbeating {
    /// Starts the daemon of `config` and returns once `accepted` heartbeats were accepted.
    pub async fn start(config: attestor_agent::AttestorConfig, accepted: u64) -> Self {
        let mut attestor = attestor_agent::Attestor::new(config);
        let (metrics, stopper) = (attestor.metrics(), attestor.stopper());
        let running = tokio::spawn(async move { attestor.start_heartbeat().await });
        let watched = metrics.clone();
        super::wait_until(
            Duration::from_secs(60),
            &format!("{accepted} accepted heartbeats"),
            || watched.delivered_count(attestor_ledger::store::Verdict::Accepted) >= accepted,
        )
        .await;
        Heartbeating {
            metrics,
            stopper,
            running,
        }
    }

    /// Stops the daemon cleanly; it must not have failed.
    pub async fn stop(self) {
        self.stopper.stop();
        self.running.await.unwrap().unwrap();
    }
}
