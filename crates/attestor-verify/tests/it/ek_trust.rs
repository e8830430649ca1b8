//! EK trust: the shipped vendor trust store (`firmware-profiles/tpm-ek-roots`) loads as a
//! profile's `ek_trust = "vendors"`, and EK certificates are parsed as leniently as the TCG
//! EK Credential Profile requires and no more (certificates made with openssl).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use attestor_verify::evidence::certchain::{self, CertChainError};
use attestor_verify::profiles::Profile;

fn store() -> std::path::PathBuf {
    crate::support::repo_root().join("firmware-profiles/tpm-ek-roots")
}

fn profile_with(dir: &Path, lines: &str) -> Result<Profile, String> {
    let path = dir.join("profile.toml");
    std::fs::write(
        &path,
        format!("name = \"t\"\n[tpm]\npcr_bank = \"sha256\"\nmeasured_pcr = 13\n{lines}\n[tpm.firmware_pcrs]\n"),
    )
    .unwrap();
    Profile::load(&path).map_err(|e| e.to_string())
}

fn certificates_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .matches("-----BEGIN CERTIFICATE-----")
                .count()
        })
        .sum()
}

#[test]
fn the_vendor_store_loads_and_operators_add_and_remove_cas() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = store();
    let count = certificates_in(&shipped);
    assert!(count >= 50, "{count}");
    let profile = profile_with(
        dir.path(),
        &format!("ek_trust = \"vendors\"\nek_vendor_store = {shipped:?}"),
    )
    .unwrap();
    let tpm = profile.tpm.unwrap();
    assert_eq!(tpm.ek_trust_anchors.len(), count);
    for der in &tpm.ek_trust_anchors {
        certchain::check_certificate(der).unwrap();
    }
    // The README documents its origin.
    let readme = std::fs::read_to_string(shipped.join("README.md")).unwrap();
    assert!(readme.contains("keylime"), "{readme}");

    // An operator's copy: one CA removed, one added (their own), one broken file refused.
    let copy = dir.path().join("store");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::remove_file(copy.join("IFX1.pem")).unwrap();
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=Operator EK CA",
            "-keyout",
            "own.key",
            "-out",
            "store/operator.pem",
            "-days",
            "30",
        ],
    );
    let lines = format!("ek_trust = \"vendors\"\nek_vendor_store = {copy:?}");
    let tpm = profile_with(dir.path(), &lines).unwrap().tpm.unwrap();
    assert_eq!(tpm.ek_trust_anchors.len(), count - 1 + 1);
    std::fs::write(
        copy.join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = profile_with(dir.path(), &lines).unwrap_err();
    assert!(err.contains("broken.pem"), "{err}");

    // The store is explicit: without ek_trust = "vendors" it is not used, and naming it
    // then is a mistake.
    let err = profile_with(dir.path(), &format!("ek_vendor_store = {shipped:?}")).unwrap_err();
    assert!(err.contains("ek_trust"), "{err}");
    let err = profile_with(dir.path(), "ek_trust = \"everyone\"").unwrap_err();
    assert!(err.contains("unknown variant"), "{err}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(attestor_testkit::require_tool("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An EK certificate for a fresh key, issued by `ca` with `extensions` and `subject`.
fn ek_certificate(dir: &Path, name: &str, subject: &str, extensions: &str) -> Vec<u8> {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &format!("{name}.key"),
        ],
    );
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            &format!("{name}.key"),
            "-pubout",
            "-out",
            &format!("{name}.pub"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.cnf")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-new",
            "-force_pubkey",
            &format!("{name}.pub"),
            "-subj",
            subject,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-days",
            "30",
            "-extfile",
            &format!("{name}.cnf"),
            "-extensions",
            "ek",
            "-outform",
            "DER",
            "-out",
            &format!("{name}.der"),
        ],
    );
    std::fs::read(dir.join(format!("{name}.der"))).unwrap()
}

const TPM_SAN: &str = "subjectAltName = critical,dirName:tpm_dn\n[tpm_dn]\n\
     m.2.23.133.2.1 = id:49465800\nm.2.23.133.2.2 = SLB9670\nm.2.23.133.2.3 = id:0007003D\n";

#[test]
fn ek_certificates_are_parsed_as_the_tcg_profile_allows_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-subj",
            "/O=Vendor/CN=Vendor EK Root",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
        ],
    );
    let ca =
        certchain::pem_to_der_all(&std::fs::read_to_string(dir.join("ca.pem")).unwrap()).unwrap();
    let verify = |leaf: &[u8]| certchain::verify_chain(leaf, &[], &ca, SystemTime::now());
    let ek = "[ek]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,keyEncipherment\n\
              extendedKeyUsage = 2.23.133.8.1\n";

    // As vendors issue them: empty subject, critical SAN of TPM manufacturer attributes.
    let tcg = ek_certificate(dir, "tcg", "/", &format!("{ek}{TPM_SAN}"));
    verify(&tcg).unwrap();
    // An empty subject with nothing naming the TPM, or naming it in a non-critical SAN.
    let unnamed = ek_certificate(dir, "unnamed", "/", ek);
    assert!(matches!(
        verify(&unnamed),
        Err(CertChainError::UnnamedSubject { .. })
    ));
    let soft = ek_certificate(
        dir,
        "soft",
        "/",
        &format!("{ek}{}", TPM_SAN.replace("critical,", "")),
    );
    assert!(matches!(
        verify(&soft),
        Err(CertChainError::UnnamedSubject { .. })
    ));
    // A subject and a non-critical SAN are fine too.
    let named = ek_certificate(
        dir,
        "named",
        "/CN=tpm-ek",
        &format!("{ek}{}", TPM_SAN.replace("critical,", "")),
    );
    verify(&named).unwrap();
    // A critical extension nobody processes is refused, EK certificate or not.
    let unknown = ek_certificate(
        dir,
        "unknown",
        "/",
        &format!("{ek}1.2.3.4.5 = critical,ASN1:NULL\n{TPM_SAN}"),
    );
    assert!(matches!(
        verify(&unknown),
        Err(CertChainError::UnhandledCriticalExtension { .. })
    ));
}

/// A P-521 EK (template H-4) has a P-521 key in its certificate, and a CA may sign with
/// ECDSA and SHA-512 on any NIST curve: the chain verifies and the key is read as P-521.
#[test]
fn p521_ek_certificates_and_sha512_signatures_verify() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (ca_curve, digest) in [
        ("P-521", "-sha512"),
        ("P-384", "-sha512"),
        ("P-521", "-sha384"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{ca_curve}"),
                "-nodes",
                "-subj",
                "/O=Vendor/CN=Vendor EK Root",
                digest,
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
            ],
        );
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
                "-out",
                "ek.key",
            ],
        );
        openssl(dir, &["pkey", "-in", "ek.key", "-pubout", "-out", "ek.pub"]);
        std::fs::write(
            dir.join("ek.cnf"),
            format!(
                "[ek]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,keyAgreement\n\
                 extendedKeyUsage = 2.23.133.8.1\n{TPM_SAN}"
            ),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-new",
                "-force_pubkey",
                "ek.pub",
                "-subj",
                "/",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                digest,
                "-days",
                "30",
                "-extfile",
                "ek.cnf",
                "-extensions",
                "ek",
                "-outform",
                "DER",
                "-out",
                "ek.der",
            ],
        );
        let ca = certchain::pem_to_der_all(&std::fs::read_to_string(dir.join("ca.pem")).unwrap())
            .unwrap();
        let leaf = std::fs::read(dir.join("ek.der")).unwrap();
        certchain::verify_chain(&leaf, &[], &ca, SystemTime::now())
            .unwrap_or_else(|e| panic!("{ca_curve} CA, {digest}: {e}"));
        match certchain::public_key_of(&leaf).unwrap() {
            certchain::PublicKey::Ec { curve, sec1_point } => {
                assert_eq!(curve, certchain::EcCurve::P521);
                assert_eq!(sec1_point.len(), 1 + 2 * 66);
            }
            other => panic!("not an EC key: {other:?}"),
        }
        // The signature covers the certificate: one flipped byte in it is refused.
        let mut forged = leaf.clone();
        let last = forged.len() - 3;
        forged[last] ^= 1;
        assert!(certchain::verify_chain(&forged, &[], &ca, SystemTime::now()).is_err());
    }
}
