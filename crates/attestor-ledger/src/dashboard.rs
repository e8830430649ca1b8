//! The ledger's operations pages: `/metrics`, `/healthz`, and `/dashboard`, a
//! server-rendered page of the fleet's security posture (refreshes itself every 10 s).
//! Everything shown comes from the log; claims are read from accepted entries, whose
//! evidence was verified on the way in. Every string from the log is HTML-escaped.

use std::fmt::Write;
use std::sync::Arc;

use hyper::StatusCode;

use crate::service::{Ledger, ServiceError};
use crate::store::{
    EntryQuery, Incident, IncidentQuery, IncidentState, IncidentStates, StoredEntry, Verdict,
};
use attestor_net::ops::{metrics_page, Asked, Page};
use attestor_verify::claims::Claims;
use attestor_verify::ear::{self, Ear};
use attestor_verify::record::LogRecord;

/// Agents shown on the dashboard at most (the metrics cover all).
const MAX_AGENTS_SHOWN: usize = 200;
/// Unresolved incidents shown, and as many of the latest resolved ones.
const MAX_INCIDENTS_SHOWN: u32 = 50;
/// Points in each agent's request trend.
const TREND_POINTS: usize = 30;

/// Answers one request of the ledger's operations listener.
pub async fn ops_page(ledger: Arc<Ledger>, token: Option<Arc<str>>, asked: Asked) -> Page {
    match asked.path.as_str() {
        "/healthz" => Page::ok("text/plain; charset=utf-8", "ok\n"),
        // Public keys: relying parties that get EARs passed on verify them with it.
        "/v1/ear/jwks" => match serde_json::to_string(&ledger.ear_jwks()) {
            Ok(json) => Page::ok("application/json", json),
            Err(e) => Page::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        "/metrics" => match ledger.metrics_text().await {
            Ok(text) => metrics_page(&asked, text),
            Err(e) => Page::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
        "/dashboard" => {
            if let Some(expected) = &token {
                if !token_matches(&asked, expected) {
                    return Page::error(
                        StatusCode::UNAUTHORIZED,
                        "the dashboard needs its read-only token (Authorization: Bearer, or ?token=)",
                    );
                }
            }
            let rendering = tokio::task::spawn_blocking(move || render(&ledger)).await;
            match rendering {
                Ok(Ok(html)) => Page::ok("text/html; charset=utf-8", html),
                Ok(Err(e)) => Page::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                Err(e) => Page::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        _ => Page::error(
            StatusCode::NOT_FOUND,
            "not here: /metrics, /healthz, /dashboard, /v1/ear/jwks",
        ),
    }
}

fn token_matches(asked: &Asked, expected: &str) -> bool {
    let bearer = asked
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = asked
        .query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    let given = bearer.or(query).unwrap_or_default();
    // Constant time in the token's length: a timing probe learns nothing.
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn age(now_ms: u64, then_ms: Option<u64>) -> String {
    match then_ms {
        None => "never".into(),
        Some(t) => {
            let s = now_ms.saturating_sub(t) / 1000;
            match s {
                0..=119 => format!("{s} s"),
                120..=7199 => format!("{} min", s / 60),
                _ => format!("{} h", s / 3600),
            }
        }
    }
}

/// The verified claims an accepted entry carries.
fn claims_of(entry: &StoredEntry) -> Option<Claims> {
    LogRecord::from_leaf(&entry.entry.leaf)
        .ok()?
        .accepted_claims()
}

/// The EAR the ledger logged with an entry (its own token, so read without the key).
fn ear_of(entry: &StoredEntry) -> Option<Ear> {
    let record = LogRecord::from_leaf(&entry.entry.leaf).ok()?;
    ear::claims_unverified(record.ear.as_deref()?).ok()
}

/// The EAR status and its trust vector.
fn ear_cell(ear: Option<&Ear>) -> String {
    let Some(appraisal) = ear.and_then(Ear::appraisal) else {
        return "<small>-</small>".into();
    };
    let status = appraisal.ear_status.name();
    let vector: Vec<String> = appraisal
        .ear_trustworthiness_vector
        .entries()
        .iter()
        .map(|(facet, value)| format!("{facet} {value}"))
        .collect();
    let reasons: Vec<String> = appraisal
        .attestor
        .reasons
        .iter()
        .map(|r| escape(&r.check))
        .collect();
    format!(
        "<span class=\"ear {status}\">{status}</span> <small>{}</small><br><small>{}</small>",
        reasons.join(", "),
        escape(&vector.join(", "))
    )
}

/// The three posture flags.
fn posture_cell(claims: &Claims) -> String {
    [
        ("isolation", claims.tenant_isolation),
        ("egress firewall", claims.egress_firewall_enabled),
        ("PII detection", claims.pii_detection_enabled),
    ]
    .iter()
    .map(|(name, on)| {
        let (class, mark) = if *on { ("good", "on") } else { ("bad", "OFF") };
        format!("<span class=\"{class}\">{name} {mark}</span>")
    })
    .collect::<Vec<_>>()
    .join("<br>")
}

/// Slots of the heartbeat timeline: 24 h in quarter hours.
const TIMELINE_SLOTS: u64 = 96;
const TIMELINE_SLOT_MS: u64 = 900_000;

/// The agent's last 24 h as an SVG strip: per quarter hour, refused (a refusal
/// logged), accepted, missing (enrolled, nothing logged) or before enrollment.
fn timeline(now_ms: u64, enrolled_at_ms: u64, times: &[(u64, Verdict)]) -> String {
    let start = now_ms.saturating_sub(TIMELINE_SLOTS * TIMELINE_SLOT_MS);
    let mut slots = vec![(0u32, 0u32); TIMELINE_SLOTS as usize];
    for (at, verdict) in times {
        let Some(slot) = at
            .checked_sub(start)
            .map(|d| (d / TIMELINE_SLOT_MS).min(TIMELINE_SLOTS - 1) as usize)
        else {
            continue;
        };
        match verdict {
            Verdict::Accepted => slots[slot].0 += 1,
            Verdict::Refused => slots[slot].1 += 1,
            // A late attestation proves the past, not a heartbeat in its slot.
            Verdict::Late => {}
        }
    }
    let mut svg = format!(
        "<svg class=\"timeline\" width=\"{}\" height=\"14\" role=\"img\" \
         aria-label=\"heartbeats, last 24 h\">",
        TIMELINE_SLOTS * 3
    );
    for (i, (accepted, refused)) in slots.iter().enumerate() {
        let slot_start = start + i as u64 * TIMELINE_SLOT_MS;
        let class = if *refused > 0 {
            "refused"
        } else if *accepted > 0 {
            "accepted"
        } else if slot_start + TIMELINE_SLOT_MS <= enrolled_at_ms {
            continue;
        } else {
            "missing"
        };
        let _ = write!(
            svg,
            "<rect class=\"{class}\" x=\"{}\" y=\"0\" width=\"3\" height=\"14\">\
             <title>{} min ago: {accepted} accepted, {refused} refused</title></rect>",
            i * 3,
            now_ms.saturating_sub(slot_start) / 60_000,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A bar of `used` against `limit`, red when over.
fn bar(used: f64, limit: f64) -> String {
    let share = if limit > 0.0 { used / limit } else { 1.0 };
    let width = (share.clamp(0.0, 1.0) * 100.0).round();
    let class = if share > 1.0 {
        "over"
    } else if share > 0.8 {
        "near"
    } else {
        "ok"
    };
    format!(
        "<div class=\"bar\" title=\"{used:.3} of {limit:.3}\"><span class=\"{class}\" \
         style=\"width:{width}%\"></span></div><small>{used:.2} / {limit:.2}</small>"
    )
}

/// An inline SVG line of blocked/total requests per attestation.
fn trend(points: &[(u64, u64)]) -> String {
    if points.len() < 2 {
        return "<small>-</small>".into();
    }
    let ratios: Vec<f64> = points
        .iter()
        .map(|(blocked, total)| {
            if *total == 0 {
                0.0
            } else {
                *blocked as f64 / *total as f64
            }
        })
        .collect();
    let step = 120.0 / (ratios.len() - 1) as f64;
    let line: Vec<String> = ratios
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{:.1},{:.1}", i as f64 * step, 28.0 - r * 26.0))
        .collect();
    let (blocked, total) = points.last().copied().unwrap_or_default();
    format!(
        "<svg class=\"trend\" width=\"120\" height=\"30\" role=\"img\" aria-label=\"blocked share\">\
         <polyline points=\"{}\"/></svg><small>{blocked} of {total} blocked</small>",
        line.join(" ")
    )
}

fn render(ledger: &Ledger) -> Result<String, ServiceError> {
    let store = ledger.store();
    let now = attestor_verify::time::now_ms();
    let mut html = String::new();
    let w = &mut html;
    let _ = write!(
        w,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>attestor: security posture</title>\
         <style>{STYLE}</style></head><body><h1>attestor: security posture</h1>"
    );

    // Log.
    let size = store.len()?;
    let checkpoint = store.latest_checkpoint()?;
    let _ = write!(
        w,
        "<section id=\"log\"><h2>Log</h2><p><b id=\"log-size\">{size}</b> entries; latest \
         checkpoint: size {} signed {} ago</p></section>",
        checkpoint.as_ref().map_or(0, |c| c.size),
        age(now, checkpoint.as_ref().map(|c| c.created_at_ms)),
    );

    // Incidents: the unresolved ones, then the latest resolved.
    let query = |states| IncidentQuery {
        tenant: None,
        states: Some(states),
        since_ms: None,
        limit: MAX_INCIDENTS_SHOWN,
    };
    let unresolved = store.incidents(&query(IncidentStates::Unresolved))?;
    let resolved = store.incidents(&query(IncidentStates::Only(IncidentState::Resolved)))?;
    w.push_str(&incidents_panel(now, &unresolved, &resolved));

    // Agents by tenant.
    let mut agents = store.agents(None)?;
    agents.sort_by(|a, b| (&a.tenant, &a.agent_id).cmp(&(&b.tenant, &b.agent_id)));
    let _ = write!(
        w,
        "<section id=\"agents\"><h2>Agents ({})</h2><table><tr><th>tenant</th><th>agent</th>\
         <th>health</th><th>last attestation</th><th>policy hash</th><th>zero-retention</th>\
         <th>posture</th><th>privacy budget (&epsilon;)</th><th>blocked requests</th>\
         <th>EAR</th><th>heartbeats, 24 h</th></tr>",
        agents.len()
    );
    for agent in agents.iter().take(MAX_AGENTS_SHOWN) {
        let health = agent.health(now, ledger.max_gap()).name();
        let recent = store.query(&EntryQuery {
            tenant: Some(agent.tenant.clone()),
            agent_id: Some(agent.agent_id.clone()),
            verdict: Some(Verdict::Accepted),
            from_ms: Some(now.saturating_sub(3_600_000)),
            limit: crate::store::MAX_PAGE,
            ..EntryQuery::default()
        })?;
        let recent_claims: Vec<Claims> = recent
            .iter()
            .skip(recent.len().saturating_sub(TREND_POINTS))
            .filter_map(claims_of)
            .collect();
        let latest_entry = match recent.last() {
            Some(entry) => Some(entry.clone()),
            None => store.latest_accepted(&agent.tenant, &agent.agent_id)?,
        };
        let latest = latest_entry.as_ref().and_then(claims_of);
        let ear = latest_entry.as_ref().and_then(ear_of);
        let times = store.verdict_times(
            &agent.tenant,
            &agent.agent_id,
            now.saturating_sub(TIMELINE_SLOTS * TIMELINE_SLOT_MS),
        )?;
        let expected = ledger
            .tenants()
            .get(&agent.tenant)
            .map(|t| t.policy_hash.as_str());
        let (policy, budget, zero, posture) = match &latest {
            Some(c) => {
                let matches = Some(c.policy_hash.as_str()) == expected;
                (
                    format!(
                        "<code class=\"{}\" title=\"expected {}\">{}…</code> {}",
                        if matches { "good" } else { "bad" },
                        escape(expected.unwrap_or("(no tenant policy)")),
                        escape(c.policy_hash.get(..12).unwrap_or_default()),
                        if matches { "expected" } else { "MISMATCH" }
                    ),
                    bar(c.epsilon_limits.current_usage, c.epsilon_limits.max_epsilon),
                    c.zero_retention.to_string(),
                    posture_cell(c),
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let points: Vec<(u64, u64)> = recent_claims
            .iter()
            .map(|c| (c.blocked_requests, c.total_requests))
            .collect();
        let _ = write!(
            w,
            "<tr class=\"{health}\" data-agent=\"{}\"><td>{}</td><td>{}</td><td class=\"health\">{health}</td>\
             <td>{}</td><td>{policy}</td><td>{zero}</td><td>{posture}</td><td>{budget}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&agent.agent_id),
            escape(&agent.tenant),
            escape(&agent.agent_id),
            age(now, agent.last_accepted_at_ms),
            trend(&points),
            ear_cell(ear.as_ref()),
            timeline(now, agent.enrolled_at_ms, &times),
        );
    }
    let _ = write!(w, "</table></section>");

    // Recent refusals.
    let refused = store.query(&EntryQuery {
        verdict: Some(Verdict::Refused),
        from_ms: Some(now.saturating_sub(86_400_000)),
        limit: crate::store::MAX_PAGE,
        ..EntryQuery::default()
    })?;
    let _ = write!(
        w,
        "<section id=\"refusals\"><h2>Recent refusals (24 h: {})</h2><table><tr><th>index</th>\
         <th>when</th><th>tenant</th><th>agent</th><th>reason</th><th>detail</th></tr>",
        refused.len()
    );
    for entry in refused.iter().rev().take(20) {
        let record = LogRecord::from_leaf(&entry.entry.leaf).ok();
        let (reason, detail) = record
            .map(|r| (r.reason.unwrap_or_default(), r.detail.unwrap_or_default()))
            .unwrap_or_default();
        let _ = write!(
            w,
            "<tr><td>{}</td><td>{} ago</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            entry.index,
            age(now, Some(entry.entry.received_at_ms)),
            escape(&entry.entry.tenant),
            escape(&entry.entry.agent_id),
            escape(&reason),
            escape(detail.get(..200).unwrap_or(&detail)),
        );
    }
    let _ = write!(w, "</table></section></body></html>");
    Ok(html)
}

/// The incidents panel: the unresolved ones, then the resolved ones latest first.
fn incidents_panel(now: u64, unresolved: &[Incident], resolved: &[Incident]) -> String {
    let mut html = String::new();
    let w = &mut html;
    let _ = write!(
        w,
        "<section id=\"alerts\"><h2>Open incidents ({})</h2>",
        unresolved.len()
    );
    if unresolved.is_empty() {
        let _ = write!(w, "<p class=\"good\">none</p>");
    }
    let _ = write!(
        w,
        "<table id=\"incidents\"><tr><th>id</th><th>kind</th><th>tenant</th><th>agent</th>\
         <th>state</th><th>opened</th><th>evidence</th><th>last action</th><th>summary</th></tr>"
    );
    for incident in unresolved.iter().chain(resolved.iter().rev()) {
        let state = match (&incident.acknowledged, &incident.resolved) {
            (_, Some(r)) => format!("resolved by {}: {}", r.by, r.reason),
            (Some(a), None) => format!("acknowledged by {}: {}", a.by, a.reason),
            (None, None) => "open".to_string(),
        };
        let evidence = match (incident.first_index, incident.last_index) {
            (Some(first), Some(last)) if first != last => format!("{first}..{last}"),
            (Some(first), _) => first.to_string(),
            _ => "-".to_string(),
        };
        let action = incident.actions.last().map_or("-".to_string(), |a| {
            format!(
                "{} {} ({} attempts){}",
                a.action,
                if a.ok { "ok" } else { "FAILED" },
                a.attempts,
                a.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        });
        let _ = write!(
            w,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if incident.resolved.is_some() {
                ""
            } else {
                "bad"
            },
            incident.id,
            incident.kind.name(),
            escape(&incident.tenant),
            escape(&incident.agent_id),
            escape(&state),
            age(now, Some(incident.opened_at_ms)),
            evidence,
            escape(&action),
            escape(&incident.summary)
        );
    }
    let _ = write!(w, "</table></section>");
    html
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%;margin-bottom:1em}\
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;font-size:14px}\
tr.stale td.health,tr.revoked td.health,.bad{color:#b00020;font-weight:600}\
tr.healthy td.health,.good{color:#0a7d28}\
.bar{display:inline-block;width:120px;height:10px;background:#eee;margin-right:6px}\
.bar span{display:block;height:100%}.bar .ok{background:#0a7d28}.bar .near{background:#e0a800}\
.bar .over{background:#b00020}svg.trend polyline{fill:none;stroke:#555;stroke-width:1.5}\
small{color:#666}code{font-size:13px}\
.ear{font-weight:600}.ear.affirming{color:#0a7d28}.ear.warning{color:#e0a800}\
.ear.contraindicated,.ear.none{color:#b00020}\
svg.timeline rect.accepted{fill:#0a7d28}svg.timeline rect.refused{fill:#b00020}\
svg.timeline rect.missing{fill:#ccc}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_shows_accepted_refused_and_missing_apart() {
        let now = 200 * TIMELINE_SLOT_MS;
        let start = now - TIMELINE_SLOTS * TIMELINE_SLOT_MS;
        let slot = |i: u64| start + i * TIMELINE_SLOT_MS + 1;
        // Enrolled at slot 90; accepted in 90 and 91, a refusal in 93, silence after.
        let times = [
            (slot(90), Verdict::Accepted),
            (slot(91), Verdict::Accepted),
            (slot(93), Verdict::Accepted),
            (slot(93), Verdict::Refused),
        ];
        let svg = timeline(now, slot(90), &times);
        assert_eq!(svg.matches("class=\"accepted\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"refused\"").count(), 1, "{svg}");
        // 92, 94 and 95 are missing; the slots before enrollment are not drawn.
        assert_eq!(svg.matches("class=\"missing\"").count(), 3, "{svg}");
        assert!(svg.contains("1 accepted, 1 refused"));
    }

    #[test]
    fn the_incidents_panel_lists_unresolved_first_and_escapes_what_agents_sent() {
        use attestor_verify::api::{
            ActionOutcome, ActionPhase, AlertKind, IncidentChange, IncidentState,
        };
        let incident = |id: u64, summary: &str| Incident {
            id,
            kind: AlertKind::PolicyDrift,
            tenant: "t".into(),
            agent_id: "a1".into(),
            summary: summary.into(),
            opened_at_ms: 1_000,
            first_index: Some(4),
            last_index: Some(9),
            state: IncidentState::Open,
            acknowledged: None,
            resolved: None,
            actions: vec![ActionOutcome {
                hook: "policy-drift".into(),
                phase: ActionPhase::Fire,
                action: "rollback.sh".into(),
                ok: false,
                attempts: 3,
                error: Some("exited with <1>".into()),
                at_ms: 2_000,
            }],
        };
        let open = incident(2, "<script>alert(1)</script>");
        let mut closed = incident(1, "old");
        closed.state = IncidentState::Resolved;
        closed.resolved = Some(IncidentChange {
            by: "spiffe://attestor/tenant/t/operator/alice".into(),
            at_ms: 3_000,
            reason: "rolled <b>back</b>".into(),
        });
        let html = incidents_panel(10_000, &[open], &[closed]);
        assert!(html.contains("Open incidents (1)"), "{html}");
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("<td>4..9</td>"), "{html}");
        assert!(html.contains("rollback.sh FAILED (3 attempts): exited with &lt;1&gt;"));
        let (first, second) = (
            html.find("<td>2</td>").unwrap(),
            html.find("<td>1</td>").unwrap(),
        );
        assert!(first < second, "{html}");
        assert!(html.contains("resolved by spiffe://attestor/tenant/t/operator/alice"));
    }
}
