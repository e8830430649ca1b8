//! The ledger's Prometheus metrics (text exposition via `prometheus-client`).
//!
//! Label cardinality is bounded: `reason` takes one of the fixed refusal names, `state`
//! and `kind` are small enums, and the per-agent age gauge has one series per enrolled
//! agent (so it grows with the fleet, never with traffic); set `per_agent_metrics = false`
//! in the ledger's `[ops]` section for fleets where that is too many.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::store::{Health, LedgerStore, StoreError, Verdict};
use attestor_verify::ear::{Reason, Tier};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubmissionLabels {
    verdict: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    tenant: String,
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViaLabels {
    via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppraisalLabels {
    tenant: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PostureLabels {
    tenant: String,
    check: String,
    tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    tenant: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessLabels {
    witness: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessFailureLabels {
    witness: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StrangerLabels {
    reason: &'static str,
    recorded: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// How a nonce reached its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceVia {
    /// Asked for with `POST /v1/nonce`.
    Endpoint,
    /// Handed out with the answer to an accepted submission.
    Receipt,
}

/// Every metric the ledger exports.
pub struct LedgerMetrics {
    registry: Registry,
    submissions: Family<SubmissionLabels, Counter>,
    verification: Histogram,
    submit: Histogram,
    log_size: Gauge,
    checkpoint_age: FloatGauge,
    agents: Family<StateLabels, Gauge>,
    agent_age: Family<AgentLabels, FloatGauge>,
    alerts_open: Family<KindLabels, Gauge>,
    rate_limited: Family<EndpointLabels, Counter>,
    strangers: Family<StrangerLabels, Counter>,
    repeats: Counter,
    nonces_issued: Family<ViaLabels, Counter>,
    witness_lag_entries: Family<WitnessLabels, Gauge>,
    witness_lag_seconds: Family<WitnessLabels, FloatGauge>,
    witness_failures: Family<WitnessFailureLabels, Counter>,
    appraisals: Family<AppraisalLabels, Counter>,
    posture_reasons: Family<PostureLabels, Counter>,
    runtime_restarts: Family<TenantLabels, Counter>,
    late: Family<TenantLabels, Counter>,
    appraisal_policy: Family<PolicyLabels, Gauge>,
    appraisal_reloads: Family<ResultLabels, Counter>,
    per_agent: bool,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl LedgerMetrics {
    /// Registers every metric; `per_agent` enables the per-agent age gauge.
    pub fn new(per_agent: bool) -> Self {
        let (submissions, verification, submit) =
            (Family::default(), latency_histogram(), latency_histogram());
        let (log_size, checkpoint_age) = (Gauge::default(), FloatGauge::default());
        let (agents, agent_age, alerts_open) =
            (Family::default(), Family::default(), Family::default());
        let mut registry = Registry::with_prefix("attestor_ledger");
        registry.register(
            "submissions",
            "Submissions logged, by verdict and refusal reason",
            Family::clone(&submissions),
        );
        registry.register_with_unit(
            "verification",
            "Time to verify one submission",
            Unit::Seconds,
            verification.clone(),
        );
        registry.register_with_unit(
            "submit",
            "Time from a submission's arrival to its durable append",
            Unit::Seconds,
            submit.clone(),
        );
        registry.register_with_unit(
            "stage",
            "Time a submission spends in each pipeline stage (tls_accept, parse, judge, \
             appraise, append with its group commit, checkpoint per batch, answer), from the \
             process's tracing spans",
            Unit::Seconds,
            attestor_net::logging::stage_seconds(),
        );
        registry.register("log_entries", "Entries in the Merkle log", log_size.clone());
        registry.register_with_unit(
            "checkpoint_age",
            "Age of the latest signed checkpoint",
            Unit::Seconds,
            checkpoint_age.clone(),
        );
        registry.register(
            "agents",
            "Enrolled agents by state (healthy, stale, revoked)",
            Family::clone(&agents),
        );
        if per_agent {
            registry.register_with_unit(
                "agent_last_attestation_age",
                "Time since each agent's last accepted attestation (since enrollment if none)",
                Unit::Seconds,
                Family::clone(&agent_age),
            );
        }
        registry.register(
            "alerts_open",
            "Open alerts by kind",
            Family::clone(&alerts_open),
        );
        let (rate_limited, strangers, repeats) =
            (Family::default(), Family::default(), Counter::default());
        registry.register(
            "rate_limited",
            "Write requests refused with 429 by the caller's rate limit, by endpoint",
            Family::clone(&rate_limited),
        );
        registry.register(
            "unauthorised_submissions",
            "Submissions of callers that are not enrolled agents of a configured tenant, \
             refused before their body was kept; recorded=true when a summary was logged",
            Family::clone(&strangers),
        );
        registry.register(
            "repeated_submissions",
            "Re-sent submissions answered with their original entry's receipt",
            repeats.clone(),
        );
        let nonces_issued = Family::<ViaLabels, Counter>::default();
        registry.register(
            "nonces_issued",
            "Single-use nonces handed out, by how: endpoint (POST /v1/nonce) or receipt \
             (with the answer to an accepted submission)",
            Family::clone(&nonces_issued),
        );
        let (witness_lag_entries, witness_lag_seconds, witness_failures) =
            (Family::default(), Family::default(), Family::default());
        registry.register(
            "witness_lag_entries",
            "Entries the log holds beyond the newest checkpoint each witness cosigned",
            Family::clone(&witness_lag_entries),
        );
        registry.register_with_unit(
            "witness_lag",
            "Seconds since the checkpoint each witness last cosigned was signed, while \
             newer checkpoints wait for it",
            Unit::Seconds,
            Family::clone(&witness_lag_seconds),
        );
        registry.register(
            "witness_failures",
            "Checkpoints a witness did not cosign, by witness and reason (a fork or \
             conflict is a security alert)",
            Family::clone(&witness_failures),
        );
        let (appraisals, posture_reasons, runtime_restarts, appraisal_policy, appraisal_reloads) = (
            Family::default(),
            Family::default(),
            Family::default(),
            Family::default(),
            Family::default(),
        );
        registry.register(
            "appraisals",
            "EARs issued, by tenant and status (a refused submission's is contraindicated)",
            Family::clone(&appraisals),
        );
        registry.register(
            "posture_reasons",
            "Appraisal policy rules broken by accepted attestations, by tenant, check and tier",
            Family::clone(&posture_reasons),
        );
        registry.register(
            "runtime_restarts",
            "Policy kernel restarts seen (uptime went back), by tenant",
            Family::clone(&runtime_restarts),
        );
        let late = Family::<TenantLabels, Counter>::default();
        registry.register(
            "late_attestations",
            "Genuine attestations delivered after the freshness window (an outage on the \
             ledger's side or the agent's), logged as late, by tenant",
            Family::clone(&late),
        );
        registry.register(
            "appraisal_policy",
            "The appraisal policy judging each tenant (value 1)",
            Family::clone(&appraisal_policy),
        );
        registry.register(
            "appraisal_reloads",
            "Appraisal policy reloads (SIGHUP), by result",
            Family::clone(&appraisal_reloads),
        );
        LedgerMetrics {
            registry,
            appraisals,
            posture_reasons,
            runtime_restarts,
            late,
            appraisal_policy,
            appraisal_reloads,
            submissions,
            verification,
            submit,
            log_size,
            checkpoint_age,
            agents,
            agent_age,
            alerts_open,
            rate_limited,
            strangers,
            repeats,
            nonces_issued,
            witness_lag_entries,
            witness_lag_seconds,
            witness_failures,
            per_agent,
        }
    }

    /// How far `witness`'s newest cosignature trails the log.
    pub fn witness_lag(&self, witness: &str, entries: u64, seconds: f64) {
        let labels = WitnessLabels {
            witness: witness.to_string(),
        };
        self.witness_lag_entries
            .get_or_create(&labels)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.witness_lag_seconds.get_or_create(&labels).set(seconds);
    }

    /// Counts a checkpoint `witness` did not cosign.
    pub fn witness_failed(&self, witness: &str, reason: &'static str) {
        self.witness_failures
            .get_or_create(&WitnessFailureLabels {
                witness: witness.to_string(),
                reason,
            })
            .inc();
    }

    /// Counts a write refused by its caller's rate limit.
    pub fn rate_limited(&self, endpoint: &'static str) {
        self.rate_limited
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    /// Counts a submission of a caller that is not an enrolled agent.
    pub fn stranger_submission(&self, reason: &'static str, recorded: bool) {
        let recorded = if recorded { "true" } else { "false" };
        self.strangers
            .get_or_create(&StrangerLabels { reason, recorded })
            .inc();
    }

    /// Counts one EAR and, for an accepted attestation, the rules its posture broke.
    pub fn observe_appraisal(&self, tenant: &str, status: Tier, reasons: &[Reason]) {
        self.appraisals
            .get_or_create(&AppraisalLabels {
                tenant: tenant.to_string(),
                status: status.name(),
            })
            .inc();
        for reason in reasons {
            self.posture_reasons
                .get_or_create(&PostureLabels {
                    tenant: tenant.to_string(),
                    check: reason.check.clone(),
                    tier: reason.tier.name(),
                })
                .inc();
        }
    }

    /// Counts a policy kernel restart.
    pub fn runtime_restarted(&self, tenant: &str) {
        self.runtime_restarts
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc();
    }

    /// Counts a late attestation: not an alert, but an operator wants to see outages.
    pub fn late_attestation(&self, tenant: &str) {
        self.late
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc();
    }

    /// Counts an appraisal policy reload.
    pub fn appraisal_reload(&self, ok: bool) {
        let result = if ok { "reloaded" } else { "failed" };
        self.appraisal_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a nonce handed out `via` the endpoint or a receipt.
    pub fn nonce_issued(&self, via: NonceVia) {
        let via = match via {
            NonceVia::Endpoint => "endpoint",
            NonceVia::Receipt => "receipt",
        };
        self.nonces_issued.get_or_create(&ViaLabels { via }).inc();
    }

    /// Counts a re-sent submission answered from the log.
    pub fn repeated_submission(&self) {
        self.repeats.inc();
    }

    /// Counts one logged submission.
    pub fn observe_submission(
        &self,
        verdict: Verdict,
        reason: Option<&str>,
        verification: Duration,
        total: Duration,
    ) {
        self.submissions
            .get_or_create(&SubmissionLabels {
                verdict: verdict.as_str(),
                reason: reason.unwrap_or("").to_string(),
            })
            .inc();
        self.verification.observe(verification.as_secs_f64());
        self.submit.observe(total.as_secs_f64());
    }

    /// Sets the gauges from the store and the open alerts, then encodes everything.
    pub fn render(
        &self,
        store: &dyn LedgerStore,
        max_gap: Duration,
        now_ms: u64,
        open_alerts: &BTreeMap<&'static str, usize>,
        appraisal_policies: &BTreeMap<String, String>,
    ) -> Result<String, StoreError> {
        self.appraisal_policy.clear();
        for (tenant, policy) in appraisal_policies {
            self.appraisal_policy
                .get_or_create(&PolicyLabels {
                    tenant: tenant.clone(),
                    policy: policy.clone(),
                })
                .set(1);
        }
        self.log_size
            .set(i64::try_from(store.len()?).unwrap_or(i64::MAX));
        if let Some(latest) = store.latest_checkpoint()? {
            self.checkpoint_age
                .set(now_ms.saturating_sub(latest.created_at_ms) as f64 / 1000.0);
        }
        let mut counts: BTreeMap<Health, i64> = Health::ALL.map(|h| (h, 0)).into();
        self.agent_age.clear();
        for agent in store.agents(None)? {
            let age_ms = agent.silent_for_ms(now_ms);
            *counts.entry(agent.health(now_ms, max_gap)).or_default() += 1;
            if self.per_agent && !agent.revoked {
                self.agent_age
                    .get_or_create(&AgentLabels {
                        tenant: agent.tenant,
                        agent: agent.agent_id,
                    })
                    .set(age_ms as f64 / 1000.0);
            }
        }
        for (state, count) in counts {
            self.agents
                .get_or_create(&StateLabels {
                    state: state.name(),
                })
                .set(count);
        }
        self.alerts_open.clear();
        for (kind, count) in open_alerts {
            self.alerts_open
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(text)
    }
}
