//! Durable incidents in both stores: at most one unresolved per (tenant, agent, kind),
//! whoever raises it; acknowledging and resolving by tenant only; action outcomes; and the
//! upgrade of a schema-6 database, which had no incidents.

use attestor_ledger::store::{
    ActionOutcome, AlertKind, IncidentChange, IncidentQuery, IncidentState, IncidentStates,
    NewIncident, StoreError,
};
use attestor_verify::api::ActionPhase;

use crate::support::stores::Backend;

crate::on_both_backends!(
    one_unresolved_incident_per_agent_and_kind_is_raised_then_extended,
    incidents_are_acknowledged_and_resolved_within_their_tenant_only,
    the_ledger_resolves_an_agents_incidents_by_kind,
    action_outcomes_are_kept_in_order,
    incidents_are_listed_by_state_and_window,
    a_version_6_database_gains_incidents,
    incidents_behind_the_log_are_listed_until_recorded,
    handles_raising_the_same_incident_at_once_open_it_once,
);

fn raise(kind: AlertKind, tenant: &str, agent: &str, index: Option<u64>) -> NewIncident {
    NewIncident {
        tenant: tenant.into(),
        agent_id: agent.into(),
        kind,
        summary: format!("{} at {index:?}", kind.name()),
        at_ms: 1_000 + index.unwrap_or(0),
        index,
    }
}

fn change(by: &str, at_ms: u64, reason: &str) -> IncidentChange {
    IncidentChange {
        by: by.into(),
        at_ms,
        reason: reason.into(),
    }
}

fn all(tenant: Option<&str>, states: Option<IncidentStates>) -> IncidentQuery {
    IncidentQuery {
        tenant: tenant.map(str::to_string),
        states,
        since_ms: None,
        limit: 1000,
    }
}

fn one_unresolved_incident_per_agent_and_kind_is_raised_then_extended(backend: &Backend) {
    let store = backend.open();
    let (first, new) = store
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a1", Some(7)))
        .unwrap();
    assert!(new);
    assert_eq!(first.state, IncidentState::Open);
    assert_eq!((first.first_index, first.last_index), (Some(7), Some(7)));
    assert_eq!(first.opened_at_ms, 1_007);
    // Another handle (a replica, a restart) raising the same drift extends it.
    let other = backend.try_open().unwrap();
    let (again, new) = other
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a1", Some(9)))
        .unwrap();
    assert!(!new);
    assert_eq!(again.id, first.id);
    assert_eq!((again.first_index, again.last_index), (Some(7), Some(9)));
    assert_eq!(again.opened_at_ms, 1_007);
    assert_eq!(again.summary, "policy-drift at Some(9)");
    // A gap has no entry: the evidence stays.
    let (gapless, _) = other
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a1", None))
        .unwrap();
    assert_eq!(gapless.last_index, Some(9));
    // Another kind, agent or tenant is another incident.
    for (kind, tenant, agent) in [
        (AlertKind::InvalidAttestation, "t", "a1"),
        (AlertKind::PolicyDrift, "t", "a2"),
        (AlertKind::PolicyDrift, "u", "a1"),
    ] {
        let (incident, new) = store
            .raise_incident(&raise(kind, tenant, agent, None))
            .unwrap();
        assert!(new && incident.id != first.id);
        assert_eq!((incident.first_index, incident.last_index), (None, None));
    }
    assert_eq!(store.incidents(&all(None, None)).unwrap().len(), 4);
    // Once resolved, the same drift raises a new incident.
    store
        .resolve_incident("t", first.id, &change("op", 2_000, "rolled back"))
        .unwrap();
    let (next, new) = store
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a1", Some(12)))
        .unwrap();
    assert!(new && next.id > first.id);
    assert_eq!(next.first_index, Some(12));
}

fn incidents_are_acknowledged_and_resolved_within_their_tenant_only(backend: &Backend) {
    let store = backend.open();
    let (incident, _) = store
        .raise_incident(&raise(AlertKind::InvalidAttestation, "t", "a1", Some(3)))
        .unwrap();
    let id = incident.id;
    // Another tenant neither sees nor changes it.
    assert_eq!(store.incident("u", id).unwrap(), None);
    assert!(matches!(
        store.acknowledge_incident("u", id, &change("mallory", 1, "mine")),
        Err(StoreError::UnknownIncident { .. })
    ));
    assert!(matches!(
        store.resolve_incident("u", id, &change("mallory", 1, "mine")),
        Err(StoreError::UnknownIncident { .. })
    ));
    assert!(matches!(
        store.acknowledge_incident("t", u64::MAX, &change("op", 1, "x")),
        Err(StoreError::UnknownIncident { .. })
    ));
    assert_eq!(store.incident("t", id).unwrap(), Some(incident));

    let acked = store
        .acknowledge_incident("t", id, &change("op-uri", 2_000, "looking"))
        .unwrap();
    assert_eq!(acked.state, IncidentState::Acknowledged);
    assert_eq!(acked.acknowledged, Some(change("op-uri", 2_000, "looking")));
    assert!(matches!(
        store.acknowledge_incident("t", id, &change("op-uri", 2_001, "again")),
        Err(StoreError::IncidentState {
            state: IncidentState::Acknowledged,
            ..
        })
    ));
    let resolved = store
        .resolve_incident("t", id, &change("op-uri", 3_000, "re-imaged"))
        .unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(resolved.acknowledged, acked.acknowledged);
    assert_eq!(
        resolved.resolved,
        Some(change("op-uri", 3_000, "re-imaged"))
    );
    assert!(matches!(
        store.resolve_incident("t", id, &change("op-uri", 3_001, "again")),
        Err(StoreError::IncidentState {
            state: IncidentState::Resolved,
            ..
        })
    ));
    assert_eq!(store.incident("t", id).unwrap(), Some(resolved));
}

fn the_ledger_resolves_an_agents_incidents_by_kind(backend: &Backend) {
    let store = backend.open();
    for kind in [AlertKind::MissingHeartbeat, AlertKind::PolicyDrift] {
        store.raise_incident(&raise(kind, "t", "a1", None)).unwrap();
    }
    store
        .raise_incident(&raise(AlertKind::MissingHeartbeat, "t", "a2", None))
        .unwrap();
    let back = change("@ledger", 5_000, "an accepted attestation");
    let resolved = store
        .resolve_incidents_of(
            "t",
            "a1",
            &[AlertKind::MissingHeartbeat, AlertKind::PostureWarning],
            &back,
        )
        .unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, AlertKind::MissingHeartbeat);
    assert_eq!(resolved[0].resolved, Some(back.clone()));
    let open: Vec<_> = store
        .incidents(&all(Some("t"), Some(IncidentStates::Unresolved)))
        .unwrap()
        .into_iter()
        .map(|i| (i.agent_id, i.kind))
        .collect();
    assert_eq!(
        open,
        [
            ("a1".to_string(), AlertKind::PolicyDrift),
            ("a2".to_string(), AlertKind::MissingHeartbeat)
        ]
    );
    assert!(store
        .resolve_incidents_of("t", "a1", &[AlertKind::MissingHeartbeat], &back)
        .unwrap()
        .is_empty());
}

fn action_outcomes_are_kept_in_order(backend: &Backend) {
    let store = backend.open();
    let (incident, _) = store
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a1", Some(1)))
        .unwrap();
    let outcome = |n: u32, ok: bool| ActionOutcome {
        hook: "on_drift".into(),
        phase: ActionPhase::Fire,
        action: "rollback.sh".into(),
        ok,
        attempts: n,
        error: (!ok).then(|| "exited with 1".into()),
        at_ms: 10 + u64::from(n),
    };
    store
        .record_action("t", incident.id, &outcome(3, false))
        .unwrap();
    store
        .record_action("t", incident.id, &outcome(1, true))
        .unwrap();
    assert!(matches!(
        store.record_action("u", incident.id, &outcome(1, true)),
        Err(StoreError::UnknownIncident { .. })
    ));
    let kept = store.incident("t", incident.id).unwrap().unwrap();
    assert_eq!(kept.actions, [outcome(3, false), outcome(1, true)]);
}

fn incidents_are_listed_by_state_and_window(backend: &Backend) {
    let store = backend.open();
    let mut ids = Vec::new();
    for agent in ["a1", "a2", "a3"] {
        let (incident, _) = store
            .raise_incident(&raise(AlertKind::PolicyDrift, "t", agent, None))
            .unwrap();
        ids.push(incident.id);
    }
    store
        .raise_incident(&raise(AlertKind::PolicyDrift, "u", "a1", None))
        .unwrap();
    store
        .acknowledge_incident("t", ids[1], &change("op", 2_000, "mine"))
        .unwrap();
    store
        .resolve_incident("t", ids[2], &change("op", 3_000, "done"))
        .unwrap();
    let listed = |states: Option<&str>, since_ms: Option<u64>| -> Vec<u64> {
        store
            .incidents(&IncidentQuery {
                tenant: Some("t".into()),
                states: states.map(|s| IncidentStates::parse(s).unwrap()),
                since_ms,
                limit: 1000,
            })
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect()
    };
    assert_eq!(listed(None, None), ids);
    assert_eq!(listed(Some("open"), None), [ids[0]]);
    assert_eq!(listed(Some("acknowledged"), None), [ids[1]]);
    assert_eq!(listed(Some("resolved"), None), [ids[2]]);
    assert_eq!(listed(Some("unresolved"), None), [ids[0], ids[1]]);
    assert_eq!(listed(None, Some(3_000)), ids);
    assert_eq!(listed(None, Some(3_001)), [ids[0], ids[1]]);
    assert_eq!(IncidentStates::parse("closed"), None);
    // The latest page, ascending.
    let page = store
        .incidents(&IncidentQuery {
            limit: 2,
            ..all(Some("t"), None)
        })
        .unwrap();
    assert_eq!(page.iter().map(|i| i.id).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(store.incidents(&all(None, None)).unwrap().len(), 4);
}

fn a_version_6_database_gains_incidents(backend: &Backend) {
    drop(backend.open());
    backend.tamper(
        "DROP TABLE incidents; UPDATE meta SET value = '6' WHERE key = 'schema_version'",
        "DROP TABLE incidents; DELETE FROM schema_migrations WHERE version >= 7",
    );
    let store = backend.open();
    let (incident, new) = store
        .raise_incident(&raise(AlertKind::MissingHeartbeat, "t", "a1", None))
        .unwrap();
    assert!(new);
    drop(store);
    // Upgraded once: the next opening keeps what the upgraded store holds.
    assert_eq!(
        backend.open().incident("t", incident.id).unwrap(),
        Some(incident)
    );
}

fn incidents_behind_the_log_are_listed_until_recorded(backend: &Backend) {
    let store = backend.open();
    let (first, _) = store
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a1", Some(1)))
        .unwrap();
    let (second, _) = store
        .raise_incident(&raise(AlertKind::PolicyDrift, "t", "a2", Some(2)))
        .unwrap();
    let behind =
        |store: &dyn attestor_ledger::store::LedgerStore| -> Vec<(u64, Option<IncidentState>)> {
            store
                .unrecorded_incidents(100)
                .unwrap()
                .into_iter()
                .map(|(i, recorded)| (i.id, recorded))
                .collect()
        };
    assert_eq!(
        behind(store.as_ref()),
        [(first.id, None), (second.id, None)]
    );
    store
        .mark_recorded("t", first.id, IncidentState::Open)
        .unwrap();
    // Another tenant's name marks nothing.
    store
        .mark_recorded("u", second.id, IncidentState::Open)
        .unwrap();
    assert_eq!(behind(store.as_ref()), [(second.id, None)]);
    store
        .resolve_incident("t", first.id, &change("op", 5, "done"))
        .unwrap();
    store
        .mark_recorded("t", second.id, IncidentState::Resolved)
        .unwrap();
    // Never moving back: a late note of the opening leaves the resolution recorded.
    store
        .mark_recorded("t", second.id, IncidentState::Open)
        .unwrap();
    assert_eq!(
        behind(store.as_ref()),
        [
            (first.id, Some(IncidentState::Open)),
            (second.id, Some(IncidentState::Resolved))
        ]
    );
    assert_eq!(store.unrecorded_incidents(1).unwrap().len(), 1);
    store
        .mark_recorded("t", first.id, IncidentState::Resolved)
        .unwrap();
    assert_eq!(
        behind(store.as_ref()),
        [(second.id, Some(IncidentState::Resolved))]
    );
}

fn handles_raising_the_same_incident_at_once_open_it_once(backend: &Backend) {
    drop(backend.open());
    let handles: Vec<_> = (0..4).map(|_| backend.try_open().unwrap()).collect();
    let barrier = std::sync::Barrier::new(handles.len());
    let raised: Vec<(u64, bool)> = std::thread::scope(|scope| {
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let (incident, new) = store
                        .raise_incident(&raise(
                            AlertKind::MissingHeartbeat,
                            "t",
                            "a1",
                            Some(n as u64),
                        ))
                        .unwrap();
                    (incident.id, new)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(
        raised.iter().filter(|(_, new)| *new).count(),
        1,
        "{raised:?}"
    );
    assert!(
        raised.iter().all(|(id, _)| *id == raised[0].0),
        "{raised:?}"
    );
    assert_eq!(handles[0].incidents(&all(None, None)).unwrap().len(), 1);
}
