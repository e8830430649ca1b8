//! C2SP tlog-witness and tlog-cosignature v1: the `add-checkpoint` request a log sends a
//! witness, the checks a witness makes before cosigning, its Ed25519 cosignature, and a
//! client's count of the cosignatures it trusts.
//!
//! A witness cosigns a checkpoint only if its log key signed it and a consistency proof
//! shows it extends the latest checkpoint the witness cosigned for that origin, so two
//! parties shown different histories (a split view) cannot both collect its cosignature.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use thiserror::Error;

use super::checkpoint::{
    cosignature_key_id, cosigned_message, open_note, parse_canonical_u64, valid_key_name,
    Checkpoint, CheckpointError, NoteVerifier, SIGNATURE_TYPE_COSIGNATURE, SIG_PREFIX,
};
use super::merkle::{verify_consistency, Hash};

/// Most consistency proof lines a request may carry (the spec's limit).
pub const MAX_PROOF_LINES: usize = 63;
/// Content type of a 409 answer's body: the size the witness last cosigned.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// Largest request body a witness reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why a witness does not cosign; each maps to the status the spec requires.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WitnessRefusal {
    /// The request body is not an add-checkpoint request.
    #[error("malformed add-checkpoint request: {0}")]
    Malformed(&'static str),
    /// The old size is larger than the checkpoint's.
    #[error("old size {old} is larger than the checkpoint's size {size}")]
    OldBeyondNew {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The witness does not follow this origin.
    #[error("this witness does not follow log {0:?}")]
    UnknownLog(String),
    /// No signature by a key the witness trusts for the origin verifies.
    #[error("the checkpoint carries no valid signature by the log's key: {0}")]
    Unsigned(CheckpointError),
    /// The old size is not the size the witness last cosigned (sent in the answer).
    #[error("the witness last cosigned size {latest}, not the old size given")]
    Conflict {
        /// The size the witness last cosigned (0 if never).
        latest: u64,
    },
    /// A checkpoint of the size the witness last cosigned with another root: a fork.
    #[error(
        "the log shows size {size} with a root other than the one this witness cosigned: a fork"
    )]
    Fork {
        /// The size both checkpoints claim.
        size: u64,
    },
    /// The consistency proof does not show the checkpoint extends the witnessed one.
    #[error("the consistency proof from size {old} to {size} does not verify")]
    Inconsistent {
        /// The witnessed size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
}

impl WitnessRefusal {
    /// The HTTP status tlog-witness assigns to this refusal.
    pub fn status(&self) -> u16 {
        match self {
            WitnessRefusal::Malformed(_) | WitnessRefusal::OldBeyondNew { .. } => 400,
            WitnessRefusal::Unsigned(_) => 403,
            WitnessRefusal::UnknownLog(_) => 404,
            WitnessRefusal::Conflict { .. } | WitnessRefusal::Fork { .. } => 409,
            WitnessRefusal::Inconsistent { .. } => 422,
        }
    }
}

/// An `add-checkpoint` request: the size the log believes the witness last cosigned, a
/// consistency proof from it, and the signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint<'a> {
    /// The size of the witness's latest cosigned checkpoint, as the log believes.
    pub old_size: u64,
    /// RFC 6962 consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub note: &'a str,
}

impl<'a> AddCheckpoint<'a> {
    /// The request body.
    pub fn encode(old_size: u64, proof: &[Hash], note: &str) -> String {
        let mut body = format!("old {old_size}\n");
        for hash in proof {
            body.push_str(&STANDARD.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(note);
        body
    }

    /// Parses a request body strictly (the note itself is checked by [`check_addition`]).
    pub fn parse(body: &'a str) -> Result<Self, WitnessRefusal> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(WitnessRefusal::Malformed("request too large"));
        }
        let (head, note) = body.split_once("\n\n").ok_or(WitnessRefusal::Malformed(
            "no blank line before the checkpoint",
        ))?;
        let mut lines = head.split('\n');
        let old_size = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_canonical_u64)
            .ok_or(WitnessRefusal::Malformed("first line is not `old <size>`"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(WitnessRefusal::Malformed("more than 63 proof lines"));
            }
            let hash = STANDARD
                .decode(line)
                .ok()
                .and_then(|b| Hash::try_from(b).ok())
                .ok_or(WitnessRefusal::Malformed(
                    "a proof line is not a base64 hash",
                ))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note,
        })
    }

    /// The origin line the note claims, before anything is verified (to find its keys).
    pub fn claimed_origin(&self) -> Result<&'a str, WitnessRefusal> {
        self.note
            .split_once('\n')
            .map(|(origin, _)| origin)
            .filter(|origin| !origin.is_empty())
            .ok_or(WitnessRefusal::Malformed(
                "the checkpoint has no origin line",
            ))
    }
}

/// The witness's checks, in the spec's order, of `request` for a log it follows with
/// `log_keys`, given the checkpoint it last cosigned for that origin. Returns the
/// checkpoint to persist (atomically with the check) and cosign.
pub fn check_addition(
    request: &AddCheckpoint<'_>,
    log_keys: &[NoteVerifier],
    latest: Option<&Checkpoint>,
) -> Result<Checkpoint, WitnessRefusal> {
    let mut last_error = CheckpointError::NoSignatures;
    let mut opened = None;
    for key in log_keys {
        match open_note(request.note, key).and_then(Checkpoint::from_body) {
            Ok(checkpoint) => {
                opened = Some(checkpoint);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let checkpoint = opened.ok_or(WitnessRefusal::Unsigned(last_error))?;
    let (old, size) = (request.old_size, checkpoint.size);
    if old > size {
        return Err(WitnessRefusal::OldBeyondNew { old, size });
    }
    let latest_size = latest.map_or(0, |c| c.size);
    if old != latest_size {
        return Err(WitnessRefusal::Conflict {
            latest: latest_size,
        });
    }
    let Some(latest) = latest.filter(|_| old > 0) else {
        return if request.proof.is_empty() {
            Ok(checkpoint)
        } else {
            Err(WitnessRefusal::Malformed("a proof from size 0"))
        };
    };
    if old == size {
        return if latest.root == checkpoint.root && request.proof.is_empty() {
            Ok(checkpoint)
        } else {
            Err(WitnessRefusal::Fork { size })
        };
    }
    verify_consistency(old, size, &latest.root, &checkpoint.root, &request.proof)
        .map_err(|_| WitnessRefusal::Inconsistent { old, size })?;
    Ok(checkpoint)
}

/// A witness's Ed25519 cosigning key (C2SP tlog-cosignature, type 0x04).
#[derive(Debug)]
pub struct Cosigner {
    name: String,
    key: Ed25519KeyPair,
    key_id: u32,
}

impl Cosigner {
    /// A new key named `name` (a schema-less URL identifying the witness).
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CheckpointError::SigningKey("generation failed"))?;
        Self::from_pkcs8(name, pkcs8.as_ref())
    }

    /// Loads an Ed25519 PKCS#8 key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, CheckpointError> {
        if !valid_key_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| CheckpointError::SigningKey("not an Ed25519 PKCS#8 key"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: cosignature_key_id(name, key.public_key().as_ref()),
            key,
        })
    }

    /// The private key as PKCS#8 v1, for the witness's key file.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, CheckpointError> {
        Ok(self
            .key
            .to_pkcs8v1()
            .map_err(|_| CheckpointError::SigningKey("PKCS#8 export failed"))?
            .as_ref()
            .to_vec())
    }

    /// The verifier key `<name>+<hex key ID>+<base64(0x04 || key)>` logs and clients pin.
    pub fn verifier_key(&self) -> String {
        let blob = [
            &[SIGNATURE_TYPE_COSIGNATURE],
            self.key.public_key().as_ref(),
        ]
        .concat();
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(blob)
        )
    }

    /// The cosignature line (`— <name> base64(key ID || timestamp || signature)\n`) over
    /// a checkpoint's note text, made at `timestamp` (POSIX seconds).
    pub fn cosign(&self, text: &str, timestamp: u64) -> String {
        let signature = self.key.sign(cosigned_message(timestamp, text).as_bytes());
        let blob = [
            self.key_id.to_be_bytes().as_slice(),
            &timestamp.to_be_bytes(),
            signature.as_ref(),
        ]
        .concat();
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// The witnesses among `witnesses` whose valid cosignature `note` carries.
pub fn cosigned_by<'w>(note: &str, witnesses: &'w [NoteVerifier]) -> Vec<&'w NoteVerifier> {
    witnesses
        .iter()
        .filter(|w| w.is_cosigner() && open_note(note, w).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::checkpoint::CheckpointSigner;
    use crate::log::merkle::{leaf_hash, MerkleTree};

    struct Log {
        tree: MerkleTree,
        signer: CheckpointSigner,
    }

    impl Log {
        fn new(entries: std::ops::Range<u32>, salt: &str) -> Log {
            let signer = CheckpointSigner::generate("log.test/a").unwrap();
            Log::with_signer(entries, salt, signer)
        }
        fn with_signer(entries: std::ops::Range<u32>, salt: &str, signer: CheckpointSigner) -> Log {
            let tree = MerkleTree::from_leaf_hashes(
                entries.map(|i| leaf_hash(format!("{salt}{i}").as_bytes())),
            );
            Log { tree, signer }
        }
        fn note(&self, size: u64) -> String {
            let checkpoint = Checkpoint::new("log.test/a", size, self.tree.root_at(size).unwrap());
            self.signer.sign(&checkpoint).unwrap()
        }
        fn request(&self, old: u64, size: u64) -> String {
            let proof = if old == 0 {
                Vec::new()
            } else {
                self.tree.consistency_proof(old, size).unwrap()
            };
            AddCheckpoint::encode(old, &proof, &self.note(size))
        }
        fn keys(&self) -> Vec<NoteVerifier> {
            vec![NoteVerifier::from_vkey(&self.signer.verifier_key()).unwrap()]
        }
    }

    fn add(
        body: &str,
        keys: &[NoteVerifier],
        latest: Option<&Checkpoint>,
    ) -> Result<Checkpoint, WitnessRefusal> {
        check_addition(&AddCheckpoint::parse(body)?, keys, latest)
    }

    #[test]
    fn a_witness_follows_a_growing_log_and_refuses_a_fork() {
        let log = Log::new(0..40, "");
        let first = add(&log.request(0, 10), &log.keys(), None).unwrap();
        assert_eq!(first.size, 10);
        let second = add(&log.request(10, 40), &log.keys(), Some(&first)).unwrap();
        assert_eq!(second.size, 40);
        assert_eq!(
            add(&log.request(40, 40), &log.keys(), Some(&second)),
            Ok(second.clone())
        );
        // A stale old size gets the size the witness holds.
        assert_eq!(
            add(&log.request(10, 40), &log.keys(), Some(&second)),
            Err(WitnessRefusal::Conflict { latest: 40 })
        );
        // Same key, other entries: the fork cannot prove consistency with what was seen.
        let signer =
            CheckpointSigner::from_pkcs8("log.test/a", &log.signer.to_pkcs8().unwrap()).unwrap();
        let fork = Log::with_signer(0..50, "forked", signer);
        let refused = add(&fork.request(40, 50), &log.keys(), Some(&second));
        assert_eq!(
            refused,
            Err(WitnessRefusal::Inconsistent { old: 40, size: 50 })
        );
        assert_eq!(refused.unwrap_err().status(), 422);
        let same_size = add(&fork.request(40, 40), &log.keys(), Some(&second));
        assert_eq!(same_size, Err(WitnessRefusal::Fork { size: 40 }));
    }

    #[test]
    fn a_witness_refuses_what_its_log_key_did_not_sign_and_bad_requests() {
        let log = Log::new(0..10, "");
        let stranger = Log::new(0..10, "");
        let unsigned = add(&stranger.request(0, 10), &log.keys(), None);
        assert!(
            matches!(unsigned, Err(WitnessRefusal::Unsigned(_))),
            "{unsigned:?}"
        );
        let body = log.request(0, 5).replacen("old 0", "old 6", 1);
        assert_eq!(
            add(&body, &log.keys(), None),
            Err(WitnessRefusal::OldBeyondNew { old: 6, size: 5 })
        );
        for bad in [
            "",
            "old 0\n",
            "old 01\n\nx",
            "new 0\n\nx",
            "old 0\nnot base64!\n\nx",
        ] {
            assert!(
                matches!(AddCheckpoint::parse(bad), Err(WitnessRefusal::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!(
            "old 1\n{}\n{}",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(64),
            log.note(5)
        );
        assert!(matches!(
            AddCheckpoint::parse(&long),
            Err(WitnessRefusal::Malformed(_))
        ));
    }

    #[test]
    fn cosignatures_verify_only_under_their_witness_key_and_never_as_a_log_signature() {
        let log = Log::new(0..10, "");
        let note = log.note(10);
        let text = note.split_once("\n\n").unwrap().0.to_string() + "\n";
        let w1 = Cosigner::generate("witness.test/w1").unwrap();
        let w2 = Cosigner::generate("witness.test/w2").unwrap();
        let cosigned = format!("{note}{}", w1.cosign(&text, 1_700_000_000));
        let verifiers: Vec<NoteVerifier> = [&w1, &w2]
            .iter()
            .map(|w| NoteVerifier::cosigner(&w.verifier_key()).unwrap())
            .collect();
        let by = cosigned_by(&cosigned, &verifiers);
        assert_eq!(by.len(), 1);
        assert_eq!(by[0].name(), "witness.test/w1");
        // The log key still opens the cosigned note; a witness key is not a log key.
        assert!(open_note(&cosigned, &log.keys()[0]).is_ok());
        assert!(NoteVerifier::from_vkey(&w1.verifier_key()).is_err());
        assert!(NoteVerifier::cosigner(&log.signer.verifier_key()).is_err());
        // A cosignature over another time or another checkpoint does not verify.
        let moved = w1.cosign(&text, 1_700_000_001);
        let replayed = format!("{}{}", log.note(9), moved);
        assert!(cosigned_by(&replayed, &verifiers).is_empty());
    }
}
