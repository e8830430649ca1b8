//! Resource exhaustion against a real ledger process: connections that never finish the
//! TLS handshake (thousands from one address), authenticated clients that trickle request
//! headers (slow loris), sit idle on a kept-alive connection or send a head far too large,
//! and floods of refused connections in the log. Each attack must leave the ledger
//! serving: an honest agent is answered (at once where the attack is capped at the door,
//! else once the server's own bounds free the slots), and the ledger still runs.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestor_agent::client::LedgerClient;
use attestor_net::tls;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::ledger::{LedgerProcess, LedgerSpec};
use crate::support::wait_until;

const ANY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Connection slots of the ledger under attack.
const SLOTS: usize = 4;
/// Far beyond the server's bounds (5 s handshake, [`KEEP_ALIVE`] for a head, idle time
/// included): a liveness limit for the honest client, not a timing assertion.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// A ledger with [`SLOTS`] connection slots and the top-level config `keys`.
fn ledger_with_few_slots_and(keys: &str) -> LedgerProcess {
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme"), ("mallory", "acme")],
        tenants: &[("acme", ANY_HASH)],
        ..LedgerSpec::default()
    });
    ledger.stop();
    let path = ledger.dir.path().join("ledger.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("max_connections = {SLOTS}\n{keys}{config}")).unwrap();
    ledger.restart();
    ledger
}

/// The attacked ledgers' `keep_alive_seconds`, short so that the tests end soon.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

fn ledger_with_few_slots() -> LedgerProcess {
    ledger_with_few_slots_and(&format!("keep_alive_seconds = {}\n", KEEP_ALIVE.as_secs()))
}

async fn tls_connect(ledger: &LedgerProcess, agent: &str) -> TlsStream<TcpStream> {
    let files = ledger.tls_files(agent);
    let config = tls::client_config(&files.ca, &files.cert, &files.key).unwrap();
    tls_connect_with(ledger, &config).await
}

/// A connection with `config`, whose session cache lets a later connection resume.
async fn tls_connect_with(
    ledger: &LedgerProcess,
    config: &Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", ledger.port))
        .await
        .unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// The honest agent gets a nonce within [`RECOVERY_LIMIT`], retrying as the heartbeat does.
async fn honest_agent_is_served(ledger: &LedgerProcess) {
    let client: LedgerClient = ledger.client("a1").with_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + RECOVERY_LIMIT;
    loop {
        match client.nonce().await {
            Ok(nonce) => {
                assert_eq!(nonce.len(), 32);
                return;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the ledger did not serve an honest agent again: {e}; log:\n{}",
                    ledger.log()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Silent connections one attacking address opens and holds.
const FLOOD: usize = 3000;
/// Connections in their handshake the ledger allows one address.
const PER_ADDRESS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_that_never_handshake_are_capped_per_address() {
    // The test holds every connection open: a descriptor each.
    attestor_ledger::server::raise_open_file_limit().unwrap();
    // A handshake timeout far beyond the honest client's own: had it to wait for the
    // silent connections to time out (or to free slots), it fails.
    let ledger = ledger_with_few_slots_and(&format!(
        "handshake_timeout_seconds = 300\nmax_handshakes_per_address = {PER_ADDRESS}\n"
    ));
    let attacker: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let target: SocketAddr = ([127, 0, 0, 1], ledger.port).into();
    let mut silent = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(attacker).unwrap();
        let stream = socket.connect(target).await.unwrap();
        // Plain non-blocking sockets from here: a read is a system call, not the
        // reactor's possibly stale view of readiness.
        silent.push(stream.into_std().unwrap());
    }
    let client = ledger.client("a1").with_timeout(Duration::from_secs(10));
    let nonce = client.nonce().await;
    assert!(
        nonce.as_ref().is_ok_and(|n| n.len() == 32),
        "an honest agent was not served at once: {nonce:?}; log:\n{}",
        ledger.log()
    );
    // Every connection beyond the address's cap was closed at once (the honest one was
    // accepted after all of them).
    let closed = silent
        .iter()
        .filter(|s| {
            let mut stream: &std::net::TcpStream = s;
            matches!(stream.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert!(
        closed >= FLOOD - PER_ADDRESS,
        "only {closed} of {FLOOD} silent connections were closed"
    );
    assert!(
        ledger.log().contains("\"connection-refused\""),
        "{}",
        ledger.log()
    );
    drop(silent);
    honest_agent_is_served(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_handshake_do_not_lock_out_agents() {
    let ledger = ledger_with_few_slots();
    // Twice as many silent TCP connections as there are slots, held open throughout.
    let mut silent = Vec::new();
    for _ in 0..2 * SLOTS {
        silent.push(
            TcpStream::connect(("127.0.0.1", ledger.port))
                .await
                .unwrap(),
        );
    }
    honest_agent_is_served(&ledger).await;
    drop(silent);
    honest_agent_is_served(&ledger).await;
}

/// Sends a request whose head carries a header of `filler` bytes, all of it before
/// reading, as simple clients do (curl among them: a failed send, when the server reset
/// the connection, and it never looks for the answer). Returns whether the send
/// completed, and the answer.
async fn send_large_head(ledger: &LedgerProcess, filler: usize) -> (std::io::Result<()>, Vec<u8>) {
    let mut stream = tls_connect(ledger, "mallory").await;
    let mut head =
        b"GET /v1/agents HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nx-filler: ".to_vec();
    head.resize(head.len() + filler, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let sent = async {
        stream.write_all(&head).await?;
        stream.flush().await
    }
    .await;
    let mut answer = Vec::new();
    // A reset after the answer is no concern here: only what arrived is.
    let _ = stream.read_to_end(&mut answer).await;
    (sent, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_too_large_is_answered_431_before_the_connection_closes() {
    let ledger = ledger_with_few_slots();
    // Just over the 64 KiB bound (it arrives in one go), and far over it (the client is
    // still sending when the ledger answers).
    for filler in [80 << 10, 4 << 20] {
        let (sent, answer) = send_large_head(&ledger, filler).await;
        let shown = String::from_utf8_lossy(&answer[..answer.len().min(300)]).into_owned();
        assert!(
            sent.is_ok() && answer.starts_with(b"HTTP/1.1 431"),
            "{filler} bytes: answer {shown:?} (sending: {sent:?}); log:\n{}",
            ledger.log()
        );
    }
    // A head within the bound is served.
    let (sent, answer) = send_large_head(&ledger, 32 << 10).await;
    assert!(
        sent.is_ok() && answer.starts_with(b"HTTP/1.1 200"),
        "{answer:?}"
    );
    honest_agent_is_served(&ledger).await;
}

/// Connections refused in their handshake (no TLS at all) are each counted, but written
/// to the log at most once a second, the next line carrying how many were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_handshakes_is_logged_as_a_few_lines_with_counts() {
    const REFUSED: usize = 300;
    let ledger = ledger_with_few_slots();
    let refuse_one = || async {
        let mut tcp = TcpStream::connect(("127.0.0.1", ledger.port))
            .await
            .unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = tcp.read_to_end(&mut Vec::new()).await;
    };
    let past_the_interval = || {
        tokio::time::sleep(
            attestor_net::logging::LIMITED_EVENT_INTERVAL + Duration::from_millis(500),
        )
    };
    // The refusals logged from `start` on: lines, and lines plus those left out.
    let refusals = |start: usize| {
        let lines: Vec<serde_json::Value> = ledger.log()[start..]
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["event"] == "tls-refused")
            .collect();
        let suppressed: u64 = lines.iter().filter_map(|l| l["suppressed"].as_u64()).sum();
        (lines.len(), lines.len() as u64 + suppressed)
    };
    // A refusal written on its own, after the harness's probes: counting starts after
    // its line. (A line is written as its connection closes, not necessarily before the
    // client sees the close.)
    past_the_interval().await;
    let before = ledger.log().len();
    refuse_one().await;
    wait_until(Duration::from_secs(20), "the first refusal's line", || {
        refusals(before).0 > 0
    })
    .await;
    let start = ledger.log().len();
    for _ in 0..REFUSED {
        refuse_one().await;
    }
    // One more after the interval: its line carries the count of the burst's last ones.
    past_the_interval().await;
    refuse_one().await;
    let expected = REFUSED as u64 + 1;
    wait_until(Duration::from_secs(20), "the last refusal's line", || {
        refusals(start).1 >= expected
    })
    .await;
    let (lines, counted) = refusals(start);
    assert_eq!(
        counted,
        expected,
        "every refusal is counted once; log:\n{}",
        &ledger.log()[start..]
    );
    assert!(lines < REFUSED / 2, "{lines} lines for {REFUSED} refusals");
    honest_agent_is_served(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_headers_from_an_authenticated_client_are_cut_off() {
    let ledger = ledger_with_few_slots();
    let mut loris = Vec::new();
    for _ in 0..SLOTS {
        let mut stream = tls_connect(&ledger, "mallory").await;
        stream
            .write_all(b"GET /v1/agents HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            .await
            .unwrap();
        loris.push(stream);
    }
    // Keep trickling one header byte per connection per second, in the background,
    // for as long as the server lets them.
    let trickle = tokio::spawn(async move {
        for _ in 0..(RECOVERY_LIMIT.as_secs() + 10) {
            let mut alive = 0;
            for stream in &mut loris {
                if stream.write_all(b"x").await.is_ok() && stream.flush().await.is_ok() {
                    alive += 1;
                }
            }
            if alive == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        false
    });
    honest_agent_is_served(&ledger).await;
    assert!(
        trickle.await.unwrap(),
        "the ledger kept slow-loris connections open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_do_not_hold_slots_forever() {
    let ledger = ledger_with_few_slots();
    // Each connection makes one complete request, then sits idle with keep-alive.
    let mut idle = Vec::new();
    for _ in 0..SLOTS {
        let mut stream = tls_connect(&ledger, "mallory").await;
        stream
            .write_all(b"GET /v1/agents HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        idle.push(stream);
    }
    honest_agent_is_served(&ledger).await;
    drop(idle);
}

/// One request on `stream`; the status line of its answer, or None when the ledger closed
/// the connection instead.
async fn status_line(stream: &mut TlsStream<TcpStream>, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).await.ok()?;
    let answer = String::from_utf8_lossy(&buf[..n]);
    answer
        .lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_serves_the_next_request_until_it_is_idle_for_keep_alive() {
    let ledger = ledger_with_few_slots();
    let mut stream = tls_connect(&ledger, "a1").await;
    for _ in 0..2 {
        assert_eq!(
            status_line(&mut stream, "/v1/agents").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        tokio::time::sleep(KEEP_ALIVE / 5).await;
    }
    // Past keep-alive, idle: closed by the ledger (a liveness bound, not a timing claim).
    tokio::time::sleep(KEEP_ALIVE + Duration::from_secs(2)).await;
    assert_eq!(status_line(&mut stream, "/v1/agents").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_resumes_its_tls_session_until_the_ledger_restarts() {
    let mut ledger = ledger_with_few_slots();
    let files = ledger.tls_files("a1");
    let config = tls::client_config(&files.ca, &files.cert, &files.key).unwrap();
    let kind = |stream: &TlsStream<TcpStream>| stream.get_ref().1.handshake_kind();

    let mut first = tls_connect_with(&ledger, &config).await;
    assert_eq!(kind(&first), Some(rustls::HandshakeKind::Full));
    // The ledger's tickets arrive with its first answer.
    assert_eq!(
        status_line(&mut first, "/v1/agents").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    drop(first);
    let mut resumed = tls_connect_with(&ledger, &config).await;
    assert_eq!(kind(&resumed), Some(rustls::HandshakeKind::Resumed));
    // The resumed session still carries the agent's identity: its tenant's view.
    assert_eq!(
        status_line(&mut resumed, "/v1/agents").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    drop(resumed);

    // A restarted ledger has a new ticket key: a full handshake, certificate checked.
    ledger.stop();
    ledger.restart();
    let fresh = tls_connect_with(&ledger, &config).await;
    assert_eq!(kind(&fresh), Some(rustls::HandshakeKind::Full));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_kept_alive_connections_so_the_next_request_meets_the_new_configuration() {
    let ledger = ledger_with_few_slots_and("keep_alive_seconds = 3600\n");
    let mut stream = tls_connect(&ledger, "a1").await;
    assert_eq!(
        status_line(&mut stream, "/v1/agents").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    ledger.hang_up();
    wait_until(Duration::from_secs(30), "the reload", || {
        ledger.reloads() == 1
    })
    .await;
    // Idle far below its keep-alive, yet closed: its certificate was checked under the
    // configuration the reload replaced.
    assert_eq!(status_line(&mut stream, "/v1/agents").await, None);
    let mut fresh = tls_connect(&ledger, "a1").await;
    assert_eq!(
        status_line(&mut fresh, "/v1/agents").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}
