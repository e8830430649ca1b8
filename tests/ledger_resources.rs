//! Resource exhaustion against a real ledger process: connections that never finish the
//! TLS handshake, authenticated clients that trickle request headers (slow loris) or sit
//! idle on a kept-alive connection, each filling every connection slot. Each attack
//! must leave the ledger serving: an honest agent is answered again once the server's
//! own bounds (handshake and header timeouts) free the slots, and the ledger still runs.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestor::agent::client::LedgerClient;
use attestor::tls;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use support::ledger::{LedgerProcess, LedgerSpec};

const ANY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Connection slots of the ledger under attack.
const SLOTS: usize = 4;
/// Far beyond the server's bounds (10 s handshake, 15 s headers): a liveness limit for
/// the honest client, not a timing assertion.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

fn ledger_with_few_slots() -> LedgerProcess {
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme"), ("mallory", "acme")],
        tenants: &[("acme", ANY_HASH)],
        ..LedgerSpec::default()
    });
    ledger.stop();
    let path = ledger.dir.path().join("ledger.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("max_connections = {SLOTS}\n{config}")).unwrap();
    ledger.restart();
    ledger
}

async fn tls_connect(ledger: &LedgerProcess, agent: &str) -> TlsStream<TcpStream> {
    let files = ledger.tls_files(agent);
    let config = tls::client_config(&files.ca, &files.cert, &files.key).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", ledger.port))
        .await
        .unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    TlsConnector::from(Arc::clone(&config))
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
