//! Ledger ingest under load: N agents (default 200), each on its own mutual-TLS connection,
//! submit K attestation bundles each to a ledger process on loopback, as fast as the ledger
//! answers. Every submission is fully verified (EK chain, AK, sealed-key certification,
//! DSSE signature, quote, PCRs, event log, continuity, policy) and durably appended
//! (fsync before the answer, group commit). Prints throughput, latency percentiles and the
//! ledger's CPU use beside the crypto-bound ceiling measured in the same run: the
//! signature verifications one submission needs, timed alone, spread over every core.
//! Those are two ECDSA P-384 verifications (envelope, quote), timed with the key parsed
//! once: the sealed-key certification is verified once per exact bytes (every agent here
//! shares one AK and one sealed key, so the cache holds one entry). The EK certificate path is validated once per distinct
//! EK certificate and profile (see `certchain::ChainCache`), so it is not a per-submission
//! cost; its time is printed beside for reference.
//!
//! The bundles come from one swtpm: all agents are enrolled with its AK and submit the
//! same K bundles (with offline nonces, in TPM-clock order), since the ledger keeps
//! continuity per agent. A real fleet's heartbeats carry the ledger nonce the previous
//! answer handed out instead, still one request each.
//!
//! By default every agent submits as soon as its previous answer arrives (the ledger's
//! maximum throughput; latency is then queueing). With `--rate R` the agents together
//! submit R per second on a fixed schedule, to see latency below saturation.
//!
//! Run: `cargo bench --bench ingest [-- --agents N --rounds K --rate R]`.
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use attestor_ledger::store::Verdict;
use attestor_ledger::submission::OFFLINE_NONCE_PREFIX;
use attestor_verify::bundle::Bundle;
use attestor_verify::dsse;
use attestor_verify::evidence::certchain;
use attestor_verify::evidence::tpm::wire;
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P384_SHA384_ASN1};
use support::agent::AgentFixture;
use support::ledger::{LedgerProcess, LedgerSpec};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or(default, |w| w[1].parse().expect("a number"))
}

/// Mean time of `op` over `n` runs.
fn time_of(n: u32, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed() / n
}

/// CPU time (user + system) a process has used so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // /proc counts in USER_HZ ticks, which Linux fixes at 100 per second.
    Duration::from_millis(ticks * 10)
}

/// Timed alone with aws-lc-rs: one ECDSA P-384 verification (three per submission:
/// sealed-key certification, DSSE envelope, quote), and the EK certificate path.
fn crypto_per_submission(bundle: &Bundle, fixture: &AgentFixture) -> (Duration, Duration) {
    let ev = support::agent::tpm_ev(bundle);
    let key = wire::parse_public(&ev.sealed_key.public)
        .unwrap()
        .sec1_uncompressed()
        .unwrap();
    let pae = dsse::pae(&bundle.envelope.payload_type, &bundle.envelope.payload);
    let sig = &bundle.envelope.signatures[0].sig;
    let key = ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &key).unwrap();
    let p384 = time_of(3000, || key.verify_sig(&pae, sig).unwrap());
    let profile = fixture.profile.tpm.as_ref().unwrap();
    let mut pool = ev.ek_certificates[1..].to_vec();
    pool.extend(profile.ek_intermediates.iter().cloned());
    let now = SystemTime::now();
    let chain = time_of(1000, || {
        certchain::verify_chain(
            &ev.ek_certificates[0],
            &pool,
            &profile.ek_trust_anchors,
            now,
        )
        .unwrap();
    });
    (p384, chain)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn main() {
    let agents = arg("--agents", 200);
    let rounds = arg("--rounds", 10);
    let rate = arg("--rate", 0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let fixture = AgentFixture::new();
    let kernel = fixture.kernel();
    let status = fixture.status();
    let mut agent = fixture.agent();
    let bundles: Vec<Bundle> = (0..rounds)
        .map(|k| {
            let nonce = [OFFLINE_NONCE_PREFIX, &(k as u64).to_be_bytes()].concat();
            agent.attest(&kernel, &status, &nonce).unwrap()
        })
        .collect();
    let (p384, chain) = crypto_per_submission(&bundles[0], &fixture);
    // A steady-state TPM submission: the quote and the envelope. The EK path and the
    // sealed key's certification are checked once per agent (cached).
    let crypto = p384 * 2;
    let ceiling = cores as f64 / crypto.as_secs_f64();

    let ids: Vec<String> = (0..agents).map(|i| format!("bench-{i}")).collect();
    let spec_agents: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "bench")).collect();
    let policy_hash = hex::encode(kernel.policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &spec_agents,
        tenants: &[("bench", &policy_hash)],
        profile: Some(&fixture.profile_path),
        ..LedgerSpec::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<_> = ids.iter().map(|id| Arc::new(ledger.client(id))).collect();
    runtime.block_on(async {
        for client in &clients {
            support::ledger::enrol_tpm(&mut agent, client)
                .await
                .unwrap();
            // Opens the connection, as a running agent has.
            client.nonce().await.unwrap();
        }
    });
    drop(agent);

    let payloads: Arc<Vec<Vec<u8>>> = Arc::new(bundles.iter().map(Bundle::to_json).collect());
    let pid = ledger.pid().unwrap();
    let cpu_before = cpu_of(pid);
    let started = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let (client, payloads) = (client.clone(), payloads.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::with_capacity(payloads.len());
                    for (k, payload) in payloads.iter().enumerate() {
                        if rate > 0 {
                            let slot = (k * agents + i) as f64 / rate as f64;
                            let due = started + Duration::from_secs_f64(slot);
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let sent = Instant::now();
                        let response = client.submit(payload).await.unwrap();
                        mine.push(sent.elapsed());
                        assert_eq!(response.verdict, Verdict::Accepted, "{:?}", response.detail);
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    let cpu = cpu_of(pid).saturating_sub(cpu_before);

    let mut sorted = latencies;
    sorted.sort();
    let total = sorted.len();
    let throughput = total as f64 / elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pacing = match rate {
        0 => "closed loop".to_string(),
        r => format!("paced at {r}/s"),
    };
    println!("\ningest: {agents} mTLS agents x {rounds} bundles = {total} verified, durably appended submissions in {:.2} s on {cores} cores, {pacing}", elapsed.as_secs_f64());
    println!("| throughput /s | p50 ms | p99 ms | max ms | ledger CPU (cores) | ledger CPU per submission | crypto per submission | ceiling /s | share of ceiling |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {throughput:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.3} ms | {:.3} ms (2 x P-384 {:.3}; EK path, once per EK: {:.3}) | {ceiling:.0} | {:.0} % |",
        ms(percentile(&sorted, 0.50)),
        ms(percentile(&sorted, 0.99)),
        ms(sorted[total - 1]),
        cpu.as_secs_f64() / elapsed.as_secs_f64(),
        ms(cpu) / total as f64,
        ms(crypto),
        ms(p384),
        ms(chain),
        100.0 * throughput / ceiling,
    );
}
