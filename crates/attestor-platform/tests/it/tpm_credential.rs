//! Credential activation against swtpm: software TPM2_MakeCredential (verifier side,
//! `credential`) against TPM2_ActivateCredential on a real TPM (`Tpm::activate_credential`),
//! cross-checked with tpm2-tools' independent software MakeCredential.
//! Run with `cargo test --test tpm_credential`; swtpm, swtpm-tools and tpm2-tools must be
//! installed (the tests fail, naming the tool, when one is missing).

use std::process::Command;

use crate::support::Swtpm;
use attestor_platform::tpm::{EkSource, KeyBlob, Tpm, TpmError};
use attestor_verify::evidence::tpm::credential::{
    self, challenge_for, make_credential, CredentialError, MadeCredential,
};
use attestor_verify::evidence::tpm::keys::{parse_tpm_public, SigningAlgorithm};
use attestor_verify::evidence::tpm::wire;

fn open(sw: &Swtpm) -> Tpm {
    Tpm::open(&sw.tcti()).unwrap()
}

fn ak_name(ak: &KeyBlob) -> Vec<u8> {
    credential::ak_name(&Tpm::public_of(ak).unwrap()).unwrap()
}

fn assert_refused(result: Result<Vec<u8>, TpmError>, secret: &[u8], what: &str) {
    match result {
        Err(TpmError::CredentialRefused { .. }) => {}
        Ok(out) => {
            assert_ne!(out, secret, "{what}: activation returned the secret");
            panic!("{what}: activation succeeded");
        }
        Err(e) => panic!("{what}: expected CredentialRefused, got {e:?}"),
    }
}

#[test]
fn software_credential_activates_to_exactly_the_secret() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ek_public = tpm.ek_public().unwrap();
    let ek = wire::parse_public(&ek_public).unwrap();
    // swtpm's P-384 EK follows the TCG high-range template: SHA-384 and AES-256-CFB.
    assert_eq!(ek.name_alg.digest_len(), 48);
    let sym = ek.symmetric.unwrap();
    assert_eq!((sym.alg, sym.key_bits, sym.mode), (0x0006, 256, 0x0043));

    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let ak_public = Tpm::public_of(&ak).unwrap();
    let (secret, made) = challenge_for(&ek_public, &ak_public).unwrap();
    assert_eq!(secret.len(), 48);
    // TPMS_ECC_POINT of a P-384 ephemeral key; TPMS_ID_OBJECT with a SHA-384 HMAC.
    assert_eq!(made.encrypted_secret.len(), 2 + 48 + 2 + 48);
    assert_eq!(made.credential_blob.len(), 2 + 48 + 2 + 48);
    let out = tpm
        .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert!(credential::secret_matches(&secret, &out));

    // Any secret length up to the digest size, many times (leading-zero coordinates and
    // shared secrets must be handled as the TPM does), and every context is flushed.
    for len in [1usize, 16, 32, 47, 48, 20, 5, 48, 31, 48, 1, 2] {
        let secret: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let made = make_credential(&ek_public, &ak_name(&ak), &secret).unwrap();
        let out = tpm
            .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
            .unwrap();
        assert_eq!(out, secret, "secret of {len} bytes");
    }
}

#[test]
fn ak_name_is_checked_on_the_verifier_side() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let other = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let public = Tpm::public_of(&ak).unwrap();
    assert!(credential::check_ak_name(&public, &ak_name(&ak)).is_ok());
    assert_eq!(
        credential::check_ak_name(&public, &ak_name(&other)),
        Err(CredentialError::AkNameMismatch)
    );
    // The Name is nameAlg || SHA-384(TPMT_PUBLIC), as the TPM computes it.
    let name = ak_name(&ak);
    assert_eq!(&name[..2], &[0x00, 0x0c]);
    assert_eq!(
        name,
        wire::object_name(&public, attestor_verify::evidence::tpm::HashAlg::Sha384)
    );
    let ek_public = tpm.ek_public().unwrap();
    assert!(matches!(
        make_credential(&ek_public, &name, &[0u8; 49]),
        Err(CredentialError::SecretLength { len: 49, max: 48 })
    ));
    assert!(matches!(
        make_credential(&ek_public, &name, &[]),
        Err(CredentialError::SecretLength { len: 0, .. })
    ));
    assert!(matches!(
        make_credential(&ek_public, &name[..40], b"s"),
        Err(CredentialError::MalformedName { .. })
    ));
    // The AK is a signing key, not a storage key: nothing can be protected to it.
    assert_eq!(
        make_credential(&public, &name, b"s"),
        Err(CredentialError::EkNotStorageKey)
    );
}

#[test]
fn credential_for_another_ak_does_not_activate() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ek_public = tpm.ek_public().unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let other = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let secret = b"for the other AK only".to_vec();
    let made = make_credential(&ek_public, &ak_name(&other), &secret).unwrap();
    assert_refused(
        tpm.activate_credential(&ak, &made.credential_blob, &made.encrypted_secret),
        &secret,
        "credential bound to another AK Name",
    );
    // The same credential activates with the AK it names: the refusal was about the Name.
    let out = tpm
        .activate_credential(&other, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(out, secret);
}

#[test]
fn credential_for_another_tpms_ek_does_not_activate() {
    let sw = Swtpm::start();
    let foreign = Swtpm::start_with_own_ca();
    let mut tpm = open(&sw);
    let foreign_ek = open(&foreign).ek_public().unwrap();
    assert_ne!(
        foreign_ek,
        tpm.ek_public().unwrap(),
        "the two TPMs share an EK"
    );
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let secret = [0x5a; 48];
    let made = make_credential(&foreign_ek, &ak_name(&ak), &secret).unwrap();
    assert_refused(
        tpm.activate_credential(&ak, &made.credential_blob, &made.encrypted_secret),
        &secret,
        "credential made for another TPM's EK",
    );
}

#[test]
fn tampered_credentials_do_not_activate_and_leak_nothing() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ek_public = tpm.ek_public().unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let ak_public = Tpm::public_of(&ak).unwrap();
    let (secret, made) = challenge_for(&ek_public, &ak_public).unwrap();

    // Bytes in the HMAC size, the HMAC, the encrypted size and the encrypted secret.
    for index in [1usize, 2, 30, 49, 50, 51, 52, 90, 99] {
        let mut blob = made.credential_blob.clone();
        blob[index] ^= 0x01;
        assert_refused(
            tpm.activate_credential(&ak, &blob, &made.encrypted_secret),
            &secret,
            &format!("credential blob byte {index} flipped"),
        );
    }
    // Ephemeral x and y (the point leaves the curve, or a different seed results).
    for index in [1usize, 2, 25, 49, 51, 52, 80, 99] {
        let mut point = made.encrypted_secret.clone();
        point[index] ^= 0x01;
        assert_refused(
            tpm.activate_credential(&ak, &made.credential_blob, &point),
            &secret,
            &format!("encrypted secret byte {index} flipped"),
        );
    }
    // Truncated inputs.
    assert_refused(
        tpm.activate_credential(&ak, &made.credential_blob[..60], &made.encrypted_secret),
        &secret,
        "truncated credential blob",
    );
    assert!(tpm
        .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret[..50])
        .is_err());
    // Oversized or empty inputs never reach the TPM.
    assert!(matches!(
        tpm.activate_credential(&ak, &vec![0; 4096], &made.encrypted_secret),
        Err(TpmError::MalformedCredential { .. })
    ));
    assert!(matches!(
        tpm.activate_credential(&ak, &made.credential_blob, &[]),
        Err(TpmError::MalformedCredential { .. })
    ));

    // After twenty failures (more than swtpm's three object and session slots) the
    // genuine credential still activates: every path flushed its contexts.
    let out = tpm
        .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(out, secret);
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tpm2b(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// tpm2-tools against one swtpm, each run in a directory of their own.
struct Tpm2Tools {
    dir: tempfile::TempDir,
    tcti: String,
}

impl Tpm2Tools {
    /// For the EK credential tests: fails the test, naming the tool, unless every
    /// tpm2-tools command they run is installed.
    fn for_ek_credentials(sw: &Swtpm) -> Self {
        for tool in [
            "tpm2_createprimary",
            "tpm2_readpublic",
            "tpm2_makecredential",
            "tpm2_startauthsession",
            "tpm2_policysecret",
            "tpm2_policyor",
            "tpm2_load",
            "tpm2_activatecredential",
            "tpm2_flushcontext",
        ] {
            crate::support::require_tool(tool);
        }
        Tpm2Tools {
            dir: tempfile::tempdir().unwrap(),
            tcti: sw.tcti(),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, name: &str) -> Command {
        let mut cmd = Command::new(name);
        cmd.env("TPM2TOOLS_TCTI", &self.tcti)
            .env("TSS2_LOG", "all+none")
            .current_dir(self.dir.path());
        cmd
    }

    /// The TPMT_PUBLIC of the key at persistent `handle`, as tpm2_readpublic reads it.
    fn read_public(&self, handle: &str) -> Vec<u8> {
        run(self
            .cmd("tpm2_readpublic")
            .args(["-c", handle, "-o", "ek.pub"]));
        wire::strip_tpm2b(&std::fs::read(self.path("ek.pub")).unwrap())
            .unwrap()
            .to_vec()
    }
}

/// `tpm2_activatecredential` (after `tpm2_load`), each in an EK policy session of `hash`
/// (PolicySecret on the endorsement hierarchy, then PolicyOR of the published PolicyA and
/// PolicyC), recovers `made`'s secret for `ak` under the EK at handle `ek`.
fn tpm2_tools_activate(
    tools: &Tpm2Tools,
    ak: &KeyBlob,
    made: &MadeCredential,
    ek: &str,
    hash: &str,
    (policy_a, policy_c): (&str, &str),
) -> Vec<u8> {
    let (path, tool) = (|name: &str| tools.path(name), |name: &str| tools.cmd(name));
    std::fs::write(path("ak.pub"), tpm2b(&ak.public)).unwrap();
    std::fs::write(path("ak.priv"), tpm2b(&ak.private)).unwrap();
    std::fs::write(path("a.bin"), hex::decode(policy_a).unwrap()).unwrap();
    std::fs::write(path("c.bin"), hex::decode(policy_c).unwrap()).unwrap();
    std::fs::write(path("ours.out"), made.to_tpm2_tools_file().unwrap()).unwrap();
    let branches = format!("{hash}:a.bin,c.bin");
    let ek_session = |session: &str| {
        run(tool("tpm2_startauthsession").args(["--policy-session", "-g", hash, "-S", session]));
        run(tool("tpm2_policysecret").args(["-S", session, "-c", "e"]));
        run(tool("tpm2_policyor").args(["-S", session, "-l", &branches]));
    };
    ek_session("load.ctx");
    run(tool("tpm2_load").args([
        "-C",
        ek,
        "-P",
        "session:load.ctx",
        "-u",
        "ak.pub",
        "-r",
        "ak.priv",
        "-c",
        "ak.ctx",
    ]));
    run(tool("tpm2_flushcontext").arg("load.ctx"));
    ek_session("activate.ctx");
    run(tool("tpm2_activatecredential").args([
        "-c",
        "ak.ctx",
        "-C",
        ek,
        "-P",
        "session:activate.ctx",
        "-i",
        "ours.out",
        "-o",
        "secret.out",
    ]));
    run(tool("tpm2_flushcontext").arg("activate.ctx"));
    std::fs::read(path("secret.out")).unwrap()
}

#[test]
fn tpm2_tools_makecredential_interoperates() {
    crate::support::require_tool("tpm2_makecredential");
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ek_public = tpm.ek_public().unwrap();
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let name = ak_name(&ak);
    let dir = tempfile::tempdir().unwrap();
    let ek_file = dir.path().join("ek.pub");
    let secret_file = dir.path().join("secret.bin");
    let cred_file = dir.path().join("cred.out");
    // tpm2-tools reads the EK as TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC).
    std::fs::write(&ek_file, tpm2b(&ek_public)).unwrap();
    let secret = b"tpm2-tools made this credential!".to_vec();
    std::fs::write(&secret_file, &secret).unwrap();
    run(Command::new("tpm2_makecredential")
        .args(["-T", "none", "-u"])
        .arg(&ek_file)
        .arg("-s")
        .arg(&secret_file)
        .arg("-n")
        .arg(hex::encode(&name))
        .arg("-o")
        .arg(&cred_file));
    let file = std::fs::read(&cred_file).unwrap();
    let theirs = MadeCredential::from_tpm2_tools_file(&file).unwrap();
    // Same layout as ours: the file's two TPM2Bs are exactly the TPM's two parameters.
    assert_eq!(theirs.encrypted_secret.len(), 2 + 48 + 2 + 48);
    assert_eq!(theirs.credential_blob.len(), 2 + 48 + 2 + secret.len());
    let out = tpm
        .activate_credential(&ak, &theirs.credential_blob, &theirs.encrypted_secret)
        .unwrap();
    assert_eq!(out, secret);

    // Our file writer produces what tpm2-tools writes, so tpm2_activatecredential could
    // consume it; the round trip through the format activates on the TPM as well.
    let ours = make_credential(&ek_public, &name, &secret).unwrap();
    let ours_file = ours.to_tpm2_tools_file().unwrap();
    assert_eq!(ours_file.len(), file.len());
    assert_eq!(&ours_file[..8], &file[..8]);
    let back = MadeCredential::from_tpm2_tools_file(&ours_file).unwrap();
    let out = tpm
        .activate_credential(&ak, &back.credential_blob, &back.encrypted_secret)
        .unwrap();
    assert_eq!(out, secret);
}

/// EK policy branches of the TCG EK Credential Profile (SHA-384): PolicyA, PolicyC.
const EK_POLICY_A_SHA384: &str = "8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e143e8bb1133824ccb431053871c6db53";
const EK_POLICY_C_SHA384: &str = "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165";
/// Where swtpm_setup persists the P-384 EK.
const EK_PERSISTENT_P384: &str = "0x81010016";
/// A free persistent handle for a P-256 EK (swtpm_setup uses 0x81010001 for RSA).
const EK_PERSISTENT_P256: &str = "0x81010002";

#[test]
fn tpm2_activatecredential_accepts_our_credential() {
    for tool in [
        "tpm2_startauthsession",
        "tpm2_policysecret",
        "tpm2_policyor",
        "tpm2_load",
        "tpm2_activatecredential",
        "tpm2_flushcontext",
    ] {
        crate::support::require_tool(tool);
    }
    let sw = Swtpm::start();
    let (ak, made, secret) = {
        let mut tpm = open(&sw);
        let ek_public = tpm.ek_public().unwrap();
        let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
        let secret = b"activated by tpm2-tools, not us".to_vec();
        let made = make_credential(&ek_public, &ak_name(&ak), &secret).unwrap();
        (ak, made, secret)
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ak.pub"), tpm2b(&ak.public)).unwrap();
    std::fs::write(path("ak.priv"), tpm2b(&ak.private)).unwrap();
    std::fs::write(path("a.bin"), hex::decode(EK_POLICY_A_SHA384).unwrap()).unwrap();
    std::fs::write(path("c.bin"), hex::decode(EK_POLICY_C_SHA384).unwrap()).unwrap();
    std::fs::write(path("cred.out"), made.to_tpm2_tools_file().unwrap()).unwrap();
    let tool = |name: &str| {
        let mut cmd = Command::new(name);
        cmd.env("TPM2TOOLS_TCTI", sw.tcti())
            .env("TSS2_LOG", "all+none")
            .current_dir(dir.path());
        cmd
    };
    // A policy session satisfying the EK's PolicyB: PolicySecret(endorsement), PolicyOR.
    let ek_session = |session: &str| {
        run(tool("tpm2_startauthsession").args([
            "--policy-session",
            "-g",
            "sha384",
            "-S",
            session,
        ]));
        run(tool("tpm2_policysecret").args(["-S", session, "-c", "e"]));
        run(tool("tpm2_policyor").args(["-S", session, "-l", "sha384:a.bin,c.bin"]));
    };
    ek_session("load.ctx");
    run(tool("tpm2_load").args([
        "-C",
        EK_PERSISTENT_P384,
        "-P",
        "session:load.ctx",
        "-u",
        "ak.pub",
        "-r",
        "ak.priv",
        "-c",
        "ak.ctx",
    ]));
    run(tool("tpm2_flushcontext").arg("load.ctx"));
    ek_session("activate.ctx");
    run(tool("tpm2_activatecredential").args([
        "-c",
        "ak.ctx",
        "-C",
        EK_PERSISTENT_P384,
        "-P",
        "session:activate.ctx",
        "-i",
        "cred.out",
        "-o",
        "secret.out",
    ]));
    run(tool("tpm2_flushcontext").arg("activate.ctx"));
    assert_eq!(std::fs::read(path("secret.out")).unwrap(), secret);
}

#[test]
fn p256_ek_credential_activates_with_tpm2_tools() {
    for tool in [
        "tpm2_createek",
        "tpm2_createak",
        "tpm2_startauthsession",
        "tpm2_policysecret",
        "tpm2_activatecredential",
        "tpm2_flushcontext",
    ] {
        crate::support::require_tool(tool);
    }
    let sw = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let tool = |name: &str| {
        let mut cmd = Command::new(name);
        cmd.env("TPM2TOOLS_TCTI", sw.tcti())
            .env("TSS2_LOG", "all+none")
            .current_dir(dir.path());
        cmd
    };
    // The low-range P-256 EK (SHA-256, AES-128-CFB, PolicyA) and an AK under it.
    // Persisted, since a saved context of it would not load again next to the AK.
    run(tool("tpm2_createek").args(["-c", EK_PERSISTENT_P256, "-G", "ecc", "-u", "ek.pub"]));
    run(tool("tpm2_createak").args([
        "-C",
        EK_PERSISTENT_P256,
        "-c",
        "ak.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
    ]));
    let ek_file = std::fs::read(path("ek.pub")).unwrap();
    let ek_public = wire::strip_tpm2b(&ek_file).unwrap();
    let ek = wire::parse_public(ek_public).unwrap();
    assert_eq!(ek.curve, wire::TPM_ECC_NIST_P256);
    let sym = ek.symmetric.unwrap();
    assert_eq!((sym.key_bits, sym.mode), (128, 0x0043));
    let name = std::fs::read(path("ak.name")).unwrap();
    let secret = b"a P-256 EK's credential".to_vec();
    let made = make_credential(ek_public, &name, &secret).unwrap();
    std::fs::write(path("cred.out"), made.to_tpm2_tools_file().unwrap()).unwrap();
    run(tool("tpm2_startauthsession").args(["--policy-session", "-S", "s.ctx"]));
    run(tool("tpm2_policysecret").args(["-S", "s.ctx", "-c", "e"]));
    run(tool("tpm2_activatecredential").args([
        "-c",
        "ak.ctx",
        "-C",
        EK_PERSISTENT_P256,
        "-P",
        "session:s.ctx",
        "-i",
        "cred.out",
        "-o",
        "secret.out",
    ]));
    run(tool("tpm2_flushcontext").arg("s.ctx"));
    assert_eq!(std::fs::read(path("secret.out")).unwrap(), secret);
}

/// Where swtpm_setup persists the RSA-2048 EK.
const EK_PERSISTENT_RSA: &str = "0x81010001";

#[test]
fn rsa_ek_credential_activates_with_tpm2_tools() {
    for tool in [
        "tpm2_readpublic",
        "tpm2_createak",
        "tpm2_startauthsession",
        "tpm2_policysecret",
        "tpm2_activatecredential",
        "tpm2_flushcontext",
    ] {
        crate::support::require_tool(tool);
    }
    let sw = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let tool = |name: &str| {
        let mut cmd = Command::new(name);
        cmd.env("TPM2TOOLS_TCTI", sw.tcti())
            .env("TSS2_LOG", "all+none")
            .current_dir(dir.path());
        cmd
    };
    run(tool("tpm2_readpublic").args(["-c", EK_PERSISTENT_RSA, "-o", "ek.pub"]));
    run(tool("tpm2_createak").args([
        "-C",
        EK_PERSISTENT_RSA,
        "-c",
        "ak.ctx",
        "-G",
        "rsa",
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
    ]));
    let ek_file = std::fs::read(path("ek.pub")).unwrap();
    let ek_public = wire::strip_tpm2b(&ek_file).unwrap();
    assert_eq!(&ek_public[..2], &[0x00, 0x01], "not an RSA EK");
    let name = std::fs::read(path("ak.name")).unwrap();
    let secret = b"an RSA-2048 EK's credential".to_vec();
    let made = make_credential(ek_public, &name, &secret).unwrap();
    // RSA-OAEP ciphertext of the seed, as long as the modulus.
    assert_eq!(made.encrypted_secret.len(), 256);
    std::fs::write(path("cred.out"), made.to_tpm2_tools_file().unwrap()).unwrap();
    run(tool("tpm2_startauthsession").args(["--policy-session", "-S", "s.ctx"]));
    run(tool("tpm2_policysecret").args(["-S", "s.ctx", "-c", "e"]));
    run(tool("tpm2_activatecredential").args([
        "-c",
        "ak.ctx",
        "-C",
        EK_PERSISTENT_RSA,
        "-P",
        "session:s.ctx",
        "-i",
        "cred.out",
        "-o",
        "secret.out",
    ]));
    run(tool("tpm2_flushcontext").arg("s.ctx"));
    assert_eq!(std::fs::read(path("secret.out")).unwrap(), secret);

    // A credential for another AK Name is refused by the same TPM.
    let mut other_name = name.clone();
    let last = other_name.len() - 1;
    other_name[last] ^= 1;
    let wrong = make_credential(ek_public, &other_name, &secret).unwrap();
    std::fs::write(path("wrong.out"), wrong.to_tpm2_tools_file().unwrap()).unwrap();
    run(tool("tpm2_startauthsession").args(["--policy-session", "-S", "s2.ctx"]));
    run(tool("tpm2_policysecret").args(["-S", "s2.ctx", "-c", "e"]));
    let refused = tool("tpm2_activatecredential")
        .args([
            "-c",
            "ak.ctx",
            "-C",
            EK_PERSISTENT_RSA,
            "-P",
            "session:s2.ctx",
            "-i",
            "wrong.out",
            "-o",
            "wrong-secret.out",
        ])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a credential for another AK activated"
    );
    assert_ne!(std::fs::read(path("wrong-secret.out")).ok(), Some(secret));
}

/// The agent's side for the EKs real TPMs have: the RSA-2048 EK (OAEP, label "IDENTITY")
/// of a TPM with only its certificate, and a P-256 EK (ECDH, KDFe) with only its
/// certificate at 0x01c0000a. Credentials made by tpm2_makecredential and by our verifier
/// activate through `Tpm::activate_credential` to exactly the secret, and a credential for
/// another AK does not.
#[test]
fn rsa_and_p256_eks_activate_credentials_from_tpm2_tools_and_from_us() {
    crate::support::require_tool("tpm2_makecredential");
    for (ek_kind, ak_alg) in [
        ("rsa", SigningAlgorithm::Rsassa2048),
        ("p256", SigningAlgorithm::EcdsaP256),
    ] {
        let mut sw = Swtpm::start();
        let certificate = match ek_kind {
            "rsa" => {
                sw.provision_like_discrete_tpm();
                sw.nv_read(attestor_testkit::provision::RSA_EK_CERT)
            }
            _ => sw.provision_p256_ek_only(),
        };
        let mut tpm = open(&sw);
        let ek = tpm.select_ek(&EkSource::Nv).unwrap();
        assert_eq!(ek.certificate.as_deref(), Some(certificate.as_slice()));
        let parsed = parse_tpm_public(&ek.public).unwrap();
        assert!(
            parsed.matches_certificate(&certificate).unwrap(),
            "{ek_kind}"
        );
        assert_eq!(
            parsed.key_name(),
            if ek_kind == "rsa" {
                "rsa-2048"
            } else {
                "ecc-p256"
            }
        );
        let ak = tpm.create_ak(ak_alg).unwrap();
        assert_eq!(ak.algorithm().unwrap(), ak_alg);
        let name = ak_name(&ak);

        // tpm2-tools' independent MakeCredential.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ek.pub"), tpm2b(&ek.public)).unwrap();
        let secret = format!("a credential for the {ek_kind} EK").into_bytes();
        std::fs::write(dir.path().join("secret.bin"), &secret).unwrap();
        run(Command::new("tpm2_makecredential")
            .current_dir(dir.path())
            .args(["-T", "none", "-u", "ek.pub", "-s", "secret.bin", "-n"])
            .arg(hex::encode(&name))
            .args(["-o", "cred.out"]));
        let theirs = MadeCredential::from_tpm2_tools_file(
            &std::fs::read(dir.path().join("cred.out")).unwrap(),
        )
        .unwrap();
        let out = tpm
            .activate_credential(&ak, &theirs.credential_blob, &theirs.encrypted_secret)
            .unwrap();
        assert_eq!(out, secret, "{ek_kind}");

        // Our verifier's challenge, as the ledger makes it.
        let (secret, made) = challenge_for(&ek.public, &Tpm::public_of(&ak).unwrap()).unwrap();
        let out = tpm
            .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
            .unwrap();
        assert!(credential::secret_matches(&secret, &out), "{ek_kind}");

        // Made for another AK of the same TPM: refused.
        let other = tpm.create_ak(ak_alg).unwrap();
        let made = make_credential(&ek.public, &ak_name(&other), &secret).unwrap();
        assert_refused(
            tpm.activate_credential(&ak, &made.credential_blob, &made.encrypted_secret),
            &secret,
            ek_kind,
        );
    }
}

/// A vendor that stores an EK nonce in NV (0x01c0000b for the P-256 EK, TCG EK Credential
/// Profile 2.2.1.5) certifies the EK made from the template with that nonce: the agent
/// makes that EK, not the default one, and finds its certificate; the certificate of the
/// default EK no longer matches and is refused by name. A whole vendor template in NV
/// (0x01c0000c) is used the same way.
#[test]
fn an_ek_nonce_or_template_in_nv_makes_the_ek_the_vendor_certified() {
    use attestor_platform::tpm::EkTemplate;
    use attestor_testkit::provision::P256_EK_CERT;
    let mut sw = Swtpm::start();
    let default_certificate = sw.provision_p256_ek_only();
    let default_ek = open(&sw).select_ek(&EkSource::Nv).unwrap().public;
    sw.nv_write_platform(0x01c0_000b, b"vendor EK nonce!");
    // The certificate of the default EK does not certify the EK the nonce makes.
    assert!(matches!(
        open(&sw).select_ek(&EkSource::Nv),
        Err(TpmError::EkCertificateMismatch { .. })
    ));
    let nonce_ek = open(&sw)
        .select_ek(&EkSource::Uncertified(EkTemplate::EccP256))
        .unwrap()
        .public;
    assert_ne!(nonce_ek, default_ek);
    // The vendor's certificate for the nonce EK.
    let spki = parse_tpm_public(&nonce_ek).unwrap().spki_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &spki)
    );
    let certificate = sw.issue_ek_certificate(pem.as_bytes());
    sw.nv_undefine(P256_EK_CERT);
    sw.nv_write_platform(P256_EK_CERT, &certificate);
    let mut tpm = open(&sw);
    let ek = tpm.select_ek(&EkSource::Nv).unwrap();
    assert_eq!(
        (ek.public.as_slice(), ek.certificate.as_deref()),
        (nonce_ek.as_slice(), Some(certificate.as_slice()))
    );
    assert_ne!(certificate, default_certificate);
    // And it is a working EK: a credential for it activates.
    let ak = tpm.create_ak(SigningAlgorithm::EcdsaP256).unwrap();
    let (secret, made) = challenge_for(&ek.public, &Tpm::public_of(&ak).unwrap()).unwrap();
    let out = tpm
        .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert!(credential::secret_matches(&secret, &out));
    drop(tpm);

    // A vendor template in NV (0x01c0000c) replaces the default template and the nonce:
    // the same template stored whole makes the same certified EK.
    sw.nv_undefine(0x01c0_000b);
    assert!(matches!(
        open(&sw).select_ek(&EkSource::Nv),
        Err(TpmError::EkCertificateMismatch { .. })
    ));
    let template = EkTemplate::EccP256.default_public(Some(b"vendor EK nonce!"));
    sw.nv_write_platform(0x01c0_000c, &template);
    let ek = open(&sw).select_ek(&EkSource::Nv).unwrap();
    assert_eq!(ek.public, nonce_ek);
    // One that does not decode is named.
    sw.nv_undefine(0x01c0_000c);
    sw.nv_write_platform(0x01c0_000c, b"not a TPMT_PUBLIC");
    assert!(matches!(
        open(&sw).select_ek(&EkSource::Nv),
        Err(TpmError::MalformedEkTemplate {
            nv_index: 0x01c0_000c,
            ..
        })
    ));
}

/// EK policy branches of the TCG EK Credential Profile in SHA-512 (PolicyA, PolicyC), as
/// published: the H-4 (P-521) EK's PolicyB is their PolicyOR.
const EK_POLICY_A_SHA512: &str = "1e3b76502c8a1425aa0b7b3fc646a1b0fae063b03b5368f9c4cddecaff0891dd682bac1a85d4d832b781ea451915de5fc5bf0dc4a1917cd42fa041e3f998e0ee";
const EK_POLICY_C_SHA512: &str = "589ee1e146544716e8deafe6db247b01b81e9f9c7dd16b814aa159138749105fba5388dd1dea702f35240c184933121e2c61b8f50d3ef91393a49a38c3f73fc8";

/// A P-521 EK (high-range template H-4: SHA-512, AES-256-CFB, PolicyB), made by
/// tpm2-tools, with only its certificate at 0x01c00018. The agent finds it and re-creates
/// exactly that key from its own template; credentials from tpm2_makecredential and from
/// our verifier activate through `Tpm::activate_credential` to exactly the secret, ours
/// activate through tpm2_activatecredential too, and one for another AK does not.
#[test]
fn a_p521_ek_activates_credentials_both_ways_with_tpm2_tools() {
    use attestor_platform::tpm::EkTemplate;
    use attestor_testkit::provision::P521_EK_PERSISTENT;
    use attestor_verify::evidence::tpm::{policy, HashAlg};
    let mut sw = Swtpm::start();
    let certificate = sw.provision_p521_ek_only();
    let tools = Tpm2Tools::for_ek_credentials(&sw);
    let path = |name: &str| tools.path(name);
    let persistent = format!("{P521_EK_PERSISTENT:#010x}");
    let tools_ek = tools.read_public(&persistent);

    let (ak, secret, made) = {
        let mut tpm = open(&sw);
        let ek = tpm.select_ek(&EkSource::Nv).unwrap();
        assert_eq!(ek.template, EkTemplate::EccP521);
        assert_eq!(ek.certificate.as_deref(), Some(certificate.as_slice()));
        // Our H-4 template makes the key tpm2-tools made from the profile's parameters.
        assert_eq!(ek.public, tools_ek);
        let parsed = parse_tpm_public(&ek.public).unwrap();
        assert!(parsed.matches_certificate(&certificate).unwrap());
        assert_eq!(parsed.key_name(), "ecc-p521");
        assert_eq!(parsed.name_alg(), HashAlg::Sha512);
        assert_eq!(parsed.auth_policy(), policy::ek_policy_b(HashAlg::Sha512));
        let sym = parsed.symmetric().unwrap();
        assert_eq!((sym.alg, sym.key_bits, sym.mode), (0x0006, 256, 0x0043));

        let ak = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
        let name = ak_name(&ak);

        // tpm2-tools' independent MakeCredential (ECDH on P-521, KDFe/KDFa with SHA-512).
        // OpenSSL drops leading zero octets of the ephemeral point's coordinates (a P-521
        // one starts with one about half the time) and the TPM takes them as sent: both
        // forms must activate, so credentials are made until each has been seen.
        let secret = b"a credential for the P-521 EK".to_vec();
        std::fs::write(path("secret.bin"), &secret).unwrap();
        let (mut short, mut full) = (false, false);
        for _ in 0..64 {
            run(Command::new("tpm2_makecredential")
                .current_dir(tools.dir.path())
                .args(["-T", "none", "-u", "ek.pub", "-s", "secret.bin", "-n"])
                .arg(hex::encode(&name))
                .args(["-o", "theirs.out"]));
            let theirs =
                MadeCredential::from_tpm2_tools_file(&std::fs::read(path("theirs.out")).unwrap())
                    .unwrap();
            let is_full = theirs.encrypted_secret.len() == 2 + 66 + 2 + 66;
            assert!(is_full || theirs.encrypted_secret.len() < 2 + 66 + 2 + 66);
            if (is_full && full) || (!is_full && short) {
                continue;
            }
            let out = tpm
                .activate_credential(&ak, &theirs.credential_blob, &theirs.encrypted_secret)
                .unwrap();
            assert_eq!(out, secret);
            (short, full) = (short || !is_full, full || is_full);
            if short && full {
                break;
            }
        }
        assert!(short && full, "tpm2_makecredential made only one form");

        // Our verifier's challenge, as the ledger makes it: a 64-byte secret.
        let (secret, made) = challenge_for(&ek.public, &Tpm::public_of(&ak).unwrap()).unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(made.encrypted_secret.len(), 2 + 66 + 2 + 66);
        assert_eq!(made.credential_blob.len(), 2 + 64 + 2 + 64);
        let out = tpm
            .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
            .unwrap();
        assert!(credential::secret_matches(&secret, &out));
        // Any length up to SHA-512's, many ephemeral keys (leading-zero coordinates).
        for len in [1usize, 33, 48, 63, 64, 64, 64, 17] {
            let secret: Vec<u8> = (0..len).map(|i| (i * 5 + len) as u8).collect();
            let made = make_credential(&ek.public, &name, &secret).unwrap();
            let out = tpm
                .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
                .unwrap();
            assert_eq!(out, secret, "secret of {len} bytes");
        }
        // Made for another AK of the same TPM: refused.
        let other = tpm.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
        let wrong = make_credential(&ek.public, &ak_name(&other), &secret).unwrap();
        assert_refused(
            tpm.activate_credential(&ak, &wrong.credential_blob, &wrong.encrypted_secret),
            &secret,
            "P-521 EK credential for another AK",
        );
        (ak, secret, made)
    };

    // tpm2_activatecredential recovers our credential, through the EK's SHA-512 PolicyB.
    let recovered = tpm2_tools_activate(
        &tools,
        &ak,
        &made,
        &persistent,
        "sha512",
        (EK_POLICY_A_SHA512, EK_POLICY_C_SHA512),
    );
    assert_eq!(recovered, secret);
}

/// The NV search order with a P-521 EK certificate beside swtpm's P-384 and RSA-2048 ones:
/// P-384 first (an agent keeps the EK its AK was made under), then P-521 before RSA; a
/// P-521 certificate supplied as a file selects the P-521 EK.
#[test]
fn a_p521_ek_comes_after_p384_and_before_rsa() {
    use attestor_platform::tpm::EkTemplate;
    use attestor_testkit::provision::{P384_EK_CERT, P521_EK_CERT};
    let sw = Swtpm::start();
    let p521 = open(&sw)
        .select_ek(&EkSource::Uncertified(EkTemplate::EccP521))
        .unwrap()
        .public;
    let spki = parse_tpm_public(&p521).unwrap().spki_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &spki)
    );
    let certificate = sw.issue_ek_certificate(pem.as_bytes());
    sw.nv_write_platform(P521_EK_CERT, &certificate);
    let ek = open(&sw).select_ek(&EkSource::Nv).unwrap();
    assert_eq!(ek.template, EkTemplate::EccP384);
    // Given as a file, the P-521 certificate selects the P-521 EK whatever NV holds.
    let ek = open(&sw)
        .select_ek(&EkSource::Certificate(certificate.clone()))
        .unwrap();
    assert_eq!((ek.template, &ek.public), (EkTemplate::EccP521, &p521));
    sw.nv_undefine(P384_EK_CERT);
    let ek = open(&sw).select_ek(&EkSource::Nv).unwrap();
    assert_eq!(
        (ek.template, ek.public, ek.certificate),
        (EkTemplate::EccP521, p521, Some(certificate))
    );
}

/// An RSA-3072 EK (high-range template H-6: SHA-384, AES-256-CFB, PolicyB), made by
/// tpm2-tools, with only its certificate at 0x01c0001c. The agent finds it and re-creates
/// exactly that key from its own template; credentials from tpm2_makecredential and from
/// our verifier (RSA-OAEP with SHA-384, label "IDENTITY") activate through
/// `Tpm::activate_credential` to exactly the secret, ours activate through
/// tpm2_activatecredential too, and one for another AK does not.
#[test]
fn an_rsa3072_ek_activates_credentials_both_ways_with_tpm2_tools() {
    use attestor_platform::tpm::EkTemplate;
    use attestor_testkit::provision::RSA3072_EK_PERSISTENT;
    use attestor_verify::evidence::tpm::keys::TpmPublic;
    use attestor_verify::evidence::tpm::{policy, HashAlg};
    let mut sw = Swtpm::start();
    let certificate = sw.provision_rsa3072_ek_only();
    let tools = Tpm2Tools::for_ek_credentials(&sw);
    let path = |name: &str| tools.path(name);
    let persistent = format!("{RSA3072_EK_PERSISTENT:#010x}");
    let tools_ek = tools.read_public(&persistent);

    let (ak, secret, made) = {
        let mut tpm = open(&sw);
        let ek = tpm.select_ek(&EkSource::Nv).unwrap();
        assert_eq!(ek.template, EkTemplate::Rsa3072);
        assert_eq!(ek.certificate.as_deref(), Some(certificate.as_slice()));
        // Our H-6 template makes the key tpm2-tools made from the profile's parameters.
        assert_eq!(ek.public, tools_ek);
        let parsed = parse_tpm_public(&ek.public).unwrap();
        assert!(parsed.matches_certificate(&certificate).unwrap());
        assert_eq!(parsed.key_name(), "rsa-3072");
        assert_eq!(parsed.name_alg(), HashAlg::Sha384);
        assert_eq!(parsed.auth_policy(), policy::ek_policy_b(HashAlg::Sha384));
        let TpmPublic::Rsa(rsa) = &parsed else {
            panic!("not an RSA EK: {parsed:?}");
        };
        assert_eq!((rsa.key_bits, rsa.modulus.len()), (3072, 384));
        // A storage key: OAEP is implied by the TPM, not named in the key.
        assert_eq!(rsa.scheme, None);
        let sym = parsed.symmetric().unwrap();
        assert_eq!((sym.alg, sym.key_bits, sym.mode), (0x0006, 256, 0x0043));

        let ak = tpm.create_ak(SigningAlgorithm::Rsapss2048).unwrap();
        let name = ak_name(&ak);

        // tpm2-tools' independent MakeCredential (RSA-OAEP and KDFa with SHA-384).
        let secret = b"a credential for the RSA-3072 EK".to_vec();
        std::fs::write(path("secret.bin"), &secret).unwrap();
        run(Command::new("tpm2_makecredential")
            .current_dir(tools.dir.path())
            .args(["-T", "none", "-u", "ek.pub", "-s", "secret.bin", "-n"])
            .arg(hex::encode(&name))
            .args(["-o", "theirs.out"]));
        let theirs =
            MadeCredential::from_tpm2_tools_file(&std::fs::read(path("theirs.out")).unwrap())
                .unwrap();
        assert_eq!(theirs.encrypted_secret.len(), 384);
        let out = tpm
            .activate_credential(&ak, &theirs.credential_blob, &theirs.encrypted_secret)
            .unwrap();
        assert_eq!(out, secret);

        // Our verifier's challenge, as the ledger makes it: a 48-byte secret.
        let (secret, made) = challenge_for(&ek.public, &Tpm::public_of(&ak).unwrap()).unwrap();
        assert_eq!(secret.len(), 48);
        assert_eq!(made.encrypted_secret.len(), 384);
        assert_eq!(made.credential_blob.len(), 2 + 48 + 2 + 48);
        let out = tpm
            .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
            .unwrap();
        assert!(credential::secret_matches(&secret, &out));
        // Any length up to SHA-384's.
        for len in [1usize, 32, 47, 48] {
            let secret: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let made = make_credential(&ek.public, &name, &secret).unwrap();
            let out = tpm
                .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
                .unwrap();
            assert_eq!(out, secret, "secret of {len} bytes");
        }
        // Made for another AK of the same TPM: refused.
        let other = tpm.create_ak(SigningAlgorithm::Rsapss2048).unwrap();
        let wrong = make_credential(&ek.public, &ak_name(&other), &secret).unwrap();
        assert_refused(
            tpm.activate_credential(&ak, &wrong.credential_blob, &wrong.encrypted_secret),
            &secret,
            "RSA-3072 EK credential for another AK",
        );
        (ak, secret, made)
    };

    // tpm2_activatecredential recovers our credential, through the EK's SHA-384 PolicyB.
    let recovered = tpm2_tools_activate(
        &tools,
        &ak,
        &made,
        &persistent,
        "sha384",
        (EK_POLICY_A_SHA384, EK_POLICY_C_SHA384),
    );
    assert_eq!(recovered, secret);
}
