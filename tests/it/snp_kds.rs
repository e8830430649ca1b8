//! A simulated SEV-SNP guest whose host provides no certificates fetches its VCEK from a
//! KDS (a local HTTPS stand-in with a CA of its own) once, caches it, and ships it in the
//! bundle; a KDS whose certificate the agent does not trust is refused.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use attestor_agent::collect::{self, RuntimeStatus};
use attestor_agent::config::AgentConfig;
use attestor_agent::evidence_source::EvidenceSource;
use attestor_net::tls::{self, AgentIdentity};
use attestor_verify::bundle::Evidence;
use attestor_verify::evidence::certchain::pem_to_der_all;
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Serves `vcek` at every path over HTTPS with the quick-start PKI's server certificate;
/// returns the port, the number of requests, and the last path asked for.
fn kds_stand_in(
    pki: &Path,
    vcek: Vec<u8>,
) -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<String>>) {
    let certs = pem_to_der_all(&std::fs::read_to_string(pki.join("ledger.pem")).unwrap()).unwrap();
    let key_pem = std::fs::read_to_string(pki.join("ledger.key")).unwrap();
    let key_b64: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        certs.into_iter().map(Into::into).collect(),
        rustls::pki_types::PrivatePkcs8KeyDer::from(key).into(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (hits, last_path) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::default()),
    );
    let (count, path) = (hits.clone(), last_path.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let (vcek, count, path) = (vcek.clone(), count.clone(), path.clone());
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    *path.lock().unwrap() = request.uri().to_string();
                    let body = Full::new(Bytes::from(vcek.clone()));
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service),
                );
            }
        });
    });
    (port, hits, last_path)
}

fn guest(state: &Path, kds: &str, ca: &Path) -> EvidenceSource {
    let path = root().join("examples/agent-snp-sim.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("../target/attestor-state-snp-sim", state.to_str().unwrap())
        .replace(
            "vmpl = 0",
            &format!(
                "vmpl = 0\nkds_url = \"{kds}\"\nkds_ca = \"{}\"",
                ca.display()
            ),
        )
        .replace(
            "report_version = 5",
            "report_version = 5\nhost_provides_certificates = false",
        );
    EvidenceSource::open(AgentConfig::parse(&text, &path).unwrap(), "").unwrap()
}

#[test]
fn a_missing_vcek_is_fetched_from_the_kds_once_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let id = AgentIdentity::new("t", "unused").unwrap();
    tls::pki_init(&pki, std::slice::from_ref(&id), &["127.0.0.1".into()]).unwrap();
    let vcek = std::fs::read(root().join("examples/snp-sim/vcek.der")).unwrap();
    let (port, hits, last_path) = kds_stand_in(&pki, vcek.clone());
    let kds = format!("https://127.0.0.1:{port}");

    let kernel = {
        let c = AgentConfig::load(&root().join("examples/agent-snp-sim.toml")).unwrap();
        collect::read_policy_kernel(&c.policy_kernel.policy, &c.policy_kernel.config_files).unwrap()
    };
    let status = RuntimeStatus::from_json(
        "status",
        &std::fs::read(root().join("examples/status.json")).unwrap(),
    )
    .unwrap();
    let mut source = guest(&dir.path().join("state"), &kds, &pki.join("ca.pem"));
    for _ in 0..2 {
        let bundle = source.attest(&kernel, &status, b"nonce").unwrap();
        let Evidence::Snp(evidence) = &bundle.evidence else {
            panic!("not SNP evidence")
        };
        assert_eq!(evidence.vcek, vcek);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the second attestation uses the cache"
    );
    let asked = last_path.lock().unwrap().clone();
    assert!(
        asked.starts_with("/vcek/v1/Milan/") && asked.contains("?blSPL="),
        "{asked}"
    );

    // A KDS whose certificate chains to a CA the agent does not trust: refused.
    let other = dir.path().join("other");
    tls::pki_init(&other, &[id], &["127.0.0.1".into()]).unwrap();
    let mut wary = guest(&dir.path().join("state2"), &kds, &other.join("ca.pem"));
    let refused = wary.attest(&kernel, &status, b"nonce").unwrap_err();
    assert!(
        refused.to_string().contains("KDS fetch failed"),
        "{refused}"
    );
}
