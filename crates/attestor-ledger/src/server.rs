//! The ledger's HTTP/JSON API over mutual TLS. Every connection must present a client
//! certificate of the pinned CA carrying an agent identity; that identity (tenant, agent
//! id) scopes every request. Nothing here decides trust: requests are parsed, bounded and
//! handed to [`Ledger`].
//!
//! | Method and path                    | Body / query                          | Answer |
//! |------------------------------------|---------------------------------------|--------|
//! | `POST /v1/nonce`                   |                                       | [`NonceResponse`](attestor_verify::api::NonceResponse) |
//! | `POST /v1/enroll`                  | `EnrollRequest`                       | `EnrollChallenge` |
//! | `POST /v1/enroll/proof`            | `EnrollProof`                         | `EnrolledResponse` |
//! | `POST /v1/enroll/snp`              | an SEV-SNP bundle with a ledger nonce | `EnrolledResponse` |
//! | `POST /v1/attestations`            | a bundle; `next_nonce=true` asks for the agent's next nonce with an accepted answer | `SubmitResponse` (200 accepted, 422 refused, 400 malformed) |
//! | `GET /v1/attestations`             | `agent id verdict from to after limit proofs` | `EntriesResponse` |
//! | `GET /v1/attestations/latest-healthy` |                                    | `EntriesResponse` |
//! | `GET /v1/entries/{index}`          |                                       | `EntryJson` with proof |
//! | `GET /v1/agents`                   |                                       | `AgentsResponse` |
//! | `GET /v1/log/checkpoint`           | `size` (exact) or `at_least` (smallest signed of at least that size) | signed note (text) |
//! | `GET /v1/log/consistency`          | `old new`                             | `ConsistencyResponse` |
//! | `GET /v1/log/key`                  |                                       | current checkpoint verifier key (text) |
//! | `GET /v1/log/keys`                 |                                       | `LogKeysResponse`: key history with transitions |
//! | `GET /v1/enrollment-ca`            |                                       | the enrollment CA's certificate (PEM), which issues AK certificates |
//! | `GET /v1/alerts`                   |                                       | `AlertsResponse`: unresolved incidents as alerts |
//! | `GET /v1/incidents`                | `state` (open, acknowledged, resolved, unresolved), `since_ms` | `IncidentsResponse` |
//! | `GET /v1/incidents/{id}`           |                                       | `Incident` |
//! | `POST /v1/incidents/{id}/ack`      | `IncidentChangeRequest` (operator certificates only) | the `Incident` acknowledged |
//! | `POST /v1/incidents/{id}/resolve`  | `IncidentChangeRequest` (operator certificates only) | the `Incident` resolved |
//!
//! Operator certificates (`.../operator/<name>`) read like agents and change incidents;
//! they never enrol, ask nonces or submit (403).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, Level};

use crate::config::ConnectionLimits;
use crate::service::{CheckpointAt, EntryFilter, Ledger, ServiceError};
use crate::store::{IncidentStates, StoreError, Verdict};
use attestor_net::limited_event;
use attestor_net::tls::{stream_identity, AgentIdentity};
use attestor_verify::api::{ErrorBody, IncidentChangeRequest, LogKeysResponse};
use attestor_verify::bundle::MAX_BUNDLE_BYTES;

/// Time a client has to send a request's headers, and then its body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest body of any request but a submission.
pub const MAX_SMALL_BODY: usize = 64 * 1024;
/// Oversized bodies up to this size are read and dropped before answering 413.
pub const MAX_DISCARDED_BODY: usize = 8 * 1024 * 1024;
/// Largest request head (request line and headers): beyond it the answer is 431. Also
/// the bound of hyper's read buffer per connection (its default is ~400 KiB), which
/// alone is not exact: a read may overshoot it and complete a larger head.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a closing connection waits for its client to stop sending, so the close is
/// a FIN after the answer rather than a reset that would discard it at the client.
const LINGER: Duration = Duration::from_secs(2);

type Answer = Response<Full<Bytes>>;
type ServerTls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Pending connections by source. Entries are removed at zero, so the map holds at most
/// `max_handshakes` sources.
struct PendingBook {
    limits: ConnectionLimits,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One pending connection's place in the book, given back on drop.
struct PendingPlace {
    book: Arc<PendingBook>,
    source: IpAddr,
}

impl PendingBook {
    /// A place for a connection from `peer`, or why there is none.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<PendingPlace, &'static str> {
        let source = source_of(peer);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_source) = &mut *counts;
        if *total >= self.limits.max_handshakes {
            return Err("too many connections in their handshake");
        }
        let from_source = by_source.entry(source).or_insert(0);
        if *from_source >= self.limits.max_handshakes_per_address {
            return Err("too many connections in their handshake from this source");
        }
        *from_source += 1;
        *total += 1;
        Ok(PendingPlace {
            book: self.clone(),
            source,
        })
    }
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let mut counts = self.book.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_source) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(n) = by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// The source a connection is counted under: IPv4 addresses (IPv4-mapped ones too) as
/// they are, IPv6 addresses by their /64.
fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Raises this process's soft limit on open files to its hard limit (every connection
/// is a descriptor, and the usual soft limit of 1024 is below the default connection
/// bounds); returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(maximum),
                    maximum: Some(maximum),
                },
            )?;
            return Ok(Some(maximum));
        }
    }
    Ok(limit.current)
}

/// Serves `ledger` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (up to [`REQUEST_TIMEOUT`]).
pub async fn serve(
    ledger: Arc<Ledger>,
    listener: TcpListener,
    mut tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let pending = Arc::new(PendingBook {
        limits,
        counts: Mutex::new((0, HashMap::new())),
    });
    tokio::pin!(shutdown);
    // Told to every connection at shutdown: an idle kept-alive one closes at once instead
    // of holding the exit for its keep-alive.
    let (closing, closing_seen) = watch::channel(false);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    limited_event!(Level::WARN, "accept-failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let place = match pending.admit(peer.ip()) {
            Ok(place) => place,
            Err(reason) => {
                limited_event!(Level::WARN, "connection-refused", peer = %peer, reason);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // The configuration current at accept time: a reload (new server certificate or
        // client CAs) applies to new connections; established ones end after their request
        // in flight, so the next one is checked under the new configuration.
        let acceptor = TlsAcceptor::from(tls.borrow_and_update().clone());
        let mut ends = ConnectionEnds {
            shutdown: closing_seen.clone(),
            reload: tls.clone(),
            deadline: tokio::time::Instant::now() + MAX_CONNECTION_AGE,
        };
        let (ledger, slots) = (ledger.clone(), slots.clone());
        tokio::spawn(async move {
            let handshake = acceptor.accept(tcp);
            let handshake = tokio::time::timeout(limits.handshake_timeout, handshake)
                .instrument(tracing::info_span!("tls_accept"));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    limited_event!(Level::INFO, "tls-refused", peer = %peer, error = %e);
                    return;
                }
                Err(_) => return,
            };
            let who = match stream_identity(&tls) {
                Ok(who) => who,
                Err(e) => {
                    limited_event!(Level::WARN, "identity-refused", peer = %peer, error = %e);
                    return;
                }
            };
            let Ok(Ok(_slot)) = tokio::time::timeout(REQUEST_TIMEOUT, slots.acquire_owned()).await
            else {
                return;
            };
            drop(place);
            // Not a moment past the client certificate's validity.
            if let Some(left) = certificate_time_left(&tls) {
                ends.deadline = ends.deadline.min(tokio::time::Instant::now() + left);
            }
            serve_connection(ledger, who, tls, limits.keep_alive, ends).await;
        });
    }
    let _ = closing.send(true);
    // Wait for connections in flight to end, bounded.
    let _ = tokio::time::timeout(
        REQUEST_TIMEOUT,
        slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)),
    )
    .await;
    Ok(())
}

/// How long one connection may serve requests: its identity was checked at its handshake
/// only, and a kept-alive agent would otherwise keep one connection for ever.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

/// What ends an authenticated connection once its request in flight is answered.
struct ConnectionEnds {
    /// The ledger stops.
    shutdown: watch::Receiver<bool>,
    /// The TLS configuration (server certificate, client CAs) is reloaded.
    reload: watch::Receiver<Arc<rustls::ServerConfig>>,
    /// [`MAX_CONNECTION_AGE`] or the client certificate's end, whichever comes first.
    deadline: tokio::time::Instant,
}

impl ConnectionEnds {
    async fn reached(mut self) {
        let reloaded = async {
            // A configuration that can no longer change (its sender gone) ends nothing.
            if self.reload.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = self.shutdown.wait_for(|closing| *closing) => {}
            _ = reloaded => {}
            _ = tokio::time::sleep_until(self.deadline) => {}
        }
    }
}

/// Time until the client certificate of `tls` expires (zero once it has).
fn certificate_time_left(tls: &ServerTls) -> Option<Duration> {
    let not_after = attestor_net::tls::stream_certificate_not_after(tls)?;
    Some(
        not_after
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Serves HTTP/1.1 on an authenticated connection until either side ends it or one of
/// `ends` is reached, then closes it gracefully.
async fn serve_connection(
    ledger: Arc<Ledger>,
    who: AgentIdentity,
    tls: ServerTls,
    keep_alive: Duration,
    ends: ConnectionEnds,
) {
    let service = hyper::service::service_fn(move |request| {
        let (ledger, who) = (ledger.clone(), who.clone());
        // Boxed: polling without hyper's shutdown needs an Unpin future.
        Box::pin(
            async move { Ok::<_, std::convert::Infallible>(route(&ledger, &who, request).await) },
        )
    });
    let mut connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper's one timer for the idle wait and the head: only authenticated peers get
        // this far, each holding one of the bounded connection slots.
        .header_read_timeout(keep_alive)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(tls), service);
    // Without hyper's own shutdown: the stream comes back for the close below, also
    // after errors such as an oversized head (which hyper answers with 431 first).
    let mut ending = std::pin::pin!(ends.reached());
    let mut told = false;
    let _ = std::future::poll_fn(|cx| {
        if !told && ending.as_mut().poll(cx).is_ready() {
            told = true;
            // Ends the connection once the request in flight, if any, is answered.
            std::pin::Pin::new(&mut connection).graceful_shutdown();
        }
        connection.poll_without_shutdown(cx)
    })
    .await;
    close_gracefully(connection.into_parts().io.into_inner()).await;
}

/// Sends close_notify and FIN, then reads and drops what the client still sends (say the
/// rest of a head too large to serve), bounded by [`LINGER`] and [`MAX_DISCARDED_BODY`]:
/// closing a socket with unread data resets the connection, and the client's stack would
/// then drop the answer it has not read yet.
async fn close_gracefully(mut tls: ServerTls) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER, tls.shutdown()).await;
    let (tcp, _) = tls.get_mut();
    let drain = async {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut drained = 0usize;
        while let Ok(n @ 1..) = tcp.read(&mut buffer).await {
            drained += n;
            if drained > MAX_DISCARDED_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A request that cannot be served, with its status.
struct Failure {
    status: StatusCode,
    error: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            error,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        // A number no store can hold was asked for (`from=18446744073709551615`).
        if let ServiceError::Store(out_of_range @ StoreError::OutOfRange(_)) = &e {
            return Failure::bad_request(out_of_range.to_string());
        }
        let status = match &e {
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::WrongRole { .. } | ServiceError::NotPublished(_) => StatusCode::FORBIDDEN,
            ServiceError::UnknownTenant(_)
            | ServiceError::UnknownAgent { .. }
            | ServiceError::Enroll(_) => StatusCode::FORBIDDEN,
            ServiceError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::StorageUnavailable { .. }
            | ServiceError::Store(_)
            | ServiceError::Log(_)
            | ServiceError::Append(_)
            | ServiceError::Task(_)
            | ServiceError::AkCertificate(_)
            | ServiceError::NoRandomness(_)
            | ServiceError::BadLeaf { .. }
            | ServiceError::EntryVanished { .. }
            | ServiceError::Ear(_)
            | ServiceError::NotSequencer => StatusCode::SERVICE_UNAVAILABLE,
        };
        let status = match &e {
            ServiceError::Enroll(crate::enroll::EnrollError::Store(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => status,
        };
        // A follower refusing writes is routine, not a failure; so is refusing nonces
        // while the storage is down (the append that found it down was logged).
        let routine =
            e.code() == "not-sequencer" || matches!(e, ServiceError::StorageUnavailable { .. });
        if status.is_server_error() && !routine {
            limited_event!(Level::ERROR, "request-failed", error = %e);
        }
        Failure {
            retry_after: e.retry_after(),
            ..Failure::new(status, e.code(), e.to_string())
        }
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_answer<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => answer(status, "application/json", body),
        Err(e) => failure_answer(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
    }
}

fn failure_answer(f: Failure) -> Answer {
    let mut answer = json_answer(
        f.status,
        &ErrorBody {
            error: f.error.to_string(),
            message: f.message,
        },
    );
    if let Some(wait) = f.retry_after {
        // Whole seconds, rounded up (RFC 9110 delay-seconds).
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        answer
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    answer
}

async fn route(ledger: &Arc<Ledger>, who: &AgentIdentity, request: Request<Incoming>) -> Answer {
    match dispatch(ledger, who, request).await {
        Ok(answer) => answer,
        Err(failure) => failure_answer(failure),
    }
}

async fn dispatch(
    ledger: &Arc<Ledger>,
    who: &AgentIdentity,
    request: Request<Incoming>,
) -> Result<Answer, Failure> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = Query::parse(request.uri().query())?;
    // Every write spends the caller's allowance before its body is kept; a refused one is
    // read and dropped (bounded) so the client gets its 429, not a reset connection.
    if method == Method::POST {
        let endpoint = match path.as_str() {
            "/v1/nonce" => "nonce",
            "/v1/attestations" => "submit",
            p if p.starts_with("/v1/incidents/") => "incident",
            _ => "enroll",
        };
        if let Err(refused) = ledger.admit_write(who, endpoint) {
            let _ = read_body(request, 0).await;
            return Err(refused.into());
        }
    }
    match (&method, path.as_str()) {
        (&Method::POST, "/v1/nonce") => Ok(ok(&ledger.issue_nonce(who)?)),
        (&Method::POST, "/v1/enroll") => {
            let body = json_body(request).await?;
            Ok(ok(&ledger.enroll_begin(who, body).await?))
        }
        (&Method::POST, "/v1/enroll/proof") => {
            let body = json_body(request).await?;
            Ok(ok(&ledger.enroll_finish(who, body).await?))
        }
        (&Method::POST, "/v1/enroll/snp") => {
            let body = read_body(request, MAX_BUNDLE_BYTES).await?;
            Ok(ok(&ledger.enroll_snp(who, body).await?))
        }
        (&Method::POST, "/v1/attestations") => {
            let next_nonce = query
                .only(&["next_nonce"])
                .and_then(|()| query.flag("next_nonce"));
            // Read before a bad query is refused: the client gets its 400, not a reset.
            let body = read_body(request, MAX_BUNDLE_BYTES).await?;
            let response = ledger.submit(who, body, next_nonce?).await?;
            let _answer = tracing::info_span!("answer").entered();
            let status = match (response.verdict, response.reason.as_deref()) {
                // A late attestation is logged as genuine: delivered, nothing to fix.
                (Verdict::Accepted | Verdict::Late, _) => StatusCode::OK,
                (Verdict::Refused, Some("malformed")) => StatusCode::BAD_REQUEST,
                (Verdict::Refused, _) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            tracing::info!(
                event = "submission",
                tenant = %who.tenant,
                agent = %who.agent_id,
                verdict = response.verdict.as_str(),
                reason = response.reason.as_deref(),
                index = response.receipt.index,
            );
            Ok(json_answer(status, &response))
        }
        (&Method::GET, "/v1/attestations") => {
            let filter = query.entry_filter()?;
            Ok(ok(&ledger.entries(who, filter).await?))
        }
        (&Method::GET, "/v1/attestations/latest-healthy") => {
            query.only(&[])?;
            Ok(ok(&ledger.latest_healthy(who).await?))
        }
        (&Method::GET, "/v1/tenant") => {
            query.only(&[])?;
            Ok(ok(&ledger.tenant(who)?))
        }
        (&Method::GET, "/v1/alerts") => {
            query.only(&[])?;
            Ok(ok(&ledger.alerts(who).await?))
        }
        (&Method::GET, "/v1/agents") => {
            query.only(&[])?;
            Ok(ok(&ledger.agents(who).await?))
        }
        (&Method::GET, "/v1/log/checkpoint") => {
            query.only(&["size", "at_least", "cosigned"])?;
            let cosigned = query.number("cosigned")?;
            let at = match (query.number("size")?, query.number("at_least")?, cosigned) {
                (None, None, None) => CheckpointAt::Latest,
                (Some(size), None, None) => CheckpointAt::Size(size),
                (None, Some(size), None) => CheckpointAt::AtLeast(size),
                (None, None, Some(quorum @ 1..=64)) => CheckpointAt::Cosigned(quorum as usize),
                (None, None, Some(_)) => {
                    return Err(Failure::bad_request("cosigned must be 1..=64"))
                }
                _ => {
                    return Err(Failure::bad_request(
                        "give one of size, at_least and cosigned",
                    ))
                }
            };
            let note = ledger.checkpoint(at).await?;
            Ok(answer(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                note.into_bytes(),
            ))
        }
        (&Method::GET, "/v1/log/consistency") => {
            query.only(&["old", "new"])?;
            let old = query.required_number("old")?;
            let new = query.required_number("new")?;
            Ok(ok(&ledger.consistency(old, new).await?))
        }
        (&Method::GET, "/v1/log/key") => Ok(answer(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            ledger.verifier_key().into_bytes(),
        )),
        (&Method::GET, "/v1/ear/jwks") => Ok(ok(&ledger.ear_jwks())),
        (&Method::GET, "/v1/enrollment-ca") => Ok(answer(
            StatusCode::OK,
            "application/x-pem-file",
            ledger.enrollment_ca_pem().as_bytes().to_vec(),
        )),
        (&Method::GET, "/v1/log/keys") => {
            let history = ledger.key_history();
            Ok(ok(&LogKeysResponse {
                current: history.newest().to_string(),
                transitions: history.transitions().to_vec(),
            }))
        }
        (&Method::GET, "/v1/incidents") => {
            query.only(&["state", "since_ms"])?;
            let states = query
                .text("state")
                .map(|s| {
                    IncidentStates::parse(&s).ok_or_else(|| {
                        Failure::bad_request(
                            "state must be open, acknowledged, resolved or unresolved",
                        )
                    })
                })
                .transpose()?;
            let since = query.number("since_ms")?;
            Ok(ok(&ledger.incidents(who, states, since).await?))
        }
        (&Method::GET, p) if p.starts_with("/v1/incidents/") => {
            query.only(&[])?;
            let id = incident_id(p.trim_start_matches("/v1/incidents/"))?;
            Ok(ok(&ledger.incident(who, id).await?))
        }
        (&Method::POST, p) if p.starts_with("/v1/incidents/") => {
            let rest = p.trim_start_matches("/v1/incidents/");
            let (id, resolve) = match rest.rsplit_once('/') {
                Some((id, "ack")) => (incident_id(id)?, false),
                Some((id, "resolve")) => (incident_id(id)?, true),
                _ => {
                    return Err(Failure::new(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        format!("no route for {method} {path}"),
                    ))
                }
            };
            let body: IncidentChangeRequest = json_body(request).await?;
            let incident = ledger
                .change_incident(who, id, resolve, body.reason)
                .await?;
            tracing::info!(
                event = if resolve {
                    "incident-resolved"
                } else {
                    "incident-acknowledged"
                },
                tenant = %who.tenant,
                operator = %who.agent_id,
                incident = id,
            );
            Ok(ok(&incident))
        }
        (&Method::GET, p) if p.starts_with("/v1/entries/") => {
            query.only(&[])?;
            let index = p
                .trim_start_matches("/v1/entries/")
                .parse::<u64>()
                .map_err(|_| Failure::bad_request("entry index must be a decimal number"))?;
            Ok(ok(&ledger.entry(who, index).await?))
        }
        _ => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no route for {method} {path}"),
        )),
    }
}

fn incident_id(text: &str) -> Result<u64, Failure> {
    text.parse::<u64>()
        .map_err(|_| Failure::bad_request("an incident id is a decimal number"))
}

fn ok<T: Serialize>(value: &T) -> Answer {
    json_answer(StatusCode::OK, value)
}

/// Reads a body of at most `limit` bytes within [`REQUEST_TIMEOUT`]. A larger body is
/// read and discarded up to [`MAX_DISCARDED_BODY`] so the client gets its 413 instead of
/// a reset connection; beyond that the connection is closed.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut body = request.into_body();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Failure::bad_request(format!("cannot read the body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > MAX_DISCARDED_BODY {
                    break;
                }
                if seen <= limit {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, reading).await {
        Ok(Ok(())) if seen <= limit => Ok(kept),
        Ok(Ok(())) => Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body exceeds {limit} bytes"),
        )),
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the body did not arrive in time",
        )),
    }
}

async fn json_body<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, Failure> {
    let body = read_body(request, MAX_SMALL_BODY).await?;
    serde_json::from_slice(&body).map_err(|e| Failure::bad_request(format!("invalid JSON: {e}")))
}

/// A parsed query string. Values are plain tokens (ids, numbers): percent-encoding and
/// repeated or unknown parameters are refused rather than guessed at.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, Failure> {
        let mut params = HashMap::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !value
                .bytes()
                // `@`: the ledger's own recorders (`agent=@incidents`).
                .all(|b| b.is_ascii_alphanumeric() || b"-._:@".contains(&b))
            {
                return Err(Failure::bad_request(format!(
                    "query parameter {key:?} has characters outside [A-Za-z0-9._:@-]"
                )));
            }
            if params.insert(key.to_string(), value.to_string()).is_some() {
                return Err(Failure::bad_request(format!(
                    "query parameter {key:?} is repeated"
                )));
            }
        }
        Ok(Query(params))
    }

    fn only(&self, allowed: &[&str]) -> Result<(), Failure> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(Failure::bad_request(format!(
                "unknown query parameter {unknown:?} (allowed: {allowed:?})"
            ))),
            None => Ok(()),
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Failure> {
        self.0
            .get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| Failure::bad_request(format!("{key} must be a decimal number")))
            })
            .transpose()
    }

    /// A `true`/`false` parameter, false when absent.
    fn flag(&self, key: &str) -> Result<bool, Failure> {
        match self.0.get(key).map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(Failure::bad_request(format!("{key} must be true or false"))),
        }
    }

    fn required_number(&self, key: &str) -> Result<u64, Failure> {
        self.number(key)?
            .ok_or_else(|| Failure::bad_request(format!("query parameter {key} is required")))
    }

    fn entry_filter(&self) -> Result<EntryFilter, Failure> {
        self.only(&[
            "agent",
            "id",
            "verdict",
            "from",
            "to",
            "after",
            "limit",
            "proofs",
            "proofs_at",
        ])?;
        let verdict = match self.0.get("verdict").map(String::as_str) {
            None => None,
            Some(name) => Some(Verdict::parse(name).ok_or_else(|| {
                Failure::bad_request(format!(
                    "verdict {name:?} is not one of accepted, refused, late"
                ))
            })?),
        };
        let proofs = self.flag("proofs")?;
        Ok(EntryFilter {
            agent_id: self.text("agent"),
            attestation_id: self.text("id"),
            verdict,
            from_ms: self.number("from")?,
            to_ms: self.number("to")?,
            after: self.number("after")?,
            limit: self.number("limit")?,
            proofs,
            proofs_at: self.number("proofs_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_capped_per_source_and_in_total_until_dropped() {
        let book = Arc::new(PendingBook {
            limits: ConnectionLimits {
                max_handshakes: 3,
                max_handshakes_per_address: 2,
                ..ConnectionLimits::new(1)
            },
            counts: Mutex::new((0, HashMap::new())),
        });
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let first = book.admit(ip("192.0.2.1")).unwrap();
        let _second = book.admit(ip("192.0.2.1")).unwrap();
        assert!(book.admit(ip("192.0.2.1")).is_err());
        // The same host by its IPv4-mapped IPv6 address is the same source.
        assert!(book.admit(ip("::ffff:192.0.2.1")).is_err());
        let v6 = book.admit(ip("2001:db8::1")).unwrap();
        assert!(
            book.admit(ip("2001:db8::2")).is_err(),
            "the total is reached"
        );
        drop(first);
        // A neighbour in the same /64 shares its count, still below the cap.
        assert!(book.admit(ip("2001:db8::ffff:1")).is_ok());
        // Only sources with pending connections are remembered.
        drop(v6);
        assert_eq!(book.counts.lock().unwrap().1.len(), 1);
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_bit_prefix() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(source_of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source_of(ip("10.1.2.3")), ip("10.1.2.3"));
    }
}
