//! The agent's Prometheus metrics. Labels are small fixed sets (`outcome`, `verdict`,
//! `op`), so one agent exports a bounded number of series.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use attestor_verify::api::Verdict;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Counters and timings of one agent.
pub struct AgentMetrics {
    registry: Registry,
    heartbeats: Family<OutcomeLabels, Counter>,
    heartbeat_duration: Histogram,
    produced: Counter,
    delivered: Family<VerdictLabels, Counter>,
    set_aside: Counter,
    tpm_calls: Family<OpLabels, Histogram, fn() -> Histogram>,
    spool_depth: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let heartbeats = Family::default();
        let heartbeat_duration = seconds_histogram();
        let produced = Counter::default();
        let delivered = Family::default();
        let set_aside = Counter::default();
        let tpm_calls: Family<OpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        let spool_depth = Gauge::default();
        let mut registry = Registry::with_prefix("attestor_agent");
        registry.register(
            "heartbeats",
            "Heartbeats by outcome (ok, failed)",
            Family::clone(&heartbeats),
        );
        registry.register_with_unit(
            "heartbeat_duration",
            "Time one heartbeat took (bounded by the heartbeat timeout)",
            Unit::Seconds,
            heartbeat_duration.clone(),
        );
        registry.register(
            "attestations_produced",
            "Attestations written to the spool",
            produced.clone(),
        );
        registry.register(
            "attestations_delivered",
            "Attestations the ledger logged, by verdict",
            Family::clone(&delivered),
        );
        registry.register(
            "attestations_set_aside",
            "Attestations the ledger will never take, kept in state_dir/rejected",
            set_aside.clone(),
        );
        registry.register_with_unit(
            "tpm_call_duration",
            "Time of TPM work by operation (attest, enroll)",
            Unit::Seconds,
            Family::clone(&tpm_calls),
        );
        registry.register(
            "spool_depth",
            "Attestations waiting for delivery",
            spool_depth.clone(),
        );
        AgentMetrics {
            registry,
            heartbeats,
            heartbeat_duration,
            produced,
            delivered,
            set_aside,
            tpm_calls,
            spool_depth,
        }
    }
}

impl AgentMetrics {
    pub fn heartbeat(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "failed" };
        self.heartbeats
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.heartbeat_duration.observe(took.as_secs_f64());
    }

    pub fn produced(&self) {
        self.produced.inc();
    }

    pub fn delivered(&self, verdict: Verdict) {
        self.delivered
            .get_or_create(&VerdictLabels {
                verdict: verdict.as_str(),
            })
            .inc();
    }

    pub fn set_aside(&self) {
        self.set_aside.inc();
    }

    pub fn tpm_call(&self, op: &'static str, took: Duration) {
        self.tpm_calls
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    pub fn set_spool_depth(&self, depth: usize) {
        self.spool_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Heartbeats with this outcome so far.
    pub fn heartbeats_with(&self, ok: bool) -> u64 {
        let outcome = if ok { "ok" } else { "failed" };
        self.heartbeats
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Attestations produced so far.
    pub fn produced_count(&self) -> u64 {
        self.produced.get()
    }

    /// Attestations the ledger logged with `verdict` so far.
    pub fn delivered_count(&self, verdict: Verdict) -> u64 {
        self.delivered
            .get_or_create(&VerdictLabels {
                verdict: verdict.as_str(),
            })
            .get()
    }

    /// Attestations waiting for delivery.
    pub fn spool_depth(&self) -> u64 {
        u64::try_from(self.spool_depth.get()).unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
