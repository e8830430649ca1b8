//! Alerts on the spec's failure modes: a missing heartbeat (gap), an invalid attestation,
//! policy drift, a zero-retention change, and a posture the appraisal policy contraindicates
//! or warns about. An alert opens once per (tenant, agent,
//! kind), is sent
//! to the structured log and to an Alertmanager-compatible webhook (`POST
//! /api/v2/alerts`), re-sent while open (Alertmanager expires alerts it stops hearing
//! about), and resolved when the agent is healthy again (an accepted attestation). An alert
//! that opens or resolves also starts the actions configured for it (`crate::actions`),
//! which run on their own and never hold up delivery.
//!
//! Open alerts live in memory: after a restart, gaps are found again from stored times,
//! and the other kinds reopen at the agent's next refused submission.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::actions::{
    post_json, with_retries, ActionConfig, ActionRunner, DEFAULT_MAX_CONCURRENT_ACTIONS,
};
use attestor_net::logging::{event, limited_event, Level};
use attestor_verify::api::{ActionPhase, Incident, IncidentChange, IncidentState};
pub use attestor_verify::api::{Alert, AlertKind};

/// The Alertmanager `alertname` of a kind.
fn alertname(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::MissingHeartbeat => "AttestorMissingHeartbeat",
        AlertKind::InvalidAttestation => "AttestorInvalidAttestation",
        AlertKind::PolicyDrift => "AttestorPolicyDrift",
        AlertKind::ZeroRetentionChange => "AttestorZeroRetentionChange",
        AlertKind::PostureContraindicated => "AttestorPostureContraindicated",
        AlertKind::PostureWarning => "AttestorPostureWarning",
        AlertKind::LedgerOutage => "AttestorLedgerOutage",
    }
}

fn severity(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::MissingHeartbeat | AlertKind::PostureWarning | AlertKind::LedgerOutage => {
            "warning"
        }
        AlertKind::InvalidAttestation
        | AlertKind::PolicyDrift
        | AlertKind::ZeroRetentionChange
        | AlertKind::PostureContraindicated => "critical",
    }
}

/// The alert a refused submission raises, by its refusal reason.
pub fn kind_for_refusal(reason: &str) -> AlertKind {
    match reason {
        "policy-hash" | "policy-hash-expired" | "kernel-config-drift" => AlertKind::PolicyDrift,
        "zero-retention-drift" => AlertKind::ZeroRetentionChange,
        _ => AlertKind::InvalidAttestation,
    }
}

/// Where alerts go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Alertmanager base URL (`http://host:9093`); alerts go to `/api/v2/alerts`.
    pub alertmanager: Option<String>,
    /// Seconds between re-sends of open alerts (Alertmanager's resolve_timeout is 5 min).
    #[serde(default = "default_resend")]
    pub resend_seconds: u64,
    /// The global `[[alerts.actions]]`, then every tenant's hooks (scoped to the tenant).
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Action attempts running at once.
    #[serde(default = "default_max_concurrent_actions")]
    pub max_concurrent_actions: usize,
}

fn default_max_concurrent_actions() -> usize {
    DEFAULT_MAX_CONCURRENT_ACTIONS
}

fn default_resend() -> u64 {
    60
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            alertmanager: None,
            resend_seconds: default_resend(),
            actions: Vec::new(),
            max_concurrent_actions: DEFAULT_MAX_CONCURRENT_ACTIONS,
        }
    }
}

enum Notice {
    /// An alert opened or resolved, with the EAR of the entry that showed it, if any.
    Changed(Alert, Option<String>),
    Resend(Vec<Alert>),
}

/// The ledger's alert book and its delivery queue.
/// Open alerts by (tenant, agent id, kind): agent ids are unique only within a tenant.
type AlertBook = BTreeMap<(String, String, AlertKind), Alert>;

pub struct Alerter {
    open: Mutex<AlertBook>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Alerter {
    /// Starts delivery and the action runner on the current tokio runtime; `state_dir`
    /// receives `actions.jsonl`.
    pub fn start(config: AlertConfig, state_dir: PathBuf) -> Arc<Alerter> {
        let (notices, queue) = mpsc::unbounded_channel();
        let alerter = Arc::new(Alerter {
            open: Mutex::default(),
            notices,
        });
        let actions =
            ActionRunner::start(&config.actions, config.max_concurrent_actions, &state_dir);
        tokio::spawn(deliver(config.clone(), actions, queue));
        let weak = Arc::downgrade(&alerter);
        let resend = Duration::from_secs(config.resend_seconds.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(resend).await;
                let Some(alerter) = weak.upgrade() else {
                    return;
                };
                let open = alerter.open_alerts(None);
                if !open.is_empty() {
                    let _ = alerter.notices.send(Notice::Resend(open));
                }
            }
        });
        alerter
    }

    fn book(&self) -> std::sync::MutexGuard<'_, AlertBook> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens an alert unless the same kind is already open for the agent.
    pub fn fire(&self, kind: AlertKind, tenant: &str, agent_id: &str, summary: String) {
        self.fire_with_ear(kind, tenant, agent_id, summary, None)
    }

    /// Like [`Alerter::fire`], with the EAR of the entry that raised it, for the actions.
    pub fn fire_with_ear(
        &self,
        kind: AlertKind,
        tenant: &str,
        agent_id: &str,
        summary: String,
        ear: Option<String>,
    ) {
        let mut book = self.book();
        let key = (tenant.to_string(), agent_id.to_string(), kind);
        if book.contains_key(&key) {
            return;
        }
        let alert = Alert {
            kind,
            tenant: tenant.to_string(),
            agent_id: agent_id.to_string(),
            summary,
            starts_at_ms: attestor_verify::time::now_ms(),
            ends_at_ms: None,
        };
        book.insert(key, alert.clone());
        let _ = self.notices.send(Notice::Changed(alert, ear));
    }

    /// Resolves the agent's open alerts of `kinds`.
    pub fn resolve(&self, tenant: &str, agent_id: &str, kinds: &[AlertKind]) {
        let mut book = self.book();
        for kind in kinds {
            let key = (tenant.to_string(), agent_id.to_string(), *kind);
            if let Some(mut alert) = book.remove(&key) {
                alert.ends_at_ms = Some(attestor_verify::time::now_ms());
                let _ = self.notices.send(Notice::Changed(alert, None));
            }
        }
    }

    /// Open alerts, of one tenant or all.
    pub fn open_alerts(&self, tenant: Option<&str>) -> Vec<Alert> {
        self.book()
            .values()
            .filter(|a| tenant.is_none_or(|t| a.tenant == t))
            .cloned()
            .collect()
    }

    /// Open alerts counted by kind name.
    pub fn open_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for (_, _, kind) in self.book().keys() {
            *counts.entry(kind.name()).or_default() += 1;
        }
        counts
    }
}

fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The Alertmanager v2 form of an alert. Open alerts carry an `endsAt` a few re-send
/// periods ahead, so Alertmanager resolves them by itself if the ledger goes away.
fn alertmanager_json(alert: &Alert, resend: Duration) -> serde_json::Value {
    let resend_ms = u64::try_from(resend.as_millis()).unwrap_or(u64::MAX);
    let ends_at = alert.ends_at_ms.unwrap_or_else(|| {
        attestor_verify::time::now_ms().saturating_add(resend_ms.saturating_mul(4))
    });
    json!({
        "labels": {
            "alertname": alertname(alert.kind),
            "severity": severity(alert.kind),
            "kind": alert.kind.name(),
            "tenant": alert.tenant,
            "agent": alert.agent_id,
            "service": "attestor",
        },
        "annotations": { "summary": alert.summary },
        "startsAt": rfc3339(alert.starts_at_ms),
        "endsAt": rfc3339(ends_at),
    })
}

/// The incident an alert stands for, until incidents are kept in the store.
fn incident_of(alert: &Alert) -> Incident {
    Incident {
        id: 0,
        kind: alert.kind,
        tenant: alert.tenant.clone(),
        agent_id: alert.agent_id.clone(),
        summary: alert.summary.clone(),
        opened_at_ms: alert.starts_at_ms,
        first_index: None,
        last_index: None,
        state: match alert.ends_at_ms {
            None => IncidentState::Open,
            Some(_) => IncidentState::Resolved,
        },
        acknowledged: None,
        resolved: alert.ends_at_ms.map(|at_ms| IncidentChange {
            by: "@ledger".to_string(),
            at_ms,
            reason: "the agent is healthy again".to_string(),
        }),
        actions: Vec::new(),
    }
}

async fn deliver(
    config: AlertConfig,
    actions: ActionRunner,
    mut queue: mpsc::UnboundedReceiver<Notice>,
) {
    let resend = Duration::from_secs(config.resend_seconds.max(1));
    while let Some(notice) = queue.recv().await {
        let alerts = match notice {
            Notice::Changed(alert, ear) => {
                let firing = alert.ends_at_ms.is_none();
                event(
                    if firing { Level::Warn } else { Level::Info },
                    if firing {
                        "alert-firing"
                    } else {
                        "alert-resolved"
                    },
                    json!({"kind": alert.kind.name(), "tenant": alert.tenant,
                           "agent": alert.agent_id, "summary": alert.summary}),
                );
                let phase = match firing {
                    true => ActionPhase::Fire,
                    false => ActionPhase::Resolve,
                };
                // Outcomes are logged and recorded in actions.jsonl by the runner.
                actions.dispatch(phase, &incident_of(&alert), ear, Arc::new(|_| {}));
                vec![alert]
            }
            Notice::Resend(alerts) => alerts,
        };
        if let Some(base) = &config.alertmanager {
            let body: Vec<_> = alerts
                .iter()
                .map(|a| alertmanager_json(a, resend))
                .collect();
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let timeout = Duration::from_secs(5);
            if let (_, Err(e)) = with_retries(2, || post_json(&url, &body, None, timeout)).await {
                limited_event(
                    Level::Error,
                    "alertmanager-failed",
                    json!({"url": url, "error": e}),
                );
            }
        }
    }
}
