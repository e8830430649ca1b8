//! The CI/CD release gate: a deployment may proceed only if every named (or every enrolled)
//! agent of the tenant has an accepted attestation within the allowed age, attesting the
//! tenant's expected policy hash, no unresolved incident, and no refused attestation within
//! that age that a resolved incident does not account for: a refusal fails the gate until
//! someone resolved its incident, however healthy the agent looks since. Decided from the
//! ledger's answers alone, so the gate holds no state.

use std::time::Duration;

use serde::Serialize;

use crate::api::{AgentStatusJson, EntryJson, Incident, IncidentState, TenantResponse, Verdict};
use crate::ear::Tier;

/// What the ledger told the gate.
pub struct Fleet<'a> {
    /// The tenant and the policy hash it expects.
    pub tenant: &'a TenantResponse,
    /// The tenant's enrolled agents, revoked ones included.
    pub agents: &'a [AgentStatusJson],
    /// The latest accepted entry of each agent.
    pub latest_accepted: &'a [EntryJson],
    /// The tenant's incidents: every unresolved one, and those resolved since the window
    /// began (they account for the refusals they cover).
    pub incidents: &'a [Incident],
    /// The tenant's refused attestations within the window.
    pub refused: &'a [EntryJson],
}

/// The gate's finding for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentFinding {
    /// The agent judged.
    pub agent_id: String,
    /// Whether the agent lets the deployment proceed: `problems` is empty.
    pub pass: bool,
    /// Seconds since the latest accepted attestation.
    pub age_seconds: Option<u64>,
    /// The policy hash (hex) its latest accepted attestation attests.
    pub policy_hash: Option<String>,
    /// Why it fails; empty when it passes.
    pub problems: Vec<String>,
}

/// Judges the fleet; `only` names the agents to check (all enrolled ones when empty).
pub fn evaluate(
    fleet: &Fleet<'_>,
    only: &[String],
    max_age: Duration,
    now_ms: u64,
) -> Vec<AgentFinding> {
    let names: Vec<String> = if only.is_empty() {
        fleet
            .agents
            .iter()
            .filter(|a| !a.revoked)
            .map(|a| a.agent_id.clone())
            .collect()
    } else {
        only.to_vec()
    };
    let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    names
        .into_iter()
        .map(|agent_id| {
            let mut problems = Vec::new();
            let status = fleet.agents.iter().find(|a| a.agent_id == agent_id);
            match status {
                None => problems.push("not enrolled".to_string()),
                Some(a) if a.revoked => problems.push("revoked".to_string()),
                Some(_) => {}
            }
            let latest = fleet
                .latest_accepted
                .iter()
                .find(|e| e.agent_id == agent_id);
            let age_ms = latest.map(|e| now_ms.saturating_sub(e.received_at_ms));
            match age_ms {
                None if status.is_some() => problems.push("no accepted attestation".to_string()),
                Some(age) if age > max_age_ms => problems.push(format!(
                    "latest accepted attestation is {} s old (max {} s)",
                    age / 1000,
                    max_age.as_secs()
                )),
                _ => {}
            }
            let policy_hash = latest.and_then(|e| e.policy_hash.clone());
            if let Some(hash) = &policy_hash {
                let approved = *hash == fleet.tenant.policy_hash
                    || fleet.tenant.approved_policy_hashes.contains(hash);
                if !approved {
                    problems.push(format!(
                        "attests policy {hash}, expected {}",
                        fleet.tenant.policy_hash
                    ));
                }
            }
            if let Some(problem) = latest.and_then(|e| ear_problem(e.ear.as_deref())) {
                problems.push(problem);
            }
            let incidents: Vec<&Incident> = fleet
                .incidents
                .iter()
                .filter(|i| i.agent_id == agent_id)
                .collect();
            for incident in incidents
                .iter()
                .filter(|i| i.state != IncidentState::Resolved)
            {
                problems.push(format!(
                    "{} incident {} {}: {}",
                    incident.state.name(),
                    incident.id,
                    incident.kind.name(),
                    incident.summary
                ));
            }
            let window_start_ms = now_ms.saturating_sub(max_age_ms);
            let unaccounted = fleet.refused.iter().filter(|e| {
                e.agent_id == agent_id
                    && e.verdict == Verdict::Refused
                    && e.received_at_ms >= window_start_ms
                    && !incidents.iter().any(|i| covers(i, e.index))
            });
            for entry in unaccounted {
                problems.push(format!(
                    "refused attestation at log index {} ({}) with no incident resolving it",
                    entry.index,
                    entry.reason.as_deref().unwrap_or("no reason")
                ));
            }
            AgentFinding {
                pass: problems.is_empty(),
                agent_id,
                age_seconds: age_ms.map(|a| a / 1000),
                policy_hash,
                problems,
            }
        })
        .collect()
}

/// Whether `incident` is about the log entry `index`: an unresolved one is reported itself,
/// a resolved one accounts for it.
fn covers(incident: &Incident, index: u64) -> bool {
    matches!((incident.first_index, incident.last_index),
        (Some(first), Some(last)) if (first..=last).contains(&index))
}

/// Why the ledger's EAR of an accepted attestation stops a release: its posture is
/// contraindicated (the token came from the ledger over mTLS, so its claims are read as
/// the ledger's answer). An entry from before EARs has none, and nothing to add.
fn ear_problem(token: Option<&str>) -> Option<String> {
    let ear = match crate::ear::claims_unverified(token?) {
        Ok(ear) => ear,
        Err(e) => return Some(format!("unreadable EAR: {e}")),
    };
    if ear.status() != Tier::Contraindicated {
        return None;
    }
    let first = ear
        .appraisal()
        .and_then(|a| a.attestor.reasons.first())
        .map(|r| format!(": {} ({})", r.check, r.detail))
        .unwrap_or_default();
    Some(format!("EAR status contraindicated{first}"))
}

/// Parses `90`, `90s`, `5m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m, 2h"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AlertKind, IncidentChange};

    const GOOD: &str = "aa";

    fn agent(id: &str, revoked: bool) -> AgentStatusJson {
        AgentStatusJson {
            agent_id: id.into(),
            tenant: "t".into(),
            enrolled_at_ms: 0,
            revoked,
            last_seen_at_ms: None,
            last_accepted_at_ms: None,
            zero_retention: Some(true),
            stale: false,
        }
    }

    fn accepted(id: &str, at_ms: u64, policy: &str) -> EntryJson {
        EntryJson {
            index: 0,
            received_at_ms: at_ms,
            tenant: "t".into(),
            agent_id: id.into(),
            verdict: Verdict::Accepted,
            reason: None,
            detail: None,
            attestation_id: None,
            policy_hash: Some(policy.into()),
            ear: None,
            appraisal_policy: None,
            leaf: Vec::new(),
            proof: None,
        }
    }

    fn judged(id: &str, status: Tier) -> EntryJson {
        use crate::ear::{unsigned, Appraisal, Details, Ear, Reason, Subject, VerifierId};
        let appraisal = Appraisal {
            ear_status: status,
            ear_trustworthiness_vector: Default::default(),
            ear_appraisal_policy_ids: vec!["p@1".into()],
            attestor: Details {
                reasons: vec![Reason {
                    check: "egress-firewall".into(),
                    tier: status,
                    detail: "egress_firewall_enabled is false".into(),
                }],
                runtime_restarted: false,
            },
        };
        let ear = Ear::new(
            VerifierId::attestor("ledger"),
            1,
            &[],
            appraisal,
            Subject::default(),
        );
        EntryJson {
            ear: Some(unsigned(&ear).unwrap()),
            ..accepted(id, 290_000, GOOD)
        }
    }

    #[test]
    fn only_fresh_agents_with_an_approved_policy_a_fit_posture_and_no_alert_pass() {
        let tenant = TenantResponse {
            tenant: "t".into(),
            policy_hash: GOOD.into(),
            approved_policy_hashes: vec![GOOD.into(), "cc".into()],
            appraisal_policy: None,
        };
        let agents = [
            agent("fresh", false),
            agent("canary", false),
            agent("warned", false),
            agent("unfit", false),
            agent("stale", false),
            agent("drifted", false),
            agent("alerted", false),
            agent("silent", false),
            agent("gone", true),
        ];
        let latest = [
            accepted("fresh", 290_000, GOOD),
            accepted("stale", 1_000, GOOD),
            accepted("drifted", 290_000, "bb"),
            accepted("alerted", 290_000, GOOD),
            accepted("canary", 290_000, "cc"),
            judged("warned", Tier::Warning),
            judged("unfit", Tier::Contraindicated),
        ];
        let incidents = [incident(1, "alerted", 10, None)];
        let fleet = Fleet {
            tenant: &tenant,
            agents: &agents,
            latest_accepted: &latest,
            incidents: &incidents,
            refused: &[],
        };
        let found = evaluate(&fleet, &[], Duration::from_secs(60), 300_000);
        let passing: Vec<&str> = found
            .iter()
            .filter(|f| f.pass)
            .map(|f| f.agent_id.as_str())
            .collect();
        assert_eq!(passing, ["fresh", "canary", "warned"]);
        assert_eq!(found.len(), 8, "revoked agents are not part of the fleet");
        let unfit = found.iter().find(|f| f.agent_id == "unfit").unwrap();
        assert_eq!(
            unfit.problems,
            ["EAR status contraindicated: egress-firewall (egress_firewall_enabled is false)"]
        );
        let named = evaluate(
            &fleet,
            &["gone".into(), "nobody".into()],
            Duration::from_secs(60),
            300_000,
        );
        assert_eq!(named[0].problems[0], "revoked");
        assert_eq!(named[1].problems, ["not enrolled"]);
    }

    fn incident(id: u64, agent: &str, index: u64, resolved: Option<u64>) -> Incident {
        Incident {
            id,
            kind: AlertKind::InvalidAttestation,
            tenant: "t".into(),
            agent_id: agent.into(),
            summary: "forged".into(),
            opened_at_ms: 0,
            first_index: Some(index),
            last_index: Some(index + 1),
            state: match resolved {
                Some(_) => IncidentState::Resolved,
                None => IncidentState::Open,
            },
            acknowledged: None,
            resolved: resolved.map(|at_ms| IncidentChange {
                by: "spiffe://attestor/tenant/t/operator/oncall".into(),
                at_ms,
                reason: "re-imaged".into(),
            }),
            actions: Vec::new(),
        }
    }

    fn refused(agent: &str, index: u64, at_ms: u64) -> EntryJson {
        EntryJson {
            index,
            verdict: Verdict::Refused,
            reason: Some("signature".into()),
            policy_hash: None,
            ..accepted(agent, at_ms, GOOD)
        }
    }

    #[test]
    fn a_refusal_in_the_window_fails_the_gate_until_its_incident_is_resolved() {
        let tenant = TenantResponse {
            tenant: "t".into(),
            policy_hash: GOOD.into(),
            approved_policy_hashes: vec![GOOD.into()],
            appraisal_policy: None,
        };
        let agents = [agent("a", false)];
        // Healthy again since the refusal: the latest accepted attestation is fine.
        let latest = [accepted("a", 290_000, GOOD)];
        let gate = |incidents: &[Incident], refused: &[EntryJson]| {
            let fleet = Fleet {
                tenant: &tenant,
                agents: &agents,
                latest_accepted: &latest,
                incidents,
                refused,
            };
            evaluate(&fleet, &[], Duration::from_secs(60), 300_000).remove(0)
        };
        let in_window = [refused("a", 7, 250_000)];
        let open = gate(&[incident(3, "a", 7, None)], &in_window);
        assert_eq!(
            open.problems,
            ["open incident 3 invalid-attestation: forged"]
        );
        let resolved = gate(&[incident(3, "a", 7, Some(295_000))], &in_window);
        assert!(resolved.pass, "{resolved:?}");
        // A refusal no incident accounts for (another agent's incident, or an older one).
        let unaccounted = gate(
            &[incident(4, "b", 7, Some(1)), incident(2, "a", 1, Some(1))],
            &in_window,
        );
        assert_eq!(
            unaccounted.problems,
            ["refused attestation at log index 7 (signature) with no incident resolving it"]
        );
        // Outside the window it no longer counts.
        assert!(gate(&[], &[refused("a", 7, 200_000)]).pass);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
