//! Evidence packs: `attestor export` of a tenant's period from a ledger with a real agent
//! heartbeating on swtpm, and `attestor export verify` offline: it passes on the pack as
//! written and fails, naming the file, with any one byte of any file altered.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::agent::{copy_dir, AgentFixture};
use crate::support::ledger::{attestor_config, Heartbeating, LedgerProcess};
use crate::support::output_text;
use attestor_verify::api::{EntryJson, Verdict};
use attestor_verify::bundle::{Bundle, Evidence};
use attestor_verify::evidence::tpm::credential::ak_name;
use attestor_verify::record::LogRecord;

fn verify(pack: &Path, log_key: &Path, profile: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["export", "verify"])
        .arg(pack)
        .arg("--log-key")
        .arg(log_key)
        .arg("--profile")
        .arg(profile)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_verifies_offline_at_ledger_time_and_one_altered_byte_anywhere_fails_naming_its_file(
) {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let from = attestor_verify::time::now_ms() - 1000;
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 3).await;
    agent.stop().await;
    // A refusal in the period too.
    ledger
        .client("a1")
        .submit(b"{\"not\": \"a bundle\"}")
        .await
        .unwrap();
    let to = attestor_verify::time::now_ms() + 1000;
    let work = tempfile::tempdir().unwrap();
    let log_key = work.path().join("log.vkey");
    std::fs::write(&log_key, ledger.verifier_key()).unwrap();
    let profile = fixture.profile_path.clone();
    let pack = work.path().join("pack");
    let out = ledger
        .cli("export", "a1")
        .arg("--log-key")
        .arg(&log_key)
        .args([
            "--tenant",
            "acme",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ])
        .arg("--out")
        .arg(&pack)
        .arg("--profile")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));

    let out = verify(&pack, &log_key, &profile);
    let report = output_text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("OK: ") && report.contains("re-verified at its ledger time"),
        "{report}"
    );
    let a1 = report
        .lines()
        .find(|l| l.starts_with("a1 "))
        .expect("a row for a1");
    let columns: Vec<&str> = a1.split_whitespace().collect();
    assert!(columns[1].parse::<u64>().unwrap() >= 3, "{a1}");
    assert!(columns[2].parse::<u64>().unwrap() >= 1, "{a1}");
    // `attestor verify --at`: an accepted bundle of the pack verifies as of its ledger
    // time, and is stale as of a day later.
    let entries = std::fs::read_to_string(pack.join("entries.jsonl")).unwrap();
    let accepted: EntryJson = entries
        .lines()
        .map(|l| serde_json::from_str::<EntryJson>(l).unwrap())
        .find(|e| e.verdict == Verdict::Accepted)
        .unwrap();
    let record = LogRecord::from_leaf(&accepted.leaf).unwrap();
    let bundle_file = work.path().join("bundle.json");
    std::fs::write(&bundle_file, &record.submission).unwrap();
    let bundle = Bundle::from_json(&record.submission).unwrap();
    let Evidence::Tpm(ev) = &bundle.evidence else {
        panic!("a TPM bundle")
    };
    let verify_at = |at: u64| {
        Command::new(env!("CARGO_BIN_EXE_attestor"))
            .arg("verify")
            .arg(&bundle_file)
            .arg("--profile")
            .arg(&profile)
            .args(["--nonce", &hex::encode(&bundle.nonce)])
            .args(["--ak-name", &hex::encode(ak_name(&ev.ak_public).unwrap())])
            .args(["--at", &at.to_string()])
            .output()
            .unwrap()
    };
    let then = verify_at(accepted.received_at_ms);
    assert!(then.status.success(), "{}", output_text(&then));
    let later = verify_at(accepted.received_at_ms + 86_400_000);
    assert!(
        !later.status.success() && output_text(&later).contains("fresh"),
        "{}",
        output_text(&later)
    );

    // The manifest's own sum is in sha256sum's format: an independent tool agrees.
    let sums = Command::new("sha256sum")
        .args(["-c", "manifest.sha256"])
        .current_dir(&pack)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", output_text(&sums));

    let mut names: Vec<String> = std::fs::read_dir(&pack)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    for name in &names {
        let altered = work.path().join(format!("altered-{name}"));
        copy_dir(&pack, &altered);
        let path = altered.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        match bytes.get_mut(middle) {
            Some(byte) => *byte ^= 0x01,
            // An empty file (no policy records in the period): one byte more.
            None => bytes.push(b'\n'),
        }
        std::fs::write(&path, bytes).unwrap();
        let out = verify(&altered, &log_key, &profile);
        let said = output_text(&out);
        assert!(!out.status.success(), "{name} altered, yet: {said}");
        assert!(said.contains(name.as_str()), "{name} altered: {said}");
    }
    // Another log's key: nothing in the pack is proven.
    let other = work.path().join("other.vkey");
    std::fs::write(
        &other,
        attestor_verify::log::checkpoint::CheckpointSigner::generate("ledger.test/attestor")
            .unwrap()
            .verifier_key(),
    )
    .unwrap();
    assert!(!verify(&pack, &other, &profile).status.success());
}
