//! Keys resident under persistent handles (TPM2_EvictControl) on swtpm: they sign, quote
//! and certify as the re-created ones do, a later connection adopts them, and a handle
//! holding anything that is not our key (another program's key, a stale AK) is refused
//! and left as it was, at adoption and at every use.

use std::process::Command;

use crate::support::Swtpm;
use attestor_platform::tpm::persistent::{DEFAULT_AK_HANDLE, DEFAULT_SRK_HANDLE};
use attestor_platform::tpm::{KeyBlob, PersistentHandles, Tpm, TpmError};
use attestor_verify::evidence::tpm::keys::SigningAlgorithm;
use attestor_verify::evidence::tpm::wire::{self, Attested};
use attestor_verify::evidence::tpm::HashAlg;
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

const PCR: u8 = 13;

fn handles() -> PersistentHandles {
    PersistentHandles::default()
}

fn hex_handle(handle: u32) -> String {
    format!("{handle:#010x}")
}

/// A tpm2-tools command against `sw`, run in `dir`; panics naming the output on failure.
fn tool(sw: &Swtpm, dir: &std::path::Path, name: &str, args: &[&str]) -> String {
    crate::support::require_tool(name);
    let out = Command::new(name)
        .args(args)
        .env("TPM2TOOLS_TCTI", sw.tcti())
        .env("TSS2_LOG", "all+none")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The persistent handles the TPM lists.
fn persistent_handles(sw: &Swtpm) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    tool(sw, dir.path(), "tpm2_getcap", &["handles-persistent"])
        .lines()
        .map(|l| l.trim_start_matches("- ").trim().to_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The Name tpm2-tools reads for `handle`.
fn name_at(sw: &Swtpm, handle: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = tool(
        sw,
        dir.path(),
        "tpm2_readpublic",
        &["-c", &hex_handle(handle)],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap()
        .trim()
        .to_string()
}

/// Another program's key persisted at `handle` (an ECC P-256 primary of the owner).
fn persist_foreign_key(sw: &Swtpm, handle: u32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tool(
        sw,
        d,
        "tpm2_createprimary",
        &["-C", "o", "-G", "ecc256", "-c", "p.ctx"],
    );
    tool(
        sw,
        d,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "p.ctx", &hex_handle(handle)],
    );
    tool(sw, d, "tpm2_flushcontext", &["-t"]);
}

fn evict(sw: &Swtpm, handle: u32) {
    let dir = tempfile::tempdir().unwrap();
    tool(
        sw,
        dir.path(),
        "tpm2_evictcontrol",
        &["-C", "o", "-c", &hex_handle(handle)],
    );
}

/// `attest` is signed by the AK blob's key.
fn check_signed(ak: &KeyBlob, attest: &[u8], signature: &[u8]) {
    let key = wire::parse_public(&Tpm::public_of(ak).unwrap())
        .unwrap()
        .sec1_uncompressed()
        .unwrap();
    let sig = wire::parse_signature(signature)
        .unwrap()
        .to_fixed(48)
        .unwrap();
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &key)
        .verify(attest, &sig)
        .expect("signed by the AK");
}

/// A quote by the AK blob's key carrying `nonce`.
fn check_quote(ak: &KeyBlob, attest: &[u8], signature: &[u8], nonce: &[u8]) {
    check_signed(ak, attest, signature);
    let parsed = wire::parse_attest(attest).unwrap();
    assert_eq!(parsed.extra_data, nonce);
    assert!(matches!(parsed.attested, Attested::Quote { .. }));
}

#[test]
fn resident_keys_sign_quote_and_certify_as_re_created_ones_do() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let before = persistent_handles(&sw);
    tpm.use_persistent_keys(handles(), &ak).unwrap();
    assert!(tpm.uses_persistent_keys());
    let after = persistent_handles(&sw);
    assert_eq!(after.len(), before.len() + 2, "{before:?} -> {after:?}");
    for h in [DEFAULT_SRK_HANDLE, DEFAULT_AK_HANDLE] {
        assert!(after.contains(&hex_handle(h)), "{after:?} lacks {h:#x}");
    }
    assert_eq!(
        name_at(&sw, DEFAULT_AK_HANDLE),
        hex::encode(wire::object_name(&ak.public, HashAlg::Sha384))
    );

    // The sealed key is made and used under the resident storage key.
    let sealed = tpm
        .create_sealed_key(SigningAlgorithm::EcdsaP384, HashAlg::Sha384, &[PCR])
        .unwrap();
    let digest = HashAlg::Sha384.digest(b"payload");
    tpm.sign_sealed(&sealed, HashAlg::Sha384, &[PCR], &digest)
        .unwrap();
    let (attest, signature) = tpm
        .quote(&ak, &[7; 32], HashAlg::Sha384, &[0, PCR])
        .unwrap();
    check_quote(&ak, &attest, &signature, &[7; 32]);
    let (cert_attest, cert_sig) = tpm.certify_sealed(&ak, &sealed, b"certify").unwrap();
    check_signed(&ak, &cert_attest, &cert_sig);

    // The resident storage key is the template's key: a connection re-creating it loads
    // the same blob, and the resident AK is the blob's AK.
    drop(tpm);
    let mut transient = Tpm::open(&sw.tcti()).unwrap();
    assert!(!transient.uses_persistent_keys());
    transient
        .sign_sealed(&sealed, HashAlg::Sha384, &[PCR], &digest)
        .unwrap();
    let (attest, signature) = transient
        .quote(&ak, &[9; 32], HashAlg::Sha384, &[PCR])
        .unwrap();
    check_quote(&ak, &attest, &signature, &[9; 32]);
}

#[test]
fn a_later_connection_adopts_the_resident_keys_without_persisting_again() {
    let sw = Swtpm::start();
    let ak = {
        let mut tpm = Tpm::open(&sw.tcti()).unwrap();
        let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
        tpm.use_persistent_keys(handles(), &ak).unwrap();
        ak
    };
    let listed = persistent_handles(&sw);
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    tpm.use_persistent_keys(handles(), &ak).unwrap();
    assert_eq!(persistent_handles(&sw), listed);
    let (attest, signature) = tpm.quote(&ak, b"n", HashAlg::Sha384, &[PCR]).unwrap();
    check_quote(&ak, &attest, &signature, b"n");
}

#[test]
fn another_programs_key_at_the_storage_handle_is_refused_and_left_alone() {
    let sw = Swtpm::start();
    persist_foreign_key(&sw, DEFAULT_SRK_HANDLE);
    let foreign = name_at(&sw, DEFAULT_SRK_HANDLE);
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let err = tpm.use_persistent_keys(handles(), &ak).unwrap_err();
    assert!(
        matches!(&err, TpmError::PersistentHandleTaken { handle, what: "storage key", found }
            if *handle == DEFAULT_SRK_HANDLE && found == &foreign),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("tpm2_evictcontrol -C o -c 0x8100a77a"),
        "{err}"
    );
    assert!(!tpm.uses_persistent_keys());
    assert_eq!(name_at(&sw, DEFAULT_SRK_HANDLE), foreign, "left as it was");
    // Another handle of the owner's range works.
    let elsewhere = PersistentHandles {
        srk: 0x8100_A700,
        ak: DEFAULT_AK_HANDLE,
    };
    tpm.use_persistent_keys(elsewhere, &ak).unwrap();
    let sealed = tpm
        .create_sealed_key(SigningAlgorithm::EcdsaP384, HashAlg::Sha384, &[PCR])
        .unwrap();
    tpm.sign_sealed(&sealed, HashAlg::Sha384, &[PCR], &[1; 48])
        .unwrap();
}

#[test]
fn a_stale_ak_at_the_ak_handle_is_refused_until_evicted() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let old = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    tpm.use_persistent_keys(handles(), &old).unwrap();
    drop(tpm);

    // The agent's state was lost and it made a new AK: the old one is not provably ours.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let new = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    assert!(matches!(
        tpm.use_persistent_keys(handles(), &new),
        Err(TpmError::PersistentHandleTaken { handle, what: "AK", .. }) if handle == DEFAULT_AK_HANDLE
    ));
    assert_eq!(
        name_at(&sw, DEFAULT_AK_HANDLE),
        hex::encode(wire::object_name(&old.public, HashAlg::Sha384))
    );
    evict(&sw, DEFAULT_AK_HANDLE);
    tpm.use_persistent_keys(handles(), &new).unwrap();
    let (attest, signature) = tpm.quote(&new, b"n", HashAlg::Sha384, &[PCR]).unwrap();
    check_quote(&new, &attest, &signature, b"n");
}

#[test]
fn a_resident_key_replaced_after_adoption_is_refused_at_use() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    tpm.use_persistent_keys(handles(), &ak).unwrap();
    let sealed = tpm
        .create_sealed_key(SigningAlgorithm::EcdsaP384, HashAlg::Sha384, &[PCR])
        .unwrap();

    evict(&sw, DEFAULT_AK_HANDLE);
    persist_foreign_key(&sw, DEFAULT_AK_HANDLE);
    assert!(matches!(
        tpm.quote(&ak, b"n", HashAlg::Sha384, &[PCR]),
        Err(TpmError::PersistentKeyChanged { what: "AK", .. })
    ));

    evict(&sw, DEFAULT_SRK_HANDLE);
    persist_foreign_key(&sw, DEFAULT_SRK_HANDLE);
    assert!(matches!(
        tpm.sign_sealed(&sealed, HashAlg::Sha384, &[PCR], &[1; 48]),
        Err(TpmError::PersistentKeyChanged {
            what: "storage key",
            ..
        })
    ));
}

#[test]
fn handles_outside_the_owners_range_are_refused() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    for bad in [
        PersistentHandles {
            srk: 0x8180_0000, // the platform's range
            ak: DEFAULT_AK_HANDLE,
        },
        PersistentHandles {
            srk: DEFAULT_SRK_HANDLE,
            ak: DEFAULT_SRK_HANDLE,
        },
    ] {
        assert!(matches!(
            tpm.use_persistent_keys(bad, &ak),
            Err(TpmError::PersistentHandleRange(_))
        ));
    }
    assert!(!persistent_handles(&sw).contains(&hex_handle(DEFAULT_SRK_HANDLE)));
}

/// On a TPM with only the RSA EK certificate and the sha256 bank, an RSA AK becomes
/// resident (loaded under the RSA EK through its policy) with a storage key of its type;
/// a sealed key of another type still works, under a storage key re-created for it.
#[test]
fn resident_keys_follow_the_ak_algorithm_on_an_rsa_ek() {
    use attestor_verify::evidence::tpm::keys::TpmSigningKey;
    let mut sw = Swtpm::start();
    sw.provision_like_discrete_tpm();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let rsa = SigningAlgorithm::Rsassa2048;
    let ak = tpm.create_ak(rsa).unwrap();
    tpm.use_persistent_keys(handles(), &ak).unwrap();
    assert_eq!(
        name_at(&sw, DEFAULT_AK_HANDLE),
        hex::encode(wire::object_name(&ak.public, HashAlg::Sha256))
    );
    let ak_key = TpmSigningKey::from_public(&Tpm::public_of(&ak).unwrap()).unwrap();
    for alg in [rsa, SigningAlgorithm::EcdsaP256] {
        let sealed = tpm.create_sealed_key(alg, HashAlg::Sha256, &[PCR]).unwrap();
        let message = b"payload";
        let signature = tpm
            .sign_sealed(
                &sealed,
                HashAlg::Sha256,
                &[PCR],
                &alg.hash().digest(message),
            )
            .unwrap();
        TpmSigningKey::from_public(&Tpm::public_of(&sealed).unwrap())
            .unwrap()
            .verify_tpm_signature(message, &signature)
            .unwrap();
        let (attest, certification) = tpm.certify_sealed(&ak, &sealed, b"certify").unwrap();
        ak_key
            .verify_tpm_signature(&attest, &certification)
            .unwrap();
    }
    let (quote, signature) = tpm
        .quote(&ak, &[7; 32], HashAlg::Sha256, &[0, PCR])
        .unwrap();
    ak_key.verify_tpm_signature(&quote, &signature).unwrap();
}
