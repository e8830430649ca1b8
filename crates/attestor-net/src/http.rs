//! The one HTTP/1.1 client of the project: to the ledger over mutual TLS (the agent, the
//! CLI), to AMD's key distribution service over TLS, to an Alertmanager or webhook and to a
//! loopback status endpoint over plain HTTP. Every request is bounded in time (connection
//! included) and every answer in size; a client keeps one connection alive and replaces it,
//! before sending, when the server closed it, so no request is ever sent twice.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio_rustls::TlsConnector;

/// Default bound on one request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound on an answer's body.
pub const DEFAULT_MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a request got no answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL cannot be used with this client.
    #[error("{url:?} is unusable: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TCP connection could not be made.
    #[error("cannot reach {target}: connect: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or refused certificate, a reset, ...).
    #[error("cannot reach {target}: TLS handshake: {source}")]
    TlsHandshake {
        /// `host:port`.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed at `step`: the handshake, or sending the request and
    /// receiving the answer's head.
    #[error("cannot reach {target}: {step}: {source}")]
    Http {
        /// `host:port`.
        target: String,
        /// `"HTTP handshake"` or `"request"`.
        step: &'static str,
        /// Why.
        source: hyper::Error,
    },
    /// The path and query do not make a request.
    #[error("cannot build a request to {target}: {source}")]
    Request {
        /// `host:port`.
        target: String,
        /// Why.
        source: hyper::http::Error,
    },
    /// The answer's body could not be read, or exceeded the client's bound.
    #[error("cannot reach {target}: read the answer: {source}")]
    Body {
        /// `host:port`.
        target: String,
        /// Why ([`http_body_util::LengthLimitError`] past the bound).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within the client's timeout.
    #[error("no answer from {target} within {timeout:?}")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The bound.
        timeout: Duration,
    },
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (bounded).
    pub body: Bytes,
    /// The `Retry-After` delay in seconds, when the server sent one.
    pub retry_after: Option<Duration>,
}

/// A client for one origin (`http://` or `https://` host and port).
pub struct HttpClient {
    host: String,
    port: u16,
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    max_answer: usize,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl HttpClient {
    /// A client for the origin of `url` (its path and query are ignored): `https://`
    /// with `tls` (whose roots, and client certificate if any, decide whom it trusts and
    /// how it authenticates), or `http://` without.
    pub fn new(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, HttpError> {
        let bad = |reason| HttpError::Url {
            url: url.chars().take(200).collect(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let (port, tls) = match (uri.scheme_str(), tls) {
            (Some("https"), Some(config)) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| bad("host is neither a DNS name nor an IP address"))?;
                (443, Some((TlsConnector::from(config), name)))
            }
            (Some("https"), None) => return Err(bad("https:// needs a TLS configuration")),
            (Some("http"), None) => (80, None),
            (Some("http"), Some(_)) => return Err(bad("TLS is configured: use https://")),
            _ => return Err(bad("only http:// and https:// are supported")),
        };
        Ok(HttpClient {
            port: authority.port_u16().unwrap_or(port),
            authority: authority.as_str().to_string(),
            host,
            tls,
            timeout: DEFAULT_TIMEOUT,
            max_answer: DEFAULT_MAX_ANSWER,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Bounds every request (connection included) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds every answer's body by `bytes`.
    pub fn with_max_answer(mut self, bytes: usize) -> Self {
        self.max_answer = bytes;
        self
    }

    /// The request bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn http_error(&self, step: &'static str) -> impl FnOnce(hyper::Error) -> HttpError + '_ {
        move |source| HttpError::Http {
            target: self.target(),
            step,
            source,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect {
                target: self.target(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // The connection task ends when the sender is dropped or the server closes.
        let sender = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| HttpError::TlsHandshake {
                        target: self.target(),
                        source,
                    })?;
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(self.http_error("HTTP handshake"))?;
                tokio::spawn(connection);
                sender
            }
            None => {
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(self.http_error("HTTP handshake"))?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(sender)
    }

    /// Sends one request (a JSON body when given) and returns the answer, whatever its
    /// status, within the client's timeout.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        tokio::time::timeout(
            self.timeout,
            self.request_unbounded(method, path_and_query, body),
        )
        .await
        .map_err(|_| HttpError::Timeout {
            target: self.target(),
            timeout: self.timeout,
        })?
    }

    async fn request_unbounded(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        let mut connection = self.connection.lock().await;
        // A kept-alive connection the server closed is replaced before anything is sent,
        // so no request is ever sent twice.
        let kept = match connection.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let sender = match kept {
            Some(sender) => connection.insert(sender),
            None => connection.insert(self.connect().await?),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, &self.authority);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| HttpError::Request {
                target: self.target(),
                source,
            })?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                *connection = None;
                return Err(self.http_error("request")(e));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), self.max_answer)
            .collect()
            .await
            .map_err(|source| HttpError::Body {
                target: self.target(),
                source,
            })?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_and_the_tls_configuration_go_together() {
        let config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        assert!(HttpClient::new("http://127.0.0.1:9093", None).is_ok());
        assert!(HttpClient::new("https://ledger.example:8443", Some(config.clone())).is_ok());
        for (url, tls) in [
            ("https://ledger.example", None),
            ("http://127.0.0.1", Some(config)),
            ("ftp://host", None),
            ("not a url", None),
            ("/relative", None),
        ] {
            assert!(
                matches!(HttpClient::new(url, tls), Err(HttpError::Url { .. })),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn an_answer_past_its_bound_or_time_is_an_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n\
                              Content-Length: 10\r\n\r\n0123456789",
                        )
                        .await;
                });
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let answer = HttpClient::new(&url, None)
            .unwrap()
            .request(Method::GET, "/", None)
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(&answer.body[..], b"0123456789");
        let small = HttpClient::new(&url, None).unwrap().with_max_answer(4);
        match small.request(Method::GET, "/", None).await {
            Err(HttpError::Body { source, .. }) => {
                assert!(source.is::<http_body_util::LengthLimitError>(), "{source}")
            }
            other => panic!("an answer past the bound was taken: {other:?}"),
        }
        // A server that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let slow = HttpClient::new(&silent_url, None)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        assert!(matches!(
            slow.request(Method::GET, "/", None).await,
            Err(HttpError::Timeout { .. })
        ));
        drop(silent);
    }
}
