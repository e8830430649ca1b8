//! Ledger configuration (TOML). Relative paths resolve against the config file's directory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::actions::{ActionConfigError, TenantActions};
use crate::alerts::AlertConfig;
use crate::enforce::{EnforcementConfigError, EnforcementPolicy};
use crate::limits::WriteLimit;
use crate::submission::{TenantPolicy, NONCE_TTL, VOUCH_WINDOW};
use attestor_net::tls::TlsFiles;
use attestor_verify::log::checkpoint::{NoteKeyAlgorithm, NoteVerifier};

/// Authenticated connections served at once: a fleet of 10,000 agents each keeping its
/// connection between heartbeats, with room to spare.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16384;

/// How long an authenticated connection may stay idle between requests: longer than the
/// default heartbeat interval (60 s) plus its timeout (15 s), so an agent's connection
/// lasts from one heartbeat to the next.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(120);

/// Longest `keep_alive_seconds` accepted.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(3600);

/// The spec's threshold: alert when an agent has been silent for more than 2 minutes.
pub const DEFAULT_MAX_GAP: Duration = Duration::from_secs(120);

/// Time a client has to complete the TLS handshake, unless configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds on connections. A connection is *pending* from accept until it holds a slot:
/// during its TLS handshake (at most `handshake_timeout`) and the identity check, then
/// waiting (at most [`crate::server::REQUEST_TIMEOUT`]) for one of the `max_connections` slots.
/// Pending connections are counted per source and in total; beyond either cap a new
/// connection is closed at once, so connections that never handshake cannot take the
/// slots of authenticated agents nor stall the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Authenticated connections served at once.
    pub max_connections: usize,
    /// Pending connections, all sources together.
    pub max_handshakes: usize,
    /// Pending connections from one source: an IPv4 address, or an IPv6 /64 (what one
    /// host usually has to itself).
    pub max_handshakes_per_address: usize,
    pub handshake_timeout: Duration,
    /// How long an authenticated connection may wait for its next request's head (idle
    /// included) before it is closed.
    pub keep_alive: Duration,
}

impl ConnectionLimits {
    /// Default bounds with `max_connections` slots.
    pub fn new(max_connections: usize) -> Self {
        ConnectionLimits {
            max_connections,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_address: DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }
}

/// Default cap on pending connections, all sources together.
pub const DEFAULT_MAX_HANDSHAKES: usize = 4096;
/// Default cap on pending connections from one source.
pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 64;

/// Why a ledger configuration is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LedgerConfigError {
    #[error("cannot read ledger config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger config {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("ledger config {path}: {source}")]
    Action {
        path: PathBuf,
        source: Box<ActionConfigError>,
    },
    #[error("ledger config {path}: tenants.{tenant}.enforcement: {source}")]
    Enforcement {
        path: PathBuf,
        tenant: String,
        source: EnforcementConfigError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerToml {
    listen: SocketAddr,
    state_dir: PathBuf,
    origin: String,
    profile: PathBuf,
    #[serde(default = "default_max_gap_seconds")]
    max_gap_seconds: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_nonce_ttl_seconds")]
    nonce_ttl_seconds: u64,
    #[serde(default = "default_max_handshakes")]
    max_handshakes: usize,
    #[serde(default = "default_max_handshakes_per_address")]
    max_handshakes_per_address: usize,
    #[serde(default = "default_handshake_timeout_seconds")]
    handshake_timeout_seconds: u64,
    #[serde(default = "default_keep_alive_seconds")]
    keep_alive_seconds: u64,
    #[serde(default = "default_ak_certificate_days")]
    ak_certificate_days: u64,
    tls: TlsFiles,
    tenants: BTreeMap<String, TenantToml>,
    /// `postgres://...`: a database shared by replicas; absent: SQLite in `state_dir`.
    #[serde(default)]
    storage: Option<String>,
    #[serde(default = "default_lease_seconds")]
    sequencer_lease_seconds: u64,
    /// TLS to the PostgreSQL server; absent: plaintext (loopback or a trusted network only).
    #[serde(default)]
    storage_tls: Option<DatabaseTlsFiles>,
    #[serde(default)]
    alerts: AlertConfig,
    #[serde(default)]
    ops: OpsToml,
    #[serde(default)]
    log: LogToml,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogToml {
    public_listen: Option<SocketAddr>,
    tiles_dir: Option<PathBuf>,
    #[serde(default)]
    checkpoint_key: NoteKeyAlgorithm,
    #[serde(default)]
    witnesses: Vec<WitnessToml>,
    witness_quorum: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessToml {
    url: String,
    vkey: String,
}

/// The log's public face: the C2SP tlog-tiles read API, the checkpoint key's algorithm,
/// and the witnesses that cosign checkpoints (`[log]`).
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// Where to serve `/checkpoint` and `/tile/...` (plain HTTP: everything served is
    /// signed or hashed into what is signed); none by default.
    pub public_listen: Option<SocketAddr>,
    /// A directory kept a static copy of the public log, for any web server to serve.
    pub tiles_dir: Option<PathBuf>,
    /// The algorithm of a new checkpoint key (first start and `rotate-key`).
    pub checkpoint_key: NoteKeyAlgorithm,
    /// Tenants whose entries may appear in public entry bundles (`publish_entries`).
    pub published_tenants: BTreeSet<String>,
    /// Witnesses each new checkpoint is sent to, in order.
    pub witnesses: Vec<WitnessConfig>,
    /// Cosignatures a checkpoint needs to be the public `/checkpoint`.
    pub witness_quorum: usize,
}

impl LogToml {
    fn resolve(
        self,
        base: &Path,
        published_tenants: BTreeSet<String>,
    ) -> Result<LogConfig, String> {
        let mut witnesses = Vec::with_capacity(self.witnesses.len());
        for (n, w) in self.witnesses.into_iter().enumerate() {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!("log.witnesses[{n}].url must be an http(s):// URL"));
            }
            let verifier = NoteVerifier::cosigner(&w.vkey).map_err(|e| {
                format!("log.witnesses[{n}].vkey is not a witness (type 0x04) key: {e}")
            })?;
            witnesses.push(WitnessConfig {
                url: w.url.trim_end_matches('/').to_string(),
                verifier,
            });
        }
        let witness_quorum = self.witness_quorum.unwrap_or(witnesses.len());
        if witness_quorum > witnesses.len() || (witness_quorum == 0 && !witnesses.is_empty()) {
            return Err(format!(
                "log.witness_quorum must be 1..={} (the witnesses listed)",
                witnesses.len()
            ));
        }
        Ok(LogConfig {
            public_listen: self.public_listen,
            tiles_dir: self.tiles_dir.map(|p| base.join(p)),
            checkpoint_key: self.checkpoint_key,
            published_tenants,
            witnesses,
            witness_quorum,
        })
    }
}

/// One witness (C2SP tlog-witness): its submission prefix and its cosigning key.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// The submission prefix, `http(s)://host[:port][/path]`; `/add-checkpoint` is appended.
    pub url: String,
    /// Its verifier key (type 0x04).
    pub verifier: NoteVerifier,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsToml {
    listen: Option<SocketAddr>,
    #[serde(default = "default_true")]
    per_agent_metrics: bool,
    dashboard_token_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

/// The plain-HTTP operations listener: `/metrics`, `/dashboard`, `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsConfig {
    /// Where to serve it; none by default. Keep it on loopback or a management network.
    pub listen: Option<SocketAddr>,
    /// One metric series per agent (see `ledger::metrics` on cardinality).
    pub per_agent_metrics: bool,
    /// A file holding the read-only token the dashboard requires (`Authorization: Bearer`
    /// or `?token=`); without one the dashboard is open to whoever reaches the listener.
    pub dashboard_token_file: Option<PathBuf>,
}

fn default_lease_seconds() -> u64 {
    crate::store::postgres::DEFAULT_LEASE.as_secs()
}

fn default_max_gap_seconds() -> u64 {
    DEFAULT_MAX_GAP.as_secs()
}
fn default_keep_alive_seconds() -> u64 {
    DEFAULT_KEEP_ALIVE.as_secs()
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_nonce_ttl_seconds() -> u64 {
    NONCE_TTL.as_secs()
}
fn default_max_handshakes() -> usize {
    DEFAULT_MAX_HANDSHAKES
}
fn default_max_handshakes_per_address() -> usize {
    DEFAULT_MAX_HANDSHAKES_PER_ADDRESS
}
fn default_handshake_timeout_seconds() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT.as_secs()
}
fn default_ak_certificate_days() -> u64 {
    crate::enrollment_ca::DEFAULT_AK_CERTIFICATE_VALIDITY.as_secs() / DAY.as_secs()
}

const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantToml {
    policy_hash: String,
    #[serde(default = "default_writes_per_second")]
    writes_per_second: f64,
    #[serde(default = "default_write_burst")]
    write_burst: u32,
    appraisal: Option<PathBuf>,
    actions: Option<TenantActions>,
    #[serde(default)]
    enforcement: EnforcementPolicy,
    /// Whether this tenant's entries may be served in public entry bundles.
    #[serde(default)]
    publish_entries: bool,
}

fn default_writes_per_second() -> f64 {
    WriteLimit::DEFAULT.per_second
}
fn default_write_burst() -> u32 {
    WriteLimit::DEFAULT.burst
}

/// PEM files for TLS to the database: the CA that issued the server's certificate and,
/// when the server authenticates clients by certificate, the ledger's own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where the ledger keeps its log.
#[derive(Clone, PartialEq, Eq)]
pub enum Storage {
    /// SQLite in `state_dir/ledger.db` (the default): one ledger process.
    Embedded,
    /// A PostgreSQL-compatible database that several ledger replicas may share.
    Postgres {
        /// `postgres://user:password@host:port/database[?options]`.
        url: String,
        /// How long the sequencer lease lasts unrenewed: a dead sequencer's successor
        /// takes over after at most this long.
        lease: Duration,
        /// TLS to the server, required (never downgraded to plaintext) when set.
        tls: Option<DatabaseTlsFiles>,
    },
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Embedded => f.write_str("Embedded"),
            // The URL may carry a password: never print it.
            Storage::Postgres { lease, tls, .. } => f
                .debug_struct("Postgres")
                .field("url", &"<redacted>")
                .field("lease", lease)
                .field("tls", tls)
                .finish(),
        }
    }
}

/// A loaded, path-resolved ledger configuration.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub listen: SocketAddr,
    /// Holds `ledger.db` and `checkpoint.key` (created on first start).
    pub state_dir: PathBuf,
    /// Checkpoint origin line and signing key name, e.g. `ledger.example/attestor`.
    pub origin: String,
    /// Firmware profile every agent is verified against.
    pub profile: PathBuf,
    /// Silence after which an agent counts as stale (the spec's 2 minutes by default).
    pub max_gap: Duration,
    pub limits: ConnectionLimits,
    /// How long a nonce the ledger issued counts as its own single-use nonce.
    pub nonce_ttl: Duration,
    /// How long the AK certificates the enrollment CA issues are valid.
    pub ak_certificate_validity: Duration,
    pub tls: TlsFiles,
    /// What each tenant expects; agents of other tenants are refused.
    pub tenants: BTreeMap<String, TenantPolicy>,
    /// Each tenant's answers at the enforcement point (`[tenants.NAME.enforcement]`).
    pub enforcement: BTreeMap<String, EnforcementPolicy>,
    pub alerts: AlertConfig,
    pub ops: OpsConfig,
    /// The log's storage (`storage = "postgres://..."`; default embedded).
    pub storage: Storage,
    pub log: LogConfig,
}

impl LedgerConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, LedgerConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LedgerConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text as if it were read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LedgerConfigError> {
        let invalid = |message: String| LedgerConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: LedgerToml = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut alerts = raw.alerts;
        for (n, action) in alerts.actions.iter_mut().enumerate() {
            action.hook = format!("alerts.actions[{n}]");
            action.ca = action.ca.take().map(|p| base.join(p));
        }
        if !(1..=1024).contains(&alerts.max_concurrent_actions) {
            return Err(invalid(
                "alerts.max_concurrent_actions must be 1..=1024".into(),
            ));
        }
        let (mut tenants, mut enforcement) = (BTreeMap::new(), BTreeMap::new());
        let mut published_tenants = BTreeSet::new();
        for (name, tenant) in raw.tenants {
            if tenant.publish_entries {
                published_tenants.insert(name.clone());
            }
            if let Some(actions) = tenant.actions {
                alerts.actions.extend(actions.into_actions(&name));
            }
            tenant
                .enforcement
                .validate()
                .map_err(|source| LedgerConfigError::Enforcement {
                    path: path.to_path_buf(),
                    tenant: name.clone(),
                    source,
                })?;
            enforcement.insert(name.clone(), tenant.enforcement);
            let hash = tenant.policy_hash.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "tenants.{name}.policy_hash must be 64 hex digits (SHA-256)"
                )));
            }
            let write_limit = WriteLimit {
                per_second: tenant.writes_per_second,
                burst: tenant.write_burst,
            };
            if !write_limit.is_usable() {
                return Err(invalid(format!(
                    "tenants.{name}: writes_per_second must be positive and write_burst at least 1"
                )));
            }
            tenants.insert(
                name,
                TenantPolicy {
                    policy_hash: hash,
                    write_limit,
                    appraisal: tenant.appraisal.map(|p| base.join(p)),
                },
            );
        }
        for action in &alerts.actions {
            action
                .check_syntax()
                .map_err(|source| LedgerConfigError::Action {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?;
        }
        let nonce_ttl = Duration::from_secs(raw.nonce_ttl_seconds);
        if nonce_ttl.is_zero() || nonce_ttl > VOUCH_WINDOW {
            return Err(invalid(format!(
                "nonce_ttl_seconds must be 1..={}",
                VOUCH_WINDOW.as_secs()
            )));
        }
        if raw.max_gap_seconds == 0
            || raw.max_connections == 0
            || raw.max_handshakes == 0
            || raw.max_handshakes_per_address == 0
            || raw.handshake_timeout_seconds == 0
        {
            return Err(invalid(
                "max_gap_seconds, max_connections, max_handshakes, max_handshakes_per_address \
                 and handshake_timeout_seconds must be positive"
                    .into(),
            ));
        }
        let keep_alive = Duration::from_secs(raw.keep_alive_seconds);
        if keep_alive.is_zero() || keep_alive > MAX_KEEP_ALIVE {
            return Err(invalid(format!(
                "keep_alive_seconds must be 1..={}",
                MAX_KEEP_ALIVE.as_secs()
            )));
        }
        // Past a century a certificate's end no longer means anything to anyone.
        if !(1..=36_500).contains(&raw.ak_certificate_days) {
            return Err(invalid("ak_certificate_days must be 1..=36500".into()));
        }
        if let Some(address) = raw.ops.listen {
            if !address.ip().is_loopback() && raw.ops.dashboard_token_file.is_none() {
                return Err(invalid(format!(
                    "ops.listen = \"{address}\" is not a loopback address and \
                     ops.dashboard_token_file is not set: the dashboard would be open to \
                     whoever reaches it. Set ops.dashboard_token_file (and keep the listener \
                     on a management network: /metrics needs no token and names every \
                     tenant's agents unless ops.per_agent_metrics = false), or listen on a \
                     loopback address"
                )));
            }
        }
        let log = raw.log.resolve(base, published_tenants).map_err(invalid)?;
        let storage = match raw.storage {
            None if raw.storage_tls.is_some() => return Err(invalid(
                "storage_tls is for a postgres:// storage; the embedded store has no connection"
                    .into(),
            )),
            None => Storage::Embedded,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let lease = Duration::from_secs(raw.sequencer_lease_seconds);
                if lease < crate::store::postgres::MIN_LEASE {
                    return Err(invalid("sequencer_lease_seconds must be positive".into()));
                }
                let tls = match raw.storage_tls {
                    None => None,
                    Some(DatabaseTlsFiles { ca, cert, key }) => {
                        if cert.is_some() != key.is_some() {
                            return Err(invalid(
                                "storage_tls.cert and storage_tls.key go together".into(),
                            ));
                        }
                        Some(DatabaseTlsFiles {
                            ca: base.join(ca),
                            cert: cert.map(|p| base.join(p)),
                            key: key.map(|p| base.join(p)),
                        })
                    }
                };
                Storage::Postgres { url, lease, tls }
            }
            Some(_) => {
                return Err(invalid(
                    "storage must be a postgres:// or postgresql:// URL (or absent: embedded)"
                        .into(),
                ))
            }
        };
        Ok(LedgerConfig {
            listen: raw.listen,
            state_dir: base.join(raw.state_dir),
            origin: raw.origin,
            profile: base.join(raw.profile),
            max_gap: Duration::from_secs(raw.max_gap_seconds),
            limits: ConnectionLimits {
                max_connections: raw.max_connections,
                max_handshakes: raw.max_handshakes,
                max_handshakes_per_address: raw.max_handshakes_per_address,
                handshake_timeout: Duration::from_secs(raw.handshake_timeout_seconds),
                keep_alive,
            },
            nonce_ttl,
            ak_certificate_validity: DAY * u32::try_from(raw.ak_certificate_days).unwrap_or(1),
            tls: raw.tls.resolve(base),
            tenants,
            enforcement,
            alerts,
            ops: OpsConfig {
                listen: raw.ops.listen,
                per_agent_metrics: raw.ops.per_agent_metrics,
                dashboard_token_file: raw.ops.dashboard_token_file.map(|p| base.join(p)),
            },
            storage,
            log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        listen = "127.0.0.1:8443"
        state_dir = "state"
        origin = "ledger.test/attestor"
        profile = "profile.toml"
        [tls]
        ca = "pki/ca.pem"
        cert = "pki/ledger.pem"
        key = "pki/ledger.key"
        [tenants.acme]
        policy_hash = "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"
    "#;

    #[test]
    fn paths_resolve_against_the_config_and_hashes_are_normalised() {
        let c = LedgerConfig::parse(VALID, Path::new("/etc/attestor/ledger.toml")).unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/attestor/state"));
        assert_eq!(c.tls.key, Path::new("/etc/attestor/pki/ledger.key"));
        assert_eq!(c.max_gap, DEFAULT_MAX_GAP);
        assert_eq!(c.tenants["acme"].policy_hash, "ab".repeat(32));
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let short = VALID.replace(&"AB".repeat(32), "abcd");
        let e = LedgerConfig::parse(&short, Path::new("l.toml")).unwrap_err();
        assert!(e.to_string().contains("tenants.acme.policy_hash"), "{e}");
        let unknown = format!("{VALID}\nsurprise = 1\n");
        let e = LedgerConfig::parse(&unknown, Path::new("l.toml")).unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");
        let zero_gap = VALID.replace("profile = ", "max_gap_seconds = 0\nprofile = ");
        assert!(LedgerConfig::parse(&zero_gap, Path::new("l.toml")).is_err());
    }

    #[test]
    fn an_ops_listener_off_loopback_needs_the_dashboard_token() {
        let with_ops = |ops: &str| format!("{VALID}\n[ops]\n{ops}\n");
        for open in ["listen = \"0.0.0.0:9465\"", "listen = \"[::]:9465\""] {
            let e = LedgerConfig::parse(&with_ops(open), Path::new("l.toml")).unwrap_err();
            let message = e.to_string();
            for named in [
                "ops.listen",
                "ops.dashboard_token_file",
                "per_agent_metrics",
            ] {
                assert!(message.contains(named), "{message}");
            }
        }
        for fine in [
            "listen = \"0.0.0.0:9465\"\ndashboard_token_file = \"t\"",
            "listen = \"127.0.0.1:9465\"",
            "listen = \"[::1]:9465\"",
        ] {
            let c = LedgerConfig::parse(&with_ops(fine), Path::new("l.toml")).unwrap();
            assert!(c.ops.listen.is_some());
        }
    }

    #[test]
    fn connection_limits_default_and_must_be_positive() {
        let c = LedgerConfig::parse(VALID, Path::new("l.toml")).unwrap();
        assert_eq!(c.limits, ConnectionLimits::new(DEFAULT_MAX_CONNECTIONS));
        let text = VALID.replace(
            "profile = ",
            "max_handshakes = 10\nmax_handshakes_per_address = 2\n\
             handshake_timeout_seconds = 30\nprofile = ",
        );
        let c = LedgerConfig::parse(&text, Path::new("l.toml")).unwrap();
        assert_eq!(
            (
                c.limits.max_handshakes,
                c.limits.max_handshakes_per_address,
                c.limits.handshake_timeout
            ),
            (10, 2, Duration::from_secs(30))
        );
        for zero in [
            "max_handshakes",
            "max_handshakes_per_address",
            "handshake_timeout_seconds",
        ] {
            let text = VALID.replace("profile = ", &format!("{zero} = 0\nprofile = "));
            let e = LedgerConfig::parse(&text, Path::new("l.toml")).unwrap_err();
            assert!(e.to_string().contains(zero), "{e}");
        }
    }

    #[test]
    fn storage_is_embedded_by_default_or_a_postgres_url_never_printed() {
        let c = LedgerConfig::parse(VALID, Path::new("l.toml")).unwrap();
        assert_eq!(c.storage, Storage::Embedded);
        let url = "postgres://ledger:s3cret@db.example:5432/attestor";
        let text = VALID.replace(
            "profile = ",
            &format!("storage = \"{url}\"\nsequencer_lease_seconds = 4\nprofile = "),
        );
        let c = LedgerConfig::parse(&text, Path::new("l.toml")).unwrap();
        assert_eq!(
            c.storage,
            Storage::Postgres {
                url: url.into(),
                lease: Duration::from_secs(4),
                tls: None,
            }
        );
        let with_tls = format!("{text}\n[storage_tls]\nca = \"db/ca.pem\"\n");
        let tls_config = LedgerConfig::parse(&with_tls, Path::new("/etc/attestor/l.toml")).unwrap();
        let Storage::Postgres { tls: Some(tls), .. } = tls_config.storage else {
            panic!("no database TLS in {tls_config:?}")
        };
        assert_eq!(tls.ca, Path::new("/etc/attestor/db/ca.pem"));
        assert_eq!((tls.cert, tls.key), (None, None));
        let half_pair = format!("{text}\n[storage_tls]\nca = \"a\"\ncert = \"c\"\n");
        let e = LedgerConfig::parse(&half_pair, Path::new("l.toml")).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        assert!(!format!("{c:?}").contains("s3cret"));
        for bad in [
            "storage = \"mysql://x\"",
            "storage = \"postgres://x\"\nsequencer_lease_seconds = 0",
        ] {
            let text = VALID.replace("profile = ", &format!("{bad}\nprofile = "));
            let e = LedgerConfig::parse(&text, Path::new("l.toml")).unwrap_err();
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        // TLS settings without a database to use them on are a mistake, not a no-op.
        let text = format!("{VALID}\n[storage_tls]\nca = \"db/ca.pem\"\n");
        let e = LedgerConfig::parse(&text, Path::new("l.toml")).unwrap_err();
        assert!(e.to_string().contains("storage_tls"), "{e}");
    }
}
