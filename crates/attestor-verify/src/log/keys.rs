//! Checkpoint key rotation: the history of the log's signing keys.
//!
//! A rotation is recorded as a *transition*, a signed note whose text is
//!
//! ```text
//! attestor/checkpoint-key-transition/v1
//! <origin>
//! <tree size at the switch>
//! <old verifier key>
//! <new verifier key>
//! ```
//!
//! signed by both keys: the old key's signature lets an auditor who pinned the old key
//! accept the new one, the new key's signature lets one who pinned the new key accept the
//! old one (to check older checkpoints). Each key signs only its own period: the old key
//! checkpoints up to the switch size, the new key from it on, so a retired key cannot
//! vouch for the log's future.

use thiserror::Error;

use super::checkpoint::{
    open_checkpoint, open_note, Checkpoint, CheckpointError, CheckpointSigner, NoteVerifier,
};

/// First line of a transition note.
pub const TRANSITION_HEADER: &str = "attestor/checkpoint-key-transition/v1";
/// Most transitions a history may hold (one rotation a day for decades).
pub const MAX_TRANSITIONS: usize = 16_384;

/// Why a key history or a checkpoint checked against it does not hold up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A note, verifier key or checkpoint does not check out.
    #[error("checkpoint key: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A transition note is not a v1 transition signed by both of its keys.
    #[error("key transition {index} is malformed: {reason}")]
    Malformed {
        /// The transition's position in the history, oldest first (0-based).
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A transition does not start from the key the previous one introduced: the chain
    /// has a hole or a fork.
    #[error("key transition {index} does not start from the key the previous one introduced")]
    Broken {
        /// The transition's position in the history (0-based).
        index: usize,
    },
    /// A transition's switch size is below the one before it.
    #[error("key transition {index} moves the switch size backwards")]
    SizeOrder {
        /// The transition's position in the history (0-based).
        index: usize,
    },
    /// More than [`MAX_TRANSITIONS`] transitions.
    #[error("more than {MAX_TRANSITIONS} key transitions")]
    TooMany,
    /// The pinned verifier key is none of the history's keys.
    #[error("the trusted key {0} is not in the log's key history")]
    NotInHistory(String),
    /// No key of the history signed the checkpoint.
    #[error("the checkpoint is signed by no key of the log's key history")]
    UnknownKey,
    /// A key signed a checkpoint outside its period: a retired key vouching for the log's
    /// future, or a new key for its past.
    #[error(
        "key {key_id:08x} signed a checkpoint of size {size}, outside its period {from}..={until}"
    )]
    OutOfPeriod {
        /// The signer's note key ID.
        key_id: u32,
        /// The checkpoint's tree size.
        size: u64,
        /// The first tree size the key may sign.
        from: u64,
        /// The last tree size the key may sign.
        until: u64,
    },
}

/// One verified transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTransition {
    /// The log's origin, as its checkpoints carry it.
    pub origin: String,
    /// Tree size at the switch: the old key signs up to it, the new key from it.
    pub size: u64,
    /// The retiring verifier key (C2SP `<name>+<key ID>+<base64>`).
    pub old_key: String,
    /// The verifier key taking over, in the same form.
    pub new_key: String,
}

impl KeyTransition {
    fn text(&self) -> String {
        format!(
            "{TRANSITION_HEADER}\n{}\n{}\n{}\n{}\n",
            self.origin, self.size, self.old_key, self.new_key
        )
    }

    /// The transition note from `old` to `new` at tree size `size`, signed by both.
    pub fn sign(
        origin: &str,
        size: u64,
        old: &CheckpointSigner,
        new: &CheckpointSigner,
    ) -> Result<String, KeyError> {
        let text = KeyTransition {
            origin: origin.to_string(),
            size,
            old_key: old.verifier_key(),
            new_key: new.verifier_key(),
        }
        .text();
        Ok(format!(
            "{text}\n{}{}",
            old.signature_line(&text)?,
            new.signature_line(&text)?
        ))
    }

    /// Parses a transition note and checks both keys' signatures on it.
    pub fn open(note: &str, index: usize) -> Result<KeyTransition, KeyError> {
        let malformed = |reason| KeyError::Malformed { index, reason };
        let text = note
            .split_once("\n\n")
            .map(|(text, _)| text)
            .ok_or(malformed("no blank line before the signatures"))?;
        let lines: Vec<&str> = text.split('\n').collect();
        let [TRANSITION_HEADER, origin, size, old_key, new_key] = lines.as_slice() else {
            return Err(malformed("not the five lines of a v1 transition"));
        };
        let size: u64 = size
            .parse()
            .ok()
            .filter(|s: &u64| s.to_string() == *size)
            .ok_or(malformed("size is not canonical decimal"))?;
        let transition = KeyTransition {
            origin: (*origin).to_string(),
            size,
            old_key: (*old_key).to_string(),
            new_key: (*new_key).to_string(),
        };
        if transition.old_key == transition.new_key {
            return Err(malformed("the old and new keys are the same"));
        }
        for key in [&transition.old_key, &transition.new_key] {
            let signed = open_note(note, &NoteVerifier::from_vkey(key)?)?;
            if signed != transition.text() {
                return Err(malformed("the signed text is not the transition"));
            }
        }
        Ok(transition)
    }
}

#[derive(Debug, Clone)]
struct KeyPeriod {
    vkey: String,
    verifier: NoteVerifier,
    from: u64,
    until: u64,
}

/// The log's signing keys, oldest first, each with the tree sizes it may sign.
#[derive(Debug, Clone)]
pub struct KeyHistory {
    periods: Vec<KeyPeriod>,
    transitions: Vec<String>,
}

impl KeyHistory {
    /// A history of one key, valid for every size (no rotation yet).
    pub fn single(vkey: &str) -> Result<Self, KeyError> {
        Ok(KeyHistory {
            periods: vec![KeyPeriod {
                vkey: vkey.to_string(),
                verifier: NoteVerifier::from_vkey(vkey)?,
                from: 0,
                until: u64::MAX,
            }],
            transitions: Vec::new(),
        })
    }

    /// Verifies the chain of transitions (each signed by its old and new key, each
    /// starting from the key the previous one introduced) and that `pinned` is one of its
    /// keys: an auditor holding any one key of the log comes to trust all of them.
    pub fn follow(pinned: &str, transitions: &[String]) -> Result<Self, KeyError> {
        if transitions.len() > MAX_TRANSITIONS {
            return Err(KeyError::TooMany);
        }
        let Some(first) = transitions.first() else {
            return Self::single(pinned);
        };
        let first = KeyTransition::open(first, 0)?;
        let mut history = Self::single(&first.old_key)?;
        for (index, note) in transitions.iter().enumerate() {
            history.push(note, index)?;
        }
        if !history.periods.iter().any(|p| p.vkey == pinned) {
            return Err(KeyError::NotInHistory(pinned.to_string()));
        }
        Ok(history)
    }

    fn push(&mut self, note: &str, index: usize) -> Result<KeyTransition, KeyError> {
        let t = KeyTransition::open(note, index)?;
        let Some(last) = self.periods.last_mut() else {
            return Err(KeyError::Broken { index });
        };
        if t.old_key != last.vkey {
            return Err(KeyError::Broken { index });
        }
        if t.size < last.from {
            return Err(KeyError::SizeOrder { index });
        }
        last.until = t.size;
        self.periods.push(KeyPeriod {
            verifier: NoteVerifier::from_vkey(&t.new_key)?,
            vkey: t.new_key.clone(),
            from: t.size,
            until: u64::MAX,
        });
        self.transitions.push(note.to_string());
        Ok(t)
    }

    /// Appends a transition the current newest key made (the ledger's own rotation).
    pub fn extend(&mut self, note: &str) -> Result<KeyTransition, KeyError> {
        if self.transitions.len() >= MAX_TRANSITIONS {
            return Err(KeyError::TooMany);
        }
        self.push(note, self.transitions.len())
    }

    /// The key that signs new checkpoints.
    pub fn newest(&self) -> &str {
        self.periods.last().map_or("", |p| p.vkey.as_str())
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.periods.iter().map(|p| p.vkey.as_str())
    }

    /// The transition notes, oldest first.
    pub fn transitions(&self) -> &[String] {
        &self.transitions
    }

    /// Verifies a checkpoint note against the key of the history that signed it, and
    /// that the key signed within its period.
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, KeyError> {
        for period in self.periods.iter().rev() {
            let text = match open_note(note, &period.verifier) {
                Ok(text) => text,
                Err(CheckpointError::NoTrustedSignature(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let checkpoint = Checkpoint::from_body(text)?;
            if checkpoint.size < period.from || checkpoint.size > period.until {
                return Err(KeyError::OutOfPeriod {
                    key_id: period.verifier.key_id(),
                    size: checkpoint.size,
                    from: period.from,
                    until: period.until,
                });
            }
            return Ok(checkpoint);
        }
        Err(KeyError::UnknownKey)
    }
}

/// What auditors verify checkpoints with: one pinned key (no rotation followed) or a
/// verified [`KeyHistory`].
pub trait CheckpointKeys {
    /// Verifies and parses a signed checkpoint note.
    fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, KeyError>;
}

impl CheckpointKeys for str {
    fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, KeyError> {
        Ok(open_checkpoint(note, self)?)
    }
}

impl CheckpointKeys for String {
    fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, KeyError> {
        self.as_str().open_checkpoint(note)
    }
}

impl CheckpointKeys for KeyHistory {
    fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, KeyError> {
        KeyHistory::open_checkpoint(self, note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::empty_root;

    const ORIGIN: &str = "ledger.test/attestor";

    fn signed(key: &CheckpointSigner, size: u64) -> String {
        key.sign(&Checkpoint::new(ORIGIN, size, empty_root()))
            .unwrap()
    }

    #[test]
    fn an_old_key_follows_transitions_and_each_key_signs_only_its_period() {
        let (a, b, c) = (
            CheckpointSigner::generate(ORIGIN).unwrap(),
            CheckpointSigner::generate(ORIGIN).unwrap(),
            CheckpointSigner::generate(ORIGIN).unwrap(),
        );
        let notes = vec![
            KeyTransition::sign(ORIGIN, 5, &a, &b).unwrap(),
            KeyTransition::sign(ORIGIN, 9, &b, &c).unwrap(),
        ];
        for pinned in [&a, &b, &c] {
            let history = KeyHistory::follow(&pinned.verifier_key(), &notes).unwrap();
            assert_eq!(history.newest(), c.verifier_key());
            assert_eq!(history.open_checkpoint(&signed(&a, 5)).unwrap().size, 5);
            assert_eq!(history.open_checkpoint(&signed(&b, 7)).unwrap().size, 7);
            assert_eq!(history.open_checkpoint(&signed(&c, 20)).unwrap().size, 20);
            assert!(matches!(
                history.open_checkpoint(&signed(&a, 6)),
                Err(KeyError::OutOfPeriod { size: 6, .. })
            ));
            assert!(matches!(
                history.open_checkpoint(&signed(&b, 10)),
                Err(KeyError::OutOfPeriod { .. })
            ));
        }
        let stranger = CheckpointSigner::generate(ORIGIN).unwrap();
        let history = KeyHistory::follow(&a.verifier_key(), &notes).unwrap();
        assert_eq!(
            history.open_checkpoint(&signed(&stranger, 20)),
            Err(KeyError::UnknownKey)
        );
        assert!(matches!(
            KeyHistory::follow(&stranger.verifier_key(), &notes),
            Err(KeyError::NotInHistory(_))
        ));
    }

    #[test]
    fn a_transition_not_signed_by_both_keys_or_out_of_chain_is_refused() {
        let (a, b, c) = (
            CheckpointSigner::generate(ORIGIN).unwrap(),
            CheckpointSigner::generate(ORIGIN).unwrap(),
            CheckpointSigner::generate(ORIGIN).unwrap(),
        );
        let good = KeyTransition::sign(ORIGIN, 5, &a, &b).unwrap();
        // Only the old key's signature: the new key never agreed.
        let lines: Vec<&str> = good.lines().collect();
        let one_signature = format!("{}\n", lines[..lines.len() - 1].join("\n"));
        assert!(KeyTransition::open(&one_signature, 0).is_err());
        // An attacker's key introduced by itself.
        let forged = KeyTransition::sign(ORIGIN, 5, &c, &b)
            .unwrap()
            .replace(&c.verifier_key(), &a.verifier_key());
        assert!(KeyHistory::follow(&a.verifier_key(), &[forged]).is_err());
        // A chain with a hole.
        let skip = KeyTransition::sign(ORIGIN, 9, &c, &a).unwrap();
        assert_eq!(
            KeyHistory::follow(&a.verifier_key(), &[good.clone(), skip]).unwrap_err(),
            KeyError::Broken { index: 1 }
        );
        let back = KeyTransition::sign(ORIGIN, 4, &b, &c).unwrap();
        assert_eq!(
            KeyHistory::follow(&a.verifier_key(), &[good, back]).unwrap_err(),
            KeyError::SizeOrder { index: 1 }
        );
    }
}
