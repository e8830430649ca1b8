//! Test harness shared by the workspace's test binaries: a private swtpm per test
//! ([`Swtpm`]), PostgreSQL ([`postgres`]), an operator's own PKI ([`pki`]), and waiting.
//!
//! * Every [`Swtpm`] is a separate swtpm process on its own free TCP ports (P and P+1: the
//!   swtpm TCTI assumes the control channel is on P+1), with its own
//!   state directory, killed (by pid) when the value is dropped. One swtpm per test: the
//!   swtpm TCTI opens a connection per command, so two users of one swtpm interleave.
//! * The TPM state is provisioned once per test binary and per CA (`swtpm_setup
//!   --create-ek-cert --pcr-banks sha256,sha384`) into a template; each instance starts from
//!   a copy of it. Copies share the EK (and EK certificate); everything else (PCRs, keys
//!   created later) is independent.
//! * The EK certificates are issued by a project-owned CA created for this test binary
//!   ([`Swtpm::ca_root_pem`] → [`Swtpm::ca_intermediate_pem`] → EK certificate), never by the
//!   machine-wide `/var/lib/swtpm-localca`. [`Swtpm::start_with_own_ca`] uses a second,
//!   unrelated CA, for "EK certificate from an untrusted CA" tests.
//! * [`provision`] turns one into a TPM set up like real hardware (banks, EK certificates).
//! * Missing tools make the test panic (fail), naming the tool and `scripts/test.sh`.
#![forbid(unsafe_code)]

pub mod pki;
pub mod postgres;
pub mod provision;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long swtpm may take to write its pid file and answer its first command.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a killed swtpm may take to exit before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Start attempts on fresh ports, for when another process grabs a port we picked.
const START_ATTEMPTS: usize = 5;

/// The repository's top directory (examples, fixtures, scripts, firmware profiles).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `done` every 100 ms until it holds, failing the test after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`wait_for`], for async tests: polls `done` every 100 ms without blocking the runtime.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Panics unless `tool` is an executable on PATH; returns its path. Tests fail, not skip.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "required tool `{tool}` was not found on PATH; install swtpm, swtpm-tools and \
         tpm2-tools (scripts/test.sh installs and checks them) and rerun"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A project-owned EK CA plus a TPM state provisioned with an EK certificate it issued.
struct Ca {
    dir: PathBuf,
    template_state: PathBuf,
}

impl Ca {
    fn root_pem(&self) -> PathBuf {
        self.dir.join("swtpm-localca-rootca-cert.pem")
    }
    fn intermediate_pem(&self) -> PathBuf {
        self.dir.join("issuercert.pem")
    }

    /// Creates the CA (through swtpm_localca, driven by swtpm_setup) and the template state.
    fn create(name: &str) -> Ca {
        let swtpm_setup = require_tool("swtpm_setup");
        let localca = require_tool("swtpm_localca");
        require_tool("swtpm");
        let base = scratch_root().join(format!(
            "{}-{}-{}",
            std::process::id(),
            name,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let dir = base.join("ca");
        let template_state = base.join("state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&template_state).unwrap();
        let localca_conf = dir.join("swtpm-localca.conf");
        std::fs::write(
            &localca_conf,
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\n\
                 certserial = {d}/certserial\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let setup_conf = dir.join("swtpm_setup.conf");
        std::fs::write(
            &setup_conf,
            format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = /etc/swtpm-localca.options\n\
                 active_pcr_banks = sha256,sha384\n",
                localca.display(),
                localca_conf.display()
            ),
        )
        .unwrap();
        let out = Command::new(swtpm_setup)
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&template_state)
            .args([
                "--create-ek-cert",
                "--pcr-banks",
                "sha256,sha384",
                "--overwrite",
            ])
            .arg("--config")
            .arg(&setup_conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swtpm_setup failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = Ca {
            dir,
            template_state,
        };
        for f in [ca.root_pem(), ca.intermediate_pem(), ca.permall()] {
            assert!(f.is_file(), "swtpm_setup did not produce {}", f.display());
        }
        ca
    }

    fn permall(&self) -> PathBuf {
        self.template_state.join("tpm2-00.permall")
    }
}

/// Where CAs and templates live: under cargo's per-target temp dir, one folder per test
/// process. Folders of processes that are gone are removed on the way.
fn scratch_root() -> PathBuf {
    let root = std::env::temp_dir().join("attestor-swtpm-harness");
    std::fs::create_dir_all(&root).unwrap();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !process_alive(pid) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    root
}

fn default_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::create("ca"))
}

fn other_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::create("other-ca"))
}

/// A free pair (P, P+1): the swtpm TCTI always talks to the control channel on P+1.
/// Pairs handed out by this process are remembered, so parallel tests never share one;
/// another process can still take a port before swtpm binds it, hence the start retries.
fn reserve_port_pair() -> (u16, u16) {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let Some(ctrl) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", ctrl)).is_err() {
            continue;
        }
        let mut taken = taken.lock().unwrap();
        if !taken.contains(&port) && !taken.contains(&ctrl) {
            taken.insert(port);
            taken.insert(ctrl);
            return (port, ctrl);
        }
    }
}

/// Quiets the TSS C library's stderr unless the caller asked for logs. Done before the
/// first swtpm exists, hence before any test can be inside the TSS reading the environment.
fn quiet_tss_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TSS2_LOG").is_none() {
            std::env::set_var("TSS2_LOG", "all+none");
        }
    });
}

/// A running swtpm with a private copy of a provisioned TPM state.
pub struct Swtpm {
    state: tempfile::TempDir,
    ca: &'static Ca,
    port: u16,
    ctrl_port: u16,
    pid: Option<u32>,
}

impl Swtpm {
    /// A fresh TPM whose EK certificate chains to [`Swtpm::ca_root_pem`].
    pub fn start() -> Swtpm {
        Swtpm::start_from(default_ca())
    }

    /// A fresh TPM whose EK certificate comes from a second, unrelated CA (shared by all
    /// instances started this way in this test binary).
    pub fn start_with_own_ca() -> Swtpm {
        Swtpm::start_from(other_ca())
    }

    /// A never-provisioned TPM: no EK, no EK certificate, swtpm's default PCR banks. For
    /// tests of how callers fail on an unprovisioned TPM; the CA paths still point at the
    /// default CA, which issued nothing here.
    pub fn start_blank() -> Swtpm {
        Swtpm::launch_state(default_ca(), None)
    }

    fn start_from(ca: &'static Ca) -> Swtpm {
        Swtpm::launch_state(ca, Some(ca.permall()))
    }

    fn launch_state(ca: &'static Ca, permall: Option<PathBuf>) -> Swtpm {
        quiet_tss_logs();
        require_tool("swtpm");
        let state = tempfile::Builder::new()
            .prefix("swtpm-state-")
            .tempdir()
            .unwrap();
        if let Some(permall) = permall {
            std::fs::copy(permall, state.path().join("tpm2-00.permall")).unwrap();
        }
        let mut tpm = Swtpm {
            state,
            ca,
            port: 0,
            ctrl_port: 0,
            pid: None,
        };
        tpm.launch_on_fresh_ports();
        tpm
    }

    /// TCTI string for tss-esapi and tpm2-tools (`TPM2TOOLS_TCTI`). Ask again after
    /// [`Swtpm::restart`]: the ports may change.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM command port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The absolute state directory (holds `tpm2-00.permall`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Root certificate (PEM) of the CA that issued this TPM's EK certificate chain.
    pub fn ca_root_pem(&self) -> PathBuf {
        self.ca.root_pem()
    }

    /// Intermediate (issuing) certificate (PEM) that signed the EK certificate.
    pub fn ca_intermediate_pem(&self) -> PathBuf {
        self.ca.intermediate_pem()
    }

    /// Kills swtpm and starts it again on the same state: a TPM reset (PCRs back to zero,
    /// loaded objects and sessions gone, persistent state kept). Reopen TPM connections.
    pub fn restart(&mut self) {
        self.stop();
        if self.launch(self.port, self.ctrl_port).is_err() {
            self.launch_on_fresh_ports();
        }
    }

    fn launch_on_fresh_ports(&mut self) {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let (port, ctrl) = reserve_port_pair();
            match self.launch(port, ctrl) {
                Ok(()) => return,
                Err(e) => errors.push(e),
            }
        }
        panic!("swtpm did not start after {START_ATTEMPTS} attempts: {errors:#?}");
    }

    fn launch(&mut self, port: u16, ctrl_port: u16) -> Result<(), String> {
        let dir = self.state.path();
        let pid_file = dir.join("swtpm.pid");
        let _ = std::fs::remove_file(&pid_file);
        let out = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
            .args([
                "--flags",
                "not-need-init,startup-clear",
                "--daemon",
                "--pid",
            ])
            .arg(format!("file={}", pid_file.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run swtpm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "swtpm on ports {port}/{ctrl_port} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let pid = loop {
            let parsed = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = parsed {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(format!("swtpm wrote no pid file at {}", pid_file.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.pid = Some(pid);
        self.port = port;
        self.ctrl_port = ctrl_port;
        loop {
            match get_random_rc(port) {
                Ok(0) => return Ok(()),
                Ok(rc) => {
                    self.stop();
                    return Err(format!("swtpm answers TPM2_GetRandom with {rc:#x}"));
                }
                Err(e) if Instant::now() > deadline => {
                    self.stop();
                    return Err(format!("swtpm on port {port} does not answer: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        signal(pid, "TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while process_alive(pid) {
            if Instant::now() > deadline {
                signal(pid, "KILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        while process_alive(pid) && Instant::now() < deadline + STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Alive means present and not a zombie (a daemon's parent may never reap it here).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Sends TPM2_GetRandom(8) and returns the response code: proves the TPM is started and
/// not in failure mode (a relative state dir gives 0x101).
fn get_random_rc(port: u16) -> std::io::Result<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8])?;
    let mut header = [0u8; 10];
    s.read_exact(&mut header)?;
    Ok(u32::from_be_bytes([
        header[6], header[7], header[8], header[9],
    ]))
}
