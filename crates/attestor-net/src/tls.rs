//! Mutual TLS between agents and the ledger, and a quick-start PKI.
//!
//! Both sides speak TLS 1.3 only and trust exactly one private CA (no system roots): the
//! ledger requires a client certificate issued by that CA, and an agent accepts only a
//! ledger certificate issued by it. An agent's identity is the single URI SAN of its
//! client certificate, `spiffe://attestor/tenant/<tenant>/agent/<agent-id>`; the ledger
//! reads it from the verified peer certificate with [`stream_identity`] after the
//! handshake, so the tenant an agent acts for is decided by the CA, never by a request.
//!
//! [`pki_init`] writes a **quick-start** PKI (CA, ledger certificate, one certificate per
//! agent) into a directory. It is meant for demos and tests, not for production: the CA
//! key sits unencrypted next to the certificates it signs, and there is no revocation.
//! In production, issue certificates with the same profile from a real CA (offline root,
//! HSM-held key, CRL or short-lived certificates).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use attestor_verify::identity::{certificate_identity, truncate, IdentityError};
pub use attestor_verify::identity::{AgentIdentity, Role, IDENTITY_URI_PREFIX};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P384_SHA384,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The only application protocol offered and accepted (the ledger speaks HTTP/1.1).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Largest PEM file read; certificates and keys are a few KiB, so more means a wrong file.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Quick-start CA lifetime.
const CA_VALIDITY_YEARS: i32 = 10;

/// Quick-start ledger and agent certificate lifetime.
const LEAF_VALIDITY_YEARS: i32 = 2;

/// Errors of the TLS configuration, identity and quick-start PKI code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file is larger than any certificate or key file should be.
    #[error("{path} is larger than {limit} bytes, not a certificate or key file")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// PEM input could not be decoded.
    #[error("{what}: invalid PEM: {source}")]
    Pem {
        /// Which input (and file, when loaded from disk).
        what: String,
        /// The underlying error.
        source: rustls::pki_types::pem::Error,
    },
    /// PEM input holds no certificate.
    #[error("{what}: no CERTIFICATE block found")]
    NoCertificate {
        /// Which input.
        what: String,
    },
    /// PEM input holds no private key.
    #[error("{what}: no PKCS#8, SEC1 or PKCS#1 private key found")]
    NoPrivateKey {
        /// Which input.
        what: String,
    },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("{what}: not a usable CA certificate: {source}")]
    BadCaCertificate {
        /// Which input.
        what: String,
        /// The underlying error.
        source: rustls::Error,
    },
    /// rustls refused the configuration (for example a key that does not match its certificate).
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// An agent identity (or the certificate carrying it) is refused.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS session has no peer certificate (not a mutually authenticated session).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// A resumed session's client certificate is no longer (or not yet) valid: resumption
    /// skips the certificate's verification, so its validity is checked here.
    #[error("the client certificate of this resumed session is outside its validity period")]
    ResumedCertificateNotValid,
    /// A rotated client certificate names another agent than the one the agent runs as.
    #[error("{path}: the new certificate is for {found}, not {expected}")]
    IdentityChanged {
        /// The certificate file.
        path: PathBuf,
        /// The identity the agent started with.
        expected: String,
        /// The identity in the new certificate.
        found: String,
    },
    /// `pki_init` would overwrite an existing CA.
    #[error("a CA already exists at {path}; refusing to overwrite it (choose another directory)")]
    CaExists {
        /// The existing CA file.
        path: PathBuf,
    },
    /// `pki_init` would overwrite an existing certificate or key.
    #[error("{path} already exists; refusing to overwrite it")]
    FileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Two agents requested with the same id (their files would collide).
    #[error("agent id {0:?} requested twice")]
    DuplicateAgent(String),
    /// No ledger host name given, so the ledger certificate would match no name.
    #[error("at least one ledger host name or IP address is required")]
    NoLedgerHosts,
    /// A ledger host is neither an IP address nor a valid DNS name.
    #[error("ledger host {0:?} is neither an IP address nor a valid DNS name")]
    InvalidHost(String),
    /// The system clock is outside the range certificates can express.
    #[error("the system clock is out of range for certificate validity dates")]
    ClockOutOfRange,
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// PEM files of one end of a mutual-TLS connection, as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA both sides pin.
    pub ca: PathBuf,
    /// This end's certificate chain.
    pub cert: PathBuf,
    /// This end's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The same files with relative paths taken from `base`.
    pub fn resolve(self, base: &Path) -> Self {
        TlsFiles {
            ca: base.join(self.ca),
            cert: base.join(self.cert),
            key: base.join(self.key),
        }
    }
}

/// The agent identity of the verified client of a server-side rustls connection.
pub fn connection_identity(conn: &rustls::ServerConnection) -> Result<AgentIdentity, TlsError> {
    let end_entity = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        && !valid_now(end_entity.as_ref())
    {
        return Err(TlsError::ResumedCertificateNotValid);
    }
    Ok(certificate_identity(end_entity.as_ref())?)
}

/// The end of the validity of the client certificate of a stream accepted with a
/// [`server_config`] config, so the server ends the connection then.
pub fn stream_certificate_not_after<IO>(
    stream: &tokio_rustls::server::TlsStream<IO>,
) -> Option<SystemTime> {
    let end_entity = stream.get_ref().1.peer_certificates()?.first()?;
    validity_period(end_entity.as_ref()).map(|(_, not_after)| not_after)
}

/// Whether the certificate's validity period holds the current time. Only the period: the
/// chain was verified when the session was first established, with this server
/// configuration's client CAs (a new configuration has a new ticket key).
fn valid_now(certificate_der: &[u8]) -> bool {
    let now = SystemTime::now();
    validity_period(certificate_der).is_some_and(|(from, until)| from <= now && now <= until)
}

/// A certificate's validity period (notBefore, notAfter).
fn validity_period(certificate_der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    use x509_cert::der::Decode;
    let validity = x509_cert::Certificate::from_der(certificate_der)
        .ok()?
        .tbs_certificate
        .validity;
    Some((
        validity.not_before.to_system_time(),
        validity.not_after.to_system_time(),
    ))
}

/// The agent identity of the client of a stream accepted with a [`server_config`] config.
pub fn stream_identity<IO>(
    stream: &tokio_rustls::server::TlsStream<IO>,
) -> Result<AgentIdentity, TlsError> {
    connection_identity(stream.get_ref().1)
}

// ---------------------------------------------------------------------------------------
// rustls configurations

fn provider() -> Arc<CryptoProvider> {
    // Explicit provider: no dependence on a process-wide default being installed.
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server (ledger) configuration from PEM files: TLS 1.3 only, client certificate required
/// and verified against the CA in `ca_pem` only, ALPN `http/1.1`.
pub fn server_config(
    ca_pem: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let pems = PemFiles::read(ca_pem, cert, key)?;
    server_config_inner(&pems.sources())
}

/// Like [`server_config`], from PEM bytes in memory.
pub fn server_config_from_pem(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_inner(&PemSources::in_memory(ca, cert, key))
}

/// Client (agent) configuration from PEM files: TLS 1.3 only, trusts only the CA in
/// `ca_pem` (no system roots), presents the agent certificate, offers ALPN `http/1.1`.
pub fn client_config(
    ca_pem: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let pems = PemFiles::read(ca_pem, cert, key)?;
    client_config_inner(&pems.sources())
}

/// Like [`client_config`], from PEM bytes in memory.
pub fn client_config_from_pem(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_inner(&PemSources::in_memory(ca, cert, key))
}

fn server_config_inner(src: &PemSources<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let roots = root_store(src)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain(src)?, private_key(src)?)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // Stateless session tickets (a rotating key in memory, never written out): an agent
    // reconnecting after an idle close resumes without the server keeping a cache entry
    // per agent, and without the two signatures and the chain check of a full mutual
    // handshake. A reload builds a new configuration, hence a new key: sessions from
    // before it cannot resume under the new client CAs.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

fn client_config_inner(src: &PemSources<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(src)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(cert_chain(src)?, private_key(src)?)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The ledger's configuration as a client of its database: trusts only the CA in `ca_pem`,
/// presents `client` (certificate, key) when given. TLS 1.2 is allowed here, unlike
/// between agents and ledger, because managed PostgreSQL services still offer only 1.2.
pub fn database_client_config(
    ca_pem: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let trusting = |roots| {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots))
    };
    let config = match client {
        None => {
            let what = format!("CA certificate {}", ca_pem.display());
            trusting(root_store_from(&read_bounded(ca_pem)?, &what)?)?.with_no_client_auth()
        }
        Some((cert, key)) => {
            let pems = PemFiles::read(ca_pem, cert, key)?;
            let src = pems.sources();
            trusting(root_store(&src)?)?
                .with_client_auth_cert(cert_chain(&src)?, private_key(&src)?)?
        }
    };
    Ok(Arc::new(config))
}

/// A client of web servers outside the PKI (webhooks, Alertmanager): TLS 1.2 or 1.3, no
/// client certificate, trusting the CAs in `ca_pem` or, without one, the public web roots
/// (Mozilla's, built in: the ledger's host may have no CA bundle).
pub fn web_client_config(ca_pem: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_pem {
        Some(path) => root_store_from(
            &read_bounded(path)?,
            &format!("CA certificate {}", path.display()),
        )?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Like [`client_config`], but the client certificate and key are read again whenever
/// either file changes on disk (size or modification time), so a rotated certificate is
/// presented from the next connection on without restarting. A new pair that does not
/// load, whose key does not match, or whose identity (URI SAN) differs from the one the
/// agent started with is ignored (and reported through `on_refused`): the agent keeps
/// presenting the previous pair.
pub fn reloading_client_config(
    files: &TlsFiles,
    on_refused: fn(&TlsError),
) -> Result<Arc<ClientConfig>, TlsError> {
    let resolver = ReloadingClientCert::new(&files.cert, &files.key, on_refused)?;
    let ca = PemFiles::read(&files.ca, &files.cert, &files.key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(&ca.sources())?)
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // A resumed session presents the certificate of the handshake it resumes and never
    // asks the resolver: after a rotation the ledger would go on seeing the old one, and
    // once that expired refuse every reconnection. The agent keeps its connection from one
    // heartbeat to the next instead (the ledger's keep-alive outlasts the interval).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Size and modification time of a file, to notice replacement.
type FileStamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> FileStamp {
    fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?)))
}

struct LoadedPair {
    stamps: (FileStamp, FileStamp),
    key: Arc<rustls::sign::CertifiedKey>,
}

#[derive(Debug)]
struct ReloadingClientCert {
    cert: PathBuf,
    key: PathBuf,
    identity: AgentIdentity,
    loaded: std::sync::Mutex<LoadedPair>,
    on_refused: fn(&TlsError),
}

impl std::fmt::Debug for LoadedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPair")
            .field("stamps", &self.stamps)
            .finish_non_exhaustive()
    }
}

impl ReloadingClientCert {
    fn new(cert: &Path, key: &Path, on_refused: fn(&TlsError)) -> Result<Self, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let (key_pair, identity) = Self::load(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            identity,
            loaded: std::sync::Mutex::new(LoadedPair {
                stamps,
                key: key_pair,
            }),
            on_refused,
        })
    }

    fn load(
        cert: &Path,
        key: &Path,
    ) -> Result<(Arc<rustls::sign::CertifiedKey>, AgentIdentity), TlsError> {
        let chain = certificates(&read_bounded(cert)?, &cert.display().to_string())?;
        let private = parse_private_key(&read_bounded(key)?, &key.display().to_string())?;
        let identity = certificate_identity(chain.first().map(|c| c.as_ref()).unwrap_or_default())?;
        let pair = rustls::sign::CertifiedKey::from_der(chain, private, &provider())?;
        Ok((Arc::new(pair), identity))
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = (stamp(&self.cert), stamp(&self.key));
        if now != loaded.stamps {
            // Remember the stamps either way: a bad pair is reported once, not per
            // handshake, and a fixed one is picked up at its next change.
            loaded.stamps = now;
            match Self::load(&self.cert, &self.key) {
                Ok((pair, identity)) if identity == self.identity => loaded.key = pair,
                Ok((_, identity)) => (self.on_refused)(&TlsError::IdentityChanged {
                    path: self.cert.clone(),
                    expected: self.identity.to_uri(),
                    found: identity.to_uri(),
                }),
                Err(e) => (self.on_refused)(&e),
            }
        }
        loaded.key.clone()
    }
}

impl rustls::client::ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let pair = self.current();
        pair.key.choose_scheme(sigschemes).map(|_| pair)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The three PEM inputs with labels for error messages.
struct PemSources<'a> {
    ca: (&'a [u8], String),
    cert: (&'a [u8], String),
    key: (&'a [u8], String),
}

impl<'a> PemSources<'a> {
    fn in_memory(ca: &'a [u8], cert: &'a [u8], key: &'a [u8]) -> Self {
        Self {
            ca: (ca, "CA certificate".to_string()),
            cert: (cert, "certificate".to_string()),
            key: (key, "private key".to_string()),
        }
    }
}

struct PemFiles {
    ca: (Vec<u8>, PathBuf),
    cert: (Vec<u8>, PathBuf),
    key: (Vec<u8>, PathBuf),
}

impl PemFiles {
    fn read(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            ca: (read_bounded(ca)?, ca.to_path_buf()),
            cert: (read_bounded(cert)?, cert.to_path_buf()),
            key: (read_bounded(key)?, key.to_path_buf()),
        })
    }

    fn sources(&self) -> PemSources<'_> {
        PemSources {
            ca: (
                &self.ca.0,
                format!("CA certificate {}", self.ca.1.display()),
            ),
            cert: (
                &self.cert.0,
                format!("certificate {}", self.cert.1.display()),
            ),
            key: (&self.key.0, format!("private key {}", self.key.1.display())),
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read_err)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::FileTooLarge {
            path: path.to_path_buf(),
            limit: MAX_PEM_FILE,
        });
    }
    Ok(bytes)
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// Every certificate of the CA input is a trust anchor (one, or two during a rotation);
/// nothing else is trusted.
fn root_store(src: &PemSources<'_>) -> Result<RootCertStore, TlsError> {
    root_store_from(src.ca.0, &src.ca.1)
}

fn root_store_from(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::BadCaCertificate {
                what: what.to_string(),
                source,
            })?;
    }
    Ok(roots)
}

fn cert_chain(src: &PemSources<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates(src.cert.0, &src.cert.1)
}

fn private_key(src: &PemSources<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(src.key.0, &src.key.1)
}

fn parse_private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            what: what.to_string(),
        },
        source => TlsError::Pem {
            what: what.to_string(),
            source,
        },
    })
}

// ---------------------------------------------------------------------------------------
// Quick-start PKI

/// Where [`pki_init`] wrote one agent's certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPaths {
    /// The identity in the certificate.
    pub identity: AgentIdentity,
    /// `agents/<agent-id>.pem`.
    pub cert: PathBuf,
    /// `agents/<agent-id>.key` (mode 0600).
    pub key: PathBuf,
}

/// Every file [`pki_init`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPaths {
    /// `ca.pem`: the trust anchor both sides pin.
    pub ca_cert: PathBuf,
    /// `ca.key` (mode 0600): keep it off the ledger and agent hosts.
    pub ca_key: PathBuf,
    /// `ledger.pem`: the ledger's server certificate.
    pub ledger_cert: PathBuf,
    /// `ledger.key` (mode 0600).
    pub ledger_key: PathBuf,
    /// One entry per client identity (agents and operators), in the order requested.
    pub agents: Vec<AgentPaths>,
}

impl PkiPaths {
    /// Every path, certificates and keys, in write order.
    pub fn all(&self) -> Vec<&Path> {
        let mut all = vec![
            self.ca_key.as_path(),
            self.ca_cert.as_path(),
            self.ledger_key.as_path(),
            self.ledger_cert.as_path(),
        ];
        for agent in &self.agents {
            all.push(agent.key.as_path());
            all.push(agent.cert.as_path());
        }
        all
    }
}

/// Creates a quick-start PKI in `dir` (not for production; see the module documentation):
/// an ECDSA P-384 CA (`ca.pem`, `ca.key`), a ledger server certificate (`ledger.pem`,
/// `ledger.key`) for `ledger_hosts` (DNS names or IP addresses), and one client certificate
/// per identity carrying its URI: an agent's in `agents/<agent-id>.pem`, `.key`, an
/// operator's in `operators/<name>.pem`, `.key`. Key files are mode 0600. Refuses to
/// overwrite an existing CA or any existing file.
pub fn pki_init(
    dir: &Path,
    agents: &[AgentIdentity],
    ledger_hosts: &[String],
) -> Result<PkiPaths, TlsError> {
    let mut seen = HashSet::new();
    for agent in agents {
        agent.validate()?;
        if !seen.insert((agent.role, agent.agent_id.as_str())) {
            return Err(TlsError::DuplicateAgent(agent.agent_id.clone()));
        }
    }
    if ledger_hosts.is_empty() {
        return Err(TlsError::NoLedgerHosts);
    }
    let host_sans = ledger_hosts
        .iter()
        .map(|h| host_san(h))
        .collect::<Result<Vec<_>, _>>()?;

    let agents_dir = dir.join("agents");
    let operators_dir = dir.join("operators");
    let client_dir = |identity: &AgentIdentity| match identity.role {
        Role::Agent => &agents_dir,
        Role::Operator => &operators_dir,
    };
    let paths = PkiPaths {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        ledger_cert: dir.join("ledger.pem"),
        ledger_key: dir.join("ledger.key"),
        agents: agents
            .iter()
            .map(|identity| AgentPaths {
                identity: identity.clone(),
                cert: client_dir(identity).join(format!("{}.pem", identity.agent_id)),
                key: client_dir(identity).join(format!("{}.key", identity.agent_id)),
            })
            .collect(),
    };
    for ca_file in [&paths.ca_cert, &paths.ca_key] {
        if ca_file.exists() {
            return Err(TlsError::CaExists {
                path: ca_file.clone(),
            });
        }
    }
    for path in paths.all() {
        if path.exists() {
            return Err(TlsError::FileExists {
                path: path.to_path_buf(),
            });
        }
    }

    // Everything is generated before anything is written, so a generation error leaves
    // no half-built PKI behind.
    let (ca_from, ca_until) = validity(CA_VALIDITY_YEARS)?;
    let (leaf_from, leaf_until) = validity(LEAF_VALIDITY_YEARS)?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let mut ca_params = CertificateParams::default();
    // A per-CA name suffix: two quick-start CAs never share a subject, so a certificate
    // from the wrong one is reported as an unknown issuer, not as a bad signature.
    let fingerprint =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ca_key.public_key_raw());
    let suffix = hex::encode(fingerprint.as_ref().get(..6).unwrap_or_default());
    ca_params.distinguished_name = name(&format!(
        "attestor quick-start CA {suffix} (not for production)"
    ));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(ca_from.0, ca_from.1, ca_from.2);
    ca_params.not_after = rcgen::date_time_ymd(ca_until.0, ca_until.1, ca_until.2);
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let leaf = |common_name: &str, sans: Vec<SanType>, eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(leaf_from.0, leaf_from.1, leaf_from.2);
        params.not_after = rcgen::date_time_ymd(leaf_until.0, leaf_until.1, leaf_until.2);
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        Ok::<_, TlsError>((cert.pem(), key.serialize_pem()))
    };

    let ledger = leaf(
        "attestor ledger",
        host_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let mut agent_files = Vec::with_capacity(agents.len());
    for agent in agents {
        let uri = Ia5String::try_from(agent.to_uri())?;
        agent_files.push(leaf(
            &format!("{}/{}", agent.tenant, agent.agent_id),
            vec![SanType::URI(uri)],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?);
    }

    create_dir(dir)?;
    create_dir(&agents_dir)?;
    if agents.iter().any(AgentIdentity::is_operator) {
        create_dir(&operators_dir)?;
    }
    // The CA key goes first with create_new: of two concurrent inits, exactly one wins.
    write_new(&paths.ca_key, ca_key.serialize_pem().as_bytes(), true).map_err(|e| match e {
        TlsError::FileExists { path } => TlsError::CaExists { path },
        other => other,
    })?;
    write_new(&paths.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_new(&paths.ledger_key, ledger.1.as_bytes(), true)?;
    write_new(&paths.ledger_cert, ledger.0.as_bytes(), false)?;
    for (agent, (cert, key)) in paths.agents.iter().zip(&agent_files) {
        write_new(&agent.key, key.as_bytes(), true)?;
        write_new(&agent.cert, cert.as_bytes(), false)?;
    }
    Ok(paths)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "attestor");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn host_san(host: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    DnsName::try_from(host).map_err(|_| TlsError::InvalidHost(truncate(host)))?;
    Ia5String::try_from(host)
        .map(SanType::DnsName)
        .map_err(|_| TlsError::InvalidHost(truncate(host)))
}

/// A calendar date (UTC), always valid by construction.
type Ymd = (i32, u8, u8);

/// From yesterday (tolerates clock skew between hosts) for `years` years.
fn validity(years: i32) -> Result<(Ymd, Ymd), TlsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TlsError::ClockOutOfRange)?;
    let days = i64::try_from(now.as_secs() / 86_400).map_err(|_| TlsError::ClockOutOfRange)?;
    let (year, month, day) = civil_from_days(days - 1);
    // Only years the certificate time types and rcgen's date helper accept.
    let until_year = year + i64::from(years);
    if until_year > 9000 {
        return Err(TlsError::ClockOutOfRange);
    }
    let (Ok(year), Ok(until_year)) = (i32::try_from(year), i32::try_from(until_year)) else {
        return Err(TlsError::ClockOutOfRange);
    };
    // 29 February plus whole years may not exist; the 28th always does.
    let until_day = if month == 2 && day == 29 { 28 } else { day };
    Ok(((year, month, day), (until_year, month, until_day)))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31 by construction of the algorithm.
    (year, month as u8, day as u8)
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let write_err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the key is never readable by others, even briefly.
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            TlsError::FileExists {
                path: path.to_path_buf(),
            }
        } else {
            write_err(source)
        }
    })?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid from `from` to `until` (years, month, day).
    fn certificate(from: (i32, u8, u8), until: (i32, u8, u8)) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_resumed_session_needs_a_certificate_valid_now() {
        assert!(valid_now(&certificate((2020, 1, 1), (2200, 1, 1))));
        assert!(!valid_now(&certificate((2020, 1, 1), (2021, 1, 1))));
        assert!(!valid_now(&certificate((2199, 1, 1), (2200, 1, 1))));
        assert!(!valid_now(b"not a certificate"));
    }
}
