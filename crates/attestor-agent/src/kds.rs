//! Where a VCEK comes from when the report's certificate table lacks it: AMD's key
//! distribution service (KDS), fetched once into the VCEK cache
//! ([`attestor_verify::evidence::snp::vcek::VcekCache`]). Trust in what it returns comes
//! only from the verifier's chain check against pinned AMD roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attestor_net::http::{HttpClient, HttpError};
use attestor_verify::evidence::certchain::{pem_to_der_all, CertChainError};
use attestor_verify::evidence::snp::certs::{canonical_der, CertError};
use attestor_verify::evidence::snp::vcek::MAX_VCEK_BYTES;
use hyper::Method;
use thiserror::Error;

/// AMD's key distribution service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";
/// Bound on one fetch from the KDS, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a VCEK could not be fetched.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KdsError {
    #[error("KDS CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("KDS CA file {path}: {source}")]
    CaPem {
        path: PathBuf,
        source: CertChainError,
    },
    #[error("KDS CA file {path}: {source}")]
    CaCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("KDS TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("KDS URL {0:?} is not an https:// URL with a host")]
    Url(String),
    #[error(transparent)]
    Fetch(#[from] HttpError),
    #[error("cannot run the fetch: {0}")]
    Runtime(std::io::Error),
    #[error("the fetch thread failed")]
    Thread,
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not return a DER certificate: {source}")]
    NotACertificate { url: String, source: CertError },
}

/// Fetches a VCEK (DER) from `url` over HTTPS, trusting the CAs in `ca_pem` (a private
/// mirror) or else the Mozilla root set. The certificate is only parsed here: trust in it
/// comes from the verifier's chain check against pinned AMD roots. Blocking (its own
/// thread and runtime): callers may be inside an async runtime or not.
pub fn fetch_vcek(url: &str, ca_pem: Option<&Path>) -> Result<Vec<u8>, KdsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|source| KdsError::CaFile {
                path: path.to_path_buf(),
                source,
            })?;
            let ders = pem_to_der_all(&pem).map_err(|source| KdsError::CaPem {
                path: path.to_path_buf(),
                source,
            })?;
            for der in ders {
                roots
                    .add(der.into())
                    .map_err(|source| KdsError::CaCertificate {
                        path: path.to_path_buf(),
                        source,
                    })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let uri: hyper::Uri = url.parse().map_err(|_| KdsError::Url(url.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(KdsError::Url(url.to_string()));
    }
    let client = HttpClient::new(url, Some(Arc::new(tls)))
        .map_err(|_| KdsError::Url(url.to_string()))?
        .with_timeout(FETCH_TIMEOUT)
        .with_max_answer(usize::try_from(MAX_VCEK_BYTES).unwrap_or(usize::MAX));
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let answer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KdsError::Runtime)?;
        Ok::<_, KdsError>(runtime.block_on(client.request(Method::GET, &path, None))?)
    })
    .join()
    .map_err(|_| KdsError::Thread)??;
    if answer.status != hyper::StatusCode::OK {
        return Err(KdsError::Status {
            url: url.to_string(),
            status: answer.status.as_u16(),
        });
    }
    canonical_der(&answer.body).map_err(|source| KdsError::NotACertificate {
        url: url.to_string(),
        source,
    })
}
