//! Alerts on the spec's failure modes: a missing heartbeat (gap), an invalid attestation,
//! policy drift, a zero-retention change, a posture the appraisal policy contraindicates or
//! warns about, and the ledger's own outage. An alert opens once per (tenant, agent, kind),
//! is sent to the structured log and to an Alertmanager-compatible webhook (`POST
//! /api/v2/alerts`), re-sent while open (Alertmanager expires alerts it stops hearing
//! about), and resolved when the agent is healthy again (an accepted attestation) or, for
//! a security incident, by an operator. An alert that opens or resolves also starts the
//! actions configured for it (`crate::actions`), which run on their own and never hold up
//! delivery; each outcome is kept in the incident.
//!
//! Every alert is a durable incident ([`crate::incidents`]): what is open survives restarts
//! and fail-over, and only the lease holder raises, resolves, notifies and runs actions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::actions::{
    post_json, with_retries, ActionConfig, ActionRunner, OnOutcome, DEFAULT_MAX_CONCURRENT_ACTIONS,
};
use crate::incidents::IncidentBook;
use crate::store::{LedgerStore, NewIncident, StoreError};
use attestor_verify::api::{ActionPhase, Incident};
pub use attestor_verify::api::{Alert, AlertKind};
use tracing::Level;

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
    /// An incident opened or resolved, with the EAR of the entry that showed it, if any.
    Changed(Box<Incident>, Option<String>),
    Resend(Vec<Alert>),
}

/// The alert form of an incident (ended once resolved).
pub fn alert_of(incident: &Incident) -> Alert {
    Alert {
        kind: incident.kind,
        tenant: incident.tenant.clone(),
        agent_id: incident.agent_id.clone(),
        summary: incident.summary.clone(),
        starts_at_ms: incident.opened_at_ms,
        ends_at_ms: incident.resolved.as_ref().map(|r| r.at_ms),
    }
}

/// The ledger's alerts: a view over the store's incidents, and their delivery queue.
pub struct Alerter {
    book: IncidentBook,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Alerter {
    /// Starts delivery and the action runner on the current tokio runtime; `state_dir`
    /// receives `actions.jsonl`.
    pub fn start(config: AlertConfig, state_dir: PathBuf, book: IncidentBook) -> Arc<Alerter> {
        let (notices, queue) = mpsc::unbounded_channel();
        let store = book.store().clone();
        let alerter = Arc::new(Alerter { book, notices });
        let actions =
            ActionRunner::start(&config.actions, config.max_concurrent_actions, &state_dir);
        tokio::spawn(deliver(config.clone(), actions, store, queue));
        let weak = Arc::downgrade(&alerter);
        let resend = Duration::from_secs(config.resend_seconds.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(resend).await;
                let Some(alerter) = weak.upgrade() else {
                    return;
                };
                // Read afresh now and then, whatever this replica believes it knows.
                alerter.book.forget();
                if !alerter.book.leading() {
                    continue;
                }
                if let Err(e) = alerter.book.record_missing().await {
                    failed("record-missing", &e.to_string());
                }
                let this = alerter.clone();
                let open = tokio::task::spawn_blocking(move || this.open_alerts(None)).await;
                match open {
                    Ok(Ok(open)) if !open.is_empty() => {
                        let _ = alerter.notices.send(Notice::Resend(open));
                    }
                    Ok(Err(e)) => failed("resend", &e.to_string()),
                    _ => {}
                }
            }
        });
        alerter
    }

    /// The incidents behind the alerts.
    pub fn incidents(&self) -> &IncidentBook {
        &self.book
    }

    /// Raises an incident of `kind` for the agent (on the lease holder), shown by the log
    /// entry `index` (whose EAR the actions get) if any; notifies only when it opens.
    pub async fn fire(
        &self,
        kind: AlertKind,
        tenant: &str,
        agent_id: &str,
        summary: String,
        index: Option<u64>,
        ear: Option<String>,
    ) {
        let new = NewIncident {
            tenant: tenant.to_string(),
            agent_id: agent_id.to_string(),
            kind,
            summary,
            at_ms: attestor_verify::time::now_ms(),
            index,
        };
        match self.book.raise(new).await {
            Ok(Some(incident)) => self.notify(&incident, ear),
            Ok(None) => {}
            Err(e) => failed("raise", &e.to_string()),
        }
    }

    /// Resolves, as the ledger, the agent's open incidents of those `kinds` the ledger
    /// resolves by itself (security incidents wait for an operator).
    pub async fn resolve(&self, tenant: &str, agent_id: &str, kinds: &[AlertKind]) {
        let reason = "the agent is healthy again";
        match self
            .book
            .resolve_kinds(tenant, agent_id, kinds, reason)
            .await
        {
            Ok(resolved) => resolved.iter().for_each(|i| self.notify(i, None)),
            Err(e) => failed("resolve", &e.to_string()),
        }
    }

    /// Tells the structured log, Alertmanager and the actions that an incident opened or
    /// resolved (with the EAR of the entry that showed it, for the actions).
    pub fn notify(&self, incident: &Incident, ear: Option<String>) {
        let _ = self
            .notices
            .send(Notice::Changed(Box::new(incident.clone()), ear));
    }

    /// Unresolved alerts, of one tenant or all, from the store (blocking).
    pub fn open_alerts(&self, tenant: Option<&str>) -> Result<Vec<Alert>, StoreError> {
        Ok(self.book.unresolved(tenant)?.iter().map(alert_of).collect())
    }

    /// Unresolved alerts counted by kind name (blocking).
    pub fn open_counts(&self) -> Result<BTreeMap<&'static str, usize>, StoreError> {
        let mut counts = BTreeMap::new();
        for incident in self.book.unresolved(None)? {
            *counts.entry(incident.kind.name()).or_default() += 1;
        }
        Ok(counts)
    }
}

fn failed(what: &str, error: &str) {
    attestor_net::limited_event!(Level::ERROR, "incident-failed", what, error);
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

async fn deliver(
    config: AlertConfig,
    actions: ActionRunner,
    store: Arc<dyn LedgerStore>,
    mut queue: mpsc::UnboundedReceiver<Notice>,
) {
    let resend = Duration::from_secs(config.resend_seconds.max(1));
    while let Some(notice) = queue.recv().await {
        let alerts = match notice {
            Notice::Changed(incident, ear) => {
                let alert = alert_of(&incident);
                let firing = alert.ends_at_ms.is_none();
                attestor_net::event_at!(
                    if firing { Level::WARN } else { Level::INFO },
                    if firing {
                        "alert-firing"
                    } else {
                        "alert-resolved"
                    },
                    kind = alert.kind.name(),
                    tenant = %alert.tenant,
                    agent = %alert.agent_id,
                    summary = %alert.summary,
                );
                let phase = match firing {
                    true => ActionPhase::Fire,
                    false => ActionPhase::Resolve,
                };
                actions.dispatch(phase, &incident, ear, keep_outcome(&store, &incident));
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
                attestor_net::limited_event!(
                    Level::ERROR,
                    "alertmanager-failed",
                    url = %url,
                    error = %e,
                );
            }
        }
    }
}

/// Keeps what each action did in its incident.
fn keep_outcome(store: &Arc<dyn LedgerStore>, incident: &Incident) -> OnOutcome {
    let (store, tenant, id) = (store.clone(), incident.tenant.clone(), incident.id);
    Arc::new(move |outcome| {
        let (store, tenant) = (store.clone(), tenant.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.record_action(&tenant, id, &outcome) {
                failed("record-action", &e.to_string());
            }
        });
    })
}
