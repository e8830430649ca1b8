//! Where a VCEK comes from when the report's certificate table lacks it: a local cache,
//! filled from AMD's key distribution service (KDS). The cache holds only certificates,
//! which the verifier checks against pinned roots, so a poisoned cache cannot forge trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::certs::{canonical_der, Tcb};
use super::roots::Product;

/// AMD's key distribution service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";
/// A VCEK larger than this is not one (they are about 1.4 KiB).
const MAX_VCEK_BYTES: u64 = 16 * 1024;
/// Bound on one fetch from the KDS, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a VCEK could not be fetched.
#[derive(Debug, Error)]
pub enum KdsError {
    #[error("KDS URL {0:?} is not an https:// URL with a host")]
    Url(String),
    #[error("KDS CA file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not return a DER certificate: {message}")]
    NotACertificate { url: String, message: String },
}

/// Fetches a VCEK (DER) from `url` over HTTPS, trusting the CAs in `ca_pem` (a private
/// mirror) or else the Mozilla root set. The certificate is only parsed here: trust in it
/// comes from the verifier's chain check against pinned AMD roots.
pub fn fetch_vcek(url: &str, ca_pem: Option<&Path>) -> Result<Vec<u8>, KdsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(path) => {
            let ca_err = |message: String| KdsError::Ca {
                path: path.to_path_buf(),
                message,
            };
            let pem = std::fs::read_to_string(path).map_err(|e| ca_err(e.to_string()))?;
            for der in crate::evidence::certchain::pem_to_der_all(&pem)
                .map_err(|e| ca_err(e.to_string()))?
            {
                roots.add(der.into()).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fetch_err(url, e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (url_owned, tls) = (url.to_string(), Arc::new(tls));
    // Its own thread and runtime: callers may be inside an async runtime or not.
    let body = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fetch_err(&url_owned, e))?;
        runtime.block_on(async {
            tokio::time::timeout(FETCH_TIMEOUT, get(&url_owned, tls))
                .await
                .map_err(|_| fetch_err(&url_owned, "no answer in time"))?
        })
    })
    .join()
    .map_err(|_| fetch_err(url, "the fetch thread failed"))??;
    canonical_der(&body).map_err(|e| KdsError::NotACertificate {
        url: url.to_string(),
        message: e.to_string(),
    })
}

fn fetch_err(url: &str, e: impl std::fmt::Display) -> KdsError {
    KdsError::Fetch {
        url: url.to_string(),
        message: e.to_string(),
    }
}

async fn get(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, KdsError> {
    use http_body_util::{BodyExt, Empty, Limited};
    let uri: hyper::Uri = url.parse().map_err(|_| KdsError::Url(url.to_string()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("https"), Some(authority)) => authority.clone(),
        _ => return Err(KdsError::Url(url.to_string())),
    };
    let host = authority.host().trim_matches(['[', ']']).to_string();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| KdsError::Url(url.to_string()))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), authority.port_u16().unwrap_or(443)))
        .await
        .map_err(|e| fetch_err(url, e))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| fetch_err(url, e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fetch_err(url, e))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<hyper::body::Bytes>::new())
        .map_err(|e| fetch_err(url, e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| fetch_err(url, e))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(KdsError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    let limit = usize::try_from(MAX_VCEK_BYTES).unwrap_or(usize::MAX);
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| fetch_err(url, e))?;
    Ok(body.to_bytes().to_vec())
}

/// The KDS URL of the VCEK for a chip at a TCB (AMD spec 57230, "VCEK certificate"):
/// Turin's hwID is the chip id's first 8 bytes, and its TCB has an FMC SPL.
pub fn vcek_url(base: &str, product: Product, chip_id: &[u8], tcb: &Tcb) -> String {
    let (hw_id, fmc) = match product {
        Product::Turin => (
            chip_id.get(..8).unwrap_or(chip_id),
            format!("fmcSPL={}&", tcb.fmc.unwrap_or(0)),
        ),
        Product::Milan | Product::Genoa => (chip_id, String::new()),
    };
    format!(
        "{}/vcek/v1/{}/{}?{fmc}blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        base.trim_end_matches('/'),
        product.kds_name(),
        hex::encode(hw_id),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    )
}

/// VCEK certificates by (product, chip, TCB), one DER file each.
#[derive(Debug, Clone)]
pub struct VcekCache {
    dir: PathBuf,
}

impl VcekCache {
    pub fn new(dir: impl Into<PathBuf>) -> VcekCache {
        VcekCache { dir: dir.into() }
    }

    /// File a VCEK for this chip and TCB is cached in.
    pub fn path(&self, product: Product, chip_id: &[u8], tcb: &Tcb) -> PathBuf {
        // 64 bytes of hex would make long names; 16 bytes of chip id are unique enough to
        // name a file, and the verifier compares the full hwID anyway.
        let chip = hex::encode(chip_id.get(..16).unwrap_or(chip_id));
        let fmc = tcb.fmc.map(|f| format!("{f}-")).unwrap_or_default();
        self.dir.join(format!(
            "{}-{chip}-{fmc}{}-{}-{}-{}.der",
            product.name(),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        ))
    }

    /// The cached VCEK, if there is one that parses as a certificate.
    pub fn get(&self, product: Product, chip_id: &[u8], tcb: &Tcb) -> Option<Vec<u8>> {
        let path = self.path(product, chip_id, tcb);
        let size = std::fs::metadata(&path).ok()?.len();
        if size > MAX_VCEK_BYTES {
            return None;
        }
        canonical_der(&std::fs::read(path).ok()?).ok()
    }

    /// Caches a VCEK (written atomically).
    pub fn put(
        &self,
        product: Product,
        chip_id: &[u8],
        tcb: &Tcb,
        der: &[u8],
    ) -> Result<(), std::io::Error> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(product, chip_id, tcb);
        crate::agent::write_atomically(&path, der).map_err(|(_, e)| e)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
