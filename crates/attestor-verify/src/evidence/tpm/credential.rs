//! Credential protection (TPM 2.0 Library Part 1 §24) on the verifier side, in software:
//! TPM2_MakeCredential for an ECC (NIST P-256/P-384/P-521) or RSA endorsement key, so a ledger
//! without a TPM can check at enrollment that an attestation key lives in the same TPM as a
//! certified EK.
//!
//! The verifier encrypts a random secret to the EK, bound to the AK's Name; only the TPM
//! holding that EK can recover it (TPM2_ActivateCredential), and only for the object with
//! exactly that Name loaded in the same TPM. Composition, with `H` = the EK's nameAlg:
//!
//! ```text
//! ECC EK: ephemeral (d_e, Q_e) on the EK's curve;  Z = x(d_e * Q_ek)     (C.6.1, ECDH)
//!         seed = KDFe(H, Z, "IDENTITY", x(Q_e), x(Q_ek), 8 * |H|)         (§11.4.10.3)
//!         encryptedSecret = TPMS_ECC_POINT(Q_e)
//! RSA EK: seed = random |H| octets
//!         encryptedSecret = RSA-OAEP(EK, H and MGF1-H, label "IDENTITY", seed)
//! symKey      = KDFa(H, seed, "STORAGE", Name(AK), -, EK symmetric key bits)
//! encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(secret))
//! hmacKey     = KDFa(H, seed, "INTEGRITY", -, -, 8 * |H|)
//! outerHMAC   = HMAC_H(hmacKey, encIdentity || Name(AK))
//! credentialBlob = TPM2B(outerHMAC) || encIdentity                      (TPMS_ID_OBJECT)
//! ```
//!
//! Labels are the spec's NUL-terminated strings. The EK public area given here must be the
//! one the caller checked against the EK certificate: this module trusts it as the EK.

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac, rsa};

use super::keys::{parse_tpm_public, RsaPublic, TpmPublic};
use super::wire::{self, WireError, TPM_ECC_NIST_P256, TPM_ECC_NIST_P384, TPM_ECC_NIST_P521};
use super::HashAlg;

/// TPM_ALG_AES.
const TPM_ALG_AES: u16 = 0x0006;
/// TPM_ALG_CFB, the only mode a storage key's symmetric definition may use for credentials.
const TPM_ALG_CFB: u16 = 0x0043;
/// Block size of AES, also the size of the all-zero CFB IV that §24.4 prescribes.
const AES_BLOCK: usize = 16;
/// Bound on KDF output: far above any key the TPM derives, so hostile sizes cannot allocate.
const MAX_KDF_BITS: usize = 8 * 1024;

/// Magic that starts the credential file `tpm2_makecredential -o` writes.
pub const TPM2_TOOLS_CREDENTIAL_MAGIC: u32 = 0xBADC_C0DE;
/// Version of the tpm2-tools credential file format this module reads and writes.
pub const TPM2_TOOLS_CREDENTIAL_VERSION: u32 = 1;

/// Why a credential could not be made (or a tpm2-tools credential file not read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK's TPMT_PUBLIC does not decode (or is neither ECC nor RSA).
    #[error("EK public area: {0}")]
    EkPublic(WireError),
    /// The AK's TPMT_PUBLIC does not decode (or is neither ECC nor RSA).
    #[error("AK public area: {0}")]
    AkPublic(WireError),
    /// The EK is not a restricted decryption key, so no TPM would activate a credential.
    #[error("the EK is not a restricted decryption (storage) key")]
    EkNotStorageKey,
    /// The EK's curve is not one this module implements (NIST P-256, P-384, P-521).
    #[error("unsupported EK curve {0:#06x}")]
    UnsupportedCurve(u16),
    /// The EK's symmetric definition is absent or not AES-128/256 in CFB mode.
    #[error("unsupported EK symmetric definition (alg {alg:#06x}, {key_bits} bits, mode {mode:#06x}); need AES-128/256-CFB")]
    UnsupportedSymmetric {
        /// The cipher's TPM_ALG_ID (TPM_ALG_NULL when absent).
        alg: u16,
        /// Its key size in bits.
        key_bits: u16,
        /// The mode's TPM_ALG_ID.
        mode: u16,
    },
    /// aws-lc-rs refused the EK's public key (point not on the curve, bad RSA modulus).
    #[error("EK public key rejected (ECC point not on its curve, or unusable RSA modulus)")]
    EkKeyRejected,
    /// The secret is empty or longer than the EK nameAlg digest (TPM_RC_SIZE on a TPM).
    #[error("credential secret has {len} bytes; it must have 1..={max}")]
    SecretLength {
        /// The secret's length in bytes.
        len: usize,
        /// The EK nameAlg's digest length in bytes.
        max: usize,
    },
    /// The object Name is not nameAlg (u16) || digest of that algorithm's size.
    #[error("malformed object Name ({len} bytes): {reason}")]
    MalformedName {
        /// The Name's length in bytes.
        len: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The AK Name given does not match the AK public area.
    #[error("AK Name does not match the AK public area")]
    AkNameMismatch,
    /// A KDF was asked for a length that is zero, not whole octets, or unreasonably large.
    #[error("KDF output of {0} bits is not supported (whole octets, 8..={MAX_KDF_BITS})")]
    KdfLength(usize),
    /// aws-lc-rs refused a primitive (randomness, ECDH, cipher).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// A tpm2-tools credential file is malformed.
    #[error("tpm2-tools credential file: {0}")]
    CredentialFile(&'static str),
}

/// What TPM2_MakeCredential outputs: the two ActivateCredential parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents without its size prefix, i.e. a marshalled TPMS_ID_OBJECT
    /// (u16 size || integrityHMAC || encIdentity); what tss-esapi's `IdObject` holds.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents without its size prefix: for an ECC EK the marshalled
    /// TPMS_ECC_POINT (u16 || x || u16 || y) of the ephemeral key.
    pub encrypted_secret: Vec<u8>,
}

impl MadeCredential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads:
    /// magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET, all big-endian.
    pub fn to_tpm2_tools_file(&self) -> Result<Vec<u8>, CredentialError> {
        let mut out =
            Vec::with_capacity(12 + self.credential_blob.len() + self.encrypted_secret.len());
        out.extend_from_slice(&TPM2_TOOLS_CREDENTIAL_MAGIC.to_be_bytes());
        out.extend_from_slice(&TPM2_TOOLS_CREDENTIAL_VERSION.to_be_bytes());
        for part in [&self.credential_blob, &self.encrypted_secret] {
            let len = u16::try_from(part.len())
                .map_err(|_| CredentialError::CredentialFile("part longer than a TPM2B"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Parses a credential file written by `tpm2_makecredential -o` (see
    /// [`MadeCredential::to_tpm2_tools_file`]); trailing bytes are refused.
    pub fn from_tpm2_tools_file(buf: &[u8]) -> Result<MadeCredential, CredentialError> {
        let (magic, rest) =
            split_u32(buf).ok_or(CredentialError::CredentialFile("truncated header"))?;
        if magic != TPM2_TOOLS_CREDENTIAL_MAGIC {
            return Err(CredentialError::CredentialFile("bad magic"));
        }
        let (version, rest) =
            split_u32(rest).ok_or(CredentialError::CredentialFile("truncated header"))?;
        if version != TPM2_TOOLS_CREDENTIAL_VERSION {
            return Err(CredentialError::CredentialFile("unsupported version"));
        }
        let (credential_blob, rest) = split_tpm2b(rest)
            .ok_or(CredentialError::CredentialFile("truncated TPM2B_ID_OBJECT"))?;
        let (encrypted_secret, rest) = split_tpm2b(rest).ok_or(CredentialError::CredentialFile(
            "truncated TPM2B_ENCRYPTED_SECRET",
        ))?;
        if !rest.is_empty() {
            return Err(CredentialError::CredentialFile("trailing bytes"));
        }
        Ok(MadeCredential {
            credential_blob: credential_blob.to_vec(),
            encrypted_secret: encrypted_secret.to_vec(),
        })
    }
}

fn split_u32(buf: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = buf.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn split_tpm2b(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (head, rest) = buf.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*head));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// TPM2_MakeCredential in software: protects `secret` so that only the TPM holding the EK
/// described by `ek_public` (marshalled TPMT_PUBLIC, no size prefix) recovers it, and only
/// through ActivateCredential with the object named `ak_name` (nameAlg || digest).
pub fn make_credential(
    ek_public: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<MadeCredential, CredentialError> {
    let ek = Ek::parse(ek_public)?;
    if !(ek.attributes().restricted() && ek.attributes().decrypt()) {
        return Err(CredentialError::EkNotStorageKey);
    }
    let name_alg = ek.name_alg();
    let max = name_alg.digest_len();
    if secret.is_empty() || secret.len() > max {
        return Err(CredentialError::SecretLength {
            len: secret.len(),
            max,
        });
    }
    check_name(ak_name)?;
    let sym_key_bits = aes_cfb_key_bits(ek.symmetric())?;
    let (seed, encrypted_secret) = match &ek {
        Ek::Ecc(ecc) => ecc_seed(ecc)?,
        Ek::Rsa(rsa) => rsa_seed(rsa)?,
    };
    let credential_blob = protect(name_alg, &seed, sym_key_bits, ak_name, secret)?;
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

/// Seed and its TPMS_ECC_POINT for an ECC EK (Part 1 C.6.4, §11.4.10.3): one-pass ECDH
/// with an ephemeral key, then KDFe with the use "IDENTITY".
fn ecc_seed(ek: &wire::EccPublic) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let ecdh = match ek.curve {
        TPM_ECC_NIST_P256 => &agreement::ECDH_P256,
        TPM_ECC_NIST_P384 => &agreement::ECDH_P384,
        TPM_ECC_NIST_P521 => &agreement::ECDH_P521,
        other => return Err(CredentialError::UnsupportedCurve(other)),
    };
    let field_len =
        wire::curve_field_len(ek.curve).ok_or(CredentialError::UnsupportedCurve(ek.curve))?;
    let ek_point = ek.sec1_uncompressed().map_err(CredentialError::EkPublic)?;
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(ecdh, &rng)
        .map_err(|_| CredentialError::Crypto("ephemeral ECDH key generation"))?;
    let ephemeral_point = ephemeral
        .compute_public_key()
        .map_err(|_| CredentialError::Crypto("ephemeral ECDH public key"))?;
    let (ephemeral_x, ephemeral_y) = split_sec1(ephemeral_point.as_ref(), field_len)?;
    let z = agreement::agree_ephemeral(
        ephemeral,
        UnparsedPublicKey::new(ecdh, &ek_point),
        CredentialError::EkKeyRejected,
        |z| Ok(z.to_vec()),
    )?;
    // The TPM uses the EK's x exactly as stored in its public area, so do we.
    let bits = 8 * ek.name_alg.digest_len();
    let seed = kdfe(ek.name_alg, &z, b"IDENTITY", ephemeral_x, &ek.x, bits)?;
    let mut encrypted_secret = Vec::with_capacity(4 + 2 * field_len);
    for coordinate in [ephemeral_x, ephemeral_y] {
        push_tpm2b(&mut encrypted_secret, coordinate)?;
    }
    Ok((seed, encrypted_secret))
}

/// Seed and its encryption for an RSA EK (Part 1 B.10.3): a random seed of the nameAlg's
/// digest size, RSA-OAEP with the nameAlg (hash and MGF1) and the label "IDENTITY\0".
fn rsa_seed(ek: &RsaPublic) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let oaep = match ek.name_alg {
        HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
        HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
        HashAlg::Sha512 => &rsa::OAEP_SHA512_MGF1SHA512,
    };
    let public = rsa::PublicEncryptingKey::from_der(&rsa_spki(ek)?)
        .map_err(|_| CredentialError::EkKeyRejected)?;
    let key =
        rsa::OaepPublicEncryptingKey::new(public).map_err(|_| CredentialError::EkKeyRejected)?;
    let mut seed = vec![0u8; ek.name_alg.digest_len()];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| CredentialError::Crypto("random seed"))?;
    let mut ciphertext = vec![0u8; key.ciphertext_size()];
    let written = key
        .encrypt(oaep, &seed, &mut ciphertext, Some(b"IDENTITY\0"))
        .map_err(|_| CredentialError::Crypto("RSA-OAEP encryption"))?
        .len();
    ciphertext.truncate(written);
    Ok((seed, ciphertext))
}

/// The parts of an EK public area credential protection needs.
enum Ek {
    Ecc(wire::EccPublic),
    Rsa(RsaPublic),
}

impl Ek {
    fn parse(tpmt_public: &[u8]) -> Result<Ek, CredentialError> {
        match parse_tpm_public(tpmt_public).map_err(CredentialError::EkPublic)? {
            TpmPublic::Ecc(k) => Ok(Ek::Ecc(k)),
            // Restricted decryption keys have a NULL scheme (Part 2, TPMS_RSA_PARMS).
            TpmPublic::Rsa(k) if k.scheme.is_some() => Err(CredentialError::EkNotStorageKey),
            TpmPublic::Rsa(k) => Ok(Ek::Rsa(k)),
        }
    }

    fn name_alg(&self) -> HashAlg {
        match self {
            Ek::Ecc(e) => e.name_alg,
            Ek::Rsa(r) => r.name_alg,
        }
    }

    fn attributes(&self) -> wire::ObjectAttributes {
        match self {
            Ek::Ecc(e) => e.object_attributes,
            Ek::Rsa(r) => r.object_attributes,
        }
    }

    fn symmetric(&self) -> Option<wire::SymDef> {
        match self {
            Ek::Ecc(e) => e.symmetric,
            Ek::Rsa(r) => r.symmetric,
        }
    }
}

/// SubjectPublicKeyInfo of an RSA EK, which is what aws-lc-rs takes.
fn rsa_spki(ek: &RsaPublic) -> Result<Vec<u8>, CredentialError> {
    TpmPublic::Rsa(ek.clone())
        .spki_der()
        .map_err(|_| CredentialError::EkKeyRejected)
}

/// Credential protection proper (Part 1 §24.4 and §24.5): encIdentity and the outer HMAC,
/// marshalled as TPMS_ID_OBJECT.
fn protect(
    name_alg: HashAlg,
    seed: &[u8],
    sym_key_bits: usize,
    name: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let sym_key = kdfa(name_alg, seed, b"STORAGE", name, &[], sym_key_bits)?;
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    push_tpm2b(&mut enc_identity, secret)?;
    let algorithm = if sym_key_bits == 128 {
        &AES_128
    } else {
        &AES_256
    };
    let key = UnboundCipherKey::new(algorithm, &sym_key)
        .map_err(|_| CredentialError::Crypto("AES key"))?;
    EncryptingKey::cfb128(key)
        .map_err(|_| CredentialError::Crypto("AES-CFB key"))?
        .less_safe_encrypt(
            &mut enc_identity,
            // A zero IV is safe here: the key is fresh for every seed (§24.4).
            EncryptionContext::Iv128(FixedLength::from([0u8; AES_BLOCK])),
        )
        .map_err(|_| CredentialError::Crypto("AES-CFB encryption"))?;

    let hmac_key = kdfa(
        name_alg,
        seed,
        b"INTEGRITY",
        &[],
        &[],
        8 * name_alg.digest_len(),
    )?;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac_algorithm(name_alg), &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(name);
    let outer_hmac = ctx.sign();

    let mut blob = Vec::with_capacity(2 + outer_hmac.as_ref().len() + enc_identity.len());
    push_tpm2b(&mut blob, outer_hmac.as_ref())?;
    blob.extend_from_slice(&enc_identity);
    Ok(blob)
}

/// Makes a fresh challenge for enrollment: a random secret of the EK nameAlg's digest size,
/// protected for the AK whose Name this computes from `ak_public` (marshalled TPMT_PUBLIC).
/// Returns (secret, credential); the agent must answer with exactly that secret.
pub fn challenge_for(
    ek_public: &[u8],
    ak_public: &[u8],
) -> Result<(Vec<u8>, MadeCredential), CredentialError> {
    let ek = Ek::parse(ek_public)?;
    let name = ak_name(ak_public)?;
    let mut secret = vec![0u8; ek.name_alg().digest_len()];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| CredentialError::Crypto("random secret"))?;
    let made = make_credential(ek_public, &name, &secret)?;
    Ok((secret, made))
}

/// The Name of an AK (ECC or RSA) from its marshalled TPMT_PUBLIC:
/// nameAlg || H_nameAlg(TPMT_PUBLIC).
pub fn ak_name(ak_public: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let ak = parse_tpm_public(ak_public).map_err(CredentialError::AkPublic)?;
    Ok(wire::object_name(ak_public, ak.name_alg()))
}

/// Checks that `ak_name` is the Name of the AK public area `ak_public` (constant time).
pub fn check_ak_name(ak_public: &[u8], ak_name_given: &[u8]) -> Result<(), CredentialError> {
    let expected = ak_name(ak_public)?;
    verify_slices_are_equal(&expected, ak_name_given).map_err(|_| CredentialError::AkNameMismatch)
}

/// Compares the secret an agent returned with the challenge's, in constant time.
pub fn secret_matches(expected: &[u8], returned: &[u8]) -> bool {
    verify_slices_are_equal(expected, returned).is_ok()
}

/// KDFa (Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC): the concatenation of
/// HMAC_key([i]32 || label || 0x00 || context_u || context_v || [bits]32) for i = 1, 2, ...,
/// truncated to `bits`. `label` is given without its terminating NUL, which this appends.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: usize,
) -> Result<Vec<u8>, CredentialError> {
    let len = kdf_len(bits)?;
    let bits_be = u32::try_from(bits)
        .map_err(|_| CredentialError::KdfLength(bits))?
        .to_be_bytes();
    let key = hmac::Key::new(hmac_algorithm(hash), key);
    let mut out = Vec::with_capacity(len + hash.digest_len());
    let mut counter: u32 = 0;
    while out.len() < len {
        counter += 1;
        let mut ctx = hmac::Context::with_key(&key);
        for part in [
            &counter.to_be_bytes()[..],
            label,
            &[0],
            context_u,
            context_v,
            &bits_be,
        ] {
            ctx.update(part);
        }
        out.extend_from_slice(ctx.sign().as_ref());
    }
    out.truncate(len);
    Ok(out)
}

/// KDFe (Part 1 §11.4.10.3, SP 800-56A concatenation KDF): the concatenation of
/// H([i]32 || z || label || 0x00 || party_u || party_v) for i = 1, 2, ..., truncated to
/// `bits`. `label` is given without its terminating NUL, which this appends.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: usize,
) -> Result<Vec<u8>, CredentialError> {
    let len = kdf_len(bits)?;
    let mut out = Vec::with_capacity(len + hash.digest_len());
    let mut counter: u32 = 0;
    while out.len() < len {
        counter += 1;
        let mut ctx = digest::Context::new(digest_algorithm(hash));
        for part in [&counter.to_be_bytes()[..], z, label, &[0], party_u, party_v] {
            ctx.update(part);
        }
        out.extend_from_slice(ctx.finish().as_ref());
    }
    out.truncate(len);
    Ok(out)
}

fn kdf_len(bits: usize) -> Result<usize, CredentialError> {
    if bits == 0 || bits % 8 != 0 || bits > MAX_KDF_BITS {
        return Err(CredentialError::KdfLength(bits));
    }
    Ok(bits / 8)
}

fn hmac_algorithm(hash: HashAlg) -> hmac::Algorithm {
    match hash {
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
    }
}

fn digest_algorithm(hash: HashAlg) -> &'static digest::Algorithm {
    match hash {
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

/// Key bits of the EK's symmetric definition, which must be AES-128/256 in CFB mode.
fn aes_cfb_key_bits(symmetric: Option<wire::SymDef>) -> Result<usize, CredentialError> {
    match symmetric {
        Some(s)
            if s.alg == TPM_ALG_AES && s.mode == TPM_ALG_CFB && matches!(s.key_bits, 128 | 256) =>
        {
            Ok(usize::from(s.key_bits))
        }
        Some(s) => Err(CredentialError::UnsupportedSymmetric {
            alg: s.alg,
            key_bits: s.key_bits,
            mode: s.mode,
        }),
        None => Err(CredentialError::UnsupportedSymmetric {
            alg: wire::TPM_ALG_NULL,
            key_bits: 0,
            mode: wire::TPM_ALG_NULL,
        }),
    }
}

/// Checks that a Name is a hash-algorithm Name (not a handle Name) of a supported digest.
fn check_name(name: &[u8]) -> Result<(), CredentialError> {
    let malformed = |reason| CredentialError::MalformedName {
        len: name.len(),
        reason,
    };
    let (alg, digest) = name
        .split_first_chunk::<2>()
        .ok_or_else(|| malformed("shorter than an algorithm identifier"))?;
    let alg = HashAlg::from_tpm_alg_id(u16::from_be_bytes(*alg))
        .ok_or_else(|| malformed("unsupported name algorithm"))?;
    if digest.len() != alg.digest_len() {
        return Err(malformed("digest length does not match the name algorithm"));
    }
    Ok(())
}

/// (x, y) of an SEC1 uncompressed point of a `field_len`-byte curve.
fn split_sec1(point: &[u8], field_len: usize) -> Result<(&[u8], &[u8]), CredentialError> {
    match point.split_first() {
        Some((0x04, xy)) if xy.len() == 2 * field_len => Ok(xy.split_at(field_len)),
        _ => Err(CredentialError::Crypto(
            "ephemeral public key is not an uncompressed point",
        )),
    }
}

fn push_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), CredentialError> {
    let len = u16::try_from(bytes.len()).map_err(|_| CredentialError::Crypto("TPM2B overflow"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The KDFa self-test vector of the TPM reference implementation (libtpms
    // src/tpm2/KdfTestData.h): key, label "KDFSELFTESTLABEL\0", contexts, 160 bits.
    const KDF_KEY: [u8; 20] = [
        0x27, 0x1F, 0xA0, 0x8B, 0xBD, 0xC5, 0x06, 0x0E, 0xC3, 0xDF, 0xA9, 0x28, 0xFF, 0x9B, 0x73,
        0x12, 0x3A, 0x12, 0xDA, 0x0C,
    ];
    const KDF_LABEL: &[u8] = b"KDFSELFTESTLABEL";
    const KDF_CONTEXT_U: [u8; 8] = [0xCE, 0x24, 0x4F, 0x39, 0x5D, 0xCA, 0x73, 0x91];
    const KDF_CONTEXT_V: [u8; 8] = [0xDA, 0x50, 0x40, 0x31, 0xDD, 0xF1, 0x2E, 0x83];

    #[test]
    fn kdfa_matches_the_reference_self_test_vectors() {
        for (hash, expected) in [
            (HashAlg::Sha256, "bb0259e1c8ba607e6a2cd704b69a902e9ade84c4"),
            (HashAlg::Sha384, "1dce70c9113eb2dba47bd9cfc72bf46f45b09312"),
        ] {
            let out = kdfa(
                hash,
                &KDF_KEY,
                KDF_LABEL,
                &KDF_CONTEXT_U,
                &KDF_CONTEXT_V,
                160,
            )
            .unwrap();
            assert_eq!(hex::encode(out), expected, "{hash:?}");
        }
    }

    #[test]
    fn kdfa_spans_blocks_and_commits_to_the_length() {
        let long = kdfa(HashAlg::Sha256, b"k", b"L", b"u", b"v", 512).unwrap();
        assert_eq!(long.len(), 64);
        // [bits] is an input, so a shorter output is not a prefix of a longer one.
        let short = kdfa(HashAlg::Sha256, b"k", b"L", b"u", b"v", 256).unwrap();
        assert_ne!(&long[..32], &short[..]);
        // Block 2 is HMAC with counter 2 over the same fixed input.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let block2 = hmac::sign(
            &key,
            &[&2u32.to_be_bytes()[..], b"L\0uv", &512u32.to_be_bytes()].concat(),
        );
        assert_eq!(&long[32..], block2.as_ref());
    }

    #[test]
    fn kdfe_is_the_concatenation_kdf() {
        let out = kdfe(HashAlg::Sha384, b"zz", b"IDENTITY", b"uu", b"vv", 8 * 60).unwrap();
        assert_eq!(out.len(), 60);
        let block = |i: u32| {
            HashAlg::Sha384.digest_parts(&[&i.to_be_bytes(), b"zz", b"IDENTITY\0", b"uu", b"vv"])
        };
        assert_eq!(&out[..48], &block(1)[..]);
        assert_eq!(&out[48..], &block(2)[..12]);
    }

    #[test]
    fn kdf_lengths_are_bounded() {
        for bits in [0, 7, 9, MAX_KDF_BITS + 8] {
            assert_eq!(
                kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", bits),
                Err(CredentialError::KdfLength(bits))
            );
            assert_eq!(
                kdfe(HashAlg::Sha256, b"z", b"L", b"", b"", bits),
                Err(CredentialError::KdfLength(bits))
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name(&[&[0, 0x0c][..], &[7; 48]].concat()).is_ok());
        assert!(check_name(&[&[0, 0x0b][..], &[7; 32]].concat()).is_ok());
        for bad in [
            vec![],
            vec![0],
            [&[0, 0x0c][..], &[7; 32]].concat(),
            [&[0, 0x04][..], &[7; 20]].concat(),
            vec![0x40, 0, 0, 0x0b],
        ] {
            assert!(
                matches!(check_name(&bad), Err(CredentialError::MalformedName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn symmetric_definition_must_be_aes_cfb() {
        let sym = |alg, key_bits, mode| {
            Some(wire::SymDef {
                alg,
                key_bits,
                mode,
            })
        };
        assert_eq!(aes_cfb_key_bits(sym(6, 256, 0x43)), Ok(256));
        assert_eq!(aes_cfb_key_bits(sym(6, 128, 0x43)), Ok(128));
        assert!(aes_cfb_key_bits(sym(6, 192, 0x43)).is_err());
        assert!(aes_cfb_key_bits(sym(6, 128, 0x44)).is_err());
        assert!(aes_cfb_key_bits(sym(0x25, 128, 0x43)).is_err());
        assert!(aes_cfb_key_bits(None).is_err());
    }

    #[test]
    fn tpm2_tools_file_round_trips_and_rejects_garbage() {
        let made = MadeCredential {
            credential_blob: vec![1, 2, 3],
            encrypted_secret: vec![4, 5],
        };
        let file = made.to_tpm2_tools_file().unwrap();
        assert_eq!(
            file,
            [0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 3, 1, 2, 3, 0, 2, 4, 5]
        );
        assert_eq!(MadeCredential::from_tpm2_tools_file(&file), Ok(made));
        for n in 0..file.len() {
            assert!(MadeCredential::from_tpm2_tools_file(&file[..n]).is_err());
        }
        let mut trailing = file.clone();
        trailing.push(0);
        assert!(MadeCredential::from_tpm2_tools_file(&trailing).is_err());
        let mut magic = file;
        magic[0] ^= 1;
        assert!(MadeCredential::from_tpm2_tools_file(&magic).is_err());
    }

    #[test]
    fn protection_layout_is_hmac_then_ciphertext() {
        let name = [&[0, 0x0c][..], &[9; 48]].concat();
        let seed = [3u8; 48];
        let blob = protect(HashAlg::Sha384, &seed, 256, &name, b"secret").unwrap();
        assert_eq!(&blob[..2], &[0, 48]);
        let (outer, enc) = blob[2..].split_at(48);
        assert_eq!(enc.len(), 2 + 6);
        let hmac_key = kdfa(HashAlg::Sha384, &seed, b"INTEGRITY", &[], &[], 384).unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA384, &hmac_key);
        assert!(hmac::verify(&key, &[enc, &name].concat(), outer).is_ok());
    }

    /// A P-521 EK (template H-4: SHA-512, AES-256-CFB): the ephemeral point is on P-521
    /// (66-byte coordinates), the seed, HMAC and secret bound are SHA-512's, and software
    /// ECDH with the EK's private key recovers the seed the blob was protected with.
    #[test]
    fn p521_eks_get_sha512_credentials() {
        let rng = SystemRandom::new();
        let ek_key = agreement::PrivateKey::generate(&agreement::ECDH_P521).unwrap();
        let point = ek_key.compute_public_key().unwrap();
        let (x, y) = point.as_ref()[1..].split_at(66);
        let mut ek = vec![0, 0x23, 0, 0x0d];
        ek.extend(0x0003_00f2u32.to_be_bytes());
        ek.extend(64u16.to_be_bytes());
        ek.extend([0xb8; 64]);
        ek.extend([0, 0x06, 1, 0, 0, 0x43, 0, 0x10, 0, 0x05, 0, 0x10]);
        for c in [x, y] {
            ek.extend(66u16.to_be_bytes());
            ek.extend(c);
        }
        let name = [&[0, 0x0c][..], &[9; 48]].concat();
        let mut secret = [0u8; 64];
        rng.fill(&mut secret).unwrap();
        let made = make_credential(&ek, &name, &secret).unwrap();
        assert_eq!(made.encrypted_secret.len(), 2 + 66 + 2 + 66);
        assert_eq!(made.credential_blob.len(), 2 + 64 + 2 + 64);
        assert!(matches!(
            make_credential(&ek, &name, &[1; 65]),
            Err(CredentialError::SecretLength { len: 65, max: 64 })
        ));
        // The TPM's side of the seed: ECDH of the EK's key with the ephemeral point.
        let ephemeral = [
            &[0x04][..],
            &made.encrypted_secret[2..68],
            &made.encrypted_secret[70..],
        ]
        .concat();
        let seed = agreement::agree(
            &ek_key,
            UnparsedPublicKey::new(&agreement::ECDH_P521, &ephemeral),
            CredentialError::EkKeyRejected,
            |z| kdfe(HashAlg::Sha512, z, b"IDENTITY", &ephemeral[1..67], x, 512),
        )
        .unwrap();
        let hmac_key = kdfa(HashAlg::Sha512, &seed, b"INTEGRITY", &[], &[], 512).unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA512, &hmac_key);
        let (outer, enc) = made.credential_blob[2..].split_at(64);
        assert!(hmac::verify(&key, &[enc, &name].concat(), outer).is_ok());
    }

    /// An RSA restricted-decryption TPMT_PUBLIC like the TCG L-1 EK template.
    fn rsa_public(scheme: u16, modulus: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0x01, 0, 0x0b];
        out.extend(0x0003_00b2u32.to_be_bytes()); // fixedTPM|fixedParent|sdo|admin|restricted|decrypt
        out.extend([0, 0]);
        out.extend([0, 0x06, 0, 0x80, 0, 0x43]); // AES-128-CFB
        out.extend(scheme.to_be_bytes());
        if scheme != wire::TPM_ALG_NULL {
            out.extend(HashAlg::Sha256.tpm_alg_id().to_be_bytes());
        }
        out.extend(2048u16.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(u16::try_from(modulus.len()).unwrap().to_be_bytes());
        out.extend(modulus);
        out
    }

    #[test]
    fn rsa_public_areas_are_parsed_strictly() {
        let modulus = [0xc5u8; 256];
        let Ek::Rsa(ok) = Ek::parse(&rsa_public(wire::TPM_ALG_NULL, &modulus)).unwrap() else {
            panic!("not RSA");
        };
        assert_eq!((ok.name_alg, ok.exponent), (HashAlg::Sha256, 65_537));
        assert!(ok.object_attributes.restricted() && ok.object_attributes.decrypt());
        assert_eq!(ok.modulus, modulus);
        // DER: SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }.
        let der = rsa_spki(&ok).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert!(der.ends_with(&[0x02, 0x03, 0x01, 0x00, 0x01]));

        // RSAES/OAEP schemes are not allowed on a storage key.
        assert_eq!(
            make_credential(
                &rsa_public(0x0017, &modulus),
                &[&[0, 0x0b][..], &[1; 32]].concat(),
                b"s"
            )
            .err(),
            Some(CredentialError::EkNotStorageKey)
        );
        let full = rsa_public(wire::TPM_ALG_NULL, &modulus);
        for n in [1, 3, 7, 20, full.len() - 1] {
            assert!(
                matches!(Ek::parse(&full[..n]), Err(CredentialError::EkPublic(_))),
                "{n}"
            );
        }
        let mut trailing = full.clone();
        trailing.push(0);
        assert!(matches!(
            Ek::parse(&trailing),
            Err(CredentialError::EkPublic(WireError::TrailingBytes {
                count: 1,
                ..
            }))
        ));
        let mut sha1 = full;
        sha1[3] = 0x04;
        assert!(matches!(
            Ek::parse(&sha1),
            Err(CredentialError::EkPublic(WireError::UnsupportedHashAlg {
                alg: 4,
                ..
            }))
        ));
        // An even "modulus" is no RSA key.
        let name = [&[0, 0x0b][..], &[1; 32]].concat();
        assert_eq!(
            make_credential(&rsa_public(wire::TPM_ALG_NULL, &[0xc4; 256]), &name, b"s").err(),
            Some(CredentialError::EkKeyRejected)
        );
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            make_credential(&[0; 3], &[0, 0x0c], b"s"),
            Err(CredentialError::EkPublic(_))
        ));
        assert!(matches!(
            ak_name(&[0xff; 9]),
            Err(CredentialError::AkPublic(_))
        ));
        assert!(secret_matches(b"abc", b"abc"));
        assert!(!secret_matches(b"abc", b"abd"));
        assert!(!secret_matches(b"abc", b"ab"));
    }
}
