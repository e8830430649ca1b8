//! PostgreSQL for the tests: the cluster `scripts/test.sh` started (its URL in
//! `ATTESTOR_TEST_POSTGRES`), or else one this test binary starts itself through
//! `scripts/postgres.sh` (stopped and removed by a watchdog once the binary exits). Each
//! test gets a fresh database of its own. No PostgreSQL means a failed test, never a
//! skipped one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The environment variable naming a running cluster (any database of it).
pub const ENV: &str = "ATTESTOR_TEST_POSTGRES";
/// The directory holding that cluster's TLS files (`scripts/postgres.sh`: `DIR/tls`).
pub const TLS_ENV: &str = "ATTESTOR_TEST_POSTGRES_TLS";

/// The test cluster's URL and TLS directory.
fn cluster_and_tls() -> &'static (String, PathBuf) {
    static CLUSTER: OnceLock<(String, PathBuf)> = OnceLock::new();
    CLUSTER.get_or_init(|| match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => {
            let tls = std::env::var(TLS_ENV).unwrap_or_else(|_| {
                panic!("{ENV} is set but {TLS_ENV} (the cluster's TLS directory) is not")
            });
            (url, PathBuf::from(tls))
        }
        _ => start_own_cluster(),
    })
}

fn cluster() -> &'static str {
    &cluster_and_tls().0
}

/// The test cluster's TLS files: `ca.pem` (issued the server certificate, for 127.0.0.1)
/// and `client.pem`/`client.key` (the role `attestor_cert`, which logs in only with them).
pub fn tls_dir() -> &'static Path {
    &cluster_and_tls().1
}

fn start_own_cluster() -> (String, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "attestor-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    // No PostgreSQL installed fails here, naming the package (or run scripts/test.sh).
    let url = postgres_script("start", &dir);
    let script = super::repo_root().join("scripts/postgres.sh");
    // Stops the cluster once this test binary has exited.
    // It keeps none of this process's descriptors (see scripts/postgres.sh).
    let watchdog = format!(
        "for fd in /proc/$$/fd/*; do fd=${{fd##*/}}; [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\" 2>/dev/null; done; \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash '{script}' stop '{dir}'",
        pid = std::process::id(),
        script = script.display(),
        dir = dir.display()
    );
    // setsid --fork returns at once, leaving the watchdog in a session of its own.
    let watched = Command::new("setsid")
        .args(["--fork", "bash", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cannot start the PostgreSQL watchdog");
    assert!(watched.success(), "the PostgreSQL watchdog did not start");
    (url, dir.join("tls"))
}

/// The `application_name` of the test helpers' own connections, so a test counting a
/// database's connections can leave them out: a helper's connection that has just closed
/// stays in `pg_stat_activity` until its server process has exited.
pub const APPLICATION_NAME: &str = "attestor-testkit";

/// Runs SQL statements on `url` (simple query protocol), from a thread of its own
/// (callers may be async tests); returns what the server sent back.
fn run(url: &str, sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config: tokio_postgres::Config = url
                .parse()
                .unwrap_or_else(|e| panic!("not a PostgreSQL URL: {url}: {e}"));
            let (client, connection) = config
                .application_name(APPLICATION_NAME)
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
            tokio::spawn(connection);
            client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        })
    })
    .join()
    .unwrap()
}

/// Runs SQL statements on `url`.
pub fn execute(url: &str, sql: &str) {
    run(url, sql);
}

/// The first column of the first row `sql` returns on `url`, as a number.
pub fn query_i64(url: &str, sql: &str) -> i64 {
    run(url, sql)
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: not a number: {e}"))
}

/// A fresh, empty database on the test cluster; returns its URL.
pub fn database() -> String {
    let cluster = cluster();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    execute(cluster, &format!("CREATE DATABASE {name}"));
    let base = cluster
        .rsplit_once('/')
        .map(|(base, _)| base)
        .expect("the test PostgreSQL URL has no database part");
    format!("{base}/{name}")
}

/// A cluster of one test's own, which it may stop and start again (a database outage)
/// without disturbing the other tests. Removed when dropped.
pub struct PrivateCluster {
    dir: PathBuf,
    /// `postgres://attestor@127.0.0.1:PORT/postgres`.
    pub url: String,
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        let dir = std::env::temp_dir().join(format!(
            "attestor-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let url = postgres_script("start", &dir);
        PrivateCluster { dir, url }
    }

    /// Stops the server at once, as a crash would; the data stays.
    pub fn pause(&self) {
        postgres_script("pause", &self.dir);
    }

    /// Starts the paused server again on the same port.
    pub fn resume(&self) {
        postgres_script("resume", &self.dir);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        postgres_script("stop", &self.dir);
    }
}

/// Runs `scripts/postgres.sh COMMAND DIR`; returns what it printed.
fn postgres_script(command: &str, dir: &Path) -> String {
    let script = super::repo_root().join("scripts/postgres.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(command)
        .arg(dir)
        .stderr(Stdio::piped())
        .output()
        .expect("cannot run bash");
    assert!(
        out.status.success(),
        "postgres.sh {command} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
