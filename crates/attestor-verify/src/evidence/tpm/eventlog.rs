//! The measurement event log: every extend attestor made into the measured PCR since the
//! TPM last reset, so a verifier can replay it to the quoted PCR value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::HashAlg;

/// Event type of a policy kernel configuration measurement.
pub const EVENT_POLICY_KERNEL_CONFIG: &str = "attestor/policy-kernel-config/v1";
/// A log longer than this is refused: one entry per configuration change per boot.
pub const MAX_EVENTS: usize = 4096;

/// What a policy kernel measurement extends into `bank` for the (SHA-384)
/// `kernel_config_hash`: the hash itself in the sha384 bank, its digest in the bank's hash
/// otherwise (sha256), so every bank's digest is derived from the claimed hash and a
/// verifier can tie the quoted bank's digest to the claim.
pub fn measurement_digest(bank: HashAlg, kernel_config_hash: &[u8]) -> Vec<u8> {
    match bank {
        HashAlg::Sha384 => kernel_config_hash.to_vec(),
        other => other.digest(kernel_config_hash),
    }
}

/// One extend of the measured PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementEvent {
    /// The PCR extended: the profile's measured PCR.
    pub pcr: u8,
    /// What kind of measurement, e.g. [`EVENT_POLICY_KERNEL_CONFIG`]; not covered by the
    /// TPM.
    pub event_type: String,
    /// Digest extended into each bank (lowercase hex).
    pub digests: BTreeMap<HashAlg, String>,
    /// What was measured: the `kernel_config_hash` (hex) for policy kernel events.
    pub data: String,
    /// Unix seconds when the agent extended it (informative; not covered by the TPM).
    pub timestamp: u64,
}

/// Why an event log does not replay.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log has this many events, over [`MAX_EVENTS`].
    #[error("event log has {0} entries, over the limit of {MAX_EVENTS}")]
    TooLong(usize),
    /// An event is for another PCR than the one replayed.
    #[error("event {index} is for PCR {found}, expected {expected}")]
    WrongPcr {
        /// The event's position in the log (0-based).
        index: usize,
        /// Its PCR.
        found: u8,
        /// The PCR replayed.
        expected: u8,
    },
    /// An event has no digest for the replayed bank: the log was written for another bank.
    #[error("event {index} has no digest for the quoted {bank} bank")]
    MissingDigest {
        /// The event's position in the log (0-based).
        index: usize,
        /// The bank's name.
        bank: &'static str,
    },
    /// An event carries a digest for a bank that is not replayed: nothing would check it.
    #[error(
        "event {index} carries a {bank} digest, but only the quoted {quoted} bank can be \
         checked"
    )]
    UnquotedBank {
        /// The event's position in the log (0-based).
        index: usize,
        /// The bank of the unchecked digest.
        bank: &'static str,
        /// The bank replayed.
        quoted: &'static str,
    },
    /// An event is of a type attestor does not write into the measured PCR.
    #[error("event {index} has unknown type {event_type:?} (only {EVENT_POLICY_KERNEL_CONFIG:?})")]
    UnknownEventType {
        /// The event's position in the log (0-based).
        index: usize,
        /// Its type.
        event_type: String,
    },
    /// An event's digest for the replayed bank is not hex of the bank's digest length.
    #[error("event {index} has a malformed {bank} digest")]
    BadDigest {
        /// The event's position in the log (0-based).
        index: usize,
        /// The bank's name.
        bank: &'static str,
    },
}

/// The ordered measurements of one PCR since the last TPM reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventLog {
    /// The extends, oldest first; unverified until replayed against a quoted PCR.
    pub events: Vec<MeasurementEvent>,
}

impl EventLog {
    /// The PCR value these events produce from the all-zero reset value:
    /// `pcr = H(pcr || digest)` per event (TPM2_PCR_Extend). Every event must be a policy
    /// kernel measurement of `pcr` carrying a digest for `bank` and for no other bank, so
    /// nothing in the log escapes the replay.
    pub fn replay(&self, pcr: u8, bank: HashAlg) -> Result<Vec<u8>, EventLogError> {
        if self.events.len() > MAX_EVENTS {
            return Err(EventLogError::TooLong(self.events.len()));
        }
        let mut value = vec![0u8; bank.digest_len()];
        for (index, event) in self.events.iter().enumerate() {
            if event.pcr != pcr {
                return Err(EventLogError::WrongPcr {
                    index,
                    found: event.pcr,
                    expected: pcr,
                });
            }
            if event.event_type != EVENT_POLICY_KERNEL_CONFIG {
                return Err(EventLogError::UnknownEventType {
                    index,
                    event_type: event.event_type.clone(),
                });
            }
            let digest = event_digest(event, index, bank)?;
            if let Some(other) = event.digests.keys().find(|b| **b != bank) {
                return Err(EventLogError::UnquotedBank {
                    index,
                    bank: other.name(),
                    quoted: bank.name(),
                });
            }
            value = bank.digest_parts(&[&value, &digest]);
        }
        Ok(value)
    }

    /// The log with each event's digest for `bank` only: what a bundle quoting `bank`
    /// carries (the agent extends every active bank and keeps all digests for itself).
    pub fn for_bank(&self, bank: HashAlg) -> EventLog {
        let events = self
            .events
            .iter()
            .map(|e| MeasurementEvent {
                digests: e
                    .digests
                    .iter()
                    .filter(|(b, _)| **b == bank)
                    .map(|(b, d)| (*b, d.clone()))
                    .collect(),
                ..e.clone()
            })
            .collect();
        EventLog { events }
    }

    /// The most recent measurement, i.e. what the PCR currently attests.
    pub fn last(&self) -> Option<&MeasurementEvent> {
        self.events.last()
    }
}

fn event_digest(
    event: &MeasurementEvent,
    index: usize,
    bank: HashAlg,
) -> Result<Vec<u8>, EventLogError> {
    let hex_digest = event
        .digests
        .get(&bank)
        .ok_or(EventLogError::MissingDigest {
            index,
            bank: bank.name(),
        })?;
    hex::decode(hex_digest)
        .ok()
        .filter(|d| d.len() == bank.digest_len())
        .ok_or(EventLogError::BadDigest {
            index,
            bank: bank.name(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(byte: u8) -> MeasurementEvent {
        MeasurementEvent {
            pcr: 13,
            event_type: EVENT_POLICY_KERNEL_CONFIG.into(),
            digests: [
                (HashAlg::Sha384, hex::encode([byte; 48])),
                (HashAlg::Sha256, hex::encode([byte; 32])),
            ]
            .into(),
            data: hex::encode([byte; 48]),
            timestamp: 0,
        }
    }

    #[test]
    fn replay_matches_pcr_extend() {
        use sha2::{Digest, Sha384};
        let log = EventLog {
            events: vec![event(1), event(2)],
        }
        .for_bank(HashAlg::Sha384);
        let mut expect = [0u8; 48].to_vec();
        for b in [1u8, 2] {
            let mut h = Sha384::new();
            h.update(&expect);
            h.update([b; 48]);
            expect = h.finalize().to_vec();
        }
        assert_eq!(log.replay(13, HashAlg::Sha384).unwrap(), expect);
        assert_eq!(
            EventLog::default().replay(13, HashAlg::Sha384).unwrap(),
            vec![0; 48]
        );
    }

    #[test]
    fn every_digest_is_replayed_or_refused() {
        let both = EventLog {
            events: vec![event(1), event(2)],
        };
        // The sha256 digests of a sha384 replay would go unchecked: refused, by bank.
        assert_eq!(
            both.replay(13, HashAlg::Sha384),
            Err(EventLogError::UnquotedBank {
                index: 0,
                bank: "sha256",
                quoted: "sha384"
            })
        );
        let sha256 = both.for_bank(HashAlg::Sha256);
        assert!(sha256.replay(13, HashAlg::Sha256).is_ok());
        // A log written for the other bank names the bank it lacks.
        let err = sha256.replay(13, HashAlg::Sha384).unwrap_err();
        assert_eq!(
            err,
            EventLogError::MissingDigest {
                index: 0,
                bank: "sha384"
            }
        );
        assert!(err.to_string().contains("sha384"));
    }

    #[test]
    fn unknown_event_types_are_refused() {
        let mut log = EventLog {
            events: vec![event(1), event(2)],
        }
        .for_bank(HashAlg::Sha384);
        log.events[1].event_type = "attestor/something-else/v1".into();
        assert_eq!(
            log.replay(13, HashAlg::Sha384),
            Err(EventLogError::UnknownEventType {
                index: 1,
                event_type: "attestor/something-else/v1".into()
            })
        );
    }

    #[test]
    fn broken_entries_are_named() {
        let mut log = EventLog {
            events: vec![event(1), event(2)],
        }
        .for_bank(HashAlg::Sha384);
        assert_eq!(
            log.replay(14, HashAlg::Sha384),
            Err(EventLogError::WrongPcr {
                index: 0,
                found: 13,
                expected: 14
            })
        );
        log.events[1].digests.insert(HashAlg::Sha384, "zz".into());
        assert!(matches!(
            log.replay(13, HashAlg::Sha384),
            Err(EventLogError::BadDigest { index: 1, .. })
        ));
        log.events[1].digests.remove(&HashAlg::Sha384);
        assert!(matches!(
            log.replay(13, HashAlg::Sha384),
            Err(EventLogError::MissingDigest { index: 1, .. })
        ));
    }
}
