//! `attestor ledger backup` while submissions flow, `attestor ledger restore` into a fresh
//! state directory (verified log, then served and appended to), refusals of corrupted or
//! tampered backups, and a roll-back caught by an auditor holding a newer checkpoint and by
//! the ledger itself when its state directory survived.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::ledger::{all_entries, LedgerProcess, LedgerSpec};
use crate::support::output_text;
use crate::support::wait_until;
use attestor_verify::audit;
use attestor_verify::log::checkpoint::open_checkpoint;
use attestor_verify::log::merkle::leaf_hash;

const ANY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

type Acked = Arc<Mutex<Vec<(u64, [u8; 32])>>>;

fn attestor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(args)
        .output()
        .unwrap()
}

/// A copy of the ledger's config whose state directory is `state` (beside the config),
/// holding only the checkpoint key, as a restore starts from.
fn config_with_state(ledger: &LedgerProcess, key_from: &Path, state: &str) -> PathBuf {
    let dir = ledger.dir.path();
    let config = std::fs::read_to_string(dir.join("ledger.toml"))
        .unwrap()
        .replace("state_dir = \"state\"", &format!("state_dir = \"{state}\""));
    let path = dir.join(format!("{state}.toml"));
    std::fs::write(&path, config).unwrap();
    std::fs::create_dir_all(dir.join(state)).unwrap();
    std::fs::copy(key_from, dir.join(state).join("checkpoint.key")).unwrap();
    path
}

fn restore(config: &Path, from: &Path) -> Output {
    attestor(&[
        "ledger",
        "restore",
        "--config",
        config.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_into_a_verified_log_that_serves_and_appends() {
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("w0", "t"), ("w1", "t"), ("w2", "t")],
        tenants: &[("t", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let dir = ledger.dir.path().to_path_buf();
    let vkey = ledger.verifier_key();
    // Refused submissions are logged like accepted ones: the write path without a TPM.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, acked, stop) = (ledger.client(&format!("w{w}")), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = format!("{{\"writer\": {w}, \"n\": {n}}}");
                let receipt = client.submit(body.as_bytes()).await.unwrap().receipt;
                let hash: [u8; 32] = receipt.leaf_hash.try_into().unwrap();
                acked.lock().unwrap().push((receipt.index, hash));
            }
        }));
    }
    let acked_count = || acked.lock().unwrap().len();
    wait_until(Duration::from_secs(60), "100 submissions", || {
        acked_count() >= 100
    })
    .await;
    let client = ledger.client("w0");
    let held_before = client.checkpoint(None).await.unwrap();
    let before = open_checkpoint(&held_before, &vkey).unwrap();
    let acked_before_backup = acked_count();

    let backup = dir.join("ledger.backup");
    let config = dir.join("ledger.toml");
    let args = [
        "ledger",
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]
    .map(String::from);
    let made = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_attestor"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(made.status.success(), "{}", output_text(&made));
    assert!(
        output_text(&made).contains("NOT in it"),
        "{}",
        output_text(&made)
    );
    let during = acked_count();
    wait_until(
        Duration::from_secs(60),
        "submissions after the backup",
        || acked_count() >= during + 50,
    )
    .await;
    // A restore over a live log is refused.
    let over = restore(&config, &backup);
    assert!(!over.status.success());
    assert!(
        output_text(&over).contains("already holds a log"),
        "{}",
        output_text(&over)
    );

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    // An auditor keeps the newest checkpoint.
    let newer = dir.join("newer.note");
    std::fs::write(&newer, client.checkpoint(None).await.unwrap()).unwrap();
    ledger.stop();

    // Disaster: the state directory is lost; the keys (checkpoint, enrollment CA) were
    // kept apart and are put back before the restore.
    let kept = ["checkpoint.key", "enrollment-ca.key", "enrollment-ca.pem"];
    for name in kept {
        std::fs::copy(
            ledger.state_dir().join(name),
            dir.join(format!("kept-{name}")),
        )
        .unwrap();
    }
    std::fs::rename(ledger.state_dir(), dir.join("state.lost")).unwrap();
    std::fs::create_dir_all(ledger.state_dir()).unwrap();
    for name in kept {
        std::fs::copy(
            dir.join(format!("kept-{name}")),
            ledger.state_dir().join(name),
        )
        .unwrap();
    }
    let restored = restore(&config, &backup);
    assert!(restored.status.success(), "{}", output_text(&restored));
    ledger.restart();
    // The same enrollment CA, so the AK certificates it issued still verify.
    assert_eq!(
        std::fs::read(ledger.state_dir().join("enrollment-ca.pem")).unwrap(),
        std::fs::read(dir.join("state.lost/enrollment-ca.pem")).unwrap()
    );

    let client = ledger.client("w0");
    let latest_note = client.checkpoint(None).await.unwrap();
    let latest = open_checkpoint(&latest_note, &vkey).unwrap();
    assert!(latest.size as usize >= acked_before_backup);
    // Besides the acknowledged submissions: the records of the incidents the three
    // writers' first refusals opened.
    assert!(latest.size as usize <= during + 3);
    let entries = all_entries(&client).await;
    assert_eq!(entries.len() as u64, latest.size);
    for entry in &entries {
        audit::verify_entry(&client.entry(entry.index).await.unwrap(), &vkey).unwrap();
    }
    for (index, hash) in acked.lock().unwrap().iter() {
        if *index < latest.size {
            let entry = &entries[*index as usize];
            assert_eq!(leaf_hash(&entry.leaf), *hash, "entry {index} changed");
        }
    }
    let proof = client.consistency(before.size, latest.size).await.unwrap();
    audit::verify_extends(&before, &latest_note, &proof, &vkey).unwrap();
    let appended = client.submit(b"{\"after\": \"restore\"}").await.unwrap();
    assert_eq!(appended.receipt.index, latest.size);

    // The auditor holding the newer checkpoint sees the roll-back.
    let files = ledger.tls_files("w0");
    let key_file = dir.join("log.vkey");
    std::fs::write(&key_file, &vkey).unwrap();
    let audit = attestor(&[
        "query",
        "--ledger",
        &ledger.endpoint(),
        "--ca",
        files.ca.to_str().unwrap(),
        "--cert",
        files.cert.to_str().unwrap(),
        "--key",
        files.key.to_str().unwrap(),
        "--log-key",
        key_file.to_str().unwrap(),
        "checkpoint",
        "--held",
        newer.to_str().unwrap(),
    ]);
    assert!(!audit.status.success(), "{}", output_text(&audit));
    assert!(
        output_text(&audit).contains("AUDIT FAILED"),
        "{}",
        output_text(&audit)
    );

    // The older backup copied over the database of a surviving state directory: the
    // ledger remembers the checkpoint it last saw and refuses to serve the older log.
    ledger.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(ledger.state_dir().join(format!("ledger.db{suffix}")));
    }
    std::fs::copy(&backup, ledger.state_dir().join("ledger.db")).unwrap();
    let refused = attestor(&["ledger", "--config", config.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("an older backup was restored"),
        "{}",
        output_text(&refused)
    );

    // Damaged backups are refused, and leave the state directory without a log.
    let damaged = dir.join("damaged.backup");
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0xA5);
    std::fs::write(&damaged, &bytes).unwrap();
    let not_sqlite = dir.join("not-sqlite.backup");
    std::fs::write(&not_sqlite, b"this is not a ledger backup").unwrap();
    let tampered = dir.join("tampered.backup");
    std::fs::copy(&backup, &tampered).unwrap();
    rusqlite::Connection::open(&tampered)
        .unwrap()
        .execute("UPDATE entries SET leaf = x'00' WHERE idx = 3", [])
        .unwrap();
    for (n, (file, expected)) in [
        (&damaged, "backup"),
        (&not_sqlite, "not a usable ledger backup"),
        (&tampered, "entry 3's bytes do not match its leaf hash"),
    ]
    .into_iter()
    .enumerate()
    {
        let state = format!("state-bad-{n}");
        let config = config_with_state(&ledger, &dir.join("kept-checkpoint.key"), &state);
        let out = restore(&config, file);
        assert!(
            !out.status.success(),
            "{}: {}",
            file.display(),
            output_text(&out)
        );
        assert!(
            output_text(&out).contains(expected),
            "{}",
            output_text(&out)
        );
        assert!(!dir.join(&state).join("ledger.db").exists());
    }
}
