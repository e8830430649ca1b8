//! The enforcement point: an admission decision (allow, throttle, block) for a workload,
//! keyed by its agent's identity, for Envoy's ext_authz HTTP service (`/authz/envoy`) and
//! nginx's `auth_request` (`/authz/nginx`) on the operations listener.
//!
//! Decisions are answered from memory only. The view is fed by tailing the store, not by
//! this process's own appends, so every replica sharing a PostgreSQL store answers the
//! same within [`TAIL_PERIOD`] of the log (agents' enrollment and revocation within
//! [`AGENTS_PERIOD`]); a view the store has not refreshed for [`OUTDATED_AFTER`] is not
//! trusted, and the tenant's `fail` mode answers instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use attestor_net::ops::{Asked, Page};
use attestor_verify::ear::{self, Tier};
use attestor_verify::identity::{AgentIdentity, Role};
use attestor_verify::record::LogRecord;
use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER};
use hyper::StatusCode;
use serde::Deserialize;
use thiserror::Error;

use crate::store::{
    AgentStatus, EntryQuery, LedgerStore, StoreError, StoredEntry, Verdict, MAX_PAGE,
};

/// How often the log is tailed.
pub const TAIL_PERIOD: Duration = Duration::from_millis(250);
/// How often the agents (enrollment, revocation, last acceptance) are read again.
pub const AGENTS_PERIOD: Duration = Duration::from_secs(1);
/// A view not refreshed for this long is not trusted: the tenant's `fail` mode answers.
pub const OUTDATED_AFTER: Duration = Duration::from_secs(3);

/// The request header naming the workload's agent, set by the proxy's configuration:
/// `spiffe://attestor/tenant/<tenant>/agent/<agent id>`.
pub const IDENTITY_HEADER: &str = "x-attestor-identity";
/// The response header with the answer (`allow`, `throttle`, `block`).
pub const DECISION_HEADER: &str = "x-attestor-decision";
/// The response header with the state or failure behind the answer (e.g. `drift`).
pub const REASON_HEADER: &str = "x-attestor-reason";

/// Refusals that mean the agent runs something other than what was approved.
const DRIFT_REFUSALS: [&str; 4] = [
    "policy-hash",
    "policy-hash-expired",
    "kernel-config-drift",
    "zero-retention-drift",
];

/// What the proxy does with the workload's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    Allow,
    Throttle,
    Block,
}

impl Answer {
    pub fn name(self) -> &'static str {
        match self {
            Answer::Allow => "allow",
            Answer::Throttle => "throttle",
            Answer::Block => "block",
        }
    }
}

/// The answer when the enforcer cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Block.
    Closed,
    /// Allow.
    Open,
}

/// An agent's state as the log and the agents table show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An accepted attestation within the allowed gap, its EAR affirming.
    Healthy,
    /// No accepted attestation within the allowed gap (or none yet).
    Stale,
    /// The latest accepted attestation's EAR is `warning`.
    Warning,
    /// The latest attestation was refused (not for drift), or its EAR is contraindicated.
    Contraindicated,
    /// The latest attestation was refused because the agent runs an unapproved policy or
    /// kernel configuration.
    Drift,
    /// Revoked by an operator.
    Revoked,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Stale => "stale",
            State::Warning => "warning",
            State::Contraindicated => "contraindicated",
            State::Drift => "drift",
            State::Revoked => "revoked",
        }
    }
}

/// Why no state could be found for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecidable {
    /// No identity header, or not an agent identity.
    NoIdentity,
    /// A tenant this ledger does not serve.
    UnknownTenant,
    /// No enrolled agent of that identity.
    UnknownAgent,
    /// The store has not been read for [`OUTDATED_AFTER`].
    OutdatedView,
}

impl Undecidable {
    pub fn name(self) -> &'static str {
        match self {
            Undecidable::NoIdentity => "no-identity",
            Undecidable::UnknownTenant => "unknown-tenant",
            Undecidable::UnknownAgent => "unknown-agent",
            Undecidable::OutdatedView => "outdated-view",
        }
    }
}

/// Why a tenant's `[tenants.NAME.enforcement]` table is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnforcementConfigError {
    #[error("retry_after_seconds = {0} must be 1..=3600")]
    RetryAfter(u32),
}

/// A tenant's enforcement policy: the answer to each state, and to undecidable requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementPolicy {
    pub stale: Answer,
    pub warning: Answer,
    pub contraindicated: Answer,
    pub drift: Answer,
    pub revoked: Answer,
    /// `Retry-After` of a throttle answer.
    pub retry_after_seconds: u32,
    pub fail: FailMode,
}

impl Default for EnforcementPolicy {
    fn default() -> Self {
        EnforcementPolicy {
            stale: Answer::Throttle,
            warning: Answer::Throttle,
            contraindicated: Answer::Block,
            drift: Answer::Block,
            revoked: Answer::Block,
            retry_after_seconds: 30,
            fail: FailMode::Closed,
        }
    }
}

impl EnforcementPolicy {
    pub fn validate(&self) -> Result<(), EnforcementConfigError> {
        if !(1..=3600).contains(&self.retry_after_seconds) {
            return Err(EnforcementConfigError::RetryAfter(self.retry_after_seconds));
        }
        Ok(())
    }

    fn answer(&self, state: State) -> Answer {
        match state {
            State::Healthy => Answer::Allow,
            State::Stale => self.stale,
            State::Warning => self.warning,
            State::Contraindicated => self.contraindicated,
            State::Drift => self.drift,
            State::Revoked => self.revoked,
        }
    }

    fn decision(&self, answer: Answer, reason: &'static str) -> Decision {
        Decision {
            answer,
            reason,
            retry_after_seconds: (answer == Answer::Throttle).then_some(self.retry_after_seconds),
        }
    }
}

/// An admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub answer: Answer,
    /// A [`State`] or [`Undecidable`] name.
    pub reason: &'static str,
    /// Seconds a throttled client should wait.
    pub retry_after_seconds: Option<u32>,
}

/// What an agent's latest (not late) entry said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted(Tier),
    Drift,
    Refused,
}

#[derive(Debug, Clone, Copy, Default)]
struct AgentView {
    /// In the agents table at the last reload; an entry may be folded before its agent
    /// is seen there (enrollment precedes the agent's first entry), never after.
    enrolled: bool,
    revoked: bool,
    last_accepted_ms: Option<u64>,
    latest: Option<(u64, Outcome)>,
}

impl AgentView {
    fn state(&self, now_ms: u64, max_gap_ms: u64) -> State {
        if self.revoked {
            return State::Revoked;
        }
        match self.latest {
            Some((_, Outcome::Drift)) => return State::Drift,
            Some((_, Outcome::Refused | Outcome::Accepted(Tier::Contraindicated))) => {
                return State::Contraindicated
            }
            _ => {}
        }
        let fresh = self
            .last_accepted_ms
            .is_some_and(|at| now_ms.saturating_sub(at) <= max_gap_ms);
        match self.latest {
            _ if !fresh => State::Stale,
            Some((_, Outcome::Accepted(Tier::Warning | Tier::None))) => State::Warning,
            _ => State::Healthy,
        }
    }
}

#[derive(Default)]
struct View {
    /// tenant → agent id → view; nested so a lookup borrows the request's strings.
    agents: HashMap<String, HashMap<String, AgentView>>,
    refreshed: Option<Instant>,
}

impl View {
    fn agent_mut(&mut self, tenant: &str, agent_id: &str) -> &mut AgentView {
        self.agents
            .entry(tenant.to_string())
            .or_default()
            .entry(agent_id.to_string())
            .or_default()
    }
}

/// The in-memory view decisions are answered from.
pub struct Enforcer {
    policies: HashMap<String, EnforcementPolicy>,
    max_gap_ms: u64,
    view: RwLock<View>,
}

/// Where the tail is: the last folded index, and when the agents were last read.
#[derive(Debug, Default)]
pub struct Cursor {
    started: bool,
    last_index: Option<u64>,
    agents_read: Option<Instant>,
}

impl Enforcer {
    /// An enforcer for the configured tenants' policies and the ledger's allowed gap.
    pub fn new(policies: &BTreeMap<String, EnforcementPolicy>, max_gap: Duration) -> Self {
        Enforcer {
            policies: policies.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            max_gap_ms: attestor_verify::time::duration_ms(max_gap),
            view: RwLock::new(View::default()),
        }
    }

    /// The decision for a request naming `identity` (none when the proxy sent none or it
    /// did not parse), at wall time `now_ms` and monotonic time `now`.
    pub fn decide(&self, identity: Option<&AgentIdentity>, now_ms: u64, now: Instant) -> Decision {
        let closed = EnforcementPolicy::default();
        let Some(who) = identity else {
            return closed.decision(Answer::Block, Undecidable::NoIdentity.name());
        };
        let Some(policy) = self.policies.get(&who.tenant) else {
            return closed.decision(Answer::Block, Undecidable::UnknownTenant.name());
        };
        let undecidable = |why: Undecidable| {
            let answer = match policy.fail {
                FailMode::Closed => Answer::Block,
                FailMode::Open => Answer::Allow,
            };
            policy.decision(answer, why.name())
        };
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        if view
            .refreshed
            .is_none_or(|at| now.saturating_duration_since(at) > OUTDATED_AFTER)
        {
            return undecidable(Undecidable::OutdatedView);
        }
        let agent = view
            .agents
            .get(&who.tenant)
            .and_then(|agents| agents.get(&who.agent_id))
            .filter(|a| a.enrolled);
        let Some(agent) = agent else {
            return undecidable(Undecidable::UnknownAgent);
        };
        let state = agent.state(now_ms, self.max_gap_ms);
        policy.decision(policy.answer(state), state.name())
    }

    /// Folds log entries into the view, in any order: an agent keeps the outcome of its
    /// highest index. Late entries and the ledger's own records (agent ids starting with
    /// `@`) say nothing of an agent's present.
    pub fn fold(&self, entries: &[StoredEntry]) {
        let judged: Vec<(&StoredEntry, Outcome)> = entries
            .iter()
            .filter(|e| e.entry.verdict != Verdict::Late && !e.entry.agent_id.starts_with('@'))
            .map(|e| (e, outcome(e)))
            .collect();
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        for (stored, outcome) in judged {
            let entry = &stored.entry;
            let agent = view.agent_mut(&entry.tenant, &entry.agent_id);
            if agent.latest.is_none_or(|(index, _)| index < stored.index) {
                agent.latest = Some((stored.index, outcome));
            }
            if let Outcome::Accepted(_) = outcome {
                agent.last_accepted_ms = agent.last_accepted_ms.max(Some(entry.received_at_ms));
            }
        }
    }

    /// Takes the agents table: enrollment, revocation and last acceptance. Agents no
    /// longer (or never) enrolled leave the view.
    pub fn load_agents(&self, agents: &[AgentStatus]) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        for tenant in view.agents.values_mut() {
            for agent in tenant.values_mut() {
                agent.enrolled = false;
            }
        }
        for record in agents {
            let agent = view.agent_mut(&record.tenant, &record.agent_id);
            agent.enrolled = true;
            agent.revoked = record.revoked;
            agent.last_accepted_ms = agent.last_accepted_ms.max(record.last_accepted_at_ms);
        }
        for tenant in view.agents.values_mut() {
            tenant.retain(|_, agent| agent.enrolled);
        }
        view.agents.retain(|_, tenant| !tenant.is_empty());
    }

    /// One round of the tail: at the first, the agents and each one's latest entry; then
    /// the agents again when due, and every entry after the last folded one. The view
    /// counts as current only once a round succeeded.
    pub fn refresh(&self, store: &dyn LedgerStore, cursor: &mut Cursor) -> Result<(), StoreError> {
        let now = Instant::now();
        if !cursor.started {
            // The size is read first: entries appended meanwhile are folded again by the
            // tail, which is harmless (the highest index wins).
            let size = store.len()?;
            self.load_agents(&store.agent_statuses()?);
            self.fold(&store.latest_entries_of_agents()?);
            (cursor.started, cursor.last_index, cursor.agents_read) =
                (true, size.checked_sub(1), Some(now));
        } else if cursor
            .agents_read
            .is_none_or(|at| now.saturating_duration_since(at) >= AGENTS_PERIOD)
        {
            // Before the tail: every agent of an entry folded so far is in the table now,
            // so only strangers' entries leave the view.
            self.load_agents(&store.agent_statuses()?);
            cursor.agents_read = Some(now);
        }
        loop {
            let page = store.query(&EntryQuery {
                after_index: cursor.last_index,
                limit: MAX_PAGE,
                ..EntryQuery::default()
            })?;
            self.fold(&page);
            if let Some(last) = page.last() {
                cursor.last_index = Some(last.index);
            }
            if page.len() < MAX_PAGE as usize {
                break;
            }
        }
        self.refreshed_at(now);
        Ok(())
    }

    /// Records that the view reflects the store as of `at`, as a successful
    /// [`Enforcer::refresh`] does; for a caller feeding the view through
    /// [`Enforcer::load_agents`] and [`Enforcer::fold`] itself.
    pub fn refreshed_at(&self, at: Instant) {
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .refreshed = Some(at);
    }
}

/// The outcome an entry records; a leaf that does not parse (the ledger wrote it, so it
/// should) counts as a refusal rather than as healthy.
fn outcome(stored: &StoredEntry) -> Outcome {
    let Ok(record) = LogRecord::from_leaf(&stored.entry.leaf) else {
        return Outcome::Refused;
    };
    match record.verdict {
        Verdict::Accepted => match record.ear.as_deref().map(ear::claims_unverified) {
            // Records before EARs (version 1) were judged on genuineness alone.
            None => Outcome::Accepted(Tier::Affirming),
            Some(Ok(ear)) => Outcome::Accepted(ear.status()),
            Some(Err(_)) => Outcome::Refused,
        },
        _ if record
            .reason
            .as_deref()
            .is_some_and(|r| DRIFT_REFUSALS.contains(&r)) =>
        {
            Outcome::Drift
        }
        _ => Outcome::Refused,
    }
}

/// Keeps `enforcer` within [`TAIL_PERIOD`] of the log until the runtime stops.
pub async fn keep_current(enforcer: Arc<Enforcer>, store: Arc<dyn LedgerStore>) {
    let cursor = Arc::new(std::sync::Mutex::new(Cursor::default()));
    loop {
        let (enforcer, store, cursor) = (enforcer.clone(), store.clone(), cursor.clone());
        let round = tokio::task::spawn_blocking(move || {
            let mut cursor = cursor.lock().unwrap_or_else(|e| e.into_inner());
            enforcer.refresh(store.as_ref(), &mut cursor)
        })
        .await;
        if let Ok(Err(e)) = round {
            attestor_net::limited_event!(
                tracing::Level::ERROR,
                "enforcement-refresh-failed",
                error = %e
            );
        }
        tokio::time::sleep(TAIL_PERIOD).await;
    }
}

/// The two protocols' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Envoy,
    Nginx,
}

/// Answers `/authz/envoy[/...]` (any method and suffix: Envoy appends the original
/// path) and `/authz/nginx`; `None` for other paths.
pub fn answer(enforcer: &Enforcer, asked: &Asked) -> Option<Page> {
    let under = |prefix: &str| {
        asked
            .path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let protocol = if under("/authz/envoy") {
        Protocol::Envoy
    } else if under("/authz/nginx") {
        Protocol::Nginx
    } else {
        return None;
    };
    let identity = asked
        .headers
        .get(IDENTITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|uri| AgentIdentity::from_uri(uri).ok())
        // Only an agent stands for a workload: an operator's identity is no identity here.
        .filter(|who| who.role == Role::Agent);
    let now_ms = attestor_verify::time::unix_ms(std::time::SystemTime::now());
    let decision = enforcer.decide(identity.as_ref(), now_ms, Instant::now());
    Some(page(protocol, decision))
}

fn page(protocol: Protocol, decision: Decision) -> Page {
    // nginx takes only 2xx, 401 and 403 from an auth subrequest: a throttle is a 401 its
    // configuration turns into 429 (deploy/nginx/attestor-authz.conf).
    let status = match (protocol, decision.answer) {
        (Protocol::Envoy, Answer::Allow) => StatusCode::OK,
        (Protocol::Nginx, Answer::Allow) => StatusCode::NO_CONTENT,
        (Protocol::Envoy, Answer::Throttle) => StatusCode::TOO_MANY_REQUESTS,
        (Protocol::Nginx, Answer::Throttle) => StatusCode::UNAUTHORIZED,
        (_, Answer::Block) => StatusCode::FORBIDDEN,
    };
    let body = match status {
        StatusCode::NO_CONTENT => String::new(),
        _ => format!("{}: {}\n", decision.answer.name(), decision.reason),
    };
    let mut page = Page::ok("text/plain; charset=utf-8", body)
        .with_header(
            HeaderName::from_static(DECISION_HEADER),
            HeaderValue::from_static(decision.answer.name()),
        )
        .with_header(
            HeaderName::from_static(REASON_HEADER),
            HeaderValue::from_static(decision.reason),
        );
    page.status = status;
    if let Some(seconds) = decision.retry_after_seconds {
        page = page.with_header(RETRY_AFTER, HeaderValue::from(seconds));
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentRecord, NewEntry};

    const GAP_MS: u64 = 120_000;
    const NOW_MS: u64 = 1_000_000;

    fn view(latest: Option<Outcome>, last_accepted_ms: Option<u64>) -> AgentView {
        AgentView {
            enrolled: true,
            last_accepted_ms,
            latest: latest.map(|o| (7, o)),
            ..AgentView::default()
        }
    }

    #[test]
    fn each_state_is_judged_from_the_latest_entry_revocation_and_the_gap() {
        let recent = Some(NOW_MS - 1_000);
        let old = Some(NOW_MS - GAP_MS - 1);
        let cases = [
            (
                view(Some(Outcome::Accepted(Tier::Affirming)), recent),
                State::Healthy,
            ),
            (
                view(Some(Outcome::Accepted(Tier::Warning)), recent),
                State::Warning,
            ),
            (
                view(Some(Outcome::Accepted(Tier::Affirming)), old),
                State::Stale,
            ),
            // Never attested since enrolling: nothing vouches for it yet.
            (view(None, None), State::Stale),
            (
                view(Some(Outcome::Accepted(Tier::Contraindicated)), recent),
                State::Contraindicated,
            ),
            (view(Some(Outcome::Refused), recent), State::Contraindicated),
            // A refusal outweighs silence: block stays block while the agent is quiet.
            (view(Some(Outcome::Drift), old), State::Drift),
            (
                AgentView {
                    revoked: true,
                    ..view(Some(Outcome::Accepted(Tier::Affirming)), recent)
                },
                State::Revoked,
            ),
        ];
        for (agent, state) in cases {
            assert_eq!(agent.state(NOW_MS, GAP_MS), state, "{agent:?}");
        }
    }

    #[test]
    fn the_default_policy_throttles_stale_and_warning_and_blocks_the_rest() {
        let policy = EnforcementPolicy::default();
        let answers = [
            (State::Healthy, Answer::Allow),
            (State::Stale, Answer::Throttle),
            (State::Warning, Answer::Throttle),
            (State::Contraindicated, Answer::Block),
            (State::Drift, Answer::Block),
            (State::Revoked, Answer::Block),
        ];
        for (state, answer) in answers {
            assert_eq!(policy.answer(state), answer, "{state:?}");
        }
        let throttled = policy.decision(Answer::Throttle, "stale");
        assert_eq!(throttled.retry_after_seconds, Some(30));
        assert_eq!(
            policy.decision(Answer::Block, "drift").retry_after_seconds,
            None
        );
    }

    fn record(index: u64, agent_id: &str, verdict: Verdict, reason: Option<&str>) -> StoredEntry {
        let record = LogRecord {
            version: 2,
            received_at_ms: NOW_MS - 10 + index,
            tenant: "acme".into(),
            agent_id: agent_id.into(),
            verdict,
            reason: reason.map(str::to_string),
            detail: None,
            attestation_id: None,
            policy_hash: None,
            submission: Vec::new(),
            discarded: None,
            ear: None,
            appraisal_policy: None,
        };
        StoredEntry {
            index,
            entry: NewEntry {
                received_at_ms: record.received_at_ms,
                tenant: record.tenant.clone(),
                agent_id: record.agent_id.clone(),
                verdict,
                attestation_id: None,
                leaf: record.to_leaf().unwrap(),
                leaf_hash: [0; 32],
                accepted_state: None,
                submission_hash: None,
            },
        }
    }

    fn enrolled(tenant: &str, agent_id: &str) -> AgentStatus {
        let who = AgentIdentity::new(tenant, agent_id).unwrap();
        AgentStatus::from(&AgentRecord::enrolled(&who, vec![1], vec![2], 0))
    }

    fn enforcer(fail_open_tenant: bool) -> Enforcer {
        let mut policies = BTreeMap::from([("acme".to_string(), EnforcementPolicy::default())]);
        if fail_open_tenant {
            let open = EnforcementPolicy {
                fail: FailMode::Open,
                ..EnforcementPolicy::default()
            };
            policies.insert("lenient".into(), open);
        }
        Enforcer::new(&policies, Duration::from_millis(GAP_MS))
    }

    fn decide(enforcer: &Enforcer, tenant: &str, agent_id: &str) -> Decision {
        let who = AgentIdentity::new(tenant, agent_id).unwrap();
        enforcer.decide(Some(&who), NOW_MS, Instant::now())
    }

    #[test]
    fn the_log_decides_late_and_ledger_records_are_ignored_and_strangers_leave() {
        let enforcer = enforcer(false);
        enforcer.load_agents(&[enrolled("acme", "a1"), enrolled("acme", "a2")]);
        enforcer.refreshed_at(Instant::now());
        enforcer.fold(&[
            record(1, "a1", Verdict::Accepted, None),
            record(2, "a2", Verdict::Accepted, None),
            record(3, "a2", Verdict::Refused, Some("kernel-config-drift")),
            // A late delivery proves the past only; the ledger's own record no agent's.
            record(4, "a2", Verdict::Late, None),
            record(5, "@ledger", Verdict::Accepted, None),
            record(6, "stranger", Verdict::Refused, Some("unknown-agent")),
        ]);
        // Folded out of order, an older entry does not undo a newer one.
        enforcer.fold(&[record(0, "a2", Verdict::Accepted, None)]);
        assert_eq!(decide(&enforcer, "acme", "a1").reason, "healthy");
        assert_eq!(decide(&enforcer, "acme", "a1").answer, Answer::Allow);
        let drifted = decide(&enforcer, "acme", "a2");
        assert_eq!((drifted.answer, drifted.reason), (Answer::Block, "drift"));
        assert_eq!(
            decide(&enforcer, "acme", "stranger").reason,
            "unknown-agent"
        );

        let mut revoked = enrolled("acme", "a1");
        revoked.revoked = true;
        enforcer.load_agents(&[revoked, enrolled("acme", "a2")]);
        assert_eq!(decide(&enforcer, "acme", "a1").reason, "revoked");
        assert!(!enforcer.view.read().unwrap().agents["acme"].contains_key("stranger"));
    }

    #[test]
    fn undecidable_requests_get_the_tenants_fail_mode_and_unknown_tenants_are_closed() {
        let enforcer = enforcer(true);
        enforcer.load_agents(&[enrolled("acme", "a1")]);
        // Nothing read from the store yet: the view is not trusted.
        let outdated = decide(&enforcer, "acme", "a1");
        assert_eq!(
            (outdated.answer, outdated.reason),
            (Answer::Block, "outdated-view")
        );
        let opened = decide(&enforcer, "lenient", "anyone");
        assert_eq!(
            (opened.answer, opened.reason),
            (Answer::Allow, "outdated-view")
        );
        enforcer.refreshed_at(Instant::now());
        let cases = [
            (
                decide(&enforcer, "acme", "nobody"),
                Answer::Block,
                "unknown-agent",
            ),
            (
                decide(&enforcer, "lenient", "nobody"),
                Answer::Allow,
                "unknown-agent",
            ),
            (
                decide(&enforcer, "other", "a1"),
                Answer::Block,
                "unknown-tenant",
            ),
            (
                enforcer.decide(None, NOW_MS, Instant::now()),
                Answer::Block,
                "no-identity",
            ),
        ];
        for (decision, answer, reason) in cases {
            assert_eq!((decision.answer, decision.reason), (answer, reason));
        }
        let later = Instant::now() + OUTDATED_AFTER + Duration::from_secs(1);
        let who = AgentIdentity::new("acme", "a1").unwrap();
        assert_eq!(
            enforcer.decide(Some(&who), NOW_MS, later).reason,
            "outdated-view"
        );
    }

    #[test]
    fn the_protocols_answer_with_their_status_codes_and_headers() {
        let throttle = Decision {
            answer: Answer::Throttle,
            reason: "stale",
            retry_after_seconds: Some(9),
        };
        let allow = Decision {
            answer: Answer::Allow,
            reason: "healthy",
            retry_after_seconds: None,
        };
        let block = Decision {
            answer: Answer::Block,
            reason: "drift",
            retry_after_seconds: None,
        };
        let cases = [
            (Protocol::Envoy, allow, 200),
            (Protocol::Envoy, throttle, 429),
            (Protocol::Envoy, block, 403),
            (Protocol::Nginx, allow, 204),
            (Protocol::Nginx, throttle, 401),
            (Protocol::Nginx, block, 403),
        ];
        for (protocol, decision, status) in cases {
            let page = page(protocol, decision);
            assert_eq!(page.status.as_u16(), status, "{protocol:?} {decision:?}");
            let header = |name: &str| {
                page.headers
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .map(|(_, v)| v.to_str().unwrap().to_string())
            };
            assert_eq!(
                header(DECISION_HEADER).as_deref(),
                Some(decision.answer.name())
            );
            assert_eq!(header(REASON_HEADER).as_deref(), Some(decision.reason));
            let retry = (decision.answer == Answer::Throttle).then(|| "9".to_string());
            assert_eq!(header("retry-after"), retry);
        }
    }

    #[test]
    fn enforcement_tables_are_validated_at_load() {
        let config = |table: &str| {
            format!(
                "listen = \"127.0.0.1:8443\"\nstate_dir = \"s\"\norigin = \"o\"\nprofile = \"p\"\n\
                 [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[tenants.acme]\npolicy_hash = \"{}\"\n\
                 [tenants.acme.enforcement]\n{table}\n",
                "ab".repeat(32)
            )
        };
        let parse = |table: &str| {
            crate::config::LedgerConfig::parse(&config(table), std::path::Path::new("l.toml"))
        };
        let loaded = parse("stale = \"block\"\nfail = \"open\"\nretry_after_seconds = 5").unwrap();
        let acme = loaded.enforcement["acme"];
        assert_eq!(
            (acme.stale, acme.fail, acme.retry_after_seconds),
            (Answer::Block, FailMode::Open, 5)
        );
        assert_eq!(acme.warning, Answer::Throttle);
        let e = parse("retry_after_seconds = 0").unwrap_err();
        assert!(
            matches!(
                &e,
                crate::config::LedgerConfigError::Enforcement {
                    source: EnforcementConfigError::RetryAfter(0),
                    ..
                }
            ),
            "{e}"
        );
        for (bad, named) in [
            ("stale = \"maybe\"", "maybe"),
            ("fail = \"ajar\"", "ajar"),
            ("surprise = 1", "surprise"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(named), "{bad}: {e}");
        }
    }
}
