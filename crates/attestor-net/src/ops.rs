//! The operations listener shared by the agent and the ledger: plain HTTP for Prometheus
//! scrapes, health checks, the ledger's dashboard and its enforcement point. GET only
//! (but under [`ANY_METHOD_PREFIX`]), no request bodies, few connections, short timeouts.
//! It carries no attestation data path; bind it to loopback or a management network.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once on the operations listener.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Paths under which every method is served: an authorization check (Envoy's ext_authz)
/// arrives with the method of the request it judges, and is answered from headers alone.
pub const ANY_METHOD_PREFIX: &str = "/authz/";

/// Content type of the OpenMetrics text `prometheus-client` writes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format (0.0.4).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metrics answer in the format the scraper asked for: OpenMetrics when its `Accept`
/// header names it (as Prometheus does), else the classic text format that older tools
/// and `promtool check metrics` read.
pub fn metrics_page(asked: &Asked, openmetrics: String) -> Page {
    let wants_openmetrics = asked
        .headers
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        Page::ok(OPENMETRICS, openmetrics)
    } else {
        Page::ok(PROMETHEUS_TEXT, classic_text(&openmetrics))
    }
}

/// OpenMetrics text as the classic format: counters are named with their `_total` suffix
/// in HELP and TYPE lines, and the `# UNIT` and `# EOF` lines go.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// An answer of the operations listener.
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Headers besides the content type.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Page {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Page {
        Page {
            status: StatusCode::OK,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// This page with one more header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Page {
        self.headers.push((name, value));
        self
    }

    pub fn error(status: StatusCode, message: &str) -> Page {
        Page {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
            headers: Vec::new(),
        }
    }
}

/// What a request asks for.
pub struct Asked {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

/// Serves GET requests with `handler` until `shutdown` completes.
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Asked) -> F + Send + Sync + 'static,
    F: Future<Output = Page> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let served = request.method() == Method::GET
                            || request.uri().path().starts_with(ANY_METHOD_PREFIX);
                        let page = if served {
                            let asked = Asked {
                                method: request.method().clone(),
                                path: request.uri().path().to_string(),
                                query: request.uri().query().map(str::to_string),
                                headers: request.headers().clone(),
                            };
                            handler(asked).await
                        } else {
                            Page::error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here")
                        };
                        let mut response = Response::new(Full::new(Bytes::from(page.body)));
                        *response.status_mut() = page.status;
                        let headers = response.headers_mut();
                        headers.insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
                        for (name, value) in page.headers {
                            headers.insert(name, value);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
