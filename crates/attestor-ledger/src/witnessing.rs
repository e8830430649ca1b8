//! Witnessing: the lease holder sends each new checkpoint, with a consistency proof from
//! the one the witness last cosigned, to every configured witness (C2SP tlog-witness),
//! checks the cosignature it answers with under the witness's pinned key, and stores it.
//! The public `/checkpoint` is then the newest checkpoint a quorum cosigned.
//!
//! Each witness has its own task, so a slow or dead one delays only its own cosignatures,
//! never the log's writes or another witness. Between rounds the newest checkpoint is
//! taken, so a witness sees at most one request per round, whatever the append rate.
//! A witness that has cosigned a tree the log does not extend (a 409 naming a larger size
//! than the log's, or a fork at the same size) is a security event: it means someone
//! showed it another history under this log's key.

use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::Method;
use thiserror::Error;

use crate::config::WitnessConfig;
use crate::service::Ledger;
use attestor_net::http::{HttpClient, HttpError};
use attestor_verify::log::checkpoint::{open_note, parse_canonical_u64, Checkpoint};
use attestor_verify::log::witness::AddCheckpoint;

/// Time between rounds of one witness (and after a failure).
pub const ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// The bound on one request to a witness.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a witness (a few cosignature lines).
const MAX_ANSWER: usize = 16 * 1024;

/// Why a witness gave no usable cosignature for a checkpoint.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WitnessError {
    #[error("cannot reach the witness: {0}")]
    Unreachable(#[from] HttpError),
    #[error("the witness refused the checkpoint with status {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the witness answered garbage: {0}")]
    Garbage(&'static str),
    #[error(
        "the witness has cosigned size {theirs} of this log, beyond the log's {ours}: \
         it was shown another history under this log's key"
    )]
    AheadOfLog { theirs: u64, ours: u64 },
    #[error("the witness holds a different tree of size {size}: a fork of this log")]
    Fork { size: u64 },
    #[error("the ledger cannot prepare the request: {0}")]
    Ledger(String),
}

impl WitnessError {
    /// The `reason` label of `attestor_ledger_witness_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            WitnessError::Unreachable(_) => "unreachable",
            WitnessError::Refused { .. } => "refused",
            WitnessError::Garbage(_) => "garbage",
            WitnessError::AheadOfLog { .. } | WitnessError::Fork { .. } => "conflict",
            WitnessError::Ledger(_) => "ledger",
        }
    }

    fn is_security_event(&self) -> bool {
        self.reason() == "conflict"
    }
}

/// Starts one task per configured witness; each ends when the ledger is dropped.
pub fn start(ledger: &Arc<Ledger>, witnesses: &[WitnessConfig]) {
    for witness in witnesses {
        tokio::spawn(follow(Arc::downgrade(ledger), witness.clone()));
    }
}

async fn follow(ledger: Weak<Ledger>, witness: WitnessConfig) {
    let name = witness.verifier.name().to_string();
    let client = match HttpClient::new(&witness.url, None) {
        Ok(client) => client
            .with_timeout(REQUEST_TIMEOUT)
            .with_max_answer(MAX_ANSWER),
        Err(e) => {
            tracing::error!(event = "witness-unusable", witness = %name, error = %e);
            return;
        }
    };
    let path = format!("{}/add-checkpoint", path_of(&witness.url));
    // What the witness last cosigned, as far as we know; a 409 tells us otherwise.
    let mut witnessed: Option<Checkpoint> = None;
    loop {
        tokio::time::sleep(ROUND_INTERVAL).await;
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        if !ledger.is_sequencer() {
            continue;
        }
        match round(&ledger, &client, &path, &witness, &mut witnessed).await {
            Ok(()) => {}
            Err(e) => {
                ledger.metrics().witness_failed(&name, e.reason());
                if e.is_security_event() {
                    tracing::error!(event = "witness-conflict", witness = %name, error = %e);
                } else {
                    attestor_net::limited_event!(tracing::Level::WARN, "witness-failed", witness = %name, error = %e);
                }
            }
        }
    }
}

/// Brings one witness up to the newest checkpoint, if it is behind.
async fn round(
    ledger: &Arc<Ledger>,
    client: &HttpClient,
    path: &str,
    witness: &WitnessConfig,
    witnessed: &mut Option<Checkpoint>,
) -> Result<(), WitnessError> {
    let name = witness.verifier.name();
    let Some((note, latest)) = ledger
        .signed_checkpoint(None)
        .await
        .map_err(|e| WitnessError::Ledger(e.to_string()))?
    else {
        return Ok(());
    };
    let lag = |cosigned: &Option<Checkpoint>| {
        let since = cosigned
            .as_ref()
            .map_or(latest.size, |c| latest.size - c.size.min(latest.size));
        let seconds = match (
            cosigned.as_ref().and_then(|c| c.timestamp().ok().flatten()),
            latest.timestamp().ok().flatten(),
        ) {
            (Some(then), Some(now)) if since > 0 => now.saturating_sub(then) as f64,
            _ => 0.0,
        };
        ledger.metrics().witness_lag(name, since, seconds);
    };
    // Before the attempt, so the lag keeps growing while the witness is unreachable.
    lag(witnessed);
    if witnessed.as_ref().is_some_and(|w| w.size == latest.size) {
        return Ok(());
    }
    // At most two tries: the second after the witness told us the size it holds.
    for _ in 0..2 {
        let old = witnessed.as_ref().map_or(0, |w| w.size);
        if old > latest.size {
            return Err(WitnessError::AheadOfLog {
                theirs: old,
                ours: latest.size,
            });
        }
        let proof = ledger
            .consistency_proof(old, latest.size)
            .await
            .map_err(|e| WitnessError::Ledger(e.to_string()))?;
        let body = AddCheckpoint::encode(old, &proof, &note);
        let answer = client
            .request(Method::POST, path, Some(body.into_bytes()))
            .await?;
        let text = std::str::from_utf8(&answer.body)
            .map_err(|_| WitnessError::Garbage("the answer is not UTF-8"))?;
        match answer.status.as_u16() {
            200 => {
                let line = cosignature_line(&note, text, witness)?;
                ledger
                    .keep_cosignature(latest.size, name, &line)
                    .await
                    .map_err(|e| WitnessError::Ledger(e.to_string()))?;
                *witnessed = Some(latest.clone());
                lag(witnessed);
                return Ok(());
            }
            409 => {
                let theirs = conflict_size(text)?;
                if theirs == old {
                    // Same size, another root: not ours.
                    return Err(WitnessError::Fork { size: theirs });
                }
                *witnessed = ledger
                    .signed_checkpoint(Some(theirs))
                    .await
                    .map_err(|e| WitnessError::Ledger(e.to_string()))?
                    .map(|(_, checkpoint)| checkpoint);
                if witnessed.is_none() {
                    if theirs > latest.size {
                        return Err(WitnessError::AheadOfLog {
                            theirs,
                            ours: latest.size,
                        });
                    }
                    // A size the log holds but never signed: not this log's history.
                    return Err(WitnessError::Fork { size: theirs });
                }
            }
            // The proof from what the witness cosigned does not verify: not our history.
            422 => return Err(WitnessError::Fork { size: old }),
            status => {
                return Err(WitnessError::Refused {
                    status,
                    body: text.chars().take(200).collect(),
                })
            }
        }
    }
    Err(WitnessError::Garbage("the witness answered 409 twice"))
}

/// The witness's cosignature line in a 200 answer, verified under its pinned key.
fn cosignature_line(
    note: &str,
    answer: &str,
    witness: &WitnessConfig,
) -> Result<String, WitnessError> {
    if answer.is_empty() || !answer.ends_with('\n') {
        return Err(WitnessError::Garbage(
            "the answer is not newline-terminated signature lines",
        ));
    }
    let prefix = format!("\u{2014} {} ", witness.verifier.name());
    answer
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .map(|line| format!("{line}\n"))
        .find(|line| open_note(&format!("{note}{line}"), &witness.verifier).is_ok())
        .ok_or(WitnessError::Garbage(
            "no valid cosignature by the witness's key",
        ))
}

/// The size a 409 answer (`text/x.tlog.size`) says the witness last cosigned.
fn conflict_size(text: &str) -> Result<u64, WitnessError> {
    text.strip_suffix('\n')
        .and_then(parse_canonical_u64)
        .ok_or(WitnessError::Garbage(
            "a 409 answer without a decimal size line",
        ))
}

/// The path part of a witness URL (its submission prefix), without a trailing slash.
fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("", |i| &after_scheme[i..])
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestor_verify::log::checkpoint::{CheckpointSigner, NoteVerifier};
    use attestor_verify::log::witness::Cosigner;

    #[test]
    fn only_a_valid_cosignature_by_the_pinned_witness_is_kept() {
        let log = CheckpointSigner::generate("ledger.test/attestor").unwrap();
        let note = log
            .sign(&Checkpoint::new("ledger.test/attestor", 3, [7; 32]))
            .unwrap();
        let text = &note[..note.rfind("\n\n").unwrap() + 1];
        let pinned = Cosigner::generate("witness.test/w1").unwrap();
        let impostor = Cosigner::from_pkcs8(
            "witness.test/w1",
            &Cosigner::generate("x").unwrap().to_pkcs8().unwrap(),
        )
        .unwrap();
        let witness = WitnessConfig {
            url: "http://127.0.0.1:1".into(),
            verifier: NoteVerifier::cosigner(&pinned.verifier_key()).unwrap(),
        };
        let good = pinned.cosign(text, 1_700_000_000);
        let answer = format!("{}{good}", impostor.cosign(text, 1_700_000_000));
        assert_eq!(cosignature_line(&note, &answer, &witness).unwrap(), good);
        for garbage in [
            "".to_string(),
            "OK".to_string(),
            impostor.cosign(text, 1),
            good.trim_end().to_string(),
            pinned.cosign("other\n3\nAAAA\n", 1),
        ] {
            let refused = cosignature_line(&note, &garbage, &witness);
            assert!(
                matches!(refused, Err(WitnessError::Garbage(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_conflict_names_a_canonical_size_or_is_garbage() {
        assert_eq!(conflict_size("42\n").unwrap(), 42);
        for garbage in [
            "",
            "42",
            "042\n",
            "-1\n",
            "4 2\n",
            "99999999999999999999999\n",
        ] {
            assert!(conflict_size(garbage).is_err(), "{garbage:?}");
        }
        assert_eq!(path_of("http://w.test:80/a/b/"), "/a/b");
        assert_eq!(path_of("http://w.test"), "");
    }
}
