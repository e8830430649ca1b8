//! The appraisal policy file: TOML, every key documented in `examples/appraisal.toml`.
//! Every error names the line and the dotted key at fault, so an operator can fix a
//! policy a reload refused without guessing.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ear::Tier;

/// Policy files larger than this are refused before parsing.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// Why an appraisal policy is unusable. Every variant names the line and key at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("cannot read appraisal policy {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is over [`MAX_POLICY_BYTES`].
    #[error("appraisal policy is {0} bytes, over the {MAX_POLICY_BYTES}-byte limit")]
    TooLarge(usize),
    /// A key is unknown, has the wrong type, or holds an impossible value.
    #[error("appraisal policy line {line}, key `{key}`: {message}")]
    Invalid {
        /// 1-based line of the key (or of the table, for a missing key).
        line: usize,
        /// The key's dotted path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// What breaking one rule gives; contraindicated unless the policy says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The attester must not be trusted.
    #[default]
    Contraindicated,
    /// Worth a look; the attester stays trusted.
    Warning,
    /// Not judged.
    Ignore,
}

impl Severity {
    pub(crate) fn tier(self) -> Option<Tier> {
        match self {
            Severity::Contraindicated => Some(Tier::Contraindicated),
            Severity::Warning => Some(Tier::Warning),
            Severity::Ignore => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    name: String,
    revision: u64,
    #[serde(default)]
    policy_hashes: Vec<ApprovedHashToml>,
    #[serde(default)]
    posture: PostureRules,
    #[serde(default)]
    privacy: PrivacyRules,
    capabilities: Option<CapabilityRules>,
    #[serde(default)]
    version: VersionToml,
    #[serde(default)]
    counters: CounterRules,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovedHashToml {
    sha256: String,
    expires: Option<toml::value::Datetime>,
}

/// The runtime's posture flags: each must be true, else its severity applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostureRules {
    /// `tenant_isolation = false` gives this.
    #[serde(default)]
    pub tenant_isolation: Severity,
    /// `egress_firewall_enabled = false` gives this.
    #[serde(default)]
    pub egress_firewall_enabled: Severity,
    /// `pii_detection_enabled = false` gives this.
    #[serde(default)]
    pub pii_detection_enabled: Severity,
}

/// The differential-privacy budget and the tenant's ceilings on it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRules {
    /// Ceiling on the `max_epsilon` the attested policy may allow.
    pub max_epsilon: Option<f64>,
    /// Ceiling on the `max_delta` the attested policy may allow.
    pub max_delta: Option<f64>,
    /// Shortest allowed `reset_interval` (seconds).
    pub min_reset_interval_seconds: Option<u64>,
    /// Longest allowed `reset_interval` (seconds).
    pub max_reset_interval_seconds: Option<u64>,
    /// `current_usage` above the attested `max_epsilon` gives this.
    #[serde(default)]
    pub over_budget: Severity,
    /// `max_epsilon` or `max_delta` above the ceilings gives this.
    #[serde(default)]
    pub above_ceiling: Severity,
    /// `reset_interval` outside the bounds gives this.
    #[serde(default)]
    pub reset_interval: Severity,
}

/// The capability keys the runtime may have active.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityRules {
    /// The allowed keys; any other gives `unknown_key`.
    pub allowed: Vec<AllowedKey>,
    /// An active key not in `allowed` gives this.
    #[serde(default)]
    pub unknown_key: Severity,
}

/// One allowed capability key: its id, and when given its fingerprint and algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedKey {
    /// The kernel's name for the key.
    pub key_id: String,
    /// When given, the key's fingerprint must be this (lowercase hex).
    pub fingerprint: Option<String>,
    /// When given, the key's algorithm must be this.
    pub algorithm: Option<String>,
}

impl AllowedKey {
    pub(crate) fn matches(&self, key: &crate::claims::CapabilityKey) -> bool {
        self.key_id == key.key_id
            && self
                .fingerprint
                .as_ref()
                .is_none_or(|f| f.eq_ignore_ascii_case(&key.fingerprint))
            && self.algorithm.as_ref().is_none_or(|a| *a == key.algorithm)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionToml {
    minimum: Option<String>,
    #[serde(default)]
    allowed: Vec<String>,
    #[serde(default)]
    violation: Severity,
}

/// Rules on the attested software's `version` (semantic versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRules {
    /// The lowest acceptable version.
    pub minimum: Option<semver::Version>,
    /// When not empty, the only acceptable versions.
    pub allowed: Vec<semver::Version>,
    /// A version below the minimum, not allowed, or not a semantic version gives this.
    pub violation: Severity,
}

/// Rules on the runtime's counters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRules {
    /// A counter lower than in the previous accepted attestation of the same run (uptime
    /// did not go back) gives this.
    #[serde(default)]
    pub regression: Severity,
    /// The window rates are taken over.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// Fewer requests than this in the window are too few to judge a rate.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// `blocked_requests / total_requests` at or above this is a warning.
    pub blocked_rate_warning: Option<f64>,
    /// ... and at or above this, contraindicated.
    pub blocked_rate_contraindicated: Option<f64>,
    /// `capability_failures / total_requests` at or above this is a warning.
    pub capability_failure_rate_warning: Option<f64>,
    /// ... and at or above this, contraindicated.
    pub capability_failure_rate_contraindicated: Option<f64>,
}

fn default_window() -> u64 {
    3600
}
fn default_min_requests() -> u64 {
    100
}

impl Default for CounterRules {
    fn default() -> Self {
        CounterRules {
            regression: Severity::default(),
            window_seconds: default_window(),
            min_requests: default_min_requests(),
            blocked_rate_warning: None,
            blocked_rate_contraindicated: None,
            capability_failure_rate_warning: None,
            capability_failure_rate_contraindicated: None,
        }
    }
}

/// A policy hash the policy approves, until `expires_at` when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedPolicyHash {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Unix seconds after which it is no longer approved (a canary's old policy).
    pub expires_at: Option<u64>,
}

impl ApprovedPolicyHash {
    /// `sha256` (hex, any case), approved without a deadline.
    pub fn always(sha256: &str) -> Self {
        ApprovedPolicyHash {
            sha256: sha256.to_ascii_lowercase(),
            expires_at: None,
        }
    }
}

/// A loaded appraisal policy.
#[derive(Debug, Clone, PartialEq)]
pub struct AppraisalPolicy {
    /// The policy's name.
    pub name: String,
    /// Its revision: operators bump it with each change.
    pub revision: u64,
    /// Lowercase hex SHA-256 of the policy file's bytes.
    pub sha256: String,
    /// The policy file's text, as loaded (what a ledger records in its log).
    pub document: String,
    /// Approved policy hashes, besides any the caller adds.
    pub policy_hashes: Vec<ApprovedPolicyHash>,
    /// Posture flag rules.
    pub posture: PostureRules,
    /// Privacy budget rules.
    pub privacy: PrivacyRules,
    /// Capability key rules; absent: any key is accepted.
    pub capabilities: Option<CapabilityRules>,
    /// Version rules.
    pub version: VersionRules,
    /// Counter rules.
    pub counters: CounterRules,
}

/// The policy an operator gets without writing one: strict rules that need no
/// reference data (see the module documentation).
pub const BUILTIN_POLICY: &str = "name = \"builtin\"\nrevision = 1\n";

impl AppraisalPolicy {
    /// [`BUILTIN_POLICY`].
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_POLICY).expect("the built-in appraisal policy is valid")
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let read = |source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_POLICY_BYTES as u64 {
            return Err(PolicyError::TooLarge(size as usize));
        }
        Self::parse(&std::fs::read_to_string(path).map_err(read)?)
    }

    /// Parses and checks policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(text.len()));
        }
        let raw: PolicyToml = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_at(text, s.start));
            PolicyError::Invalid {
                line,
                key: key_on_line(text, line),
                message: e.message().to_string(),
            }
        })?;
        let invalid = |path: &[Seg<'_>], message: String| PolicyError::Invalid {
            line: line_of(text, path),
            key: dotted(path),
            message,
        };
        let mut policy_hashes = Vec::new();
        for (i, approved) in raw.policy_hashes.into_iter().enumerate() {
            let at = |key| [Seg::Key("policy_hashes"), Seg::Index(i), Seg::Key(key)];
            let sha256 = approved.sha256.to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(&at("sha256"), "must be 64 hex digits".into()));
            }
            let expires_at = match approved.expires {
                None => None,
                Some(datetime) => Some(unix_seconds(&datetime).ok_or_else(|| {
                    invalid(
                        &at("expires"),
                        "must be a date-time with an offset, like 2027-01-31T00:00:00Z".into(),
                    )
                })?),
            };
            policy_hashes.push(ApprovedPolicyHash { sha256, expires_at });
        }
        let privacy = raw.privacy;
        for (key, ceiling) in [
            ("max_epsilon", privacy.max_epsilon),
            ("max_delta", privacy.max_delta),
        ] {
            if ceiling.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
                return Err(invalid(
                    &[Seg::Key("privacy"), Seg::Key(key)],
                    "must be a finite number, at least 0".into(),
                ));
            }
        }
        if let (Some(min), Some(max)) = (
            privacy.min_reset_interval_seconds,
            privacy.max_reset_interval_seconds,
        ) {
            if min > max {
                return Err(invalid(
                    &[Seg::Key("privacy"), Seg::Key("min_reset_interval_seconds")],
                    format!("{min} is above max_reset_interval_seconds ({max})"),
                ));
            }
        }
        if let Some(capabilities) = &raw.capabilities {
            for (i, key) in capabilities.allowed.iter().enumerate() {
                if key
                    .fingerprint
                    .as_ref()
                    .is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(invalid(
                        &[
                            Seg::Key("capabilities"),
                            Seg::Key("allowed"),
                            Seg::Index(i),
                            Seg::Key("fingerprint"),
                        ],
                        "must be hex".into(),
                    ));
                }
            }
        }
        let semver = |key: &'static str, i: Option<usize>, text: &str| {
            semver::Version::parse(text).map_err(|e| {
                let mut path = vec![Seg::Key("version"), Seg::Key(key)];
                path.extend(i.map(Seg::Index));
                invalid(&path, format!("{text:?} is not a semantic version: {e}"))
            })
        };
        let version = VersionRules {
            minimum: raw
                .version
                .minimum
                .as_deref()
                .map(|m| semver("minimum", None, m))
                .transpose()?,
            allowed: raw
                .version
                .allowed
                .iter()
                .enumerate()
                .map(|(i, v)| semver("allowed", Some(i), v))
                .collect::<Result<_, _>>()?,
            violation: raw.version.violation,
        };
        let counters = raw.counters;
        if counters.window_seconds == 0 {
            return Err(invalid(
                &[Seg::Key("counters"), Seg::Key("window_seconds")],
                "must be positive".into(),
            ));
        }
        for (warning_key, warning, worse_key, worse) in [
            (
                "blocked_rate_warning",
                counters.blocked_rate_warning,
                "blocked_rate_contraindicated",
                counters.blocked_rate_contraindicated,
            ),
            (
                "capability_failure_rate_warning",
                counters.capability_failure_rate_warning,
                "capability_failure_rate_contraindicated",
                counters.capability_failure_rate_contraindicated,
            ),
        ] {
            for (key, rate) in [(warning_key, warning), (worse_key, worse)] {
                if rate.is_some_and(|r| !(r.is_finite() && (0.0..=1.0).contains(&r))) {
                    return Err(invalid(
                        &[Seg::Key("counters"), Seg::Key(key)],
                        "must be a rate from 0 to 1".into(),
                    ));
                }
            }
            if let (Some(w), Some(c)) = (warning, worse) {
                if w > c {
                    return Err(invalid(
                        &[Seg::Key("counters"), Seg::Key(warning_key)],
                        format!("{w} is above {worse_key} ({c})"),
                    ));
                }
            }
        }
        Ok(AppraisalPolicy {
            name: raw.name,
            revision: raw.revision,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            document: text.to_string(),
            policy_hashes,
            posture: raw.posture,
            privacy,
            capabilities: raw.capabilities,
            version,
            counters,
        })
    }

    /// The id an EAR names this policy by: name, revision and the file's digest, so an
    /// auditor can find the exact text in the log even if a revision was not bumped.
    pub fn id(&self) -> String {
        format!("{}@{}#sha256:{}", self.name, self.revision, self.sha256)
    }
}

/// 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a line assigns (`key = ...`) or the table it opens (`[table]`).
fn key_on_line(text: &str, line: usize) -> String {
    let content = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
    let key = match content.split_once('=') {
        Some((key, _)) => key,
        None => content,
    };
    key.trim()
        .trim_matches(|c| c == '[' || c == ']')
        .to_string()
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn dotted(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Line of the deepest part of `path` the document has.
fn line_of(text: &str, path: &[Seg<'_>]) -> usize {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return 1;
    };
    let mut table: Option<&dyn toml_edit::TableLike> = Some(doc.as_table());
    let mut item: Option<&toml_edit::Item> = None;
    let mut span = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let Some((key, value)) = table.and_then(|t| t.get_key_value(k)) else {
                    break;
                };
                span = key.span().or(span);
                table = value.as_table_like();
                item = Some(value);
            }
            Seg::Index(i) => {
                let Some(entry) = item
                    .and_then(|it| it.as_array_of_tables())
                    .and_then(|a| a.get(*i))
                else {
                    break;
                };
                span = entry.span().or(span);
                table = Some(entry);
                item = None;
            }
        }
    }
    span.map_or(1, |s| line_at(text, s.start))
}

fn unix_seconds(datetime: &toml::value::Datetime) -> Option<u64> {
    datetime.offset?;
    let parsed = time::OffsetDateTime::parse(
        &datetime.to_string(),
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    u64::try_from(parsed.unix_timestamp()).ok()
}

/// Whether `hash` is approved at `now_secs` by any of `approved`.
pub fn policy_hash_approval(
    approved: &[ApprovedPolicyHash],
    hash: &str,
    now_secs: u64,
) -> HashApproval {
    let mut expired = None;
    for a in approved
        .iter()
        .filter(|a| a.sha256.eq_ignore_ascii_case(hash))
    {
        match a.expires_at {
            Some(at) if now_secs >= at => expired = expired.max(Some(at)),
            _ => return HashApproval::Approved,
        }
    }
    expired.map_or(HashApproval::Unknown, |at| HashApproval::Expired { at })
}

/// What an approved-hash list says of one policy hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashApproval {
    /// Approved now.
    Approved,
    /// Was approved until `at` (Unix seconds).
    Expired {
        /// When its approval ended.
        at: u64,
    },
    /// Never approved.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_policies_are_refused_with_line_and_key() {
        let cases = [
            ("name = \"n\"\nrevision = 1\n[posture]\ntenant_isolaton = \"warning\"\n", 4, "tenant_isolaton", "unknown field"),
            ("name = \"n\"\nrevision = 1\n[posture]\ntenant_isolation = true\n", 4, "tenant_isolation", "wanted string"),
            ("name = \"n\"\nrevision = 1\n[posture]\ntenant_isolation = \"maybe\"\n", 4, "tenant_isolation", "unknown variant"),
            ("name = \"n\"\nrevision = \"one\"\n", 2, "revision", "invalid type"),
            ("name = \"n\"\nrevision = 1\n\n[privacy]\nmin_reset_interval_seconds = 90000\nmax_reset_interval_seconds = 3600\n", 5, "privacy.min_reset_interval_seconds", "above"),
            ("name = \"n\"\nrevision = 1\n[privacy]\nmax_epsilon = -1.0\n", 4, "privacy.max_epsilon", "at least 0"),
            ("name = \"n\"\nrevision = 1\n[counters]\nblocked_rate_warning = 0.5\nblocked_rate_contraindicated = 0.1\n", 4, "counters.blocked_rate_warning", "above"),
            ("name = \"n\"\nrevision = 1\n[counters]\nblocked_rate_warning = 1.5\n", 4, "counters.blocked_rate_warning", "rate"),
            ("name = \"n\"\nrevision = 1\n[counters]\nwindow_seconds = 0\n", 4, "counters.window_seconds", "positive"),
            ("name = \"n\"\nrevision = 1\n[version]\nminimum = \"1.x\"\n", 4, "version.minimum", "semantic"),
            ("name = \"n\"\nrevision = 1\n[[policy_hashes]]\nsha256 = \"ab\"\n[[policy_hashes]]\nsha256 = \"zz\"\n", 4, "policy_hashes[0].sha256", "64 hex"),
            ("name = \"n\"\nrevision = 1\n[[policy_hashes]]\nsha256 = \"{h}\"\n[[policy_hashes]]\nsha256 = \"{h}\"\nexpires = 2027-01-31\n", 7, "policy_hashes[1].expires", "offset"),
        ];
        for (text, line, key, message) in cases {
            let text = text.replace("{h}", &"ab".repeat(32));
            match AppraisalPolicy::parse(&text) {
                Err(PolicyError::Invalid {
                    line: l,
                    key: k,
                    message: m,
                }) => {
                    assert_eq!((l, k.as_str()), (line, key), "{text}: {m}");
                    assert!(m.contains(message), "{text}: {m}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
