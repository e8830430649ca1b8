//! What crosses the ledger's API in either direction. The ledger parses agents' request
//! bodies (enrollment: EK chain, EK and AK public areas); auditors and agents parse the
//! ledger's answers (signed checkpoints, verifier keys, inclusion and consistency proofs,
//! entries with their leaves). The first byte chooses the parser; for the answers the
//! first line of the rest is the checkpoint verifier key and the remainder the message.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use attestor_verify::evidence::certchain::pem_to_der_all;
use attestor_verify::api::{
    ConsistencyResponse, EnrollProof, EnrollRequest, EntriesResponse, EntryJson, ReceiptJson,
    SubmitResponse,
};
use attestor_verify::audit;
use attestor_ledger::enroll::Enrollment;
use attestor_verify::log::checkpoint::{open_checkpoint, open_note, Checkpoint, NoteVerifier};
use attestor_verify::log::merkle::{verify_consistency, verify_inclusion, Hash};
use attestor_verify::profiles::{Profile, TpmProfile};
use attestor_net::tls::AgentIdentity;
use libfuzzer_sys::fuzz_target;

fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| Profile {
        name: "fuzz".into(),
        description: String::new(),
        max_age_seconds: 300,
        evidence: None,
        tpm: Some(TpmProfile {
            pcr_banks: vec![attestor_verify::evidence::tpm::HashAlg::Sha384],
            measured_pcr: 13,
            firmware_pcrs: [(attestor_verify::evidence::tpm::HashAlg::Sha384, Default::default())]
                .into(),
            ek_trust_anchors: pem_to_der_all(include_str!("../fixtures/tpm/ca_root.pem"))
                .expect("fixture root"),
            ek_intermediates: pem_to_der_all(include_str!("../fixtures/tpm/ca_intermediate.pem"))
                .expect("fixture intermediate"),
            ek_allowlist: Default::default(),
            min_key_strength: attestor_verify::profiles::DEFAULT_MIN_KEY_STRENGTH,
            ek_chains: Default::default(),
            certifications: Default::default(),
            ak_trust_anchors: Vec::new(),
            iak_trust_anchors: Vec::new(),
            measured_boot: None,
        }),
        snp: None,
    })
}

fn hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks_exact(32)
        .map(|c| Hash::try_from(c).expect("32 bytes"))
        .collect()
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(body).unwrap_or("");
    let (vkey, message) = text.split_once('\n').unwrap_or((text, ""));
    match which % 8 {
        0 => {
            // POST /v1/enroll: the whole first step, up to the credential challenge.
            if let Ok(request) = serde_json::from_slice::<EnrollRequest>(body) {
                let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_811_808_000);
                let who = AgentIdentity::new("tenant", "agent").expect("valid ids");
                let _ = Enrollment::default().begin(&who, request, profile(), now);
            }
            let _ = serde_json::from_slice::<EnrollProof>(body);
        }
        1 => {
            if let Ok(checkpoint) = Checkpoint::from_body(text) {
                let _ = checkpoint.timestamp();
                if let Ok(again) = checkpoint.body() {
                    assert_eq!(
                        Checkpoint::from_body(&again).expect("round trip"),
                        checkpoint
                    );
                }
            }
        }
        2 => {
            if let Ok(verifier) = NoteVerifier::from_vkey(vkey) {
                let _ = (verifier.name(), verifier.key_id());
                let _ = open_note(message, &verifier);
            }
            let _ = open_checkpoint(message, vkey);
        }
        3 => {
            if let Ok(entry) = serde_json::from_str::<EntryJson>(message) {
                let _ = audit::verify_entry(&entry, vkey);
            }
            if let Ok(page) = serde_json::from_str::<EntriesResponse>(message) {
                for entry in &page.entries {
                    let _ = audit::verify_entry(entry, vkey);
                }
            }
        }
        4 => {
            if let Ok(receipt) = serde_json::from_str::<ReceiptJson>(message) {
                let _ = audit::verify_receipt(&receipt, vkey);
            }
            if let Ok(answer) = serde_json::from_str::<SubmitResponse>(message) {
                let _ = audit::verify_receipt(&answer.receipt, vkey);
            }
        }
        5 => {
            // A consistency answer between two notes: old note, a line "--", then the
            // new note, then a line "--" and the JSON proof.
            let mut parts = message.splitn(3, "\n--\n");
            let (old, new, proof) = (parts.next(), parts.next(), parts.next());
            if let (Some(old), Some(new), Some(proof)) = (old, new, proof) {
                if let (Ok(old), Ok(proof)) = (
                    open_checkpoint(old, vkey),
                    serde_json::from_str::<ConsistencyResponse>(proof),
                ) {
                    let _ = audit::verify_extends(&old, new, &proof, vkey);
                }
            }
        }
        _ => {
            // Raw proofs: index/old size, size, two roots and the audit path.
            let (a, b) = (u64_at(body, 0), u64_at(body, 8));
            let rest = body.get(16..).unwrap_or_default();
            let all = hashes(rest);
            if let [leaf, root, path @ ..] = all.as_slice() {
                let _ = verify_inclusion(leaf, a, b, path, root);
                let _ = verify_consistency(a, b, leaf, root, path);
            }
        }
    }
});
