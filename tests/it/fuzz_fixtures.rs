//! The fuzz targets' fixtures stay meaningful: the real bundle seeding the `bundle` target
//! passes every check against the target's profile at the target's fixed time, so
//! mutations of it reach the deep checks; and regression inputs found by fuzzing stay
//! handled (typed errors, no panic).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use attestor_verify::bundle::Bundle;
use attestor_verify::checks::{verify_bundle, verify_drift_report, AkTrust, Expectations};
use attestor_verify::drift::DriftReport;
use attestor_verify::profiles::Profile;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn fixture_now() -> SystemTime {
    let text = std::fs::read_to_string(fuzz_dir().join("fixtures/bundle/now")).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(text.trim().parse().unwrap())
}

/// The seeds' AK as the fuzz target pins it.
fn seed_ak_name() -> Vec<u8> {
    let text = std::fs::read_to_string(fuzz_dir().join("fixtures/bundle/ak-name")).unwrap();
    hex::decode(text.trim()).unwrap()
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
            ak: AkTrust::Name(seed_ak_name()),
        };
        verify_bundle(&bundle, &profile, &expect)
            .unwrap_or_else(|e| panic!("fuzz seed {seed} no longer verifies: {e}"));
    }
    let bytes = std::fs::read(fuzz_dir().join("seeds/bundle/drift.json")).unwrap();
    let report = DriftReport::from_json(&bytes).unwrap();
    let expect = Expectations {
        nonce: report.nonce.clone(),
        now: Some(fixture_now()),
        ak: AkTrust::Name(seed_ak_name()),
        ..Expectations::default()
    };
    verify_drift_report(&report, &profile, &expect)
        .unwrap_or_else(|e| panic!("fuzz seed drift.json no longer verifies: {e}"));
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

/// A seed's bytes after its mode byte, from the seeds under `root` (normally `fuzz/`).
fn seed_in(root: &Path, target: &str, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(root.join("seeds").join(target).join(name)).unwrap();
    bytes[1..].to_vec()
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    seed_in(&fuzz_dir(), target, name)
}

#[test]
fn the_snp_seeds_are_a_real_report_and_certificate_table() {
    use attestor_verify::evidence::snp::certs::{find, parse_cert_table, validity, CertKind};
    use attestor_verify::evidence::snp::report::{decode_report_file, Report};
    let raw = seed("snp", "report-raw");
    assert_eq!(Report::parse(&raw).unwrap().bytes(), raw.as_slice());
    assert_eq!(decode_report_file(&seed("snp", "report-hex")).unwrap(), raw);
    let table = parse_cert_table(&seed("snp", "table-ark-ask")).unwrap();
    for kind in [CertKind::Ark, CertKind::Ask] {
        validity(find(&table, kind).unwrap()).unwrap();
    }
}

/// The trusted history of the `checkpoint` target: a real ledger's, rotated once.
fn fixture_history(root: &Path) -> attestor_verify::log::keys::KeyHistory {
    use attestor_verify::api::LogKeysResponse;
    let dir = root.join("fixtures/checkpoint");
    let pinned = std::fs::read_to_string(dir.join("pinned.vkey")).unwrap();
    let keys: LogKeysResponse =
        serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap();
    attestor_verify::log::keys::KeyHistory::follow(pinned.trim(), &keys.transitions).unwrap()
}

/// Every `checkpoint` seed under `root` verifies under the fixture's key history.
fn verify_checkpoint_seeds(root: &Path) {
    use attestor_verify::api::{ConsistencyResponse, EntryJson, ReceiptJson};
    use attestor_verify::audit;
    let history = fixture_history(root);
    assert_eq!(history.keys().count(), 2);
    let seed = |name: &str| seed_in(root, "checkpoint", name);
    let seed_text = |name: &str| String::from_utf8(seed(name)).unwrap();
    for name in ["note-old-key", "note-new-key"] {
        history.open_checkpoint(&seed_text(name)).unwrap();
    }
    for name in ["entry-old-key", "entry-new-key"] {
        let entry: EntryJson = serde_json::from_slice(&seed(name)).unwrap();
        audit::verify_entry(&entry, &history).unwrap();
    }
    for name in ["receipt-old-key", "receipt-new-key"] {
        let receipt: ReceiptJson = serde_json::from_slice(&seed(name)).unwrap();
        audit::verify_receipt(&receipt, &history).unwrap();
    }
    let parts = seed_text("consistency");
    let parts: Vec<&str> = parts.splitn(3, '\0').collect();
    let old = history.open_checkpoint(parts[0]).unwrap();
    let proof: ConsistencyResponse = serde_json::from_str(parts[2]).unwrap();
    audit::verify_extends(&old, parts[1], &proof, &history).unwrap();
}

#[test]
fn the_checkpoint_seeds_verify_under_the_fixture_key_history() {
    verify_checkpoint_seeds(&fuzz_dir());
}

/// A real ledger process that rotates its key once yields `checkpoint` seeds that verify
/// under its key history. They go to a temporary directory, or, with
/// `ATTESTOR_REWRITE_FUZZ_SEEDS=1` (`fuzz/make_seeds.sh`), over the committed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_ledger_yields_checkpoint_seeds_that_verify() {
    use crate::support::ledger::{LedgerProcess, LedgerSpec};
    let scratch = tempfile::tempdir().unwrap();
    let root = match std::env::var("ATTESTOR_REWRITE_FUZZ_SEEDS").as_deref() {
        Ok("1") => fuzz_dir(),
        _ => scratch.path().to_path_buf(),
    };
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("w0", "t")],
        tenants: &[("t", &"0".repeat(64))],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let client = ledger.client("w0");
    let pinned = ledger.verifier_key();
    let mut receipts = Vec::new();
    for n in 0..9 {
        if n == 5 {
            let config = ledger.dir.path().join("ledger.toml");
            let prepared = std::process::Command::new(env!("CARGO_BIN_EXE_attestor"))
                .args(["ledger", "rotate-key", "--config"])
                .arg(&config)
                .status()
                .unwrap();
            assert!(prepared.success());
            let pid = ledger.pid().unwrap().to_string();
            let hup = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status();
            assert!(hup.unwrap().success());
            crate::support::wait_for(Duration::from_secs(20), "the rotation", || {
                ledger.verifier_key() != pinned
            });
        }
        let body = format!("{{\"n\": {n}}}");
        receipts.push(client.submit(body.as_bytes()).await.unwrap().receipt);
    }
    let keys = client.log_keys().await.unwrap();
    let old_note = client.checkpoint(Some(3)).await.unwrap();
    let new_note = client.checkpoint(None).await.unwrap();
    // Nine submissions and the record of the incident the first one opened.
    let latest = attestor_verify::log::keys::KeyHistory::follow(&pinned, &keys.transitions)
        .unwrap()
        .open_checkpoint(&new_note)
        .unwrap();
    assert_eq!(latest.size, 10);
    let consistency = client.consistency(3, latest.size).await.unwrap();
    let fixtures = root.join("fixtures/checkpoint");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(fixtures.join("pinned.vkey"), format!("{pinned}\n")).unwrap();
    std::fs::write(fixtures.join("keys.json"), json(&keys)).unwrap();
    let seeds = root.join("seeds/checkpoint");
    let _ = std::fs::remove_dir_all(&seeds);
    std::fs::create_dir_all(&seeds).unwrap();
    let put = |name: &str, mode: u8, body: &[u8]| {
        std::fs::write(seeds.join(name), [&[mode], body].concat()).unwrap();
    };
    put("vkey-old", 0, pinned.as_bytes());
    put("vkey-new", 0, keys.current.as_bytes());
    put("note-old-key", 1, old_note.as_bytes());
    put("note-new-key", 1, new_note.as_bytes());
    put("transitions", 2, keys.transitions.join("\0").as_bytes());
    for (name, index) in [("entry-old-key", 1), ("entry-new-key", 7)] {
        put(
            name,
            3,
            json(&client.entry(index).await.unwrap()).as_bytes(),
        );
    }
    let parts = format!("{old_note}\0{new_note}\0{}", json(&consistency));
    put("consistency", 4, parts.as_bytes());
    put("receipt-old-key", 5, json(&receipts[2]).as_bytes());
    put("receipt-new-key", 5, json(&receipts[8]).as_bytes());
    put("log-keys", 6, json(&keys).as_bytes());
    verify_checkpoint_seeds(&root);
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}
