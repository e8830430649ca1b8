//! Mutual TLS between agents and the ledger: real handshakes on loopback, identity
//! extraction, refusals, the quick-start PKI and its CLI.

use attestor_verify::identity::IdentityError;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attestor_net::tls::{self, AgentIdentity, PkiPaths, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P384_SHA384,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TENANT: &str = "tenant-a";
const AGENT: &str = "agent-1";

fn identity() -> AgentIdentity {
    AgentIdentity::new(TENANT, AGENT).unwrap()
}

fn hosts() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

fn init(dir: &Path) -> PkiPaths {
    tls::pki_init(dir, &[identity()], &hosts()).unwrap()
}

fn ledger_config(pki: &PkiPaths) -> Arc<ServerConfig> {
    tls::server_config(&pki.ca_cert, &pki.ledger_cert, &pki.ledger_key).unwrap()
}

fn agent_config(pki: &PkiPaths) -> Arc<ClientConfig> {
    let agent = &pki.agents[0];
    tls::client_config(&pki.ca_cert, &agent.cert, &agent.key).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(ca_pem: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// What the ledger side saw: the handshake result, then the identity of the peer.
type ServerOutcome = Result<Result<AgentIdentity, TlsError>, io::Error>;

/// What the agent side saw: the handshake, then the reply to "hello".
type ClientOutcome = Result<Vec<u8>, io::Error>;

/// One connection: the server accepts, reads the identity and, if it has one, answers
/// "hello" with "world"; the client sends "hello" and reads the answer.
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> (ServerOutcome, ClientOutcome) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = TlsAcceptor::from(server).accept(tcp).await?;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(tls::ALPN_HTTP11));
        assert_eq!(
            stream.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let identity = tls::stream_identity(&stream);
        if identity.is_ok() {
            let mut hello = [0u8; 5];
            stream.read_exact(&mut hello).await?;
            assert_eq!(&hello, b"hello");
            stream.write_all(b"world").await?;
            stream.shutdown().await?;
        }
        Ok(identity)
    });
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await?;
        let mut stream = TlsConnector::from(client).connect(server_name, tcp).await?;
        stream.write_all(b"hello").await?;
        stream.flush().await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        if reply.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server sent nothing",
            ));
        }
        Ok(reply)
    };
    let client_outcome = tokio::time::timeout(Duration::from_secs(20), client_side)
        .await
        .expect("client timed out");
    let server_outcome = tokio::time::timeout(Duration::from_secs(20), server_task)
        .await
        .expect("server timed out")
        .expect("server task panicked");
    (server_outcome, client_outcome)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

fn rustls_error(err: &io::Error) -> &rustls::Error {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err:?}"))
}

#[tokio::test]
async fn agent_and_ledger_exchange_bytes_and_the_ledger_reads_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let (server, client) = exchange(ledger_config(&pki), agent_config(&pki), localhost()).await;
    assert_eq!(server.unwrap().unwrap(), identity());
    assert_eq!(client.unwrap(), b"world");
}

#[tokio::test]
async fn the_ledger_certificate_is_valid_for_its_ip_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let ip = ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (server, client) = exchange(ledger_config(&pki), agent_config(&pki), ip).await;
    assert_eq!(server.unwrap().unwrap(), identity());
    assert_eq!(client.unwrap(), b"world");
}

#[tokio::test]
async fn configs_load_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let read = |p: &Path| std::fs::read(p).unwrap();
    let server = tls::server_config_from_pem(
        &read(&pki.ca_cert),
        &read(&pki.ledger_cert),
        &read(&pki.ledger_key),
    )
    .unwrap();
    let agent = &pki.agents[0];
    let client =
        tls::client_config_from_pem(&read(&pki.ca_cert), &read(&agent.cert), &read(&agent.key))
            .unwrap();
    let (server, client) = exchange(server, client, localhost()).await;
    assert_eq!(server.unwrap().unwrap(), identity());
    assert_eq!(client.unwrap(), b"world");
}

#[tokio::test]
async fn the_agent_refuses_a_ledger_name_not_in_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let name = ServerName::try_from("ledger.example.com").unwrap();
    let (server, client) = exchange(ledger_config(&pki), agent_config(&pki), name).await;
    let err = client.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
                | rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        ),
        "{err:?}"
    );
    assert!(server.is_err());
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(&pki.ca_cert))
        .with_no_client_auth();
    let (server, client) = exchange(ledger_config(&pki), Arc::new(client), localhost()).await;
    let err = server.unwrap_err();
    assert!(
        matches!(rustls_error(&err), rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
    assert!(client.is_err());
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let rogue = init(other.path());
    // Trusts the right ledger, but presents a certificate with the same identity from
    // another CA.
    let client =
        tls::client_config(&pki.ca_cert, &rogue.agents[0].cert, &rogue.agents[0].key).unwrap();
    let (server, client) = exchange(ledger_config(&pki), client, localhost()).await;
    let err = server.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    assert!(client.is_err());
}

#[tokio::test]
async fn the_agent_refuses_a_ledger_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let rogue = init(other.path());
    let server = tls::server_config(&pki.ca_cert, &rogue.ledger_cert, &rogue.ledger_key).unwrap();
    let (server, client) = exchange(server, agent_config(&pki), localhost()).await;
    let err = client.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    assert!(server.is_err());
}

#[tokio::test]
async fn a_tls12_only_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let agent = &pki.agents[0];
    let chain = CertificateDer::pem_file_iter(&agent.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&agent.key).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(&pki.ca_cert))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let (server, client) = exchange(ledger_config(&pki), Arc::new(client), localhost()).await;
    let err = server.unwrap_err();
    assert!(
        matches!(rustls_error(&err), rustls::Error::PeerIncompatible(_)),
        "{err:?}"
    );
    let err = client.unwrap_err();
    assert!(
        matches!(rustls_error(&err), rustls::Error::AlertReceived(_)),
        "{err:?}"
    );
}

/// Signs a client certificate with the quick-start CA, with the given URI SANs.
fn issue_with_uris(pki: &PkiPaths, uris: &[&str]) -> (String, String) {
    issue_with(pki, uris, Vec::new())
}

/// Like [`issue_with_uris`], with extra raw extensions.
fn issue_with(
    pki: &PkiPaths,
    uris: &[&str],
    extensions: Vec<rcgen::CustomExtension>,
) -> (String, String) {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&pki.ca_key).unwrap()).unwrap();
    // rcgen 0.13 (without x509-parser) cannot load a CA certificate, so rebuild an issuer
    // with the same subject and key: the issued certificate then chains to ca.pem.
    let ca_der = CertificateDer::from_pem_file(&pki.ca_cert).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = subject_of(&ca_der);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "no identity");
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.custom_extensions = extensions;
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn subject_of(der: &CertificateDer<'_>) -> DistinguishedName {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
    let mut dn = DistinguishedName::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = der::asn1::Utf8StringRef::try_from(&atv.value)
                .unwrap()
                .to_string();
            let ty = match atv.oid.to_string().as_str() {
                "2.5.4.3" => DnType::CommonName,
                "2.5.4.10" => DnType::OrganizationName,
                other => panic!("unexpected attribute {other} in the CA subject"),
            };
            dn.push(ty, value);
        }
    }
    dn
}

#[tokio::test]
async fn a_client_certificate_without_the_identity_uri_gives_an_identity_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let (cert, key) = issue_with_uris(&pki, &[]);
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let client = tls::client_config_from_pem(&ca, cert.as_bytes(), key.as_bytes()).unwrap();
    let (server, client) = exchange(ledger_config(&pki), client, localhost()).await;
    // The CA vouches for the certificate, so the handshake itself succeeds...
    let identity = server.unwrap();
    // ...but it names no agent, and the ledger serves nothing.
    assert!(
        matches!(
            identity,
            Err(TlsError::Identity(IdentityError::MissingIdentity))
        ),
        "{identity:?}"
    );
    assert!(client.is_err());
}

#[test]
fn peer_identity_requires_exactly_one_well_formed_uri() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let der_of = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };

    let good = der_of(&std::fs::read_to_string(&pki.agents[0].cert).unwrap());
    assert_eq!(
        attestor_verify::identity::certificate_identity(&good).unwrap(),
        identity()
    );

    let (two, _) = issue_with_uris(
        &pki,
        &[
            "spiffe://attestor/tenant/a/agent/x",
            "spiffe://attestor/tenant/b/agent/x",
        ],
    );
    assert!(matches!(
        attestor_verify::identity::certificate_identity(&der_of(&two)),
        Err(IdentityError::AmbiguousIdentity { count: 2 })
    ));

    let (extra, _) = issue_with_uris(&pki, &["spiffe://attestor/tenant/a/agent/x/y"]);
    assert!(matches!(
        attestor_verify::identity::certificate_identity(&der_of(&extra)),
        Err(IdentityError::InvalidUri { .. })
    ));

    let (other_uri, _) = issue_with_uris(&pki, &["https://attestor/tenant/a/agent/x"]);
    assert!(matches!(
        attestor_verify::identity::certificate_identity(&der_of(&other_uri)),
        Err(IdentityError::InvalidUri { .. })
    ));

    // A second SAN extension (RFC 5280 forbids repeats) naming another tenant.
    let uri = b"spiffe://attestor/tenant/b/agent/x";
    let mut general_names = vec![0x30, uri.len() as u8 + 2, 0x86, uri.len() as u8];
    general_names.extend_from_slice(uri);
    let second_san = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 17], general_names);
    let (twice, _) = issue_with(
        &pki,
        &["spiffe://attestor/tenant/a/agent/x"],
        vec![second_san],
    );
    assert!(matches!(
        attestor_verify::identity::certificate_identity(&der_of(&twice)),
        Err(IdentityError::DuplicateSanExtension)
    ));

    let (none, _) = issue_with_uris(&pki, &[]);
    assert!(matches!(
        attestor_verify::identity::certificate_identity(&der_of(&none)),
        Err(IdentityError::MissingIdentity)
    ));

    assert!(matches!(
        attestor_verify::identity::certificate_identity(b"\x30\x03\x02\x01\x00"),
        Err(IdentityError::Certificate(_))
    ));
    assert!(matches!(
        attestor_verify::identity::certificate_identity(&good[..good.len() / 2]),
        Err(IdentityError::Certificate(_))
    ));
}

#[test]
fn identity_uris_round_trip() {
    let id = AgentIdentity::new("tenant_A.1", "agent-0.b_c").unwrap();
    assert_eq!(
        id.to_uri(),
        "spiffe://attestor/tenant/tenant_A.1/agent/agent-0.b_c"
    );
    assert_eq!(AgentIdentity::from_uri(&id.to_uri()).unwrap(), id);
    let longest = "x".repeat(64);
    let id = AgentIdentity::new(&longest, &longest).unwrap();
    assert_eq!(AgentIdentity::from_uri(&id.to_uri()).unwrap(), id);
}

#[test]
fn malformed_identity_uris_are_refused() {
    let long = format!("spiffe://attestor/tenant/{}/agent/a", "x".repeat(65));
    let refused = [
        "",
        "https://attestor/tenant/t/agent/a",
        "SPIFFE://attestor/tenant/t/agent/a",
        "spiffe://other/tenant/t/agent/a",
        "spiffe://attestor/tenants/t/agent/a",
        "spiffe://attestor/tenant/t/agents/a",
        "spiffe://attestor/tenant/t/agent/a/extra",
        "spiffe://attestor/tenant/t/agent/a/",
        "spiffe://attestor/tenant/t/agent/",
        "spiffe://attestor/tenant//agent/a",
        "spiffe://attestor/tenant/t/agent",
        "spiffe://attestor/tenant/t",
        "spiffe://attestor/tenant/t/agent/a?x=1",
        "spiffe://attestor/tenant/t/agent/a#frag",
        "spiffe://attestor/tenant/t%2Fu/agent/a",
        "spiffe://attestor/tenant/t u/agent/a",
        "spiffe://attestor/tenant/té/agent/a",
        "spiffe://attestor/tenant/../agent/a",
        "spiffe://attestor:443/tenant/t/agent/a",
        "spiffe://user@attestor/tenant/t/agent/a",
        long.as_str(),
    ];
    for uri in refused {
        assert!(
            matches!(
                AgentIdentity::from_uri(uri),
                Err(IdentityError::InvalidUri { .. })
            ),
            "{uri:?} was accepted"
        );
    }
}

#[test]
fn invalid_ids_are_refused() {
    for (tenant, agent) in [
        ("", "a"),
        ("t", ""),
        ("t/u", "a"),
        ("t", "a:b"),
        ("t", ".."),
        ("t", "a\0"),
    ] {
        assert!(
            matches!(
                AgentIdentity::new(tenant, agent),
                Err(IdentityError::InvalidId { .. })
            ),
            "{tenant:?}/{agent:?} was accepted"
        );
    }
    let long = "a".repeat(65);
    assert!(matches!(
        AgentIdentity::new("t", &long),
        Err(IdentityError::InvalidId {
            field: "agent id",
            ..
        })
    ));
    // Fields are public, so pki_init re-checks them.
    let forged = AgentIdentity {
        tenant: "t".into(),
        agent_id: "../../etc/x".into(),
        role: attestor_verify::identity::Role::Agent,
    };
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        tls::pki_init(dir.path(), &[forged], &hosts()),
        Err(TlsError::Identity(IdentityError::InvalidId { .. }))
    ));
    assert!(!dir.path().join("ca.pem").exists());
}

#[test]
fn pki_init_writes_private_keys_0600_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let second = AgentIdentity::new("tenant-b", "agent-2").unwrap();
    let pki = tls::pki_init(dir.path(), &[identity(), second.clone()], &hosts()).unwrap();
    assert_eq!(pki.ca_cert, dir.path().join("ca.pem"));
    assert_eq!(pki.agents[1].cert, dir.path().join("agents/agent-2.pem"));
    assert_eq!(pki.agents[1].identity, second);
    for key in [
        &pki.ca_key,
        &pki.ledger_key,
        &pki.agents[0].key,
        &pki.agents[1].key,
    ] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let ca_before = std::fs::read(&pki.ca_key).unwrap();
    let again = tls::pki_init(dir.path(), &[identity()], &hosts());
    assert!(
        matches!(again, Err(TlsError::CaExists { ref path }) if path == &pki.ca_cert),
        "{again:?}"
    );
    assert_eq!(std::fs::read(&pki.ca_key).unwrap(), ca_before);
}

#[test]
fn pki_init_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let twin = AgentIdentity::new("tenant-b", AGENT).unwrap();
    assert!(matches!(
        tls::pki_init(dir.path(), &[identity(), twin], &hosts()),
        Err(TlsError::DuplicateAgent(ref id)) if id == AGENT
    ));
    assert!(matches!(
        tls::pki_init(dir.path(), &[identity()], &[]),
        Err(TlsError::NoLedgerHosts)
    ));
    assert!(matches!(
        tls::pki_init(dir.path(), &[identity()], &["bad host!".to_string()]),
        Err(TlsError::InvalidHost(_))
    ));
    assert!(!dir.path().join("ca.pem").exists());
}

#[test]
fn config_loading_reports_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        tls::server_config(&missing, &pki.ledger_cert, &pki.ledger_key),
        Err(TlsError::Read { ref path, .. }) if path == &missing
    ));
    // A certificate file where a key is expected.
    assert!(matches!(
        tls::client_config(&pki.ca_cert, &pki.agents[0].cert, &pki.agents[0].cert),
        Err(TlsError::NoPrivateKey { .. })
    ));
    // A key file where the CA is expected.
    assert!(matches!(
        tls::server_config(&pki.ca_key, &pki.ledger_cert, &pki.ledger_key),
        Err(TlsError::NoCertificate { .. })
    ));
    // A key that does not belong to the certificate.
    assert!(matches!(
        tls::server_config(&pki.ca_cert, &pki.ledger_cert, &pki.agents[0].key),
        Err(TlsError::Config(rustls::Error::InconsistentKeys(_)))
    ));
    let garbage = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        tls::server_config_from_pem(garbage, garbage, garbage),
        Err(TlsError::Pem { .. })
    ));
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'a'; 2 * 1024 * 1024]).unwrap();
    assert!(matches!(
        tls::client_config(&huge, &pki.agents[0].cert, &pki.agents[0].key),
        Err(TlsError::FileTooLarge { .. })
    ));
}

#[test]
fn cli_pki_init_writes_the_files_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_attestor"))
            .args(["pki", "init"])
            .arg(&pki)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8(first.stdout).unwrap();
    for file in [
        "ca.pem",
        "ca.key",
        "ledger.pem",
        "ledger.key",
        "agents/agent-1.pem",
        "agents/agent-1.key",
    ] {
        let path = pki.join(file);
        assert!(path.is_file(), "{file} missing");
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
    }
    let mode = std::fs::metadata(pki.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The default agent is agent-1 of tenant "default".
    let cert = CertificateDer::from_pem_file(pki.join("agents/agent-1.pem")).unwrap();
    assert_eq!(
        attestor_verify::identity::certificate_identity(cert.as_ref()).unwrap(),
        AgentIdentity::new("default", "agent-1").unwrap()
    );
    // The files work together.
    tls::server_config(
        &pki.join("ca.pem"),
        &pki.join("ledger.pem"),
        &pki.join("ledger.key"),
    )
    .unwrap();

    let ca_before = std::fs::read(pki.join("ca.key")).unwrap();
    let second = run();
    assert_eq!(second.status.code(), Some(2), "{second:?}");
    let stderr = String::from_utf8(second.stderr).unwrap();
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read(pki.join("ca.key")).unwrap(), ca_before);
}

#[test]
fn cli_pki_init_takes_agents_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["pki", "init"])
        .arg(&pki)
        .args(["--agent", "a1:t1", "--agent", "a2:t2"])
        // An operator may share an agent's name: the role tells them apart.
        .args(["--operator", "a1:t1"])
        .args(["--ledger-host", "ledger.internal"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cert = CertificateDer::from_pem_file(pki.join("agents/a2.pem")).unwrap();
    assert_eq!(
        attestor_verify::identity::certificate_identity(cert.as_ref()).unwrap(),
        AgentIdentity::new("t2", "a2").unwrap()
    );
    assert!(pki.join("agents/a1.key").is_file());
    let operator = CertificateDer::from_pem_file(pki.join("operators/a1.pem")).unwrap();
    assert_eq!(
        attestor_verify::identity::certificate_identity(operator.as_ref()).unwrap(),
        AgentIdentity::operator("t1", "a1").unwrap()
    );
    assert!(pki.join("operators/a1.key").is_file());

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["pki", "init"])
        .arg(dir.path().join("other"))
        .args(["--agent", "no-tenant"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!dir.path().join("other/ca.pem").exists());
}

#[test]
fn quick_start_certificates_are_valid_now_for_years() {
    use der::Decode;
    let dir = tempfile::tempdir().unwrap();
    let pki = init(dir.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let year = Duration::from_secs(365 * 86_400);
    for (path, years) in [(&pki.ca_cert, 10), (&pki.agents[0].cert, 2)] {
        let der = CertificateDer::from_pem_file(path).unwrap();
        let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
        let validity = cert.tbs_certificate.validity;
        let from = validity.not_before.to_unix_duration();
        let until = validity.not_after.to_unix_duration();
        assert!(from <= now && now - from <= Duration::from_secs(2 * 86_400));
        assert!(until >= now + year * years - Duration::from_secs(3 * 86_400));
        assert!(until <= now + year * years + Duration::from_secs(3 * 86_400));
    }
}

static RELOADS_REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[tokio::test]
async fn a_reloading_agent_keeps_its_identity_when_the_files_change_to_another_or_a_broken_pair() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let other = AgentIdentity::new(TENANT, "agent-2").unwrap();
    let pki = tls::pki_init(dir.path(), &[identity(), other], &hosts()).unwrap();
    let files = tls::TlsFiles {
        ca: pki.ca_cert.clone(),
        cert: dir.path().join("live.pem"),
        key: dir.path().join("live.key"),
    };
    let put = |cert: &Path, key: &Path| {
        std::fs::copy(key, &files.key).unwrap();
        std::fs::copy(cert, &files.cert).unwrap();
    };
    let (mine, theirs) = (&pki.agents[0], &pki.agents[1]);
    put(&mine.cert, &mine.key);
    let client = tls::reloading_client_config(&files, |_| {
        RELOADS_REFUSED.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let identity_seen = || async {
        let (server, reply) = exchange(ledger_config(&pki), client.clone(), localhost()).await;
        assert_eq!(reply.unwrap(), b"world");
        server.unwrap().unwrap()
    };
    assert_eq!(identity_seen().await, identity());
    // Another agent's certificate: refused, the agent goes on as itself.
    put(&theirs.cert, &theirs.key);
    assert_eq!(identity_seen().await, identity());
    assert_eq!(RELOADS_REFUSED.load(Ordering::SeqCst), 1);
    // A certificate with someone else's key: refused too.
    put(&mine.cert, &theirs.key);
    assert_eq!(identity_seen().await, identity());
    assert_eq!(RELOADS_REFUSED.load(Ordering::SeqCst), 2);
}
