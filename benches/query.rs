//! Query latency of the embedded store at 10^6 entries: "latest attestation of an agent"
//! and "one agent's last 24 h", as the ledger's API asks them, beside a lookup of one entry
//! by index (the primary key) as the reference measured in the same run.
//!
//! How the records are made: the log is filled through the store API (`append`, batches of
//! 20,000 in one transaction each, as group commit does) with 1,000 agents of 10 tenants
//! attesting in turn every 10 minutes over 7 days (1,008 entries per agent, ~144 in any
//! 24 h), one in 50 refused. Each leaf is a 300-byte stand-in, not a real 10 KiB bundle,
//! to keep the database small (~0.6 GB at 10^6): the queries read index rows and the leaves
//! they return, so leaf size matters only through the page cache. The database lives in a
//! temporary directory removed at the end.
//!
//! Run: `cargo bench --bench query` (`ATTESTOR_BENCH_ENTRIES=N` for another size; run as a
//! test by `cargo test --all-targets`, it fills 20,000).
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

#[path = "support/mod.rs"]
mod bench_support;

use std::time::{Duration, Instant};

use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::{EntryQuery, LedgerStore, NewEntry, Verdict, MAX_PAGE};
use attestor_verify::log::merkle::leaf_hash;
use bench_support::median_ns;
use criterion::{black_box, Criterion};

const AGENTS: u64 = 1_000;
const TENANTS: u64 = 10;
const HEARTBEAT_MS: u64 = 10 * 60 * 1000;
const DAY_MS: u64 = 24 * 3600 * 1000;
const BATCH: u64 = 20_000;
const START_MS: u64 = 1_790_000_000_000;

fn agent(i: u64) -> String {
    format!("agent-{:04}", i % AGENTS)
}

fn tenant(i: u64) -> String {
    format!("tenant-{}", (i % AGENTS) % TENANTS)
}

fn fill(store: &EmbeddedStore, entries: u64) {
    let started = Instant::now();
    let mut i = 0;
    while i < entries {
        let batch: Vec<NewEntry> = (i..(i + BATCH).min(entries))
            .map(|n| {
                let leaf: Vec<u8> = format!("{n:0>300}").into_bytes();
                let refused = n % 50 == 49;
                NewEntry {
                    // Agents take turns: agent k of round r at START + r * 10 min + k ms.
                    received_at_ms: START_MS + (n / AGENTS) * HEARTBEAT_MS + n % AGENTS,
                    tenant: tenant(n),
                    agent_id: agent(n),
                    verdict: if refused {
                        Verdict::Refused
                    } else {
                        Verdict::Accepted
                    },
                    attestation_id: (!refused).then(|| format!("att-{n}")),
                    leaf_hash: leaf_hash(&leaf),
                    leaf,
                    accepted_state: None,
                    submission_hash: None,
                }
            })
            .collect();
        store.append(&batch).unwrap();
        i += BATCH;
    }
    eprintln!("filled {entries} entries in {:?}", started.elapsed());
}

fn main() {
    // `cargo test --all-targets` runs benches once without `--bench`: keep that quick.
    let testing = !std::env::args().any(|a| a == "--bench");
    let entries: u64 = std::env::var("ATTESTOR_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if testing { 20_000 } else { 1_000_000 });
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("ledger.sqlite")).unwrap();
    fill(&store, entries);
    let last_ms = START_MS + (entries / AGENTS) * HEARTBEAT_MS;

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group(format!("query_{entries}"));
    group.measurement_time(Duration::from_secs(5));
    let mut k = 0u64;
    let mut next_agent = || {
        k = (k + 7919) % AGENTS;
        k
    };
    group.bench_function("latest_attestation_of_agent", |b| {
        b.iter(|| {
            let a = next_agent();
            store
                .latest_accepted(black_box(&tenant(a)), black_box(&agent(a)))
                .unwrap()
        })
    });
    group.bench_function("agent_last_24h", |b| {
        b.iter(|| {
            let a = next_agent();
            let page = store
                .query(&EntryQuery {
                    tenant: Some(tenant(a)),
                    agent_id: Some(agent(a)),
                    from_ms: Some(last_ms.saturating_sub(DAY_MS)),
                    limit: MAX_PAGE,
                    ..EntryQuery::default()
                })
                .unwrap();
            assert!(!page.is_empty());
            page
        })
    });
    group.bench_function("ref_entry_by_index", |b| {
        b.iter(|| {
            store
                .entry(black_box(next_agent() * 997 % entries))
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();

    let group = format!("query_{entries}");
    if let Some(reference) = median_ns(&group, "ref_entry_by_index") {
        println!("\nmedians at {entries} entries, same run:");
        for name in ["latest_attestation_of_agent", "agent_last_24h"] {
            if let Some(x) = median_ns(&group, name) {
                println!(
                    "{name}: {:.3} ms vs {:.3} ms entry by index = {:.1}x (target < 10 ms)",
                    x / 1e6,
                    reference / 1e6,
                    x / reference
                );
            }
        }
    }
}
