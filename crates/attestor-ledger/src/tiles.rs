//! The log's public read path, C2SP tlog-tiles over plain HTTP: `/checkpoint` and
//! `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`. Everything it serves is signed or
//! hashed into what is signed, so any static server or cache may relay it; it carries no
//! tenant data but the entries of tenants that publish them (SECURITY.md).

use std::sync::Arc;

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;

use crate::service::{Ledger, ServiceError};
use attestor_net::ops::{Asked, Page};
use attestor_verify::log::tiles::TilePath;

/// Tiles within a signed checkpoint never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The checkpoint changes with every batch; caches may hold it a moment only.
const FRESH: &str = "public, max-age=2";

/// Answers one request of the public listener.
pub async fn page(ledger: Arc<Ledger>, asked: Asked) -> Page {
    let path = asked.path.strip_prefix('/').unwrap_or(&asked.path);
    if path == "checkpoint" {
        return match ledger.public_checkpoint().await {
            Ok(note) => Page::ok("text/plain; charset=utf-8", note)
                .with_header(CACHE_CONTROL, HeaderValue::from_static(FRESH)),
            Err(e) => failure(&e),
        };
    }
    if !path.starts_with("tile/") {
        return Page::error(StatusCode::NOT_FOUND, "not a tlog-tiles resource");
    }
    let tile = match TilePath::parse(path) {
        Ok(tile) => tile,
        Err(e) => return Page::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match ledger.tile(tile).await {
        Ok(body) => Page::ok("application/octet-stream", body)
            .with_header(CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        Err(e) => failure(&e),
    }
}

fn failure(e: &ServiceError) -> Page {
    let status = match e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::NotPublished(_) => StatusCode::FORBIDDEN,
        _ => {
            tracing::warn!(event = "public-read-failed", error = %e);
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    Page::error(status, &e.to_string())
}
