//! The shipped systemd units (deploy/systemd) are valid for systemd and keep their
//! sandbox: `systemd-analyze verify` must accept them, the agent with its SEV-SNP drop-in,
//! without a single warning, and the drop-in adds only what the secure processor needs.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["attestor-agent.service", "attestor-ledger.service"];
/// The agent's drop-in for SEV-SNP guests, relative to deploy/systemd.
const SNP_DROP_IN: &str = "attestor-agent.service.d/snp.conf";
/// configfs-tsm's report entry the agent may write (and nothing else under /sys).
const TSM_ENTRY: &str = "/sys/kernel/config/tsm/report/attestor";

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

/// `systemd-analyze verify` of the units laid out in a fresh directory, the agent's SNP
/// drop-in (`drop_in` as its text) beside it, where verify loads drop-ins from: (success,
/// stderr).
fn verify(drop_in: &str) -> (bool, String) {
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
    let drop_in_path = dir.path().join(SNP_DROP_IN);
    std::fs::create_dir_all(drop_in_path.parent().unwrap()).unwrap();
    std::fs::write(&drop_in_path, drop_in).unwrap();
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn systemd_analyze_verify_accepts_the_units_and_the_snp_drop_in_without_warnings() {
    let (ok, stderr) = verify(&unit_text(SNP_DROP_IN));
    assert!(ok, "systemd-analyze verify failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
    // The run above read the drop-in: a bad line in it is reported.
    let (_, stderr) = verify(&format!("{}\nNoSuchKey=1\n", unit_text(SNP_DROP_IN)));
    assert!(
        stderr.contains("snp.conf") && stderr.contains("NoSuchKey"),
        "verify did not load the drop-in: {stderr}"
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

#[test]
fn the_snp_drop_in_adds_the_secure_processor_and_nothing_else() {
    let d = directives(&unit_text(SNP_DROP_IN));
    for (key, value) in &d {
        match key.as_str() {
            "After" => assert_eq!(value, "sys-kernel-config.mount"),
            "DeviceAllow" => assert_eq!(value, "/dev/sev-guest rw"),
            "ReadWritePaths" => assert_eq!(value, &format!("-{TSM_ENTRY}")),
            "ExecStartPre" => {
                // Root only to create the entry and give it to the agent's user.
                assert!(
                    value == &format!("-+/usr/bin/mkdir {TSM_ENTRY}")
                        || value
                            == &format!(
                                "-+/usr/bin/chown -R attestor-agent:attestor-agent {TSM_ENTRY}"
                            ),
                    "unexpected ExecStartPre={value}"
                )
            }
            other => panic!("the SNP drop-in may not set {other}={value}"),
        }
    }
    for key in ["DeviceAllow", "ReadWritePaths", "ExecStartPre"] {
        assert!(d.iter().any(|(k, _)| k == key), "the drop-in lacks {key}");
    }
    // The drop-in hands the entry to the agent's own user, and udev the device to its group.
    let agent = directives(&unit_text(UNITS[0]));
    let user = &agent.iter().find(|(k, _)| k == "User").unwrap().1;
    assert!(unit_text(SNP_DROP_IN).contains(&format!("{user}:{user}")));
    let rule = unit_text("60-attestor-sev-guest.rules");
    let rule = rule.lines().find(|l| !l.starts_with('#')).unwrap();
    assert_eq!(
        rule,
        format!(r#"KERNEL=="sev-guest", SUBSYSTEM=="misc", GROUP="{user}", MODE="0660""#)
    );
}
