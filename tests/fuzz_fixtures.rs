//! The fuzz targets' fixtures stay meaningful: the real bundle seeding the `bundle` target
//! passes every check against the target's profile at the target's fixed time, so
//! mutations of it reach the deep checks; and regression inputs found by fuzzing stay
//! handled (typed errors, no panic).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use attestor::bundle::Bundle;
use attestor::profiles::Profile;
use attestor::verify::{verify_bundle, Expectations};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn fixture_now() -> SystemTime {
    let text = std::fs::read_to_string(fuzz_dir().join("fixtures/bundle/now")).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(text.trim().parse().unwrap())
}

#[test]
fn the_bundle_seeds_verify_against_the_fuzz_profile() {
    let profile = Profile::load(&fuzz_dir().join("fixtures/bundle/profile.toml")).unwrap();
    for seed in ["online.json", "offline.json"] {
        let bytes = std::fs::read(fuzz_dir().join("seeds/bundle").join(seed)).unwrap();
        let bundle = Bundle::from_json(&bytes).unwrap();
        let expect = Expectations {
            policy_hash: None,
            nonce: bundle.nonce.clone(),
            now: Some(fixture_now()),
            evidence: None,
        };
        verify_bundle(&bundle, &profile, &expect)
            .unwrap_or_else(|e| panic!("fuzz seed {seed} no longer verifies: {e}"));
    }
}

#[test]
fn profile_parse_reports_bad_text_as_typed_errors() {
    let path = fuzz_dir().join("fixtures/bundle/profile.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(Profile::parse(&text, &path).is_ok());
    for bad in [
        "",
        "name = 1",
        "[tpm]\nmeasured_pcr = 300",
        &text.replace("root.pem", "nope.pem"),
    ] {
        assert!(Profile::parse(bad, &path).is_err(), "{bad:?}");
    }
}
