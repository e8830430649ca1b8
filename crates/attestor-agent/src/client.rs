//! The ledger's client: the ledger's API over [`HttpClient`] (HTTP/1.1, mutual TLS, one
//! kept-alive connection, every answer bounded in size and time). Used by the agent,
//! `attestor query` and the tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestor_net::http::{HttpClient, HttpError};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use attestor_verify::api::{
    AgentsResponse, AlertsResponse, ConsistencyResponse, EnrollChallenge, EnrollProof,
    EnrollRequest, EnrolledResponse, EntriesResponse, EntryJson, ErrorBody, Incident,
    IncidentChangeRequest, IncidentsResponse, LogKeysResponse, NonceResponse, SubmitResponse,
    TenantResponse,
};
use attestor_verify::bundle::EvidenceKind;

/// Default bound on one request, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = attestor_net::http::DEFAULT_TIMEOUT;

/// Why a request to the ledger did not succeed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("ledger endpoint {endpoint:?} is unusable: {reason}")]
    Endpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("the ledger did not answer: {0}")]
    Transport(#[from] HttpError),
    #[error("the ledger refused the request ({status}, {error}): {message}")]
    Refused {
        status: u16,
        error: String,
        message: String,
        /// How long the ledger asked the caller to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    #[error("the ledger's answer is not understood: {0}")]
    BadAnswer(#[from] serde_json::Error),
    #[error("the ledger's answer is not text: {0}")]
    NotText(#[from] std::string::FromUtf8Error),
}

impl ClientError {
    /// Whether trying again later may succeed (the ledger was unreachable or failing),
    /// as opposed to the ledger refusing this request for good. A refusal because of load
    /// or configuration on the ledger's side (rate limit, an unconfigured tenant) is
    /// transient too: the request itself was not judged.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Refused { status, error, .. } => {
                *status >= 500 || *status == 408 || *status == 429 || error == "unknown-tenant"
            }
            ClientError::Endpoint { .. } | ClientError::BadAnswer(_) | ClientError::NotText(_) => {
                false
            }
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
    http: HttpClient,
}

impl LedgerClient {
    /// A client for `endpoint` (`https://HOST[:PORT]`), presenting the identity and
    /// pinning the CA of `tls`.
    pub fn new(endpoint: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        let bad = |reason| ClientError::Endpoint {
            endpoint: endpoint.chars().take(200).collect(),
            reason,
        };
        let uri: hyper::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("only https:// is supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("must not have a path or query"));
        }
        let http = HttpClient::new(endpoint, Some(tls)).map_err(|e| match e {
            HttpError::Url { reason, .. } => bad(reason),
            other => ClientError::Transport(other),
        })?;
        Ok(LedgerClient { http })
    }

    /// Bounds every request (connection included) by `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        LedgerClient {
            http: self.http.with_timeout(timeout),
        }
    }

    /// Sends one request; answers with the status and body, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let answer = self.http.request(method, path, body).await?;
        Ok((answer.status, answer.body))
    }

    /// Sends a request; a success's body, or the refusal of any other status.
    async fn send_for_success(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let answer = self.http.request(method, path, body).await?;
        if !answer.status.is_success() {
            return Err(refusal(answer.status, &answer.body, answer.retry_after));
        }
        Ok(answer.body)
    }

    /// Sends a request and decodes a successful JSON answer; any other status is
    /// [`ClientError::Refused`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(
            &self.send_for_success(method, path, body).await?,
        )?)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
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
        self.call(Method::POST, "/v1/enroll/snp", Some(bundle_json.to_vec()))
            .await
    }

    /// Submits a bundle (its JSON bytes, sent as they are). A refused bundle is an answer,
    /// not an error: it was logged and has a receipt too.
    pub async fn submit(&self, bundle_json: &[u8]) -> Result<SubmitResponse, ClientError> {
        self.submit_to("/v1/attestations", bundle_json).await
    }

    /// Submits a bundle as [`LedgerClient::submit`] does, asking for the agent's next
    /// nonce with an accepted answer ([`SubmitResponse::next_nonce`]); a ledger that
    /// predates the question ignores it and answers without one.
    pub async fn submit_for_next_nonce(
        &self,
        bundle_json: &[u8],
    ) -> Result<SubmitResponse, ClientError> {
        self.submit_to("/v1/attestations?next_nonce=true", bundle_json)
            .await
    }

    async fn submit_to(
        &self,
        path: &str,
        bundle_json: &[u8],
    ) -> Result<SubmitResponse, ClientError> {
        let answer = self
            .http
            .request(Method::POST, path, Some(bundle_json.to_vec()))
            .await?;
        let refused = || refusal(answer.status, &answer.body, answer.retry_after);
        match answer.status {
            StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                serde_json::from_slice::<SubmitResponse>(&answer.body).map_err(|_| refused())
            }
            _ => Err(refused()),
        }
    }

    /// Entries matching `query` (the query string of `GET /v1/attestations`).
    pub async fn entries(&self, query: &str) -> Result<EntriesResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/attestations?{query}"), None)
            .await
    }

    /// The key set the ledger's EARs verify with.
    pub async fn ear_jwks(&self) -> Result<attestor_verify::ear::Jwks, ClientError> {
        self.call(Method::GET, "/v1/ear/jwks", None).await
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

    /// Incidents of the caller's tenant; `query` is the query string of
    /// `GET /v1/incidents` (`state=...&since_ms=...`), possibly empty.
    pub async fn incidents(&self, query: &str) -> Result<IncidentsResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/incidents?{query}"), None)
            .await
    }

    /// One incident of the caller's tenant.
    pub async fn incident(&self, id: u64) -> Result<Incident, ClientError> {
        self.call(Method::GET, &format!("/v1/incidents/{id}"), None)
            .await
    }

    /// Acknowledges (`resolve` false) or resolves an incident: operator certificates only.
    pub async fn change_incident(
        &self,
        id: u64,
        resolve: bool,
        reason: &str,
    ) -> Result<Incident, ClientError> {
        let verb = if resolve { "resolve" } else { "ack" };
        let body = IncidentChangeRequest {
            reason: reason.to_string(),
        };
        self.post(&format!("/v1/incidents/{id}/{verb}"), &body)
            .await
    }

    /// The latest signed checkpoint (`size` = None) or the one of `size` entries.
    pub async fn checkpoint(&self, size: Option<u64>) -> Result<String, ClientError> {
        let path = match size {
            Some(size) => format!("/v1/log/checkpoint?size={size}"),
            None => "/v1/log/checkpoint".to_string(),
        };
        self.text(&path).await
    }

    /// The enrollment CA's certificate (PEM), which certifies enrolled agents' AKs.
    pub async fn enrollment_ca(&self) -> Result<String, ClientError> {
        self.text("/v1/enrollment-ca").await
    }

    /// The newest checkpoint at least `quorum` witnesses cosigned, with the cosignatures.
    pub async fn checkpoint_cosigned(&self, quorum: usize) -> Result<String, ClientError> {
        self.text(&format!("/v1/log/checkpoint?cosigned={quorum}"))
            .await
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
        let body = self.send_for_success(Method::GET, path, None).await?;
        Ok(String::from_utf8(body.to_vec())?)
    }
}

/// The nonce the ledger handed out with the answer to the agent's latest submission, for
/// its next attestation: a steady-state heartbeat is then one request. Kept in memory
/// only: losing it (a restart) costs one request to the nonce endpoint.
#[derive(Debug)]
pub struct NonceCarrier {
    /// The nonce, and until when an attestation may still be made with it.
    carried: Option<(Vec<u8>, Instant)>,
    /// How long an attestation may take to reach the ledger once made; None: ask the
    /// endpoint for every nonce.
    margin: Option<Duration>,
}

impl NonceCarrier {
    /// Nothing carried yet. `margin` is how long a heartbeat may take from taking its
    /// nonce to the ledger's answer (its timeout): a nonce is used only while the ledger
    /// will still count it as its own when the submission arrives.
    pub fn new(margin: Duration) -> Self {
        NonceCarrier {
            carried: None,
            margin: Some(margin),
        }
    }

    /// One that asks the nonce endpoint for every nonce and never asks for the next with
    /// a submission.
    pub fn never() -> Self {
        NonceCarrier {
            carried: None,
            margin: None,
        }
    }

    /// The carrier for `evidence`. An SEV-SNP report has no clock to vouch for a nonce a
    /// restarted (or failed-over) ledger no longer holds in memory, so a nonce carried
    /// through the interval would be refused after any restart where one fetched just
    /// before attesting is not: SEV-SNP guests without a vTPM ask every time.
    pub fn for_evidence(evidence: EvidenceKind, margin: Duration) -> Self {
        match evidence {
            EvidenceKind::Snp => NonceCarrier::never(),
            EvidenceKind::Tpm | EvidenceKind::TpmSnp => NonceCarrier::new(margin),
        }
    }

    /// A nonce for one attestation: the carried one while it is usable, else a fresh one
    /// from the nonce endpoint. Either way nothing is carried afterwards: each nonce is
    /// good for one attestation only.
    pub async fn next(&mut self, client: &LedgerClient) -> Result<Vec<u8>, ClientError> {
        let now = Instant::now();
        match self.carried.take().filter(|(_, until)| now < *until) {
            Some((nonce, _)) => Ok(nonce),
            None => client.nonce().await,
        }
    }

    /// Submits a bundle ([`LedgerClient::submit`]), asking for the next nonce unless
    /// this carrier never carries one, and keeps what the answer hands out, and only
    /// that: a refusal (of this nonce or any other), a failure or an answer without a
    /// nonce (from a ledger that cannot append or predates handing them out) leaves
    /// nothing carried, so the next attestation asks the endpoint, whose answer says what
    /// is wrong.
    pub async fn submit(
        &mut self,
        client: &LedgerClient,
        bundle_json: &[u8],
    ) -> Result<SubmitResponse, ClientError> {
        let Some(margin) = self.margin else {
            return client.submit(bundle_json).await;
        };
        let answer = client.submit_for_next_nonce(bundle_json).await;
        self.keep(margin, &answer);
        answer
    }

    fn keep(&mut self, margin: Duration, answer: &Result<SubmitResponse, ClientError>) {
        self.carried = answer
            .as_ref()
            .ok()
            .and_then(|response| response.next_nonce.as_ref())
            .and_then(|next| {
                // A lifetime no longer than the margin is not worth carrying.
                let usable = Duration::from_millis(next.valid_for_ms)
                    .checked_sub(margin)
                    .filter(|usable| !usable.is_zero())?;
                Some((next.nonce.clone(), Instant::now().checked_add(usable)?))
            });
    }

    /// Forgets the carried nonce: after a failed heartbeat (a restarted ledger, a
    /// fail-over) the next one comes from the endpoint.
    pub fn forget(&mut self) {
        self.carried = None;
    }
}

fn refusal(status: StatusCode, answer: &[u8], retry_after: Option<Duration>) -> ClientError {
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
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestor_verify::api::{NextNonce, ReceiptJson, Verdict};

    fn answer(verdict: Verdict, next: Option<(u8, u64)>) -> Result<SubmitResponse, ClientError> {
        Ok(SubmitResponse {
            verdict,
            reason: (verdict == Verdict::Refused).then(|| "nonce".to_string()),
            detail: None,
            attestation_id: None,
            ear: None,
            receipt: ReceiptJson {
                index: 0,
                received_at_ms: 0,
                leaf_hash: vec![0; 32],
                inclusion_proof: Vec::new(),
                checkpoint: String::new(),
            },
            next_nonce: next.map(|(byte, valid_for_ms)| NextNonce {
                nonce: vec![byte; 32],
                valid_for_ms,
            }),
        })
    }

    #[test]
    fn only_the_latest_answers_nonce_is_carried_and_only_with_time_to_use_it() {
        let margin = Duration::from_secs(15);
        let mut carrier = NonceCarrier::new(margin);
        carrier.keep(margin, &answer(Verdict::Accepted, Some((1, 120_000))));
        assert_eq!(carrier.carried.as_ref().map(|c| c.0[0]), Some(1));
        // Less lifetime than a heartbeat may take: the endpoint is asked instead.
        carrier.keep(margin, &answer(Verdict::Accepted, Some((2, 15_000))));
        assert_eq!(carrier.carried, None);
        carrier.keep(margin, &answer(Verdict::Accepted, Some((3, 120_000))));
        // A refusal, or any failure, leaves nothing carried.
        carrier.keep(margin, &answer(Verdict::Refused, None));
        assert_eq!(carrier.carried, None);
        carrier.keep(margin, &answer(Verdict::Accepted, Some((4, 120_000))));
        let failed = Err(ClientError::Refused {
            status: 503,
            error: "unavailable".into(),
            message: String::new(),
            retry_after: None,
        });
        carrier.keep(margin, &failed);
        assert_eq!(carrier.carried, None);
    }
}
