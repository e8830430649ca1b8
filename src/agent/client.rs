//! The ledger's client: HTTP/1.1 over mutual TLS on one kept-alive connection, with every
//! answer bounded in size and time. Used by the agent, `attestor query` and the tests.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio_rustls::TlsConnector;

use crate::ledger::api::{
    AgentsResponse, AlertsResponse, ConsistencyResponse, EnrollChallenge, EnrollProof,
    EnrollRequest, EnrolledResponse, EntriesResponse, EntryJson, ErrorBody, LogKeysResponse,
    NonceResponse, SubmitResponse, TenantResponse,
};

/// Default bound on one request, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer accepted (a page of entries with their leaves).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a request to the ledger did not succeed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("ledger endpoint {endpoint:?} is unusable: {reason}")]
    Endpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("cannot reach the ledger: {0}")]
    Unreachable(String),
    #[error("no answer from the ledger within {0:?}")]
    Timeout(Duration),
    #[error("the ledger refused the request ({status}, {error}): {message}")]
    Refused {
        status: u16,
        error: String,
        message: String,
    },
    #[error("the ledger's answer is not understood: {0}")]
    BadAnswer(String),
}

impl ClientError {
    /// Whether trying again later may succeed (the ledger was unreachable or failing),
    /// as opposed to the ledger refusing this request for good.
    /// A refusal because of load or configuration on the ledger's side (rate limit, an
    /// unconfigured tenant) is transient too: the request itself was not judged.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) | ClientError::Timeout(_) => true,
            ClientError::Refused { status, error, .. } => {
                *status >= 500 || *status == 408 || *status == 429 || error == "unknown-tenant"
            }
            ClientError::Endpoint { .. } | ClientError::BadAnswer(_) => false,
        }
    }

    /// The ledger's stable error code, for a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A connection to one ledger.
pub struct LedgerClient {
    address: (String, u16),
    authority: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl LedgerClient {
    /// A client for `endpoint` (`https://HOST[:PORT]`), presenting the identity and
    /// pinning the CA of `tls`.
    pub fn new(endpoint: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        let bad = |reason| ClientError::Endpoint {
            endpoint: endpoint.to_string(),
            reason,
        };
        let uri: hyper::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("only https:// is supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("must not have a path or query"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("host is neither a DNS name nor an IP address"))?;
        Ok(LedgerClient {
            address: (host, authority.port_u16().unwrap_or(443)),
            authority: authority.as_str().to_string(),
            server_name,
            connector: TlsConnector::from(tls),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Bounds every request (connection included) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            ClientError::Unreachable(format!("{what} {}:{}: {e}", self.address.0, self.address.1))
        };
        let tcp = tokio::net::TcpStream::connect((self.address.0.as_str(), self.address.1))
            .await
            .map_err(|e| unreachable("connect to", &e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| unreachable("TLS handshake with", &e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable("HTTP handshake with", &e))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request; answers with the status and body, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(self.timeout, self.send_unbounded(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn send_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut connection = self.connection.lock().await;
        // A kept-alive connection the ledger closed is replaced before anything is sent,
        // so no request is ever sent twice.
        let reusable = match connection.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *connection = Some(self.connect().await?);
        }
        let sender = connection
            .as_mut()
            .ok_or_else(|| ClientError::Unreachable("no connection".into()))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::BadAnswer(format!("cannot build the request: {e}")))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                *connection = None;
                return Err(ClientError::Unreachable(format!("request failed: {e}")));
            }
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable(format!("answer could not be read: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends a request and decodes a successful JSON answer; any other status is
    /// [`ClientError::Refused`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, answer) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(refusal(status, &answer));
        }
        decode(&answer)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        self.call(Method::POST, path, Some(body)).await
    }

    /// A fresh single-use nonce.
    pub async fn nonce(&self) -> Result<Vec<u8>, ClientError> {
        let answer: NonceResponse = self.call(Method::POST, "/v1/nonce", None).await?;
        Ok(answer.nonce)
    }

    /// First enrollment step.
    pub async fn enroll_begin(
        &self,
        request: &EnrollRequest,
    ) -> Result<EnrollChallenge, ClientError> {
        self.post("/v1/enroll", request).await
    }

    /// Second enrollment step.
    pub async fn enroll_finish(
        &self,
        proof: &EnrollProof,
    ) -> Result<EnrolledResponse, ClientError> {
        self.post("/v1/enroll/proof", proof).await
    }

    /// Enrols an SEV-SNP guest with a bundle made with a nonce of this ledger.
    pub async fn enroll_snp(&self, bundle_json: &[u8]) -> Result<EnrolledResponse, ClientError> {
        let (status, answer) = self
            .send(Method::POST, "/v1/enroll/snp", Some(bundle_json.to_vec()))
            .await?;
        if !status.is_success() {
            return Err(refusal(status, &answer));
        }
        decode(&answer)
    }

    /// Submits a bundle (its JSON bytes, sent as they are). A refused bundle is an answer,
    /// not an error: it was logged and has a receipt too.
    pub async fn submit(&self, bundle_json: &[u8]) -> Result<SubmitResponse, ClientError> {
        let (status, answer) = self
            .send(Method::POST, "/v1/attestations", Some(bundle_json.to_vec()))
            .await?;
        match status {
            StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                decode::<SubmitResponse>(&answer).map_err(|_| refusal(status, &answer))
            }
            _ => Err(refusal(status, &answer)),
        }
    }

    /// Entries matching `query` (the query string of `GET /v1/attestations`).
    pub async fn entries(&self, query: &str) -> Result<EntriesResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/attestations?{query}"), None)
            .await
    }

    /// One entry with its inclusion proof.
    pub async fn entry(&self, index: u64) -> Result<EntryJson, ClientError> {
        self.call(Method::GET, &format!("/v1/entries/{index}"), None)
            .await
    }

    /// The latest accepted entry of each agent of the caller's tenant.
    pub async fn latest_healthy(&self) -> Result<EntriesResponse, ClientError> {
        self.call(Method::GET, "/v1/attestations/latest-healthy", None)
            .await
    }

    /// Agents of the caller's tenant.
    pub async fn agents(&self) -> Result<AgentsResponse, ClientError> {
        self.call(Method::GET, "/v1/agents", None).await
    }

    /// The caller's tenant and its expected policy hash.
    pub async fn tenant(&self) -> Result<TenantResponse, ClientError> {
        self.call(Method::GET, "/v1/tenant", None).await
    }

    /// Open alerts of the caller's tenant.
    pub async fn alerts(&self) -> Result<AlertsResponse, ClientError> {
        self.call(Method::GET, "/v1/alerts", None).await
    }

    /// The latest signed checkpoint (`size` = None) or the one of `size` entries.
    pub async fn checkpoint(&self, size: Option<u64>) -> Result<String, ClientError> {
        let path = match size {
            Some(size) => format!("/v1/log/checkpoint?size={size}"),
            None => "/v1/log/checkpoint".to_string(),
        };
        self.text(&path).await
    }

    /// The smallest signed checkpoint of at least `size` entries: what a log of `size`
    /// entries seen earlier can be checked against.
    pub async fn checkpoint_at_least(&self, size: u64) -> Result<String, ClientError> {
        self.text(&format!("/v1/log/checkpoint?at_least={size}"))
            .await
    }

    /// A consistency proof between two signed sizes.
    pub async fn consistency(
        &self,
        old: u64,
        new: u64,
    ) -> Result<ConsistencyResponse, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/log/consistency?old={old}&new={new}"),
            None,
        )
        .await
    }

    /// The log's checkpoint key history (current key and transitions).
    pub async fn log_keys(&self) -> Result<LogKeysResponse, ClientError> {
        self.call(Method::GET, "/v1/log/keys", None).await
    }

    async fn text(&self, path: &str) -> Result<String, ClientError> {
        let (status, answer) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(refusal(status, &answer));
        }
        String::from_utf8(answer.to_vec()).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }
}

fn decode<T: DeserializeOwned>(answer: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

fn refusal(status: StatusCode, answer: &[u8]) -> ClientError {
    let (error, message) = match serde_json::from_slice::<ErrorBody>(answer) {
        Ok(body) => (body.error, body.message),
        Err(_) => (
            "unknown".to_string(),
            String::from_utf8_lossy(&answer[..answer.len().min(512)]).into_owned(),
        ),
    };
    ClientError::Refused {
        status: status.as_u16(),
        error,
        message,
    }
}
