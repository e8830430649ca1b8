//! The log anyone can check: the C2SP tlog-tiles read API read by an independent client
//! (`tests/tools/tlog_tiles_reader.py`, written from the specs), and witnesses (`attestor
//! witness`) that cosign only consistent checkpoints, with `attestor query checkpoint`
//! requiring a quorum of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::ledger::{free_port, http_get, LedgerProcess, LedgerSpec};
use crate::support::output_text;
use crate::support::wait_until;
use attestor_verify::log::witness::Cosigner;

const POLICY: &str = "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB";

/// Logs `count` refused submissions (enrolled placeholder agents) from three writers.
async fn fill(ledger: &LedgerProcess, count: usize) {
    let mut writers = Vec::new();
    for w in 0..3 {
        let client = ledger.client(&format!("w{w}"));
        writers.push(tokio::spawn(async move {
            for n in (w..count).step_by(3) {
                let body = format!("{{\"writer\": {w}, \"n\": {n}}}");
                client.submit(body.as_bytes()).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Submits until `stop` is set, from one writer, through ledger restarts.
fn keep_writing(ledger: &LedgerProcess, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let client = ledger.client("w0");
    tokio::spawn(async move {
        for n in 0.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let _ = client.submit(format!("{{\"n\": {n}}}").as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn reader(url: &str, vkey: &str, extra: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/tlog_tiles_reader.py");
    Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--url", url, "--vkey", vkey])
        .args(extra)
        .output()
        .expect("/usr/bin/python3 (scripts/deps.sh installs python3-cryptography)")
}

fn spec<'a>(extra: &'a str, tenant_extra: &'a str) -> LedgerSpec<'a> {
    LedgerSpec {
        agents: &[("w0", "acme"), ("w1", "acme"), ("w2", "acme")],
        tenants: &[("acme", POLICY)],
        enrolled: true,
        extra,
        tenant_extra,
        ..LedgerSpec::default()
    }
}

/// The reader's own tests: it refuses flipped, truncated and missing tiles, wrong roots,
/// bad signatures and short quorums, so its success on our log means something.
#[test]
fn the_independent_reader_refuses_what_it_should() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/tlog_tiles_reader.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg("--self-test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_reader_rebuilds_the_root_from_our_tiles_and_checks_every_entry() {
    let public = free_port();
    let extra =
        format!("[log]\npublic_listen = \"127.0.0.1:{public}\"\ncheckpoint_key = \"ed25519\"\n");
    let ledger = LedgerProcess::start(&spec(&extra, "publish_entries = true\n"));
    let vkey = ledger.verifier_key();
    // Type 0x01 (Ed25519, as the public witness networks require): base64 `A[Q-f]`.
    let key = vkey.split('+').nth(2).unwrap();
    assert!(
        key.starts_with('A') && "QRSTUVWXYZabcdef".contains(&key[1..2]),
        "{vkey}"
    );
    // Two full level-0 tiles, a partial one and a partial level-1 tile at least.
    fill(&ledger, 600).await;
    let url = format!("http://127.0.0.1:{public}");
    let out = reader(&url, &vkey, &["--entries"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = summary["size"].as_u64().unwrap();
    assert!(size >= 600, "{summary}");
    assert_eq!(summary["entries_checked"].as_u64(), Some(size), "{summary}");
    let (_, checkpoint) = http_get(public, "/checkpoint");
    assert!(
        checkpoint.contains(summary["root"].as_str().unwrap()),
        "{checkpoint}"
    );

    // Bad paths get 400, tiles beyond the checkpoint 404, nothing panics.
    for (path, status) in [
        ("/tile/0/x000/001", 400),
        ("/tile/0/1", 400),
        ("/tile/64/000", 400),
        ("/tile/0/000.p/0", 400),
        ("/tile/0/000.p/256", 400),
        ("/tile/entries/000.p/01", 400),
        ("/tile/0/x018/x446/x744/x073/x709/x551/615", 404),
        ("/tile/0/999", 404),
        ("/tile/3/000.p/1", 404),
        ("/tile/entries/999", 404),
        ("/tiles/0/000", 404),
        ("/", 404),
    ] {
        assert_eq!(http_get(public, path).0, status, "{path}");
    }
    assert_eq!(http_get(public, "/tile/0/000").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_ecdsa_key_reads_independently_and_unpublished_entries_stay_private() {
    let public = free_port();
    let extra = format!("[log]\npublic_listen = \"127.0.0.1:{public}\"\n");
    let ledger = LedgerProcess::start(&spec(&extra, ""));
    fill(&ledger, 10).await;
    let url = format!("http://127.0.0.1:{public}");
    let out = reader(&url, &ledger.verifier_key(), &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    // The tenant did not agree to publish: hashes are public, its entries are not.
    let (status, body) = http_get(public, "/tile/entries/000.p/5");
    assert_eq!(status, 403, "{body}");
    assert!(!reader(&url, &ledger.verifier_key(), &["--entries"])
        .status
        .success());
    // Another log's key: the reader refuses the checkpoint.
    let other =
        attestor_verify::log::checkpoint::CheckpointSigner::generate("ledger.test/attestor")
            .unwrap()
            .verifier_key();
    let out = reader(&url, &other, &[]);
    assert!(
        !out.status.success() && output_text(&out).contains("signature"),
        "{}",
        output_text(&out)
    );
}

/// An `attestor witness` process with a key made before it starts (so the ledger's
/// config can name it first).
struct WitnessProcess {
    port: u16,
    dir: tempfile::TempDir,
    vkey: String,
    child: Option<Child>,
}

impl WitnessProcess {
    fn prepare(name: &str) -> WitnessProcess {
        let dir = tempfile::tempdir().unwrap();
        let cosigner = Cosigner::generate(name).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(
            dir.path().join("state/witness.key"),
            cosigner.to_pkcs8().unwrap(),
        )
        .unwrap();
        WitnessProcess {
            port: free_port(),
            dir,
            vkey: cosigner.verifier_key(),
            child: None,
        }
    }

    fn start(&mut self, log_vkey: &str) {
        let name = self.vkey.split('+').next().unwrap();
        let config = format!(
            "listen = \"127.0.0.1:{}\"\nstate_dir = \"state\"\nname = \"{name}\"\n\
             [[logs]]\norigin = \"ledger.test/attestor\"\nvkeys = [\"{log_vkey}\"]\n",
            self.port
        );
        let path: PathBuf = self.dir.path().join("witness.toml");
        std::fs::write(&path, config).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_attestor"))
                .args(["witness", "--config"])
                .arg(&path)
                .stderr(std::fs::File::create(self.dir.path().join("witness.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "witness did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `attestor query checkpoint` against `ledger` with `args`.
fn query_checkpoint(ledger: &LedgerProcess, args: &[&str]) -> (bool, String) {
    let log_key = ledger.dir.path().join("log.vkey");
    std::fs::write(&log_key, ledger.verifier_key()).unwrap();
    let out = ledger
        .cli("query", "w0")
        .arg("--log-key")
        .arg(&log_key)
        .arg("checkpoint")
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_witnesses_cosign_a_growing_log_refuse_a_fork_and_a_dead_one_breaks_the_quorum() {
    let mut w1 = WitnessProcess::prepare("witness.test/w1");
    let mut w2 = WitnessProcess::prepare("witness.test/w2");
    let public = free_port();
    let extra = format!(
        "[log]\npublic_listen = \"127.0.0.1:{public}\"\ncheckpoint_key = \"ed25519\"\n\
         [[log.witnesses]]\nurl = \"{}\"\nvkey = \"{}\"\n\
         [[log.witnesses]]\nurl = \"{}\"\nvkey = \"{}\"\n",
        w1.url(),
        w1.vkey,
        w2.url(),
        w2.vkey
    );
    let ledger = LedgerProcess::start(&spec(&extra, ""));
    let log_vkey = ledger.verifier_key();
    w1.start(&log_vkey);
    w2.start(&log_vkey);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&ledger, stop.clone());
    let (w1_vkey, w2_vkey) = (w1.vkey.clone(), w2.vkey.clone());
    let both = ["--witness", &w1_vkey, "--witness", &w2_vkey];
    // The log keeps growing; each witness follows it with consistency proofs.
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let mut last = String::new();
        wait_until(
            Duration::from_secs(30),
            "a checkpoint cosigned by both",
            || {
                let (ok, out) = query_checkpoint(&ledger, &both);
                last = out;
                ok
            },
        )
        .await;
        assert!(last.contains("cosigned by 2 of 2 witnesses"), "{last}");
        let size: u64 = last.lines().nth(1).unwrap().parse().unwrap();
        sizes.push(size);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(sizes[1] > sizes[0], "{sizes:?}");
    // The independent reader checks the public checkpoint's cosignatures too.
    let out = reader(
        &format!("http://127.0.0.1:{public}"),
        &log_vkey,
        &[
            "--witness",
            &w1.vkey,
            "--witness",
            &w2.vkey,
            "--quorum",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));

    // A fork: a second ledger with the same key but its own, different entries.
    let fork = ledger.replica();
    let stranger = fork.client("w1");
    for n in 0..3 {
        // Not enrolled on the fork: logged as a stranger's summary, if at all.
        let _ = stranger
            .submit(format!("{{\"fork\": {n}}}").as_bytes())
            .await;
    }
    wait_until(Duration::from_secs(20), "the fork refused by a witness", || {
        fork.metric("attestor_ledger_witness_failures_total{witness=\"witness.test/w1\",reason=\"conflict\"}")
            .is_some_and(|n| n > 0.0)
    })
    .await;
    assert!(fork.log().contains("witness-conflict"), "{}", fork.log());
    // No witness cosigned the fork, so it has no cosigned checkpoint to show.
    let (ok, out) = query_checkpoint(&fork, &["--witness", &w1.vkey, "--quorum", "1"]);
    assert!(!ok, "{out}");

    // One witness down: its cosignatures stop, and past the lag bound the quorum fails.
    w2.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (ok, out) = query_checkpoint(&ledger, &[&both[..], &["--max-witness-lag", "3"]].concat());
    assert!(
        !ok && out.contains("witnesses are down or lagging"),
        "{out}"
    );
    let (ok, out) = query_checkpoint(&ledger, &["--witness", &w1.vkey, "--max-witness-lag", "3"]);
    assert!(ok, "{out}");
    assert!(
        ledger
            .metric("attestor_ledger_witness_failures_total{witness=\"witness.test/w2\",reason=\"unreachable\"}")
            .is_some_and(|n| n > 0.0)
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tile_mirror_killed_while_writing_resumes_and_an_independent_reader_accepts_it() {
    let public = free_port();
    let extra = format!("[log]\npublic_listen = \"127.0.0.1:{public}\"\ntiles_dir = \"mirror\"\n");
    let mut ledger = LedgerProcess::start(&spec(&extra, "publish_entries = true\n"));
    let mirror = ledger.dir.path().join("mirror");
    fill(&ledger, 300).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&ledger, stop.clone());
    wait_until(Duration::from_secs(20), "a mirrored checkpoint", || {
        mirror.join("checkpoint").exists() && mirror.join("tile/0/000").exists()
    })
    .await;
    // kill -9 while the log grows and the mirror writes its tiles.
    ledger.kill9();
    ledger.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let mut last = String::new();
    wait_until(
        Duration::from_secs(20),
        "the mirror to reach the public checkpoint",
        || {
            let held = std::fs::read_to_string(mirror.join("checkpoint")).unwrap_or_default();
            last = http_get(public, "/checkpoint").1;
            held == last
        },
    )
    .await;
    // Served by a plain static file server, the mirror reads as the same log.
    let port = free_port();
    let mut server = Command::new("/usr/bin/python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(&mirror)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the static server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let out = reader(
        &format!("http://127.0.0.1:{port}"),
        &ledger.verifier_key(),
        &["--entries"],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", output_text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        last.contains(summary["root"].as_str().unwrap()),
        "{summary} {last}"
    );
    assert!(summary["size"].as_u64().unwrap() > 300, "{summary}");
}
