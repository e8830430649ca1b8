//! Posture appraisal at the ledger: each tenant's appraisal policy (swapped whole on
//! SIGHUP), what each agent's recent attestations counted, and the key EARs are signed
//! with. The judgement itself is [`attestor_verify::appraisal`], the same offline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use thiserror::Error;

use crate::submission::TenantPolicy;
use attestor_net::tls::AgentIdentity;
use attestor_verify::appraisal::Sample;
use attestor_verify::appraisal::{AppraisalPolicy, ApprovedPolicyHash, PolicyError};
use attestor_verify::ear::{Ear, EarError, EarSigner, Jwks};

/// Samples kept per agent: the counter window needs the oldest one inside it, so a
/// sample is kept only when it is at least a window/[`SAMPLES_PER_WINDOW`] younger than
/// the one before, bounding memory whatever the heartbeat.
const SAMPLES_PER_WINDOW: u64 = 16;

/// Why the appraisal policies cannot be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AppraiseError {
    #[error("tenant {tenant}: appraisal policy {path}: {source}")]
    Policy {
        tenant: String,
        path: PathBuf,
        source: PolicyError,
    },
}

/// One tenant's appraisal: its policy and the policy hashes approved with it.
#[derive(Debug)]
pub struct TenantAppraisal {
    /// The tenant.
    pub tenant: String,
    /// The policy judging the tenant's attestations.
    pub policy: AppraisalPolicy,
    /// The tenant's `policy_hash` (never expiring) and those the policy approves.
    pub approved: Vec<ApprovedPolicyHash>,
    /// Whether the log already holds this policy (so it may judge).
    recorded: AtomicBool,
}

impl TenantAppraisal {
    fn load(name: &str, tenant: &TenantPolicy) -> Result<Self, AppraiseError> {
        let policy = match &tenant.appraisal {
            None => AppraisalPolicy::builtin(),
            Some(path) => AppraisalPolicy::load(path).map_err(|source| AppraiseError::Policy {
                tenant: name.to_string(),
                path: path.clone(),
                source,
            })?,
        };
        let mut approved = vec![ApprovedPolicyHash {
            sha256: tenant.policy_hash.clone(),
            expires_at: None,
        }];
        approved.extend(
            policy
                .policy_hashes
                .iter()
                .filter(|h| h.sha256 != tenant.policy_hash)
                .cloned(),
        );
        // The built-in policy is a documented constant that every EAR names by its digest:
        // only an operator's policy file needs its document in the log.
        let builtin = tenant.appraisal.is_none();
        Ok(TenantAppraisal {
            tenant: name.to_string(),
            policy,
            approved,
            recorded: AtomicBool::new(builtin),
        })
    }

    /// Whether the log already holds this policy.
    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Notes that the log holds this policy.
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    /// The approved policy hashes not expired at `now_secs`.
    pub fn approved_now(&self, now_secs: u64) -> Vec<String> {
        self.approved
            .iter()
            .filter(|h| h.expires_at.is_none_or(|at| now_secs <= at))
            .map(|h| h.sha256.clone())
            .collect()
    }
}

/// The ledger's appraisals.
pub struct Appraiser {
    signer: EarSigner,
    policies: RwLock<BTreeMap<String, Arc<TenantAppraisal>>>,
    history: Mutex<HashMap<AgentIdentity, VecDeque<Sample>>>,
}

fn load_all(
    tenants: &BTreeMap<String, TenantPolicy>,
) -> Result<BTreeMap<String, Arc<TenantAppraisal>>, AppraiseError> {
    tenants
        .iter()
        .map(|(name, tenant)| Ok((name.clone(), Arc::new(TenantAppraisal::load(name, tenant)?))))
        .collect()
}

impl Appraiser {
    /// Loads every tenant's policy; EARs are signed by `signer`.
    pub fn load(
        tenants: &BTreeMap<String, TenantPolicy>,
        signer: EarSigner,
    ) -> Result<Self, AppraiseError> {
        Ok(Appraiser {
            signer,
            policies: RwLock::new(load_all(tenants)?),
            history: Mutex::default(),
        })
    }

    /// Reads every tenant's policy again and swaps them all in, or none when one fails.
    /// An unchanged policy keeps its state; returns the tenants whose policy changed.
    pub fn reload(
        &self,
        tenants: &BTreeMap<String, TenantPolicy>,
    ) -> Result<Vec<String>, AppraiseError> {
        let fresh = load_all(tenants)?;
        let mut policies = self.policies.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        let merged = fresh
            .into_iter()
            .map(|(name, new)| match policies.get(&name) {
                Some(old) if old.policy == new.policy && old.approved == new.approved => {
                    (name, old.clone())
                }
                _ => {
                    changed.push(name.clone());
                    (name, new)
                }
            })
            .collect();
        *policies = merged;
        Ok(changed)
    }

    /// The tenant's appraisal.
    pub fn tenant(&self, tenant: &str) -> Option<Arc<TenantAppraisal>> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
    }

    /// Every tenant's appraisal.
    pub fn tenants(&self) -> BTreeMap<String, Arc<TenantAppraisal>> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The agent's samples, oldest first.
    pub fn history(&self, who: &AgentIdentity) -> Vec<Sample> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history
            .get(who)
            .map(|samples| samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Keeps an accepted attestation's counters for the agent's next appraisals:
    /// always the latest, and older ones only as far apart and as far back as
    /// `window_seconds` needs.
    pub fn remember(&self, who: &AgentIdentity, sample: Sample, window_seconds: u64) {
        let window_ms = window_seconds.saturating_mul(1000);
        let spacing_ms = window_ms / SAMPLES_PER_WINDOW;
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let samples = history.entry(who.clone()).or_default();
        // The latest sample is replaced unless it is far enough from the one before it
        // to be kept as a point of the window.
        let len = samples.len();
        if len >= 2
            && samples[len - 1]
                .at_ms
                .saturating_sub(samples[len - 2].at_ms)
                < spacing_ms
        {
            samples.pop_back();
        }
        samples.push_back(sample);
        // Keep one sample at or before the window's start, so a rate spans the window.
        while samples.len() > 2 && samples[1].at_ms.saturating_add(window_ms) <= sample.at_ms {
            samples.pop_front();
        }
    }

    /// Signs an EAR.
    pub fn sign(&self, ear: &Ear) -> Result<String, EarError> {
        self.signer.sign(ear)
    }

    /// The EAR verification key set.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.signer.jwk()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestor_verify::appraisal::Counters;

    fn sample(at_ms: u64) -> Sample {
        Sample {
            at_ms,
            counters: Counters {
                total_requests: at_ms,
                blocked_requests: 0,
                capability_failures: 0,
                plan_validations: 0,
                uptime_seconds: at_ms / 1000,
            },
        }
    }

    #[test]
    fn history_spans_the_window_with_bounded_samples() {
        let appraiser = Appraiser::load(&BTreeMap::new(), EarSigner::generate().unwrap()).unwrap();
        let who = AgentIdentity::new("t", "a").unwrap();
        // A day of 15 s heartbeats against a one-hour window.
        for i in 0..5760u64 {
            appraiser.remember(&who, sample(i * 15_000), 3600);
        }
        let kept = appraiser.history(&who);
        let latest = 5759 * 15_000;
        assert_eq!(kept.last().unwrap().at_ms, latest);
        assert!(
            kept.len() <= SAMPLES_PER_WINDOW as usize + 3,
            "{} samples",
            kept.len()
        );
        assert!(
            kept[0].at_ms <= latest - 3_600_000,
            "the oldest reaches the window start"
        );
        assert!(kept[1].at_ms > latest - 3_600_000);
    }
}
