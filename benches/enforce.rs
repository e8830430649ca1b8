//! The enforcement point's decisions: in memory, with a view of 100,000 agents of 100
//! tenants (a third of them healthy, then stale, warning, drifted, refused, revoked in
//! turn), one decision (`decide`) and a whole `/authz/nginx` answer (identity header
//! parsed, page built), beside a lookup of one key in a 100,000-entry `HashMap` as the
//! reference measured in the same run.
//!
//! With `ATTESTOR_BENCH_AUTHZ=HOST:PORT` and `ATTESTOR_BENCH_AUTHZ_IDENTITY=spiffe://...`
//! it measures instead a running ledger's `/authz/nginx` over HTTP/1.1 keep-alive
//! (`ATTESTOR_BENCH_AUTHZ_CONNECTIONS`, default 8; `ATTESTOR_BENCH_AUTHZ_SECONDS`, default
//! 10) and prints `enforce-http:` lines: decisions per second, p50 and p99 latency.
//! scripts/bench.sh pins that ledger to one core (`taskset`) and this client to another.
//!
//! Run: `cargo bench --bench enforce` (run as a test by `cargo test --all-targets`, with
//! 1,000 agents).
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

#[path = "support/mod.rs"]
mod bench_support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use attestor_ledger::enforce::{EnforcementPolicy, Enforcer};
use attestor_ledger::store::{AgentRecord, AgentStatus, NewEntry, StoredEntry, Verdict};
use attestor_net::ops::Asked;
use attestor_verify::identity::AgentIdentity;
use attestor_verify::record::LogRecord;
use bench_support::median_ns;
use criterion::{black_box, Criterion};

const TENANTS: u64 = 100;
const NOW_MS: u64 = 1_790_000_000_000;

fn identity(i: u64) -> AgentIdentity {
    AgentIdentity::new(&format!("tenant-{}", i % TENANTS), &format!("agent-{i}")).unwrap()
}

/// Agent `i`'s latest entry: healthy for most, the other states in turn.
fn latest(i: u64, who: &AgentIdentity) -> StoredEntry {
    let (verdict, reason) = match i % 6 {
        3 => (Verdict::Refused, Some("policy-hash")),
        4 => (Verdict::Refused, Some("quote-signature")),
        _ => (Verdict::Accepted, None),
    };
    let received_at_ms = if i % 6 == 1 {
        NOW_MS - 3_600_000
    } else {
        NOW_MS - 1_000
    };
    let record = LogRecord {
        version: 2,
        received_at_ms,
        tenant: who.tenant.clone(),
        agent_id: who.agent_id.clone(),
        verdict,
        reason: reason.map(str::to_string),
        detail: None,
        attestation_id: None,
        policy_hash: None,
        submission: Vec::new(),
        discarded: None,
        ear: None,
        appraisal_policy: None,
    };
    StoredEntry {
        index: i,
        entry: NewEntry {
            received_at_ms,
            tenant: who.tenant.clone(),
            agent_id: who.agent_id.clone(),
            verdict,
            attestation_id: None,
            leaf: record.to_leaf().unwrap(),
            leaf_hash: [0; 32],
            accepted_state: None,
            submission_hash: None,
        },
    }
}

fn populated(agents: u64) -> (Enforcer, Vec<AgentIdentity>) {
    let identities: Vec<AgentIdentity> = (0..agents).map(identity).collect();
    let policies: BTreeMap<String, EnforcementPolicy> = (0..TENANTS)
        .map(|t| (format!("tenant-{t}"), EnforcementPolicy::default()))
        .collect();
    let enforcer = Enforcer::new(&policies, Duration::from_secs(120));
    let records: Vec<AgentStatus> = identities
        .iter()
        .enumerate()
        .map(|(i, who)| {
            let mut record = AgentRecord::enrolled(who, vec![1], vec![2], NOW_MS - 86_400_000);
            record.revoked = i % 6 == 5;
            AgentStatus::from(&record)
        })
        .collect();
    enforcer.load_agents(&records);
    let entries: Vec<StoredEntry> = identities
        .iter()
        .enumerate()
        .map(|(i, who)| latest(i as u64, who))
        .collect();
    enforcer.fold(&entries);
    (enforcer, identities)
}

fn main() {
    if let (Ok(address), Ok(who)) = (
        std::env::var("ATTESTOR_BENCH_AUTHZ"),
        std::env::var("ATTESTOR_BENCH_AUTHZ_IDENTITY"),
    ) {
        return http_load(&address, &who);
    }
    // `cargo test --all-targets` runs benches once without `--bench`: keep that quick.
    let testing = !std::env::args().any(|a| a == "--bench");
    let agents: u64 = if testing { 1_000 } else { 100_000 };
    let started = Instant::now();
    let (enforcer, identities) = populated(agents);
    eprintln!("view of {agents} agents built in {:?}", started.elapsed());
    let reference: HashMap<String, u64> = identities
        .iter()
        .enumerate()
        .map(|(i, who)| (who.to_uri(), i as u64))
        .collect();
    let uris: Vec<String> = identities.iter().map(AgentIdentity::to_uri).collect();

    let mut c = Criterion::default().configure_from_args();
    let group_name = format!("enforce_{agents}");
    let mut group = c.benchmark_group(&group_name);
    let mut k = 0usize;
    let mut next = || {
        k = (k + 7919) % identities.len();
        k
    };
    // Current for the whole run, as the tail keeps it.
    enforcer.refreshed_at(Instant::now() + Duration::from_secs(3600));
    group.bench_function("decide", |b| {
        b.iter(|| enforcer.decide(Some(black_box(&identities[next()])), NOW_MS, Instant::now()))
    });
    group.bench_function("nginx_answer", |b| {
        b.iter(|| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(
                "x-attestor-identity",
                hyper::header::HeaderValue::from_str(&uris[next()]).unwrap(),
            );
            let asked = Asked {
                method: hyper::Method::GET,
                path: "/authz/nginx".into(),
                query: None,
                headers,
            };
            attestor_ledger::enforce::answer(&enforcer, black_box(&asked))
        })
    });
    group.bench_function("ref_hashmap_lookup", |b| {
        b.iter(|| reference.get(black_box(&uris[next()])).copied())
    });
    group.finish();
    c.final_summary();

    if let Some(reference) = median_ns(&group_name, "ref_hashmap_lookup") {
        println!("\nmedians with {agents} agents, same run:");
        for name in ["decide", "nginx_answer"] {
            if let Some(x) = median_ns(&group_name, name) {
                println!(
                    "{name}: {x:.0} ns = {:.0} decisions/s on one core vs {reference:.0} ns \
                     HashMap lookup = {:.1}x",
                    1e9 / x,
                    x / reference
                );
            }
        }
    }
}

/// Closed-loop load on `/authz/nginx` from several keep-alive connections.
fn http_load(address: &str, who: &str) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let connections = env("ATTESTOR_BENCH_AUTHZ_CONNECTIONS", 8);
    let seconds = env("ATTESTOR_BENCH_AUTHZ_SECONDS", 10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let request = format!(
        "GET /authz/nginx HTTP/1.1\r\nHost: {address}\r\nX-Attestor-Identity: {who}\r\n\r\n"
    );
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (address, request) = (address.to_string(), request.clone());
            std::thread::spawn(move || {
                let tcp = TcpStream::connect(&address).unwrap();
                tcp.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(tcp.try_clone().unwrap());
                let mut writer = tcp;
                let (mut latencies, mut statuses) = (Vec::new(), BTreeMap::<u16, u64>::new());
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    writer.write_all(request.as_bytes()).unwrap();
                    let status = read_answer(&mut reader);
                    latencies.push(sent.elapsed());
                    *statuses.entry(status).or_default() += 1;
                }
                (latencies, statuses)
            })
        })
        .collect();
    let (mut latencies, mut statuses) = (Vec::new(), BTreeMap::<u16, u64>::new());
    for worker in workers {
        let (l, s) = worker.join().unwrap();
        latencies.extend(l);
        for (status, n) in s {
            *statuses.entry(status).or_default() += n;
        }
    }
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    println!(
        "enforce-http: {} decisions in {seconds} s over {connections} connections = {:.0}/s, \
         p50 {:.3} ms, p99 {:.3} ms, statuses {statuses:?}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        at(0.5),
        at(0.99)
    );
}

/// Reads one response; returns its status.
fn read_answer(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status
}
