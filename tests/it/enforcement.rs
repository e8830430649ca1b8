//! The enforcement point with a real nginx (`deploy/nginx/attestor-authz.conf`,
//! `auth_request`) in front of a backend, and Envoy's ext_authz protocol over HTTP: a
//! healthy agent's traffic passes, is throttled once the agent is silent, blocked after
//! drift, and passes again after the new policy is approved; undecidable requests get the
//! tenant's fail mode. A follower on the same PostgreSQL store answers from the log the
//! sequencer writes, and still does once the sequencer is killed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::agent::AgentFixture;
use crate::support::ledger::{enrol_tpm, free_port, LedgerProcess, LedgerSpec};
use crate::support::{repo_root, wait_for};
use attestor_agent::client::LedgerClient;
use attestor_ledger::enforce::OUTDATED_AFTER;
use attestor_verify::api::{SubmitResponse, Verdict};

/// What the shipped file names, replaced by the test's own addresses.
const SHIPPED_LISTEN: &str = "listen 127.0.0.1:8080;";
const SHIPPED_LEDGER: &str = "server 127.0.0.1:9465;";
const SHIPPED_BACKEND: &str = "proxy_pass http://127.0.0.1:8081;";
const SHIPPED_IDENTITY: &str = "spiffe://attestor/tenant/acme/agent/web-1";

/// Seconds of silence after which the test ledger's agents are stale.
const MAX_GAP_SECONDS: u64 = 4;

fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .expect("nginx is required: install the Debian package `nginx` (scripts/deps.sh does)")
}

/// An nginx of its own: prefix, config, pid, logs and temp files in a temporary directory.
struct Nginx {
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// Serves the shipped configuration once per (port, identity) and a backend answering
    /// 200 "backend" on `backend_port`, the shipped file's ledger being `ops_port`.
    fn start(ops_port: u16, backend_port: u16, fronts: &[(u16, &str)]) -> Nginx {
        let shipped =
            std::fs::read_to_string(repo_root().join("deploy/nginx/attestor-authz.conf")).unwrap();
        for named in [
            SHIPPED_LISTEN,
            SHIPPED_LEDGER,
            SHIPPED_BACKEND,
            SHIPPED_IDENTITY,
        ] {
            assert!(
                shipped.contains(named),
                "the shipped file no longer has {named}"
            );
        }
        let server_at = shipped.find("\nserver {").expect("a server block");
        let (upstream, server) = shipped.split_at(server_at);
        let mut http = upstream.replace(SHIPPED_LEDGER, &format!("server 127.0.0.1:{ops_port};"));
        for (port, identity) in fronts {
            http.push_str(
                &server
                    .replace(SHIPPED_LISTEN, &format!("listen 127.0.0.1:{port};"))
                    .replace(
                        SHIPPED_BACKEND,
                        &format!("proxy_pass http://127.0.0.1:{backend_port};"),
                    )
                    .replace(SHIPPED_IDENTITY, identity),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        // Workers run as `nobody` when the master is root: they must reach the temp paths.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = format!(
            "pid nginx.pid;\nerror_log error.log info;\nworker_processes 1;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log access.log;\n client_body_temp_path tmp/body;\n\
             proxy_temp_path tmp/proxy;\n fastcgi_temp_path tmp/fastcgi;\n\
             uwsgi_temp_path tmp/uwsgi;\n scgi_temp_path tmp/scgi;\n\
             server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 \"backend\\n\"; }} }}\n\
             {http}\n}}\n"
        );
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { dir, child };
        for (port, _) in fronts {
            wait_for(Duration::from_secs(20), "nginx to listen", || {
                if let Some(status) = nginx.child.try_wait().unwrap() {
                    let mut stderr = String::new();
                    let _ = nginx
                        .child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut stderr);
                    panic!("nginx exited with {status}: {stderr}{}", nginx.error_log());
                }
                TcpStream::connect(("127.0.0.1", *port)).is_ok()
            });
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, headers (lowercase names), body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(text.as_bytes()).unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

pub(crate) fn identity(tenant: &str, agent: &str) -> String {
    format!("spiffe://attestor/tenant/{tenant}/agent/{agent}")
}

async fn submit(fixture: &AgentFixture, client: &LedgerClient) -> SubmitResponse {
    let nonce = client.nonce().await.unwrap();
    let bundle = fixture.attest_with_nonce(&nonce);
    client.submit(&bundle.to_json()).await.unwrap()
}

/// Attests (accepted) until nginx lets the request through: the enforcer folds the
/// entry within its tail period, well inside the allowed gap that each attestation renews.
async fn attest_until_admitted(fixture: &AgentFixture, client: &LedgerClient, port: u16) -> Answer {
    for _ in 0..60 {
        let response = submit(fixture, client).await;
        assert_eq!(response.verdict, Verdict::Accepted, "{response:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = request(port, "GET", "/", &[]);
        if answer.status == 200 {
            return answer;
        }
    }
    panic!("nginx never let a healthy agent's traffic through");
}

/// Polls nginx until it answers `status`.
async fn until_status(port: u16, status: u16, what: &str) -> Answer {
    for _ in 0..300 {
        let answer = request(port, "GET", "/", &[]);
        if answer.status == status {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nginx never answered {status} ({what})");
}

fn example_policy() -> String {
    std::fs::read_to_string(repo_root().join("examples/appraisal.toml")).unwrap()
}

fn hang_up(ledger: &LedgerProcess) {
    let before = ledger.reloads();
    ledger.hang_up();
    wait_for(Duration::from_secs(20), "the reload", || {
        ledger.reloads() > before
    });
}

/// Envoy's ext_authz HTTP service: the original method and path under the prefix.
pub(crate) fn envoy(ledger: &LedgerProcess, method: &str, who: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = who
        .map(|w| ("x-attestor-identity", w))
        .into_iter()
        .collect();
    request(
        ledger.ops_port,
        method,
        "/authz/envoy/api/orders?id=7",
        &headers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_admits_throttles_blocks_and_admits_again_as_the_agent_attests() {
    let fixture = AgentFixture::new();
    let approved_hash = hex::encode(fixture.kernel().policy_hash);
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("appraisal.toml");
    std::fs::write(&policy, example_policy()).unwrap();
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &approved_hash), ("lenient", &approved_hash)],
        profile: Some(&fixture.profile_path),
        max_gap_seconds: Some(MAX_GAP_SECONDS),
        tenant_extra: &format!("appraisal = \"{}\"\n", policy.display()),
        extra: "[tenants.acme.enforcement]\nretry_after_seconds = 7\n\
                [tenants.lenient.enforcement]\nfail = \"open\"\n",
        ..LedgerSpec::default()
    });
    let client = ledger.client("a1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    let (front, ghost_front, lenient_front, backend) =
        (free_port(), free_port(), free_port(), free_port());
    let a1 = identity("acme", "a1");
    let nginx = Nginx::start(
        ledger.ops_port,
        backend,
        &[
            (front, &a1),
            (ghost_front, &identity("acme", "ghost")),
            (lenient_front, &identity("lenient", "ghost")),
        ],
    );

    // Healthy: through to the backend; Envoy's service says 200 for any method and path.
    let admitted = attest_until_admitted(&fixture, &client, front).await;
    assert_eq!(admitted.body, "backend\n");
    let envoy_allowed = envoy(&ledger, "POST", Some(&a1));
    assert_eq!(envoy_allowed.status, 200, "{}", envoy_allowed.body);
    assert_eq!(envoy_allowed.header("x-attestor-decision"), Some("allow"));

    // Silent past the allowed gap: throttled, with the tenant's Retry-After.
    let throttled = until_status(front, 429, "a silent agent").await;
    assert_eq!(throttled.header("retry-after"), Some("7"));
    assert_eq!(throttled.header("x-attestor-decision"), Some("throttle"));
    assert_eq!(throttled.header("x-attestor-reason"), Some("stale"));
    let envoy_throttled = envoy(&ledger, "GET", Some(&a1));
    assert_eq!(envoy_throttled.status, 429);
    assert_eq!(envoy_throttled.header("retry-after"), Some("7"));
    assert_eq!(
        envoy_throttled.header("x-attestor-decision"),
        Some("throttle")
    );

    // Drift: the agent now runs a policy nobody approved; its attestation is refused.
    fixture.reseal_with_policy(
        &std::fs::read_to_string(fixture.policy_file())
            .unwrap()
            .replace("max_epsilon = 3.0", "max_epsilon = 2.5"),
    );
    let new_hash = hex::encode(fixture.kernel().policy_hash);
    assert_ne!(new_hash, approved_hash);
    let refused = submit(&fixture, &client).await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("policy-hash"),
        "{refused:?}"
    );
    let blocked = until_status(front, 403, "a drifted agent").await;
    assert_eq!(blocked.header("x-attestor-decision"), Some("block"));
    let envoy_blocked = envoy(&ledger, "DELETE", Some(&a1));
    assert_eq!(envoy_blocked.status, 403);
    assert_eq!(envoy_blocked.header("x-attestor-decision"), Some("block"));
    assert_eq!(envoy_blocked.header("x-attestor-reason"), Some("drift"));
    assert_eq!(envoy_blocked.header("retry-after"), None);

    // Re-approval (the appraisal policy approves the new hash, reloaded on SIGHUP), then
    // an accepted attestation: admitted again.
    std::fs::write(
        &policy,
        format!(
            "{}\n[[policy_hashes]]\nsha256 = \"{new_hash}\"\nexpires = 2099-01-01T00:00:00Z\n",
            example_policy().replace("revision = 1", "revision = 2")
        ),
    )
    .unwrap();
    hang_up(&ledger);
    let readmitted = attest_until_admitted(&fixture, &client, front).await;
    assert_eq!(readmitted.body, "backend\n");

    // Undecidable: an unknown agent of a fail-closed tenant is blocked, of a fail-open one
    // admitted; no identity, a malformed one or an unknown tenant is always closed.
    assert_eq!(request(ghost_front, "GET", "/", &[]).status, 403);
    let open = request(lenient_front, "GET", "/", &[]);
    assert_eq!((open.status, open.body.as_str()), (200, "backend\n"));
    for who in [
        None,
        Some("spiffe://attestor/agent/a1"),
        Some(&*identity("nobody", "a1")),
    ] {
        let closed = envoy(&ledger, "GET", who);
        assert_eq!(closed.status, 403, "{who:?}");
        assert_eq!(closed.header("x-attestor-decision"), Some("block"));
        let headers: Vec<(&str, &str)> = who
            .map(|w| ("x-attestor-identity", w))
            .into_iter()
            .collect();
        assert_eq!(
            request(ledger.ops_port, "GET", "/authz/nginx", &headers).status,
            403
        );
    }
    assert_eq!(
        envoy(&ledger, "GET", Some(&identity("acme", "ghost"))).status,
        403
    );
    assert_eq!(
        envoy(&ledger, "PUT", Some(&identity("lenient", "ghost"))).status,
        200
    );
    // Any method is served under /authz/ only: the rest of the listener stays GET-only.
    assert_eq!(
        request(ledger.ops_port, "POST", "/metrics", &[]).status,
        405
    );

    // The ledger gone: nginx refuses rather than admits.
    ledger.kill9();
    let unreachable = request(front, "GET", "/", &[]);
    assert_eq!(unreachable.status, 500, "{}", nginx.error_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_from_the_shared_log_and_keeps_answering_after_the_sequencer_dies() {
    let url = crate::support::postgres::database();
    let spec = LedgerSpec {
        agents: &[("a1", "t")],
        tenants: &[("t", &"00".repeat(32))],
        enrolled: true,
        ..LedgerSpec::default()
    };
    let mut sequencer = LedgerProcess::start_on_postgres(&spec, &url, 2);
    let follower = sequencer.replica();
    let a1 = identity("t", "a1");
    let reason = |ledger: &LedgerProcess| {
        let answer = envoy(ledger, "GET", Some(&a1));
        (
            answer.status,
            answer.header("x-attestor-reason").map(str::to_string),
        )
    };
    let stale = (429, Some("stale".to_string()));
    wait_for(
        Duration::from_secs(20),
        "both views of the enrolled agent",
        || reason(&sequencer) == stale && reason(&follower) == stale,
    );

    // Written through the sequencer, seen by the follower from the shared store.
    let refused = sequencer
        .client("a1")
        .submit(b"not a bundle")
        .await
        .unwrap();
    assert_eq!(refused.verdict, Verdict::Refused);
    let blocked = (403, Some("contraindicated".to_string()));
    wait_for(Duration::from_secs(20), "the follower to block", || {
        reason(&follower) == blocked
    });

    // The sequencer gone: the follower's view still comes from the store, current.
    sequencer.kill9();
    std::thread::sleep(OUTDATED_AFTER + Duration::from_secs(1));
    assert_eq!(reason(&follower), blocked);
}
