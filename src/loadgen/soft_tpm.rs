//! A software model of the parts of a TPM 2.0 an attestor agent uses, for the load
//! generator only. It is compiled into the `attestor` binary's `loadgen` command and is not
//! part of the library, so neither the agent nor the ledger can ever use it as evidence.
//!
//! It emits byte-for-byte the structures a TPM would (Part 2 marshalling): TPMT_PUBLIC of
//! an ECC P-384 EK (restricted decrypt, AES-256-CFB), AK (restricted sign) and sealed
//! signing key (sign-only under a PolicyPCR policy on the measured PCR); TPMS_ATTEST quotes
//! and certifications signed with TPMT_SIGNATURE (ECDSA/SHA-384); PCRs extended as
//! TPM2_PCR_Extend does; and TPM2_ActivateCredential (Part 1 §24) for the ledger's
//! MakeCredential challenge. The keys live in process memory, so nothing it signs is
//! evidence of anything: the ledger trusts it only because the load test's firmware
//! profile names the loadgen EK CA.

use std::collections::BTreeMap;
use std::time::Instant;

use attestor_verify::bundle::SignedAttest;
use attestor_verify::evidence::tpm::credential::{kdfa, kdfe};
use attestor_verify::evidence::tpm::policy;
use attestor_verify::evidence::tpm::wire::{self, PcrSelection};
use attestor_verify::evidence::tpm::HashAlg;
use aws_lc_rs::agreement::{self, PrivateKey};
use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext, UnboundCipherKey, AES_256};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use aws_lc_rs::{digest, hmac};
use thiserror::Error;

/// Name algorithm and PCR bank of every object: SHA-384 throughout.
const HASH: HashAlg = HashAlg::Sha384;
const FIELD_LEN: usize = 48;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
const TPM_RH_OWNER: u32 = 0x4000_0001;

// TPMA_OBJECT bits (Part 2 §8.3).
const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const USER_WITH_AUTH: u32 = 1 << 6;
const ADMIN_WITH_POLICY: u32 = 1 << 7;
const NO_DA: u32 = 1 << 10;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN: u32 = 1 << 18;

/// What the model refuses, as a TPM would with an error code.
#[derive(Debug, Error)]
pub(crate) enum SoftTpmError {
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    #[error("credential blob is malformed: {0}")]
    MalformedCredential(&'static str),
    #[error("credential integrity check failed (TPM_RC_INTEGRITY): not made for this EK and AK")]
    Integrity,
    #[error("the sealed key's policy is not satisfied: the measured PCR changed")]
    PolicyRefused,
    #[error("KDF: {0}")]
    Kdf(#[from] attestor_verify::evidence::tpm::credential::CredentialError),
}

/// PCR values by index, ascending.
pub(super) type PcrValues = Vec<(u8, Vec<u8>)>;

/// One simulated TPM: its keys, its SHA-384 PCR bank and its clock.
pub(super) struct SoftTpm {
    rng: SystemRandom,
    ek: PrivateKey,
    ek_point: Vec<u8>,
    ek_public: Vec<u8>,
    ak: EcdsaKeyPair,
    ak_public: Vec<u8>,
    ak_name: Vec<u8>,
    sealed: EcdsaKeyPair,
    sealed_public: Vec<u8>,
    /// The PCR value the sealed key's policy demands of `measured_pcr`.
    sealed_to: Vec<u8>,
    measured_pcr: u8,
    pcrs: BTreeMap<u8, Vec<u8>>,
    powered_on: Instant,
    last_clock: u64,
}

impl SoftTpm {
    /// A TPM just after boot: `firmware` digests extended into their PCRs (one each), the
    /// other PCRs of `quoted` all-zero, and a sealed key bound to `measured_pcr` holding
    /// the value the given measurements extend it to.
    pub(super) fn boot(
        firmware: &BTreeMap<u8, Vec<u8>>,
        measured_pcr: u8,
        measurements: &[Vec<u8>],
    ) -> Result<SoftTpm, SoftTpmError> {
        let rng = SystemRandom::new();
        let ek = PrivateKey::generate(&agreement::ECDH_P384)
            .map_err(|_| SoftTpmError::Crypto("EK generation"))?;
        let ek_point = ek
            .compute_public_key()
            .map_err(|_| SoftTpmError::Crypto("EK public key"))?
            .as_ref()
            .to_vec();
        let ek_public = ecc_public(
            FIXED_TPM
                | FIXED_PARENT
                | SENSITIVE_DATA_ORIGIN
                | ADMIN_WITH_POLICY
                | RESTRICTED
                | DECRYPT,
            &ek_policy(),
            true,
            None,
            &ek_point,
        );
        let ak = signing_key(&rng)?;
        let ak_public = ecc_public(
            FIXED_TPM
                | FIXED_PARENT
                | SENSITIVE_DATA_ORIGIN
                | USER_WITH_AUTH
                | NO_DA
                | RESTRICTED
                | SIGN,
            &[],
            false,
            Some(HASH),
            ak.public_key().as_ref(),
        );
        let ak_name = wire::object_name(&ak_public, HASH);

        let mut pcrs = BTreeMap::new();
        for (&pcr, digest) in firmware {
            pcrs.insert(pcr, extend(&zero(), digest));
        }
        let mut measured = zero();
        for m in measurements {
            measured = extend(&measured, m);
        }
        pcrs.insert(measured_pcr, measured.clone());

        let sealed = signing_key(&rng)?;
        let selection = [PcrSelection {
            bank: HASH,
            pcrs: vec![measured_pcr],
        }];
        let auth_policy = policy::sealed_key_policy(HASH, &selection, &[&measured]);
        let sealed_public = ecc_public(
            FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY | NO_DA | SIGN,
            &auth_policy,
            false,
            Some(HASH),
            sealed.public_key().as_ref(),
        );
        Ok(SoftTpm {
            rng,
            ek,
            ek_point,
            ek_public,
            ak,
            ak_public,
            ak_name,
            sealed,
            sealed_public,
            sealed_to: measured,
            measured_pcr,
            pcrs,
            powered_on: Instant::now(),
            last_clock: 0,
        })
    }

    /// The EK's SEC1 point, which its certificate certifies.
    pub(super) fn ek_point(&self) -> &[u8] {
        &self.ek_point
    }

    pub(super) fn ek_public(&self) -> &[u8] {
        &self.ek_public
    }

    pub(super) fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    pub(super) fn sealed_public(&self) -> &[u8] {
        &self.sealed_public
    }

    /// Current PCR values of the selected PCRs, ascending (all-zero if never extended).
    pub(super) fn read_pcrs(&self, selection: &[u8]) -> PcrValues {
        selection
            .iter()
            .map(|&pcr| (pcr, self.pcrs.get(&pcr).cloned().unwrap_or_else(zero)))
            .collect()
    }

    /// TPM2_ActivateCredential with the EK as the key that decrypts and the AK as the
    /// object the credential names (Part 1 §24.4–24.6).
    pub(super) fn activate_credential(
        &self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, SoftTpmError> {
        let (ephemeral_x, rest) = split_tpm2b(encrypted_secret)
            .ok_or(SoftTpmError::MalformedCredential("TPMS_ECC_POINT.x"))?;
        let (ephemeral_y, rest) =
            split_tpm2b(rest).ok_or(SoftTpmError::MalformedCredential("TPMS_ECC_POINT.y"))?;
        if !rest.is_empty() || ephemeral_x.len() > FIELD_LEN || ephemeral_y.len() > FIELD_LEN {
            return Err(SoftTpmError::MalformedCredential("TPMS_ECC_POINT"));
        }
        let mut point = vec![0x04];
        for coordinate in [ephemeral_x, ephemeral_y] {
            point.resize(point.len() + FIELD_LEN - coordinate.len(), 0);
            point.extend_from_slice(coordinate);
        }
        let z = agreement::agree(
            &self.ek,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P384, &point),
            SoftTpmError::Crypto("ECDH with the EK"),
            |z| Ok(z.to_vec()),
        )?;
        let ek_x = &self.ek_point[1..=FIELD_LEN];
        let seed = kdfe(
            HASH,
            &z,
            b"IDENTITY",
            ephemeral_x,
            ek_x,
            8 * HASH.digest_len(),
        )?;

        let (outer_hmac, enc_identity) = split_tpm2b(credential_blob).ok_or(
            SoftTpmError::MalformedCredential("TPMS_ID_OBJECT.integrityHMAC"),
        )?;
        let hmac_key = kdfa(HASH, &seed, b"INTEGRITY", &[], &[], 8 * HASH.digest_len())?;
        let mut signed = enc_identity.to_vec();
        signed.extend_from_slice(&self.ak_name);
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA384, &hmac_key),
            &signed,
            outer_hmac,
        )
        .map_err(|_| SoftTpmError::Integrity)?;

        let sym_key = kdfa(HASH, &seed, b"STORAGE", &self.ak_name, &[], 256)?;
        let key = UnboundCipherKey::new(&AES_256, &sym_key)
            .map_err(|_| SoftTpmError::Crypto("AES key"))?;
        let mut plain = enc_identity.to_vec();
        DecryptingKey::cfb128(key)
            .map_err(|_| SoftTpmError::Crypto("AES-CFB key"))?
            .decrypt(
                &mut plain,
                DecryptionContext::Iv128(FixedLength::from([0u8; 16])),
            )
            .map_err(|_| SoftTpmError::Crypto("AES-CFB decryption"))?;
        let (secret, rest) =
            split_tpm2b(&plain).ok_or(SoftTpmError::MalformedCredential("TPM2B_DIGEST"))?;
        if !rest.is_empty() {
            return Err(SoftTpmError::MalformedCredential("trailing bytes"));
        }
        Ok(secret.to_vec())
    }

    /// TPM2_Certify of the sealed key by the AK.
    pub(super) fn certify_sealed_key(&mut self) -> Result<SignedAttest, SoftTpmError> {
        let name = wire::object_name(&self.sealed_public, HASH);
        let mut attested = Vec::new();
        push_tpm2b(&mut attested, &name);
        push_tpm2b(&mut attested, &qualified_name(&name));
        self.signed_attest(wire::TPM_ST_ATTEST_CERTIFY, &[], &attested)
    }

    /// TPM2_Quote of `selection` (SHA-384 bank) with `qualifying` as extraData; returns
    /// the signed quote and the values it covers.
    pub(super) fn quote(
        &mut self,
        qualifying: &[u8],
        selection: &[u8],
    ) -> Result<(SignedAttest, PcrValues), SoftTpmError> {
        let values = self.read_pcrs(selection);
        let refs: Vec<&[u8]> = values.iter().map(|(_, v)| v.as_slice()).collect();
        let mut attested = wire::marshal_pcr_selection(&[PcrSelection {
            bank: HASH,
            pcrs: selection.to_vec(),
        }]);
        push_tpm2b(&mut attested, &wire::quote_pcr_digest(HASH, &refs));
        let quote = self.signed_attest(wire::TPM_ST_ATTEST_QUOTE, qualifying, &attested)?;
        Ok((quote, values))
    }

    /// Signs `message` (SHA-384, as the agent's TPM2_Sign of its digest) with the sealed
    /// key, which the TPM allows only while the measured PCR holds the sealed value.
    /// Returns r || s.
    pub(super) fn sign_sealed(&self, message: &[u8]) -> Result<Vec<u8>, SoftTpmError> {
        if self.pcrs.get(&self.measured_pcr) != Some(&self.sealed_to) {
            return Err(SoftTpmError::PolicyRefused);
        }
        Ok(self
            .sealed
            .sign(&self.rng, message)
            .map_err(|_| SoftTpmError::Crypto("sealed-key signature"))?
            .as_ref()
            .to_vec())
    }

    /// A TPMS_ATTEST of `attest_type` with the TPM's clock, signed by the AK.
    fn signed_attest(
        &mut self,
        attest_type: u16,
        extra_data: &[u8],
        attested: &[u8],
    ) -> Result<SignedAttest, SoftTpmError> {
        // The clock counts milliseconds powered on and never repeats a value here, as two
        // commands on a real TPM are at least a millisecond apart.
        let clock = u64::try_from(self.powered_on.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(self.last_clock + 1);
        self.last_clock = clock;
        let mut attest = Vec::with_capacity(160 + attested.len());
        attest.extend_from_slice(&wire::TPM_GENERATED_VALUE.to_be_bytes());
        attest.extend_from_slice(&attest_type.to_be_bytes());
        push_tpm2b(&mut attest, &qualified_name(&self.ak_name));
        push_tpm2b(&mut attest, extra_data);
        attest.extend_from_slice(&clock.to_be_bytes());
        attest.extend_from_slice(&1u32.to_be_bytes()); // resetCount: booted once
        attest.extend_from_slice(&0u32.to_be_bytes()); // restartCount
        attest.push(1); // safe
        attest.extend_from_slice(&0x2023_0101_0000_0000u64.to_be_bytes()); // firmwareVersion
        attest.extend_from_slice(attested);
        let fixed = self
            .ak
            .sign(&self.rng, &attest)
            .map_err(|_| SoftTpmError::Crypto("AK signature"))?;
        let (r, s) = fixed.as_ref().split_at(FIELD_LEN);
        let mut signature = Vec::with_capacity(8 + 2 * FIELD_LEN);
        signature.extend_from_slice(&wire::TPM_ALG_ECDSA.to_be_bytes());
        signature.extend_from_slice(&HASH.tpm_alg_id().to_be_bytes());
        push_tpm2b(&mut signature, r);
        push_tpm2b(&mut signature, s);
        Ok(SignedAttest { attest, signature })
    }
}

fn signing_key(rng: &SystemRandom) -> Result<EcdsaKeyPair, SoftTpmError> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, rng)
        .map_err(|_| SoftTpmError::Crypto("key generation"))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| SoftTpmError::Crypto("key generation"))
}

/// A marshalled TPMT_PUBLIC of an ECC P-384 key: a storage key (AES-256-CFB, no scheme)
/// when `storage`, else a signing key with ECDSA and `scheme_hash`.
fn ecc_public(
    attributes: u32,
    auth_policy: &[u8],
    storage: bool,
    scheme_hash: Option<HashAlg>,
    sec1_point: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&wire::TPM_ALG_ECC.to_be_bytes());
    out.extend_from_slice(&HASH.tpm_alg_id().to_be_bytes());
    out.extend_from_slice(&attributes.to_be_bytes());
    push_tpm2b(&mut out, auth_policy);
    if storage {
        for v in [TPM_ALG_AES, 256, TPM_ALG_CFB] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    } else {
        out.extend_from_slice(&wire::TPM_ALG_NULL.to_be_bytes());
    }
    match scheme_hash {
        Some(hash) => {
            out.extend_from_slice(&wire::TPM_ALG_ECDSA.to_be_bytes());
            out.extend_from_slice(&hash.tpm_alg_id().to_be_bytes());
        }
        None => out.extend_from_slice(&wire::TPM_ALG_NULL.to_be_bytes()),
    }
    out.extend_from_slice(&wire::TPM_ECC_NIST_P384.to_be_bytes());
    out.extend_from_slice(&wire::TPM_ALG_NULL.to_be_bytes()); // kdf
    let (x, y) = sec1_point
        .get(1..)
        .unwrap_or_default()
        .split_at(FIELD_LEN.min(sec1_point.len().saturating_sub(1)));
    push_tpm2b(&mut out, x);
    push_tpm2b(&mut out, y);
    out
}

/// The TCG EK template's policy: PolicySecret(TPM_RH_ENDORSEMENT) with an empty policyRef.
fn ek_policy() -> Vec<u8> {
    let digest = HASH.digest_parts(&[
        &zero(),
        &TPM_CC_POLICY_SECRET.to_be_bytes(),
        &TPM_RH_ENDORSEMENT.to_be_bytes(),
    ]);
    HASH.digest(&digest)
}

/// Qualified name of an object directly under the owner hierarchy's primary:
/// nameAlg || H(QN(parent) || Name), with the hierarchy handle as the parent's QN.
fn qualified_name(name: &[u8]) -> Vec<u8> {
    let mut out = HASH.tpm_alg_id().to_be_bytes().to_vec();
    out.extend(HASH.digest_parts(&[&TPM_RH_OWNER.to_be_bytes(), name]));
    out
}

fn zero() -> Vec<u8> {
    vec![0; HASH.digest_len()]
}

/// TPM2_PCR_Extend: new = H(old || digest).
pub(super) fn extend(old: &[u8], digest: &[u8]) -> Vec<u8> {
    HASH.digest_parts(&[old, digest])
}

/// SHA-384 of `data`, as the agent measures.
pub(super) fn sha384(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA384, data).as_ref().to_vec()
}

fn push_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every buffer here is a digest, name, point coordinate or small structure.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

fn split_tpm2b(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (head, rest) = buf.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*head));
    (rest.len() >= len).then(|| rest.split_at(len))
}
