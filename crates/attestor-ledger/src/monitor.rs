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

/// Raises a missing-heartbeat incident for each agent silent for longer than the
/// ledger's allowed gap, and resolves it once the agent is back. Runs on every replica
/// until the ledger is dropped, but only the lease holder acts on what it finds (the
/// incidents it raises are durable, so a new lease holder finds them). Evaluation reads
/// stored times, so a restarted ledger finds the same gaps.
pub async fn watch_gaps(ledger: std::sync::Weak<crate::service::Ledger>) {
    use std::collections::BTreeSet;

    use crate::alerts::AlertKind;
    use attestor_net::logging::{limited_event, Level};

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
                let error = serde_json::json!({"error": e.to_string()});
                limited_event(Level::Error, "gap-check-failed", error);
                continue;
            }
            Err(_) => continue,
        };
        let alerter = ledger.alerter();
        if !alerter.incidents().leading() {
            continue;
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
                let error = serde_json::json!({"error": e.to_string()});
                limited_event(Level::Error, "gap-check-failed", error);
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
}
