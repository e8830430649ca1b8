//! Cost of one append batch as the log grows, through the real write path:
//! `Sequencer::append` (records encoded, one durable store transaction, tree extended,
//! checkpoint signed and stored, receipts with inclusion proofs) with batches of 64
//! records of 1 KiB submissions from 1,000 enrolled agents (one in 50 refused, the rest
//! accepted with their TPM clock). The embedded store grows to 10^6 entries, PostgreSQL
//! to 10^5; at 10^4, 10^5 and 10^6 entries the bench reports the median batch cost over
//! the window of batches around that size (the last ones at the end), and whether every
//! size's figure is within 20 % of the first one's (what an append that does not depend
//! on the log's size gives). It also reports the hashes the sequencer's Merkle tree holds
//! in memory at each size, and what reading a random old entry through the sequencer costs
//! (its tile is read back from the store to check it) beside the store's read alone.
//!
//! PostgreSQL: `ATTESTOR_BENCH_POSTGRES=url` names a throw-away database (scripts/bench.sh
//! starts a cluster for it); unset, the bench starts its own with scripts/postgres.sh.
//! Sizes: `ATTESTOR_BENCH_APPEND_SQLITE=N`, `ATTESTOR_BENCH_APPEND_POSTGRES=N`.
//!
//! Run: `cargo bench --bench append` (run as a test by `cargo test --all-targets`, it
//! appends a few thousand entries to each store).
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestor_ledger::log::sequencer::{Sequencer, Submission};
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::postgres::{PostgresOptions, PostgresStore};
use attestor_ledger::store::{AcceptedState, AgentRecord, LedgerStore, Verdict};
use attestor_net::tls::AgentIdentity;
use attestor_verify::log::checkpoint::CheckpointSigner;
use attestor_verify::record::{LogRecord, RECORD_VERSION};

const ORIGIN: &str = "bench.attestor/append";
const BATCH: u64 = 64;
const SUBMISSION_BYTES: usize = 1024;
const AGENTS: u64 = 1_000;
/// Batches whose median is reported at each size.
const WINDOW: usize = 101;
/// Largest allowed ratio of a later size's median to the one at the first size.
const FLAT: f64 = 1.2;

fn agent(i: u64) -> String {
    format!("agent-{:04}", i % AGENTS)
}

/// Cheap deterministic bytes (xorshift64), so submissions differ as real ones do.
fn fill(state: &mut u64, out: &mut [u8]) {
    for chunk in out.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        for (o, b) in chunk.iter_mut().zip(state.to_le_bytes()) {
            *o = b;
        }
    }
}

fn batch(first: u64, rng: &mut u64) -> Vec<Submission> {
    (first..first + BATCH)
        .map(|n| {
            let mut submission = vec![0u8; SUBMISSION_BYTES];
            fill(rng, &mut submission);
            let refused = n % 50 == 49;
            Submission {
                record: LogRecord {
                    version: RECORD_VERSION,
                    received_at_ms: 0,
                    tenant: format!("tenant-{}", n % 10),
                    agent_id: agent(n),
                    verdict: if refused {
                        Verdict::Refused
                    } else {
                        Verdict::Accepted
                    },
                    reason: refused.then(|| "quote-signature".to_string()),
                    detail: None,
                    // Random, as the agents' UUIDs are: its index gets no append-only luck.
                    attestation_id: (!refused).then(|| uuid::Uuid::new_v4().to_string()),
                    policy_hash: Some("ab".repeat(32)),
                    submission,
                    discarded: None,
                    ear: None,
                    appraisal_policy: None,
                },
                accepted_state: (!refused).then_some(AcceptedState {
                    zero_retention: true,
                    tpm_clock: Some((1, 0, n)),
                }),
            }
        })
        .collect()
}

/// What one size's window measured.
struct Point {
    entries: u64,
    median: Duration,
    tree_hashes: usize,
}

/// What reading old entries costs once the log is full.
struct Reads {
    /// `Sequencer::entry` of a random entry: the store read and its check against the
    /// tree (which reads the entry's tile back unless cached).
    checked: Duration,
    /// `LedgerStore::entry` of a random entry alone.
    raw: Duration,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Appends `total` entries through a sequencer on `store`; the cost at each of `sizes`,
/// then the cost of reading random old entries.
fn run(name: &str, store: Arc<dyn LedgerStore>, total: u64, sizes: &[u64]) -> (Vec<Point>, Reads) {
    for i in 0..AGENTS {
        let tenant = format!("tenant-{}", i % 10);
        let who = AgentIdentity::new(&tenant, &agent(i)).expect("valid ids");
        let record = AgentRecord::enrolled(&who, vec![1; 600], vec![2; 90], 0);
        store.put_agent(&record).expect("enrol an agent");
    }
    let signer = CheckpointSigner::generate(ORIGIN).expect("checkpoint key");
    let log = Sequencer::open(store.clone(), signer, ORIGIN).expect("open the log");
    let started = Instant::now();
    let mut costs = Vec::with_capacity((total / BATCH) as usize);
    let mut held = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    while log.size() < total {
        let submissions = batch(log.size(), &mut rng);
        let t = Instant::now();
        let receipts = log.append(submissions).expect("append a batch");
        costs.push(t.elapsed());
        assert_eq!(receipts.len() as u64, BATCH);
        let size = log.size();
        if sizes.iter().any(|&s| size - BATCH < s && s <= size) {
            held.push(log.tree_hashes_held());
        }
        if size % (total / 10).max(BATCH) < BATCH {
            let recent = costs.iter().rev().take(WINDOW).copied().collect();
            eprintln!(
                "{name}: {size} entries after {:.0?}, median of the last {WINDOW} batches {:.2?}",
                started.elapsed(),
                median(recent)
            );
        }
    }
    eprintln!("{name}: {total} entries in {:.1?}", started.elapsed());
    let size = log.size();
    let mut timed = |read: &dyn Fn(u64)| {
        let samples = (0..1000)
            .map(|_| {
                let mut pick = [0u8; 8];
                fill(&mut rng, &mut pick);
                let index = u64::from_le_bytes(pick) % size;
                let t = Instant::now();
                read(index);
                t.elapsed()
            })
            .collect();
        median(samples)
    };
    let reads = Reads {
        checked: timed(&|i| {
            log.entry(i).expect("read an entry").expect("entry present");
        }),
        raw: timed(&|i| {
            store
                .entry(i)
                .expect("read an entry")
                .expect("entry present");
        }),
    };
    let points = sizes
        .iter()
        .zip(held)
        .map(|(&entries, tree_hashes)| {
            // The batch that reached `entries`, and the window around it inside the run.
            let at = (entries.div_ceil(BATCH) as usize).saturating_sub(1);
            let start = at
                .saturating_sub(WINDOW / 2)
                .min(costs.len().saturating_sub(WINDOW));
            Point {
                entries,
                median: median(costs.iter().skip(start).take(WINDOW).copied().collect()),
                tree_hashes,
            }
        })
        .collect();
    (points, reads)
}

/// The sizes reported for a run of `total` entries: the powers of ten from 10^4.
fn sizes(total: u64) -> Vec<u64> {
    let powers: Vec<u64> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&s| s <= total)
        .collect();
    if powers.is_empty() {
        vec![total]
    } else {
        powers
    }
}

fn entries_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn human(entries: u64) -> String {
    match entries {
        10_000 => "10^4".into(),
        100_000 => "10^5".into(),
        1_000_000 => "10^6".into(),
        n => n.to_string(),
    }
}

/// Prints `points` as table rows; returns the verdict line for after the table.
fn report(store: &str, points: &[Point]) -> String {
    let Some(first) = points.first() else {
        return format!("append: {store}: no measurement");
    };
    let base = first.median.as_secs_f64();
    for p in points {
        let bytes = p.tree_hashes * 32;
        println!(
            "| {store} | {} | {:.2} ms | {:.2}× | {} hashes = {:.0} KiB ({:.2} B/entry) |",
            human(p.entries),
            p.median.as_secs_f64() * 1e3,
            p.median.as_secs_f64() / base,
            p.tree_hashes,
            bytes as f64 / 1024.0,
            bytes as f64 / p.entries as f64,
        );
    }
    let worst = points
        .iter()
        .map(|p| p.median.as_secs_f64() / base)
        .fold(1.0, f64::max);
    format!(
        "append: {store}: every size within {:.0} % of {}: {} (largest ratio {worst:.2}×)",
        (FLAT - 1.0) * 100.0,
        human(first.entries),
        if worst <= FLAT { "yes" } else { "no" }
    )
}

/// A PostgreSQL cluster started by scripts/postgres.sh, stopped and removed on drop.
struct ThrowAwayCluster(PathBuf);

impl ThrowAwayCluster {
    fn start() -> (ThrowAwayCluster, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh");
        let dir = std::env::temp_dir().join(format!("attestor-bench-pg-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/postgres.sh");
        assert!(
            out.status.success(),
            "no PostgreSQL cluster could be started (set ATTESTOR_BENCH_POSTGRES or install \
             PostgreSQL): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        (ThrowAwayCluster(dir), url)
    }
}

impl Drop for ThrowAwayCluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

fn main() {
    // `cargo test --all-targets` runs benches once without `--bench`: keep that quick.
    let testing = !std::env::args().any(|a| a == "--bench");
    let started = Instant::now();
    let sqlite_total = entries_from_env(
        "ATTESTOR_BENCH_APPEND_SQLITE",
        if testing { 3_200 } else { 1_000_000 },
    );
    let postgres_total = entries_from_env(
        "ATTESTOR_BENCH_APPEND_POSTGRES",
        if testing { 3_200 } else { 100_000 },
    );

    // Once on the disk the temporary directory is on (what a ledger meets), once in memory
    // (tmpfs): the difference is the disk writing and fsyncing index pages, whose number
    // per batch grows with the indexes until every entry lands on a page of its own.
    let mut sqlite_runs = Vec::new();
    for (label, parent) in [
        ("embedded (SQLite, disk)", std::env::temp_dir()),
        ("embedded (SQLite, tmpfs)", PathBuf::from("/dev/shm")),
    ] {
        let dir = tempfile::tempdir_in(&parent).expect("temporary directory");
        let sqlite: Arc<dyn LedgerStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("ledger.db")).expect("open SQLite"));
        let name = if label.ends_with("disk)") {
            "embedded"
        } else {
            "embedded-tmpfs"
        };
        sqlite_runs.push((
            label,
            sqlite_total,
            run(name, sqlite, sqlite_total, &sizes(sqlite_total)),
        ));
    }

    let (_cluster, url) = match std::env::var("ATTESTOR_BENCH_POSTGRES") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let (cluster, url) = ThrowAwayCluster::start();
            (Some(cluster), url)
        }
    };
    let postgres: Arc<dyn LedgerStore> =
        Arc::new(PostgresStore::open(&url, PostgresOptions::default()).expect("open PostgreSQL"));
    let postgres_run = run("postgres", postgres, postgres_total, &sizes(postgres_total));

    println!(
        "\nappend: Median cost of one batch of {BATCH} records ({SUBMISSION_BYTES} B \
         submissions, durable commit, signed checkpoint, receipts) over the {WINDOW} batches \
         around each log size; the sequencer's Merkle tree in memory at that size (a full \
         in-memory tree holds ~64 B/entry)\n"
    );
    println!("| store | log size | median per batch | vs the first size | Merkle tree in memory |");
    println!("|---|---|---|---|---|");
    let mut runs = sqlite_runs;
    runs.push(("PostgreSQL", postgres_total, postgres_run));
    let verdicts: Vec<String> = runs
        .iter()
        .map(|(store, _, (points, _))| report(store, points))
        .collect();
    println!();
    for verdict in verdicts {
        println!("{verdict}");
    }
    for (store, total, (_, reads)) in &runs {
        println!(
            "append: {store}: a random entry of the {} read through the sequencer (checked \
             against the tree, its tile read back from the store): {:.0} µs; the store's read \
             alone: {:.0} µs",
            human(*total),
            reads.checked.as_secs_f64() * 1e6,
            reads.raw.as_secs_f64() * 1e6,
        );
    }
    println!("append: whole run {:.0?}", started.elapsed());
}
