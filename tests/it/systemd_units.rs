//! The shipped systemd units (deploy/systemd) are valid for systemd and keep their
//! sandbox: `systemd-analyze verify` must accept them without a single warning.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["attestor-agent.service", "attestor-ledger.service"];

fn systemd_analyze() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file())
        .expect("systemd-analyze not found on PATH: install Debian's systemd package (scripts/test.sh does)")
}

fn unit_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn systemd_analyze_verify_accepts_the_units_without_warnings() {
    let tool = systemd_analyze();
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in UNITS {
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let text =
            unit_text(name).replace("/usr/local/bin/attestor", env!("CARGO_BIN_EXE_attestor"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new(tool)
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}

fn directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn both_units_keep_their_sandbox() {
    for name in UNITS {
        let d = directives(&unit_text(name));
        let has = |key: &str, value: &str| d.iter().any(|(k, v)| k == key && v == value);
        for (key, value) in [
            ("ProtectSystem", "strict"),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
            ("SystemCallFilter", "@system-service"),
            ("Restart", "on-failure"),
            ("DevicePolicy", "closed"),
        ] {
            assert!(has(key, value), "{name} lacks {key}={value}");
        }
        let user = d.iter().find(|(k, _)| k == "User").map(|(_, v)| v.as_str());
        assert!(
            matches!(user, Some(u) if u.starts_with("attestor-")),
            "{name} must run as a dedicated user, not {user:?}"
        );
        let state = d
            .iter()
            .find(|(k, _)| k == "StateDirectory")
            .unwrap()
            .1
            .clone();
        assert!(
            has("ReadWritePaths", &format!("/var/lib/{state}")),
            "{name}: state dir writable"
        );
    }
    let agent = directives(&unit_text(UNITS[0]));
    let devices: Vec<_> = agent.iter().filter(|(k, _)| k == "DeviceAllow").collect();
    assert_eq!(devices.len(), 1, "the agent may open only the TPM");
    assert_eq!(devices[0].1, "/dev/tpmrm0 rw");
    let ledger = directives(&unit_text(UNITS[1]));
    assert!(
        !ledger.iter().any(|(k, _)| k == "DeviceAllow"),
        "the ledger needs no device"
    );
}
