//! `attestor witness`: a transparency log witness (C2SP tlog-witness, tlog-cosignature).
//!
//! It follows the logs its config lists, each by origin and verifier key(s), and keeps
//! the latest checkpoint it cosigned for each durably (one file per origin, written
//! atomically before it answers). It cosigns a checkpoint only if the log's key signed
//! it and a consistency proof shows it extends that latest one; the check and the write
//! are one step under a lock, so two requests cannot roll the witnessed size back.
//! Plain HTTP: everything it takes and gives is signed; put TLS in front if wanted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;

use attestor_verify::fs::write_atomically;
use attestor_verify::log::checkpoint::{open_note, Checkpoint, NoteVerifier};
use attestor_verify::log::witness::{
    check_addition, AddCheckpoint, Cosigner, WitnessRefusal, MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE,
};

/// Concurrent connections served.
const MAX_CONNECTIONS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessToml {
    listen: SocketAddr,
    state_dir: PathBuf,
    /// The witness's key name, a schema-less URL (e.g. `witness.example/w1`).
    name: String,
    logs: Vec<LogToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogToml {
    origin: String,
    vkeys: Vec<String>,
}

struct Witness {
    cosigner: Cosigner,
    logs: BTreeMap<String, Vec<NoteVerifier>>,
    state_dir: PathBuf,
    /// Held from reading the latest checkpoint to persisting the new one.
    latest: tokio::sync::Mutex<()>,
}

/// Runs the witness of `config` until SIGTERM or SIGINT.
pub(crate) async fn run(config: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let raw: WitnessToml =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let state_dir = base.join(&raw.state_dir);
    std::fs::create_dir_all(state_dir.join("logs"))
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let mut logs = BTreeMap::new();
    for log in raw.logs {
        let keys = log
            .vkeys
            .iter()
            .map(|k| NoteVerifier::from_vkey(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("log {:?}: {e}", log.origin))?;
        if keys.is_empty() {
            return Err(format!("log {:?} lists no vkeys", log.origin));
        }
        logs.insert(log.origin, keys);
    }
    let cosigner = load_or_create_key(&state_dir, &raw.name)?;
    write_atomically(
        &state_dir.join("witness.vkey"),
        format!("{}\n", cosigner.verifier_key()).as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(raw.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", raw.listen))?;
    tracing::info!(
        event = "witness-started",
        listen = %raw.listen,
        verifier_key = %cosigner.verifier_key(),
        logs = logs.len(),
    );
    let witness = Arc::new(Witness {
        cosigner,
        logs,
        state_dir,
        latest: tokio::sync::Mutex::new(()),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let shutdown = attestor_net::shutdown::termination();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            permit = slots.clone().acquire_owned() => permit.map_err(|e| e.to_string())?,
        };
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let witness = witness.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let witness = witness.clone();
                async move { Ok::<_, std::convert::Infallible>(witness.answer(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn load_or_create_key(dir: &Path, name: &str) -> Result<Cosigner, String> {
    let path = dir.join("witness.key");
    match std::fs::read(&path) {
        Ok(pkcs8) => {
            Cosigner::from_pkcs8(name, &pkcs8).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cosigner = Cosigner::generate(name).map_err(|e| e.to_string())?;
            let pkcs8 = cosigner.to_pkcs8().map_err(|e| e.to_string())?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            std::io::Write::write_all(&mut file, &pkcs8)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(cosigner)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Witness {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() != "/add-checkpoint" {
            return reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into());
        }
        if request.method() != Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "POST only\n".into());
        }
        let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    TEXT,
                    "request too large\n".into(),
                )
            }
        };
        let Ok(body) = std::str::from_utf8(&body) else {
            return reply(
                StatusCode::BAD_REQUEST,
                TEXT,
                "request is not UTF-8\n".into(),
            );
        };
        match self.add_checkpoint(body).await {
            Ok(line) => reply(StatusCode::OK, TEXT, line),
            Err(Refused::Protocol(refusal)) => {
                tracing::warn!(event = "witness-refused", reason = %refusal);
                let status =
                    StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
                match refusal {
                    WitnessRefusal::Conflict { latest } => {
                        reply(status, SIZE_CONTENT_TYPE, format!("{latest}\n"))
                    }
                    other => reply(status, TEXT, format!("{other}\n")),
                }
            }
            Err(Refused::Internal(what)) => {
                tracing::error!(event = "witness-failed", error = what);
                reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{what}\n"))
            }
        }
    }

    /// Where the latest checkpoint cosigned for `origin` is kept.
    fn record_file(&self, origin: &str) -> PathBuf {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, origin.as_bytes());
        self.state_dir.join("logs").join(format!(
            "{}.checkpoint",
            hex::encode(&digest.as_ref()[..16])
        ))
    }

    /// Checks, persists and cosigns one request; returns the cosignature line.
    async fn add_checkpoint(&self, body: &str) -> Result<String, Refused> {
        let request = AddCheckpoint::parse(body)?;
        let origin = request.claimed_origin()?;
        let keys = self
            .logs
            .get(origin)
            .ok_or_else(|| WitnessRefusal::UnknownLog(origin.chars().take(200).collect()))?;
        let file = self.record_file(origin);
        let _held = self.latest.lock().await;
        let latest = match std::fs::read_to_string(&file) {
            Ok(note) => Some(opened(&note, keys).ok_or(Refused::Internal(
                "the witness's own record of this log no longer verifies under its keys",
            ))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return Err(Refused::Internal("the witness cannot read its record")),
        };
        let checkpoint = check_addition(&request, keys, latest.as_ref())?;
        if latest.as_ref().is_none_or(|l| l.size != checkpoint.size) {
            write_atomically(&file, request.note.as_bytes())
                .map_err(|_| Refused::Internal("the witness cannot persist its record"))?;
        }
        let text_end = request.note.rfind("\n\n").map_or(0, |i| i + 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        tracing::info!(event = "cosigned", origin = %checkpoint.origin, size = checkpoint.size);
        Ok(self.cosigner.cosign(&request.note[..text_end], now))
    }
}

/// Why no cosignature: the request (the spec's statuses), or the witness itself.
enum Refused {
    Protocol(WitnessRefusal),
    Internal(&'static str),
}

impl From<WitnessRefusal> for Refused {
    fn from(refusal: WitnessRefusal) -> Self {
        Refused::Protocol(refusal)
    }
}

fn opened(note: &str, keys: &[NoteVerifier]) -> Option<Checkpoint> {
    keys.iter()
        .find_map(|k| open_note(note, k).ok())
        .and_then(|text| Checkpoint::from_body(text).ok())
}
