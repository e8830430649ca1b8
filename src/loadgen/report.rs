//! Counting heartbeats and sampling the ledger process; the report as text or JSON.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{LoadgenArgs, Pace};

/// How often the ledger's resident memory is sampled during the run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// What one heartbeat came to.
pub(super) struct Outcome {
    /// `None`: accepted; else the error kind (refusal reason, HTTP status, transport).
    error: Option<String>,
    /// Submission round trip and the whole heartbeat from when it was due; absent when no
    /// answer to the submission came.
    latency: Option<(Duration, Duration)>,
}

impl Outcome {
    /// The ledger answered the submission (accepted when `refusal` is `None`).
    pub(super) fn answered(
        refusal: Option<String>,
        submit: Duration,
        heartbeat: Duration,
    ) -> Outcome {
        Outcome {
            error: refusal,
            latency: Some((submit, heartbeat)),
        }
    }

    pub(super) fn failed(kind: String) -> Outcome {
        Outcome {
            error: Some(kind),
            latency: None,
        }
    }
}

#[derive(Default)]
struct Tally {
    heartbeats: u64,
    accepted: u64,
    answered: u64,
    errors: BTreeMap<String, u64>,
    submit: Vec<Duration>,
    heartbeat: Vec<Duration>,
    rss_peak_kib: Option<u64>,
}

/// Collects outcomes from every agent task, and samples the ledger's memory meanwhile.
#[derive(Clone)]
pub(super) struct Recorder {
    tally: Arc<Mutex<Tally>>,
    ledger: Option<(u32, Option<Duration>, Option<u64>)>,
    sampler: Arc<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    /// Starts counting (and, given the ledger's pid, sampling its CPU and memory).
    pub(super) fn start(ledger_pid: Option<u32>) -> Recorder {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let sampled = tally.clone();
        let sampler = tokio::spawn(async move {
            let Some(pid) = ledger_pid else { return };
            loop {
                if let Some(rss) = rss_kib(pid) {
                    let mut t = sampled.lock().unwrap_or_else(|p| p.into_inner());
                    t.rss_peak_kib = Some(t.rss_peak_kib.unwrap_or(0).max(rss));
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
        });
        Recorder {
            tally,
            ledger: ledger_pid.map(|pid| (pid, cpu_time(pid), rss_kib(pid))),
            sampler: Arc::new(sampler),
        }
    }

    pub(super) fn record(&self, outcome: Outcome) {
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.heartbeats += 1;
        if let Some((submit, heartbeat)) = outcome.latency {
            t.answered += 1;
            t.submit.push(submit);
            t.heartbeat.push(heartbeat);
        }
        match outcome.error {
            None => t.accepted += 1,
            Some(kind) => *t.errors.entry(kind).or_default() += 1,
        }
    }

    /// The report, once every agent has stopped.
    pub(super) fn finish(
        self,
        args: &LoadgenArgs,
        pace: Pace,
        enrollment: Duration,
        elapsed: Duration,
    ) -> Report {
        self.sampler.abort();
        let mut t = std::mem::take(&mut *self.tally.lock().unwrap_or_else(|p| p.into_inner()));
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        let ledger = self.ledger.map(|(pid, cpu_before, rss_start)| {
            let cpu = match (cpu_before, cpu_time(pid)) {
                (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
                _ => None,
            };
            let rss_end = rss_kib(pid);
            LedgerUsage {
                pid,
                cpu_seconds: cpu,
                cpu_cores: cpu.map(|c| c / secs),
                cpu_ms_per_submission: cpu
                    .filter(|_| t.answered > 0)
                    .map(|c| 1e3 * c / t.answered as f64),
                rss_start_kib: rss_start,
                rss_end_kib: rss_end,
                rss_peak_kib: t.rss_peak_kib.max(rss_end),
            }
        });
        Report {
            simulated: "TPM only (software model in attestor loadgen); everything else is the real agent protocol",
            agents: args.agents,
            mode: match pace {
                Pace::Rate(_) => "paced",
                Pace::Max => "closed-loop",
            },
            target_rate_per_s: match pace {
                Pace::Rate(r) => Some(r),
                Pace::Max => None,
            },
            duration_s: args.duration,
            elapsed_s: secs,
            enrollment_s: enrollment.as_secs_f64(),
            heartbeats: t.heartbeats,
            answered: t.answered,
            accepted: t.accepted,
            not_accepted: t.heartbeats - t.accepted,
            throughput_per_s: t.answered as f64 / secs,
            accepted_per_s: t.accepted as f64 / secs,
            submit_latency_ms: Percentiles::of(&mut t.submit),
            heartbeat_latency_ms: Percentiles::of(&mut t.heartbeat),
            errors_by_kind: t.errors,
            ledger,
        }
    }
}

/// p50/p95/p99/max in milliseconds.
#[derive(Debug, Serialize)]
pub(super) struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: &mut [Duration]) -> Option<Percentiles> {
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = ((samples.len() - 1) as f64 * p).round() as usize;
            samples[rank].as_secs_f64() * 1e3
        };
        (!samples.is_empty()).then(|| Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// The ledger process's CPU time and memory over the run.
#[derive(Debug, Serialize)]
pub(super) struct LedgerUsage {
    pid: u32,
    cpu_seconds: Option<f64>,
    /// CPU time over wall time: 1.0 is one core busy.
    cpu_cores: Option<f64>,
    cpu_ms_per_submission: Option<f64>,
    rss_start_kib: Option<u64>,
    rss_end_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
}

/// The outcome of a load test.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    simulated: &'static str,
    agents: usize,
    mode: &'static str,
    target_rate_per_s: Option<f64>,
    duration_s: f64,
    elapsed_s: f64,
    enrollment_s: f64,
    /// Heartbeats started (nonce taken, asked for or tried).
    heartbeats: u64,
    /// Submissions the ledger answered with a verdict (accepted or refused).
    answered: u64,
    accepted: u64,
    not_accepted: u64,
    /// Answered submissions per second.
    throughput_per_s: f64,
    accepted_per_s: f64,
    /// Round trip of the submission alone.
    submit_latency_ms: Option<Percentiles>,
    /// From when the heartbeat was due to its answer: nonce, attestation, submission and
    /// any delay because the agent's previous heartbeat was late (no coordinated omission).
    heartbeat_latency_ms: Option<Percentiles>,
    /// Refusal reasons (`refused:REASON`), HTTP errors (`submit:http-STATUS:CODE`),
    /// transport failures (`submit:transport:timeout`), per heartbeat.
    errors_by_kind: BTreeMap<String, u64>,
    ledger: Option<LedgerUsage>,
}

impl Report {
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub(super) fn to_text(&self) -> String {
        let mut out = format!(
            "attestor loadgen: {} agents, {}{}, {:.1} s (enrollment took {:.1} s)\n\
             only the TPM is simulated; the ledger ran its real verification pipeline\n",
            self.agents,
            self.mode,
            self.target_rate_per_s
                .map_or(String::new(), |r| format!(" at {r} submissions/s")),
            self.elapsed_s,
            self.enrollment_s,
        );
        out.push_str(&format!(
            "heartbeats {}  answered {}  accepted {}  not accepted {}\n\
             throughput {:.1}/s answered, {:.1}/s accepted\n",
            self.heartbeats,
            self.answered,
            self.accepted,
            self.not_accepted,
            self.throughput_per_s,
            self.accepted_per_s
        ));
        for (label, p) in [
            ("submit latency   ", &self.submit_latency_ms),
            ("heartbeat latency", &self.heartbeat_latency_ms),
        ] {
            if let Some(p) = p {
                out.push_str(&format!(
                    "{label} ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}\n",
                    p.p50, p.p95, p.p99, p.max
                ));
            }
        }
        for (kind, n) in &self.errors_by_kind {
            out.push_str(&format!("error {kind}: {n}\n"));
        }
        if let Some(l) = &self.ledger {
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"))
            };
            let kib = |v: Option<u64>| {
                v.map_or("n/a".to_string(), |v| format!("{:.1}", v as f64 / 1024.0))
            };
            out.push_str(&format!(
                "ledger pid {}: CPU {} s = {} cores, {} ms per submission; RSS MiB start {} end {} peak {}\n",
                l.pid,
                opt(l.cpu_seconds, 2),
                opt(l.cpu_cores, 2),
                opt(l.cpu_ms_per_submission, 3),
                kib(l.rss_start_kib),
                kib(l.rss_end_kib),
                kib(l.rss_peak_kib),
            ));
        }
        out
    }
}

/// User + system CPU time of a process, from /proc/PID/stat.
pub(super) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = after.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // /proc counts in USER_HZ ticks, which Linux fixes at 100 per second.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident memory of a process in KiB, from /proc/PID/status.
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
