//! Alerts on the spec's failure modes: a missing heartbeat (gap), an invalid attestation,
//! policy drift, a zero-retention change, and a posture the appraisal policy contraindicates
//! or warns about. An alert opens once per (tenant, agent,
//! kind), is sent
//! to the structured log and to an Alertmanager-compatible webhook (`POST
//! /api/v2/alerts`), re-sent while open (Alertmanager expires alerts it stops hearing
//! about), and resolved when the agent is healthy again (an accepted attestation) or, for
//! a security incident, by an operator. A
//! firing alert also runs the actions configured for its kind (a command getting the alert
//! as JSON on stdin, or a webhook), with a timeout and retries; each outcome is appended
//! to `actions.jsonl` in the ledger's state directory.
//!
//! Every alert is a durable incident ([`crate::incidents`]): what is open survives restarts
//! and fail-over, only the lease holder raises, resolves, notifies and runs actions, and
//! each action's outcome is kept in its incident.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::incidents::IncidentBook;
use crate::store::{LedgerStore, NewIncident, StoreError};
use attestor_net::http::HttpClient;
use attestor_net::logging::{event, limited_event, Level};
use attestor_verify::api::{ActionOutcome, ActionPhase, Incident};
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

/// An automated response to one kind of alert.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The alert kind that triggers it.
    pub on: AlertKind,
    /// A command (argv) run with the alert as JSON on stdin; exit 0 is success.
    #[serde(default)]
    pub command: Vec<String>,
    /// Or an `http://` URL the alert is POSTed to as JSON; 2xx is success.
    pub webhook: Option<String>,
    #[serde(default = "default_action_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_action_retries")]
    pub retries: u32,
}

fn default_action_timeout() -> u64 {
    10
}
fn default_action_retries() -> u32 {
    2
}

/// Where alerts go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Alertmanager base URL (`http://host:9093`); alerts go to `/api/v2/alerts`.
    pub alertmanager: Option<String>,
    /// Seconds between re-sends of open alerts (Alertmanager's resolve_timeout is 5 min).
    #[serde(default = "default_resend")]
    pub resend_seconds: u64,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

fn default_resend() -> u64 {
    60
}

enum Notice {
    /// An incident opened or resolved: its alert, and its id for the action outcomes.
    Changed(Alert, u64),
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
    /// Starts delivery on the current tokio runtime; `state_dir` receives `actions.jsonl`.
    pub fn start(config: AlertConfig, state_dir: PathBuf, book: IncidentBook) -> Arc<Alerter> {
        let (notices, queue) = mpsc::unbounded_channel();
        let store = book.store().clone();
        let alerter = Arc::new(Alerter { book, notices });
        tokio::spawn(deliver(config.clone(), state_dir, store, queue));
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
    /// entry `index` if any; notifies only when it opens.
    pub async fn fire(
        &self,
        kind: AlertKind,
        tenant: &str,
        agent_id: &str,
        summary: String,
        index: Option<u64>,
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
            Ok(Some(incident)) => self.notify(&incident),
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
            Ok(resolved) => resolved.iter().for_each(|i| self.notify(i)),
            Err(e) => failed("resolve", &e.to_string()),
        }
    }

    /// Tells the structured log, Alertmanager and the actions that an incident opened or
    /// resolved.
    pub fn notify(&self, incident: &Incident) {
        let _ = self
            .notices
            .send(Notice::Changed(alert_of(incident), incident.id));
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
    limited_event(
        Level::Error,
        "incident-failed",
        json!({"what": what, "error": error}),
    );
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
    state_dir: PathBuf,
    store: Arc<dyn LedgerStore>,
    mut queue: mpsc::UnboundedReceiver<Notice>,
) {
    let resend = Duration::from_secs(config.resend_seconds.max(1));
    while let Some(notice) = queue.recv().await {
        let alerts = match notice {
            Notice::Changed(alert, incident) => {
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
                if firing {
                    for action in config.actions.iter().filter(|a| a.on == alert.kind) {
                        let outcome = run_action(action, &alert, &state_dir).await;
                        record_outcome(&store, &alert.tenant, incident, outcome).await;
                    }
                }
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
            if let Err(e) = with_retries(2, Duration::from_secs(5), || post_json(&url, &body)).await
            {
                limited_event(
                    Level::Error,
                    "alertmanager-failed",
                    json!({"url": url, "error": e}),
                );
            }
        }
    }
}

async fn with_retries<F, Fut>(retries: u32, timeout: Duration, mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for n in 0..=retries {
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (n - 1).min(5))).await;
        }
        match tokio::time::timeout(timeout, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {timeout:?}"),
        }
    }
    Err(last)
}

/// Keeps what an action did in its incident.
async fn record_outcome(
    store: &Arc<dyn LedgerStore>,
    tenant: &str,
    incident: u64,
    outcome: ActionOutcome,
) {
    let (store, tenant) = (store.clone(), tenant.to_string());
    let kept =
        tokio::task::spawn_blocking(move || store.record_action(&tenant, incident, &outcome)).await;
    match kept {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failed("record-action", &e.to_string()),
        Err(e) => failed("record-action", &e.to_string()),
    }
}

/// Runs one action for a firing alert and records its outcome.
async fn run_action(
    action: &ActionConfig,
    alert: &Alert,
    state_dir: &std::path::Path,
) -> ActionOutcome {
    let payload = serde_json::to_vec(alert).unwrap_or_default();
    let timeout = Duration::from_secs(action.timeout_seconds.max(1));
    let attempts = AtomicU32::new(0);
    let outcome = with_retries(action.retries, timeout, || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(url) = &action.webhook {
            return post_json(url, &payload).await;
        }
        let (program, args) = action
            .command
            .split_first()
            .ok_or_else(|| "the action has neither command nor webhook".to_string())?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&payload).await.map_err(|e| e.to_string())?;
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{program} exited with {status}"))
        }
    })
    .await;
    let record = json!({
        "at_ms": attestor_verify::time::now_ms(), "alert": alert, "on": action.on.name(),
        "action": action.webhook.clone().unwrap_or_else(|| action.command.join(" ")),
        "ok": outcome.is_ok(), "error": outcome.as_ref().err(),
    });
    event(
        if outcome.is_ok() {
            Level::Info
        } else {
            Level::Error
        },
        "action-run",
        record.clone(),
    );
    let line = format!("{record}\n");
    let path = state_dir.join("actions.jsonl");
    let appended = async {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        file.write_all(line.as_bytes()).await?;
        file.sync_data().await
    };
    if let Err(e) = appended.await {
        event(
            Level::Error,
            "action-record-failed",
            json!({"error": e.to_string()}),
        );
    }
    ActionOutcome {
        hook: action.on.name().to_string(),
        phase: ActionPhase::Fire,
        action: action
            .webhook
            .clone()
            .unwrap_or_else(|| action.command.join(" ")),
        ok: outcome.is_ok(),
        attempts: attempts.load(Ordering::Relaxed),
        error: outcome.err(),
        at_ms: attestor_verify::time::now_ms(),
    }
}

/// POSTs JSON to a plain `http://` URL; 2xx is success.
async fn post_json(url: &str, body: &[u8]) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// is supported"));
    }
    let answer = HttpClient::new(url, None)
        .map_err(|e| e.to_string())?
        .request(
            hyper::Method::POST,
            uri.path_and_query().map_or("/", |p| p.as_str()),
            Some(body.to_vec()),
        )
        .await
        .map_err(|e| e.to_string())?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", answer.status))
    }
}
