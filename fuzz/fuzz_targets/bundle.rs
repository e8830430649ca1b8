//! The bundle document and the whole offline verifier on it: every parser a submission
//! reaches (envelope, statement, TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC, PCR values,
//! event log, EK certificates) in the order `verify` runs them. The profile trusts the CA
//! of the real bundle in the seed corpus (fuzz/fixtures/bundle), so mutations of it get
//! past the early checks.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use attestor_verify::bundle::Bundle;
use attestor_verify::profiles::Profile;
use attestor_verify::checks::{verify_bundle, AkTrust, Expectations};
use libfuzzer_sys::fuzz_target;

fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundle/profile.toml");
        Profile::load(&path).expect("fuzz/fixtures/bundle/profile.toml")
    })
}

fn now() -> SystemTime {
    let text = include_str!("../fixtures/bundle/now");
    SystemTime::UNIX_EPOCH + Duration::from_secs(text.trim().parse().expect("unix seconds"))
}

/// The seeds' AK, pinned by its TPM Name as `attestor verify --ak-name` does, so that
/// mutations of everything else get past `ak-binding`.
fn seed_ak_name() -> &'static [u8] {
    static NAME: OnceLock<Vec<u8>> = OnceLock::new();
    NAME.get_or_init(|| {
        let text = include_str!("../fixtures/bundle/ak-name").trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex AK name"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = Bundle::from_json(data) else {
        return;
    };
    let json = bundle.to_json();
    assert_eq!(Bundle::from_json(&json).expect("round trip"), bundle);
    let expect = Expectations {
        policy_hash: None,
        nonce: bundle.nonce.clone(),
        now: Some(now()),
        evidence: None,
        ak: AkTrust::Name(seed_ak_name().to_vec()),
    };
    let _ = verify_bundle(&bundle, profile(), &expect);
});
