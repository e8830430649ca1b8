//! The log's public read path, C2SP tlog-tiles over plain HTTP: `/checkpoint` and
//! `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`. Everything it serves is signed or
//! hashed into what is signed, so any static server or cache may relay it; it carries no
//! tenant data but the entries of tenants that publish them (SECURITY.md).
//!
//! The same resources can be mirrored into a directory any web server serves as is
//! ([`mirror`]): the tiles a new checkpoint fixes are written first, each atomically, and
//! the checkpoint last, so a crash leaves an older checkpoint whose every tile is there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;

use crate::service::{Ledger, ServiceError};
use attestor_net::ops::{Asked, Page};
use attestor_verify::fs::write_atomically;
use attestor_verify::log::checkpoint::Checkpoint;
use attestor_verify::log::tiles::{TileKind, TilePath};

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

/// Time between two looks at the public checkpoint by the mirror.
const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `dir` a static copy of the public log until the ledger is dropped: after each
/// new public checkpoint, the tiles it fixes (entry bundles of publishing tenants only),
/// then the checkpoint. It starts from the checkpoint the directory holds.
pub async fn mirror(ledger: Weak<Ledger>, dir: PathBuf) {
    let mut mirrored = None;
    loop {
        tokio::time::sleep(MIRROR_INTERVAL).await;
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        if let Err(e) = mirror_once(&ledger, &dir, &mut mirrored).await {
            attestor_net::limited_event!(tracing::Level::WARN, "mirror-failed", dir = %dir.display(), error = %e);
        }
    }
}

async fn mirror_once(
    ledger: &Arc<Ledger>,
    dir: &Path,
    mirrored: &mut Option<u64>,
) -> Result<(), String> {
    let note = match ledger.public_checkpoint().await {
        Ok(note) => note,
        Err(ServiceError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let keys = ledger.key_history();
    let size = keys.open_checkpoint(&note).map_err(|e| e.to_string())?.size;
    let from = match *mirrored {
        Some(from) => from,
        None => match std::fs::read_to_string(dir.join("checkpoint")) {
            Ok(held) => keys
                .open_checkpoint(&held)
                .map_or(0, |c: Checkpoint| c.size),
            Err(_) => 0,
        },
    };
    if mirrored.is_some() && from == size {
        return Ok(());
    }
    // One file at a time: a first mirror of a large log never holds it in memory.
    for kind in [TileKind::Hashes { level: 0 }, TileKind::Entries] {
        for tile in TilePath::grown(from, size, kind) {
            match ledger.tile(tile).await {
                Ok(bytes) => write_file(dir.join(tile.to_path()), bytes).await?,
                Err(ServiceError::NotPublished(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    write_file(dir.join("checkpoint"), note.into_bytes()).await?;
    *mirrored = Some(size);
    Ok(())
}

async fn write_file(path: PathBuf, bytes: Vec<u8>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        write_atomically(&path, &bytes).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
