//! Software computation of TPM 2.0 policy digests (Library spec Part 3, 23.x), so a
//! verifier can check a key's authPolicy without a TPM.
//!
//! Each policy command extends the session digest as
//! `digest' = H(digest || TPM_CC_Policy<X> || command-specific data)`; a trial session
//! starts from a zero digest of the session hash's length.

use super::wire::{marshal_pcr_selection, PcrSelection};
use super::HashAlg;

/// TPM_CC_PolicyPCR.
pub const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// TPM_CC_PolicyCommandCode.
pub const TPM_CC_POLICY_COMMAND_CODE: u32 = 0x0000_016C;
/// TPM_CC_PolicyOR.
pub const TPM_CC_POLICY_OR: u32 = 0x0000_0171;
/// TPM_CC_Certify, the command the sealed key's second policy branch allows.
pub const TPM_CC_CERTIFY: u32 = 0x0000_0148;
/// TPM_CC_PolicySecret.
pub const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
/// TPM_CC_PolicyAuthorizeNV.
pub const TPM_CC_POLICY_AUTHORIZE_NV: u32 = 0x0000_0192;
/// TPM_RH_ENDORSEMENT, whose Name is its handle.
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
/// TPMA_NV of the EK Credential Profile's policy NV indices (Annex B.6.3): POLICYWRITE,
/// WRITEALL, PPREAD, OWNERREAD, AUTHREAD, POLICYREAD, NO_DA, WRITTEN.
const EK_POLICY_NV_ATTRIBUTES: u32 = 0x220F_1008;

/// TPML_DIGEST holds 2..=8 digests in a PolicyOR.
const MIN_OR_BRANCHES: usize = 2;
const MAX_OR_BRANCHES: usize = 8;

/// Why a policy digest could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// PolicyOR takes between 2 and 8 branches (TPML_DIGEST in TPM2_PolicyOR).
    #[error("PolicyOR needs 2 to 8 branches, got {0}")]
    BranchCount(usize),
    /// A PolicyOR branch is not a digest of the policy's hash algorithm.
    #[error("PolicyOR branch {index} is {len} bytes, expected {expected} ({alg})")]
    BranchLength {
        /// The branch's position (0-based).
        index: usize,
        /// Its length in bytes.
        len: usize,
        /// The policy hash's digest length in bytes.
        expected: usize,
        /// The policy hash's name.
        alg: &'static str,
    },
}

/// The initial digest of a policy session: all zeros, hash length.
pub fn zero_digest(alg: HashAlg) -> Vec<u8> {
    vec![0u8; alg.digest_len()]
}

/// PolicyPCR: H(prior || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(concat values)), where
/// both hashes are the policy's `alg` and `values` are in selection order. `prior` must be
/// a digest of `alg` (e.g. [`zero_digest`]), as the TPM's session digest always is.
pub fn policy_pcr(
    alg: HashAlg,
    prior: &[u8],
    selection: &[PcrSelection],
    values: &[&[u8]],
) -> Vec<u8> {
    let pcr_digest = alg.digest_parts(values);
    let selection = marshal_pcr_selection(selection);
    alg.digest_parts(&[
        prior,
        &TPM_CC_POLICY_PCR.to_be_bytes(),
        &selection,
        &pcr_digest,
    ])
}

/// PolicyCommandCode: H(prior || TPM_CC_PolicyCommandCode || command_code).
pub fn policy_command_code(alg: HashAlg, prior: &[u8], command_code: u32) -> Vec<u8> {
    alg.digest_parts(&[
        prior,
        &TPM_CC_POLICY_COMMAND_CODE.to_be_bytes(),
        &command_code.to_be_bytes(),
    ])
}

/// PolicyOR: H(zeros || TPM_CC_PolicyOR || branch_1 || ... || branch_n); the TPM resets the
/// prior digest to zero, so the result does not depend on it.
pub fn policy_or(alg: HashAlg, branches: &[&[u8]]) -> Result<Vec<u8>, PolicyError> {
    if !(MIN_OR_BRANCHES..=MAX_OR_BRANCHES).contains(&branches.len()) {
        return Err(PolicyError::BranchCount(branches.len()));
    }
    if let Some((index, b)) = branches
        .iter()
        .enumerate()
        .find(|(_, b)| b.len() != alg.digest_len())
    {
        return Err(PolicyError::BranchLength {
            index,
            len: b.len(),
            expected: alg.digest_len(),
            alg: alg.name(),
        });
    }
    Ok(policy_or_unchecked(alg, branches))
}

fn policy_or_unchecked(alg: HashAlg, branches: &[&[u8]]) -> Vec<u8> {
    let zero = zero_digest(alg);
    let cc = TPM_CC_POLICY_OR.to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![&zero, &cc];
    parts.extend_from_slice(branches);
    alg.digest_parts(&parts)
}

/// The authPolicy of attestor's sealed signing key:
/// PolicyOR(PolicyPCR(selection, values), PolicyCommandCode(TPM_CC_Certify)), so it signs
/// only in the measured state yet can still be certified by the AK.
pub fn sealed_key_policy(alg: HashAlg, selection: &[PcrSelection], values: &[&[u8]]) -> Vec<u8> {
    let zero = zero_digest(alg);
    let pcr_branch = policy_pcr(alg, &zero, selection, values);
    let certify_branch = policy_command_code(alg, &zero, TPM_CC_CERTIFY);
    // Two branches, both of alg's length: exactly what policy_or validates.
    policy_or_unchecked(alg, &[&pcr_branch, &certify_branch])
}

/// PolicySecret: H(H(prior || TPM_CC_PolicySecret || authName) || policyRef), the TPM's
/// PolicyUpdate with the authorizing entity's Name (a handle for a hierarchy).
pub fn policy_secret(alg: HashAlg, prior: &[u8], auth_name: &[u8], policy_ref: &[u8]) -> Vec<u8> {
    let inner = alg.digest_parts(&[prior, &TPM_CC_POLICY_SECRET.to_be_bytes(), auth_name]);
    alg.digest_parts(&[&inner, policy_ref])
}

/// PolicyAuthorizeNV: H(prior || TPM_CC_PolicyAuthorizeNV || nvIndexName).
pub fn policy_authorize_nv(alg: HashAlg, prior: &[u8], nv_name: &[u8]) -> Vec<u8> {
    alg.digest_parts(&[prior, &TPM_CC_POLICY_AUTHORIZE_NV.to_be_bytes(), nv_name])
}

/// The EK Credential Profile's PolicyA: PolicySecret(TPM_RH_ENDORSEMENT), empty policyRef.
/// The low-range templates' authPolicy in SHA-256.
pub fn ek_policy_a(alg: HashAlg) -> Vec<u8> {
    policy_secret(
        alg,
        &zero_digest(alg),
        &TPM_RH_ENDORSEMENT.to_be_bytes(),
        &[],
    )
}

/// The EK Credential Profile's PolicyC: PolicyAuthorizeNV of the policy NV index of `alg`
/// (0x01C07F01 for SHA-256, 0x01C07F02 for SHA-384, 0x01C07F03 for SHA-512; Annex
/// B.6.3), whose own authPolicy is PolicyA.
pub fn ek_policy_c(alg: HashAlg) -> Vec<u8> {
    policy_authorize_nv(alg, &zero_digest(alg), &ek_policy_index_name(alg))
}

/// The Name of the EK Credential Profile's policy NV index of `alg`, computed from the
/// index's public area as the TPM does.
pub fn ek_policy_index_name(alg: HashAlg) -> Vec<u8> {
    let index: u32 = match alg {
        HashAlg::Sha256 => 0x01C0_7F01,
        HashAlg::Sha384 => 0x01C0_7F02,
        HashAlg::Sha512 => 0x01C0_7F03,
    };
    let policy_a = ek_policy_a(alg);
    let digest_len = u16::try_from(alg.digest_len()).unwrap_or(u16::MAX);
    // TPMS_NV_PUBLIC: nvIndex, nameAlg, attributes, TPM2B authPolicy, dataSize (a TPMT_HA).
    let mut nv_public = Vec::with_capacity(14 + policy_a.len());
    nv_public.extend_from_slice(&index.to_be_bytes());
    nv_public.extend_from_slice(&alg.tpm_alg_id().to_be_bytes());
    nv_public.extend_from_slice(&EK_POLICY_NV_ATTRIBUTES.to_be_bytes());
    nv_public.extend_from_slice(&digest_len.to_be_bytes());
    nv_public.extend_from_slice(&policy_a);
    nv_public.extend_from_slice(&(digest_len + 2).to_be_bytes());
    let mut name = alg.tpm_alg_id().to_be_bytes().to_vec();
    name.extend(alg.digest(&nv_public));
    name
}

/// The EK Credential Profile's PolicyB: PolicyOR(PolicyA, PolicyC), the high-range
/// templates' authPolicy.
pub fn ek_policy_b(alg: HashAlg) -> Vec<u8> {
    policy_or_unchecked(alg, &[&ek_policy_a(alg), &ek_policy_c(alg)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ek_policies_are_the_published_values() {
        // TCG EK Credential Profile 2.5, Annex B.6 (Tables 33, 35, 36); SHA-512 as the
        // profile (2.5 and later) publishes it.
        for (alg, a, c, b) in [
            (
                HashAlg::Sha256,
                "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa",
                "3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde",
                "ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0",
            ),
            (
                HashAlg::Sha384,
                "8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e\
                 143e8bb1133824ccb431053871c6db53",
                "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5\
                 b4947c2d73e63005eed2dc2b3593d165",
                "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419ca\
                 cb47ba09699646150f9fc000f3f80e12",
            ),
            (
                HashAlg::Sha512,
                "1e3b76502c8a1425aa0b7b3fc646a1b0fae063b03b5368f9c4cddecaff0891dd\
                 682bac1a85d4d832b781ea451915de5fc5bf0dc4a1917cd42fa041e3f998e0ee",
                "589ee1e146544716e8deafe6db247b01b81e9f9c7dd16b814aa159138749105f\
                 ba5388dd1dea702f35240c184933121e2c61b8f50d3ef91393a49a38c3f73fc8",
                "b8221ca69e8550a4914de3faa6a18c072cc01208073a928d5d66d59ef79e49a4\
                 29c41a6b269571d57edb25fbdb1838425608b413cd616a5f6db5b6071af99bea",
            ),
        ] {
            assert_eq!(hex::encode(ek_policy_a(alg)), a, "PolicyA {alg:?}");
            assert_eq!(hex::encode(ek_policy_c(alg)), c, "PolicyC {alg:?}");
            assert_eq!(hex::encode(ek_policy_b(alg)), b, "PolicyB {alg:?}");
        }
        // The policy indices' Names (Annex B.6.3).
        for (alg, name) in [
            (
                HashAlg::Sha256,
                "000b0c9d717e9c3fe69fda41769450bb145957f8b3610e084dbf65591a5d11ecd83f",
            ),
            (
                HashAlg::Sha384,
                "000cdb62fca346612c976732ff4e8621fb4e858be82586486504f7d02e621f8d7d61\
                 ae32cfc60c4d120609ed6768afcf090c",
            ),
            (
                HashAlg::Sha512,
                "000d1c47c0bbcbd3cf7d7cae6987d31937c171015dde3b7f0d3c869bca1f7e8a223b\
                 9acfadb49b7c9cf14d450f41e9327de34d9291eece2c58ab1dc10e9059cce560",
            ),
        ] {
            assert_eq!(hex::encode(ek_policy_index_name(alg)), name, "{alg:?}");
        }
    }

    #[test]
    fn policy_or_validates_branches() {
        let d: &[u8] = &[0u8; 48];
        assert_eq!(
            policy_or(HashAlg::Sha384, &[d]),
            Err(PolicyError::BranchCount(1))
        );
        assert_eq!(
            policy_or(HashAlg::Sha384, &[d; 9]),
            Err(PolicyError::BranchCount(9))
        );
        assert!(matches!(
            policy_or(HashAlg::Sha384, &[d, &d[..32]]),
            Err(PolicyError::BranchLength {
                index: 1,
                len: 32,
                ..
            })
        ));
        assert!(policy_or(HashAlg::Sha384, &[d; 8]).is_ok());
    }

    #[test]
    fn policy_command_code_matches_spec_layout() {
        let zero = zero_digest(HashAlg::Sha256);
        let mut pre = zero.clone();
        pre.extend([0, 0, 1, 0x6c, 0, 0, 1, 0x48]);
        assert_eq!(
            policy_command_code(HashAlg::Sha256, &zero, TPM_CC_CERTIFY),
            HashAlg::Sha256.digest(&pre)
        );
    }

    #[test]
    fn sealed_key_policy_is_or_of_branches() {
        let sel = [PcrSelection {
            bank: HashAlg::Sha384,
            pcrs: vec![13],
        }];
        let v = [7u8; 48];
        let zero = zero_digest(HashAlg::Sha384);
        let a = policy_pcr(HashAlg::Sha384, &zero, &sel, &[&v]);
        let b = policy_command_code(HashAlg::Sha384, &zero, TPM_CC_CERTIFY);
        assert_eq!(
            sealed_key_policy(HashAlg::Sha384, &sel, &[&v]),
            policy_or(HashAlg::Sha384, &[&a, &b]).unwrap()
        );
        // Branch order matters to the TPM's hash.
        assert_ne!(
            sealed_key_policy(HashAlg::Sha384, &sel, &[&v]),
            policy_or(HashAlg::Sha384, &[&b, &a]).unwrap()
        );
    }
}
