//! Inputs the agent reads: the policy kernel's configuration files (hashed with a
//! documented canonicalisation) and its runtime status (a JSON file or a loopback HTTP
//! endpoint).
//!
//! Canonicalisation (also in the README):
//! - The *policy document* (TOML or JSON, chosen by file extension) is parsed and
//!   re-encoded as deterministic CBOR (RFC 8949 §4.2.1): formatting, comments and key
//!   order do not change it. `policy_hash` = SHA-256 of those bytes.
//! - Every other *configuration file* is taken as raw bytes.
//! - `kernel_config_hash` = SHA-384 of the deterministic CBOR map
//!   `{"files": {<file name>: SHA-384(raw bytes), ...}, "policy": SHA-384(canonical policy)}`,
//!   file names being the base names (they must be unique). This digest is what the agent
//!   extends into the measured PCR.

use attestor_net::http::HttpClient;
use hyper::Method;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use thiserror::Error;

use attestor_verify::claims::CapabilityKey;

/// Larger inputs than this are refused before parsing.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// How long the agent waits for the status endpoint.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an input could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, over the {MAX_INPUT_BYTES}-byte limit")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("policy document {path} is not valid {format}: {message}")]
    PolicySyntax {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("policy document {path} must have a .toml or .json extension")]
    PolicyFormat { path: PathBuf },
    #[error("policy document {path}: {message}")]
    PolicyContent { path: PathBuf, message: String },
    #[error("two policy kernel configuration files share the name {0:?}")]
    DuplicateFileName(String),
    #[error("status from {source_name} is malformed: {message}")]
    StatusMalformed {
        source_name: String,
        message: String,
    },
    #[error("status endpoint {url} is not usable: {message}")]
    StatusEndpoint { url: String, message: String },
    #[error("status endpoint {url}: {source}")]
    StatusTransport {
        url: String,
        source: attestor_net::http::HttpError,
    },
    #[error("cannot canonicalise the policy document: {0}")]
    Canonical(#[from] attestor_verify::cbor::CborError),
}

/// The privacy limits and zero-retention flag the policy document declares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PolicyDeclarations {
    zero_retention: bool,
    privacy: PrivacyLimits,
}

/// Differential-privacy limits from the policy document's `[privacy]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PrivacyLimits {
    pub max_epsilon: f64,
    pub max_delta: f64,
    pub reset_interval_seconds: u64,
}

/// The hashed, measured state of the policy kernel's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyKernelConfig {
    /// SHA-256 of the canonical policy document.
    pub policy_hash: [u8; 32],
    /// SHA-384 over the configuration manifest: the PCR measurement.
    pub kernel_config_hash: [u8; 48],
    pub zero_retention: bool,
    pub privacy: PrivacyLimits,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(with = "serde_bytes_map")]
    files: &'a BTreeMap<String, Vec<u8>>,
    #[serde(with = "serde_bytes_vec")]
    policy: &'a [u8],
}

// Digests go into CBOR as byte strings, not arrays of integers.
mod serde_bytes_vec {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}
mod serde_bytes_map {
    use serde::ser::SerializeMap;
    use std::collections::BTreeMap;
    pub(super) fn serialize<S: serde::Serializer>(
        v: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        struct B<'a>(&'a [u8]);
        impl serde::Serialize for B<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, d) in v {
            m.serialize_entry(k, &B(d))?;
        }
        m.end()
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, CollectError> {
    let read_err = |source| CollectError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_INPUT_BYTES as u64 {
        return Err(CollectError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// Parses a policy document into a generic value tree, by extension.
fn parse_policy(path: &Path, bytes: &[u8]) -> Result<ciborium::Value, CollectError> {
    let syntax = |format: &'static str, message: String| CollectError::PolicySyntax {
        path: path.to_path_buf(),
        format,
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            let text = std::str::from_utf8(bytes).map_err(|e| syntax("TOML", e.to_string()))?;
            toml::from_str(text).map_err(|e| syntax("TOML", e.message().to_string()))
        }
        Some("json") => serde_json::from_slice(bytes).map_err(|e| syntax("JSON", e.to_string())),
        _ => Err(CollectError::PolicyFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads and hashes the policy document and the other configuration files.
pub fn read_policy_kernel(
    policy: &Path,
    config_files: &[PathBuf],
) -> Result<PolicyKernelConfig, CollectError> {
    let raw = read_limited(policy)?;
    let value = parse_policy(policy, &raw)?;
    let declarations: PolicyDeclarations =
        value
            .deserialized()
            .map_err(|e: ciborium::value::Error| CollectError::PolicyContent {
                path: policy.to_path_buf(),
                message: format!(
                    "needs `zero_retention` (bool) and a [privacy] table with max_epsilon, \
                     max_delta, reset_interval_seconds: {e}"
                ),
            })?;
    let limits = &declarations.privacy;
    if !(limits.max_epsilon.is_finite()
        && limits.max_epsilon >= 0.0
        && limits.max_delta.is_finite()
        && (0.0..=1.0).contains(&limits.max_delta))
    {
        return Err(CollectError::PolicyContent {
            path: policy.to_path_buf(),
            message: "privacy.max_epsilon must be a finite number >= 0 and max_delta in [0, 1]"
                .into(),
        });
    }
    let canonical_policy = attestor_verify::cbor::to_canonical_vec(&value)?;

    let mut files = BTreeMap::new();
    for path in config_files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digest = Sha384::digest(read_limited(path)?).to_vec();
        if files.insert(name.clone(), digest).is_some() {
            return Err(CollectError::DuplicateFileName(name));
        }
    }
    let policy_sha384 = Sha384::digest(&canonical_policy);
    let manifest = attestor_verify::cbor::to_canonical_vec(&Manifest {
        files: &files,
        policy: &policy_sha384,
    })?;
    Ok(PolicyKernelConfig {
        policy_hash: Sha256::digest(&canonical_policy).into(),
        kernel_config_hash: Sha384::digest(&manifest).into(),
        zero_retention: declarations.zero_retention,
        privacy: declarations.privacy,
    })
}

/// `policy_hash` of a policy document alone, for operators setting expected values.
pub fn policy_hash_of(policy: &Path) -> Result<[u8; 32], CollectError> {
    let raw = read_limited(policy)?;
    let canonical = attestor_verify::cbor::to_canonical_vec(&parse_policy(policy, &raw)?)?;
    Ok(Sha256::digest(canonical).into())
}

/// What the running policy kernel reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// The policy kernel's own version: the attested software's.
    pub version: String,
    /// Differential-privacy budget consumed in the current interval.
    pub epsilon_current_usage: f64,
    pub capability_keys: Vec<CapabilityKey>,
    pub tenant_isolation: bool,
    pub egress_firewall_enabled: bool,
    pub pii_detection_enabled: bool,
    pub total_requests: u64,
    pub blocked_requests: u64,
    pub capability_failures: u64,
    pub plan_validations: u64,
    pub uptime_seconds: u64,
}

impl RuntimeStatus {
    /// Parses and sanity-checks a status document.
    pub fn from_json(source_name: &str, bytes: &[u8]) -> Result<Self, CollectError> {
        let malformed = |message: String| CollectError::StatusMalformed {
            source_name: source_name.to_string(),
            message,
        };
        let status: RuntimeStatus =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if !status.epsilon_current_usage.is_finite() || status.epsilon_current_usage < 0.0 {
            return Err(malformed(
                "epsilon_current_usage must be a finite, non-negative number".into(),
            ));
        }
        if status.blocked_requests > status.total_requests {
            return Err(malformed("blocked_requests exceeds total_requests".into()));
        }
        let printable = |c: char| c.is_ascii_graphic();
        if status.version.is_empty()
            || status.version.len() > 64
            || !status.version.chars().all(printable)
        {
            return Err(malformed(
                "version must be 1 to 64 printable ASCII characters without spaces".into(),
            ));
        }
        Ok(status)
    }
}

/// Where the runtime status comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusSource {
    /// A JSON file the policy kernel keeps up to date.
    File(PathBuf),
    /// A plain-HTTP endpoint on loopback (`http://127.0.0.1:PORT/path`).
    Url(String),
}

impl StatusSource {
    /// Reads the current status.
    pub async fn read(&self) -> Result<RuntimeStatus, CollectError> {
        match self {
            StatusSource::File(path) => {
                RuntimeStatus::from_json(&path.display().to_string(), &read_limited(path)?)
            }
            StatusSource::Url(url) => {
                let body = fetch_loopback(url).await?;
                RuntimeStatus::from_json(url, &body)
            }
        }
    }
}

/// GETs a loopback URL. Only loopback is allowed because the request is plaintext.
async fn fetch_loopback(url: &str) -> Result<Vec<u8>, CollectError> {
    let fail = |message: String| CollectError::StatusEndpoint {
        url: url.to_string(),
        message,
    };
    let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail("only http:// on loopback is supported".into()));
    }
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(fail(format!("host {host:?} is not loopback")));
    }
    let answer = HttpClient::new(url, None)
        .map_err(|e| fail(e.to_string()))?
        .with_timeout(STATUS_TIMEOUT)
        .with_max_answer(MAX_INPUT_BYTES)
        .request(
            Method::GET,
            uri.path_and_query().map_or("/", |p| p.as_str()),
            None,
        )
        .await
        .map_err(|e| CollectError::StatusTransport {
            url: url.to_string(),
            source: e,
        })?;
    if !answer.status.is_success() {
        return Err(fail(format!("answered {}", answer.status)));
    }
    Ok(answer.body.to_vec())
}

/// The spec's claims from the measured configuration and the runtime status, whatever
/// the evidence source.
pub fn claims_for(
    kernel: &PolicyKernelConfig,
    status: &RuntimeStatus,
) -> attestor_verify::claims::Claims {
    attestor_verify::claims::Claims {
        attestation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: attestor_verify::time::now_secs(),
        policy_hash: hex::encode(kernel.policy_hash),
        zero_retention: kernel.zero_retention,
        epsilon_limits: attestor_verify::claims::EpsilonLimits {
            max_epsilon: kernel.privacy.max_epsilon,
            max_delta: kernel.privacy.max_delta,
            current_usage: status.epsilon_current_usage,
            reset_interval: kernel.privacy.reset_interval_seconds,
        },
        version: status.version.clone(),
        attestor_version: env!("CARGO_PKG_VERSION").into(),
        kernel_config_hash: hex::encode(kernel.kernel_config_hash),
        capability_keys: status.capability_keys.clone(),
        tenant_isolation: status.tenant_isolation,
        egress_firewall_enabled: status.egress_firewall_enabled,
        pii_detection_enabled: status.pii_detection_enabled,
        total_requests: status.total_requests,
        blocked_requests: status.blocked_requests,
        capability_failures: status.capability_failures,
        plan_validations: status.plan_validations,
        uptime_seconds: status.uptime_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const POLICY: &str = "zero_retention = true\n[privacy]\nmax_epsilon = 3.0\nmax_delta = 1e-5\nreset_interval_seconds = 86400\n[rules]\nallow = [\"a\", \"b\"]\n";

    #[test]
    fn policy_hash_ignores_formatting_but_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.toml", POLICY);
        let b = write(
            dir.path(),
            "b.toml",
            "# same policy, other layout\nzero_retention = true\n[rules]\nallow = [ \"a\",\"b\" ]\n\n[privacy]\nreset_interval_seconds = 86400\nmax_delta = 0.00001\nmax_epsilon = 3.0\n",
        );
        let j = write(
            dir.path(),
            "c.json",
            r#"{"rules":{"allow":["a","b"]},"zero_retention":true,"privacy":{"max_epsilon":3.0,"max_delta":1e-5,"reset_interval_seconds":86400}}"#,
        );
        let ha = policy_hash_of(&a).unwrap();
        assert_eq!(ha, policy_hash_of(&b).unwrap());
        assert_eq!(ha, policy_hash_of(&j).unwrap());
        let changed = write(dir.path(), "d.toml", &POLICY.replace("\"b\"", "\"c\""));
        assert_ne!(ha, policy_hash_of(&changed).unwrap());
    }

    #[test]
    fn kernel_config_hash_covers_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let policy = write(dir.path(), "policy.toml", POLICY);
        let extra = write(dir.path(), "kernel.conf", "workers = 4\n");
        let one = read_policy_kernel(&policy, std::slice::from_ref(&extra)).unwrap();
        assert!(one.zero_retention);
        assert_eq!(one.privacy.reset_interval_seconds, 86_400);
        std::fs::write(&extra, "workers = 5\n").unwrap();
        let two = read_policy_kernel(&policy, std::slice::from_ref(&extra)).unwrap();
        assert_eq!(one.policy_hash, two.policy_hash);
        assert_ne!(one.kernel_config_hash, two.kernel_config_hash);
        let dup = read_policy_kernel(&policy, &[extra.clone(), extra]);
        assert!(matches!(dup, Err(CollectError::DuplicateFileName(_))));
    }

    #[test]
    fn bad_policy_documents_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = write(dir.path(), "p.toml", "zero_retention = [[[");
        assert!(matches!(
            read_policy_kernel(&garbage, &[]),
            Err(CollectError::PolicySyntax { .. })
        ));
        let missing = write(dir.path(), "q.toml", "zero_retention = true\n");
        assert!(matches!(
            read_policy_kernel(&missing, &[]),
            Err(CollectError::PolicyContent { .. })
        ));
        let nan = write(dir.path(), "n.toml", &POLICY.replace("3.0", "nan"));
        assert!(matches!(
            read_policy_kernel(&nan, &[]),
            Err(CollectError::PolicyContent { .. })
        ));
        let yaml = write(dir.path(), "p.yaml", "a: 1");
        assert!(matches!(
            read_policy_kernel(&yaml, &[]),
            Err(CollectError::PolicyFormat { .. })
        ));
        assert!(matches!(
            read_policy_kernel(&dir.path().join("absent.toml"), &[]),
            Err(CollectError::Read { .. })
        ));
    }

    #[test]
    fn status_must_be_complete_and_sane() {
        let good = include_bytes!("../../../examples/status.json");
        RuntimeStatus::from_json("example", good).unwrap();
        assert!(RuntimeStatus::from_json("x", b"{}").is_err());
        assert!(RuntimeStatus::from_json("x", b"\x00\xff").is_err());
        let mut v: serde_json::Value = serde_json::from_slice(good).unwrap();
        v["blocked_requests"] = (u64::MAX).into();
        assert!(RuntimeStatus::from_json("x", &serde_json::to_vec(&v).unwrap()).is_err());
        v["blocked_requests"] = 0.into();
        v["epsilon_current_usage"] = (-1.0).into();
        assert!(RuntimeStatus::from_json("x", &serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[tokio::test]
    async fn status_endpoint_must_be_loopback_http() {
        for url in [
            "https://127.0.0.1/status",
            "http://10.0.0.1/status",
            "not a url",
        ] {
            let err = StatusSource::Url(url.into()).read().await.unwrap_err();
            assert!(matches!(err, CollectError::StatusEndpoint { .. }), "{url}");
        }
    }

    #[tokio::test]
    async fn status_endpoint_is_read_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = include_str!("../../../examples/status.json");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
        });
        let status = StatusSource::Url(format!("http://127.0.0.1:{port}/status"))
            .read()
            .await
            .unwrap();
        assert!(status.tenant_isolation);
        server.await.unwrap();
        let closed = StatusSource::Url(format!("http://127.0.0.1:{port}/status"))
            .read()
            .await;
        assert!(matches!(closed, Err(CollectError::StatusTransport { .. })));
    }
}
