//! What an auditor receives from the ledger and checks with its checkpoint key: verifier
//! keys, signed checkpoint notes, key transitions and histories, entries with inclusion
//! proofs, receipts and consistency proofs; and what the public log and its witnesses
//! parse: tile paths, entry bundles, add-checkpoint requests, witness answers. The first byte chooses the parser; the trusted
//! key and key history are those of a real ledger that rotated once
//! (fuzz/fixtures/checkpoint), so mutations of the seeds reach the signature and proof
//! checks.
#![no_main]

use std::sync::OnceLock;

use attestor_verify::api::{ConsistencyResponse, EntryJson, LogKeysResponse, ReceiptJson};
use attestor_verify::audit;
use attestor_verify::log::checkpoint::{open_checkpoint, Checkpoint, NoteVerifier};
use attestor_verify::log::keys::{KeyHistory, KeyTransition};
use attestor_verify::log::tiles::{decode_entry_bundle, TilePath};
use attestor_verify::log::witness::{check_addition, cosigned_by, AddCheckpoint};
use libfuzzer_sys::fuzz_target;

const PINNED: &str = include_str!("../fixtures/checkpoint/pinned.vkey");

fn history() -> &'static KeyHistory {
    static HISTORY: OnceLock<KeyHistory> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let keys: LogKeysResponse =
            serde_json::from_str(include_str!("../fixtures/checkpoint/keys.json"))
                .expect("fixture key history");
        KeyHistory::follow(PINNED.trim(), &keys.transitions).expect("fixture history follows")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let history = history();
    let text = std::str::from_utf8(body).ok();
    match (which % 10, text) {
        (0, Some(vkey)) => {
            let _ = NoteVerifier::from_vkey(vkey);
        }
        (1, Some(note)) => {
            let _ = history.open_checkpoint(note);
            let _ = open_checkpoint(note, PINNED.trim());
            let _ = Checkpoint::from_body(note);
        }
        (2, Some(notes)) => {
            let transitions: Vec<String> = notes.split('\0').map(str::to_string).collect();
            for (i, note) in transitions.iter().enumerate() {
                let _ = KeyTransition::open(note, i);
            }
            if let Ok(followed) = KeyHistory::follow(PINNED.trim(), &transitions) {
                let _ = followed.newest();
            }
        }
        (3, _) => {
            if let Ok(entry) = serde_json::from_slice::<EntryJson>(body) {
                let _ = audit::verify_entry(&entry, history);
            }
        }
        (4, Some(parts)) => {
            let mut parts = parts.splitn(3, '\0');
            if let (Some(old), Some(new), Some(proof)) = (parts.next(), parts.next(), parts.next())
            {
                if let (Ok(old), Ok(proof)) = (
                    history.open_checkpoint(old),
                    serde_json::from_str::<ConsistencyResponse>(proof),
                ) {
                    let _ = audit::verify_extends(&old, new, &proof, history);
                }
            }
        }
        (5, _) => {
            if let Ok(receipt) = serde_json::from_slice::<ReceiptJson>(body) {
                let _ = audit::verify_receipt(&receipt, history);
            }
        }
        (6, _) => {
            if let Ok(keys) = serde_json::from_slice::<LogKeysResponse>(body) {
                let _ = KeyHistory::follow(PINNED.trim(), &keys.transitions);
            }
        }
        (7, Some(path)) => {
            if let Ok(tile) = TilePath::parse(path) {
                assert_eq!(tile.to_path(), path);
                let _ = tile.needs_size();
            }
        }
        (8, _) => {
            let count = body.first().map_or(0, |&n| usize::from(n));
            let _ = decode_entry_bundle(body.get(1..).unwrap_or_default(), count);
        }
        (9, Some(request)) => {
            if let Ok(add) = AddCheckpoint::parse(request) {
                let key = NoteVerifier::from_vkey(PINNED.trim()).expect("fixture key");
                let _ = add.claimed_origin();
                let _ = check_addition(&add, std::slice::from_ref(&key), None);
                let _ = cosigned_by(add.note, &[key]);
            }
            let _ = NoteVerifier::cosigner(request);
        }
        _ => {}
    }
});
