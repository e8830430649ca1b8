//! Gap detection: agents whose last accepted attestation is older than the allowed gap.
//! Evaluated from stored times, never from in-memory timers, so a ledger restart loses
//! nothing (Keylime's push-mode timers do: keylime issue 1888).

use std::time::Duration;

use crate::store::{Health, LedgerStore, StoreError};

/// An enrolled, unrevoked agent without a recent accepted attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub agent_id: String,
    pub tenant: String,
    /// Last accepted attestation, or `None` if it never had one since enrolling.
    pub last_accepted_at_ms: Option<u64>,
    /// How long it has been silent (since its last acceptance, else since enrollment).
    pub silent_for_ms: u64,
}

/// Agents of `tenant` (or all) silent for longer than `max_gap` at `now_ms`.
pub fn gaps(
    store: &dyn LedgerStore,
    tenant: Option<&str>,
    now_ms: u64,
    max_gap: Duration,
) -> Result<Vec<Gap>, StoreError> {
    Ok(store
        .agents(tenant)?
        .into_iter()
        .filter(|a| a.health(now_ms, max_gap) == Health::Stale)
        .map(|a| Gap {
            silent_for_ms: a.silent_for_ms(now_ms),
            agent_id: a.agent_id,
            tenant: a.tenant,
            last_accepted_at_ms: a.last_accepted_at_ms,
        })
        .collect())
}

/// The ledger's own outage, seen at start-up: its last entry is older than the allowed
/// gap, so every agent's silence since then may be the ledger's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When the log last took an entry (Unix ms).
    pub last_entry_ms: u64,
    /// When this process started (Unix ms).
    pub started_ms: u64,
}

/// The outage the stored times show at start-up, if any. An empty log shows none.
pub fn outage_at_start(
    store: &dyn LedgerStore,
    started_ms: u64,
    max_gap: Duration,
) -> Result<Option<Outage>, StoreError> {
    let max_gap_ms = attestor_verify::time::duration_ms(max_gap);
    Ok(store
        .last_received_at_ms()?
        .filter(|last| started_ms.saturating_sub(*last) > max_gap_ms)
        .map(|last_entry_ms| Outage {
            last_entry_ms,
            started_ms,
        }))
}

/// Whether the outage explains `gap` at `now_ms`: the agent fell silent before the ledger
/// came back, and has had less than one allowed gap since to be heard again.
fn explained(outage: Option<Outage>, gap: &Gap, now_ms: u64, max_gap: Duration) -> bool {
    let Some(outage) = outage else {
        return false;
    };
    let silent_since_ms = now_ms.saturating_sub(gap.silent_for_ms);
    silent_since_ms < outage.started_ms
        && now_ms < outage.started_ms + attestor_verify::time::duration_ms(max_gap)
}

/// Raises one ledger-outage alert per tenant if the stored times show the ledger itself
/// was out (see [`outage_at_start`]). Called before the ledger serves: an agent's first
/// delivery would hide the outage. [`watch_gaps`] resolves it once the agents have had one
/// allowed gap to be heard again.
pub async fn raise_outage(ledger: &crate::service::Ledger) -> Option<Outage> {
    let started_ms = attestor_verify::time::unix_ms(std::time::SystemTime::now());
    let max_gap = ledger.max_gap();
    let outage = match outage_at_start(ledger.store().as_ref(), started_ms, max_gap) {
        Ok(outage) => outage?,
        Err(e) => {
            tracing::error!(event = "gap-check-failed", error = %e);
            return None;
        }
    };
    let (from, to) = (outage.last_entry_ms, outage.started_ms);
    let summary = format!(
        "the ledger took no entry from {} to {} ({} s, allowed gap {} s)",
        attestor_verify::time::rfc3339(from / 1000),
        attestor_verify::time::rfc3339(to / 1000),
        (to - from) / 1000,
        max_gap.as_secs()
    );
    tracing::warn!(
        event = "ledger-outage",
        last_entry_ms = from,
        started_ms = to,
        summary = %summary,
    );
    for tenant in ledger.tenants().keys() {
        ledger
            .alerter()
            .fire(
                crate::alerts::AlertKind::LedgerOutage,
                tenant,
                LEDGER_AGENT_ID,
                summary.clone(),
                None,
                None,
            )
            .await;
    }
    Some(outage)
}

/// The agent id of alerts about the ledger itself (not a valid agent id, so it names
/// no agent).
pub const LEDGER_AGENT_ID: &str = "@ledger";

/// Raises a missing-heartbeat incident for each agent silent for longer than the
/// ledger's allowed gap, and resolves it once the agent is back. Runs on every replica
/// until the ledger is dropped, but only the lease holder acts on what it finds (the
/// incidents it raises are durable, so a new lease holder finds them). Evaluation reads
/// stored times, so a restarted ledger finds the same gaps. After the ledger's own
/// `outage` ([`raise_outage`]), agents silent since before it came back get one gap to be
/// heard again.
pub async fn watch_gaps(ledger: std::sync::Weak<crate::service::Ledger>, outage: Option<Outage>) {
    use std::collections::BTreeSet;

    use crate::alerts::AlertKind;

    let mut outage_unresolved = outage.is_some();
    loop {
        let Some(period) = ledger
            .upgrade()
            .map(|l| (l.max_gap() / 4).max(Duration::from_secs(1)))
        else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        let (store, max_gap) = (ledger.store().clone(), ledger.max_gap());
        let now_ms = attestor_verify::time::unix_ms(std::time::SystemTime::now());
        let found =
            tokio::task::spawn_blocking(move || gaps(store.as_ref(), None, now_ms, max_gap)).await;
        let found = match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                attestor_net::limited_event!(
                    tracing::Level::ERROR,
                    "gap-check-failed",
                    error = %e
                );
                continue;
            }
            Err(_) => continue,
        };
        let found: Vec<Gap> = found
            .into_iter()
            .filter(|gap| !explained(outage, gap, now_ms, max_gap))
            .collect();
        let alerter = ledger.alerter();
        if !alerter.incidents().leading() {
            continue;
        }
        let grace_over =
            |o: Outage| now_ms >= o.started_ms + attestor_verify::time::duration_ms(max_gap);
        if outage_unresolved && outage.is_some_and(grace_over) {
            for tenant in ledger.tenants().keys() {
                alerter
                    .resolve(tenant, LEDGER_AGENT_ID, &[AlertKind::LedgerOutage])
                    .await;
            }
            outage_unresolved = false;
        }
        for gap in &found {
            alerter
                .fire(
                    AlertKind::MissingHeartbeat,
                    &gap.tenant,
                    &gap.agent_id,
                    format!(
                        "no accepted attestation for {} s (allowed gap {} s)",
                        gap.silent_for_ms / 1000,
                        max_gap.as_secs()
                    ),
                    None,
                    None,
                )
                .await;
        }
        let now_silent: BTreeSet<(String, String)> =
            found.into_iter().map(|g| (g.tenant, g.agent_id)).collect();
        // From the store, not from memory: a gap raised before a restart or by the
        // previous lease holder is resolved too.
        let raised = match alerter
            .incidents()
            .agents_with(AlertKind::MissingHeartbeat)
            .await
        {
            Ok(raised) => raised,
            Err(e) => {
                attestor_net::limited_event!(
                    tracing::Level::ERROR,
                    "gap-check-failed",
                    error = %e
                );
                continue;
            }
        };
        for (tenant, agent) in raised.iter().filter(|k| !now_silent.contains(*k)) {
            alerter
                .resolve(tenant, agent, &[AlertKind::MissingHeartbeat])
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MAX_GAP;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{AcceptedState, AgentRecord, NewEntry, Verdict};

    fn agent(id: &str, tenant: &str, enrolled_at_ms: u64) -> AgentRecord {
        AgentRecord {
            agent_id: id.into(),
            tenant: tenant.into(),
            ek_certificate: vec![1],
            snp_chip_id: None,
            ek_public: None,
            ak_public: vec![2],
            enrolled_at_ms,
            revoked: false,
            last_seen_at_ms: None,
            last_accepted_at_ms: None,
            last_accepted: None,
        }
    }

    fn entry(at: u64, agent: &str, verdict: Verdict) -> NewEntry {
        NewEntry {
            received_at_ms: at,
            tenant: "t".into(),
            agent_id: agent.into(),
            verdict,
            attestation_id: None,
            leaf: vec![0],
            leaf_hash: [0; 32],
            accepted_state: (verdict == Verdict::Accepted).then_some(AcceptedState {
                zero_retention: true,
                tpm_clock: None,
            }),
            submission_hash: None,
        }
    }

    #[test]
    fn silent_agents_are_found_from_stored_times_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put_agent(&agent("healthy", "t", 0)).unwrap();
            store.put_agent(&agent("silent", "t", 0)).unwrap();
            store.put_agent(&agent("never", "t", 1_000)).unwrap();
            store.put_agent(&agent("gone", "t", 0)).unwrap();
            store.put_agent(&agent("other", "u", 0)).unwrap();
            store.revoke_agent("t", "gone").unwrap();
            store
                .append(&[
                    entry(10_000, "silent", Verdict::Accepted),
                    entry(190_000, "healthy", Verdict::Accepted),
                    // A refused submission does not count as a heartbeat.
                    entry(195_000, "silent", Verdict::Refused),
                ])
                .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let found = gaps(&store, Some("t"), 200_000, DEFAULT_MAX_GAP).unwrap();
        let ids: Vec<&str> = found.iter().map(|g| g.agent_id.as_str()).collect();
        assert_eq!(ids, vec!["never", "silent"]);
        assert_eq!(found[1].silent_for_ms, 190_000);
        assert_eq!(found[0].last_accepted_at_ms, None);
        assert_eq!(
            gaps(&store, None, 200_000, DEFAULT_MAX_GAP).unwrap().len(),
            3
        );
        assert!(gaps(&store, Some("t"), 100_000, DEFAULT_MAX_GAP)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_outage_is_the_log_silent_for_longer_than_the_gap_and_explains_older_silence() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("l.db")).unwrap();
        let gap = Duration::from_secs(60);
        assert_eq!(
            outage_at_start(&store, 1_000_000, gap).unwrap(),
            None,
            "empty log"
        );
        store.put_agent(&agent("a", "t", 0)).unwrap();
        store
            .append(&[entry(100_000, "a", Verdict::Accepted)])
            .unwrap();
        assert_eq!(outage_at_start(&store, 160_000, gap).unwrap(), None);
        let outage = outage_at_start(&store, 160_001, gap).unwrap().unwrap();
        assert_eq!(outage.last_entry_ms, 100_000);
        let silent = |since_ms: u64, now_ms: u64| Gap {
            agent_id: "a".into(),
            tenant: "t".into(),
            last_accepted_at_ms: Some(since_ms),
            silent_for_ms: now_ms - since_ms,
        };
        assert!(explained(
            Some(outage),
            &silent(100_000, 200_000),
            200_000,
            gap
        ));
        assert!(
            !explained(Some(outage), &silent(100_000, 220_001), 220_001, gap),
            "one gap after start-up the agent has had its chance"
        );
        assert!(
            !explained(Some(outage), &silent(170_000, 219_000), 219_000, gap),
            "silent since after the ledger came back"
        );
        assert!(!explained(None, &silent(100_000, 200_000), 200_000, gap));
    }
}
