//! Marshalled TPMT_PUBLIC templates of the keys attestor creates, one per
//! [`SigningAlgorithm`]: the AK (restricted signing key under the EK), the sealed signing
//! key and its storage parent (SRK) in the owner hierarchy. The key's nameAlg is the
//! algorithm's hash, so the sealed key's policy is computed in that hash too.

use attestor_verify::evidence::tpm::keys::{SigningAlgorithm, TPM_ALG_RSA};
use attestor_verify::evidence::tpm::wire::TPM_ALG_ECC;

const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
/// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign.
const AK_ATTRIBUTES: u32 = 0x0005_0072;
/// fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy, noDA, sign: usable only
/// through its policy.
const SEALED_ATTRIBUTES: u32 = 0x0004_04B2;
/// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt.
const SRK_ATTRIBUTES: u32 = 0x0003_0472;

/// The AK: a restricted signing key of `alg`, empty auth.
pub(super) fn ak(alg: SigningAlgorithm) -> Vec<u8> {
    signing_key(alg, AK_ATTRIBUTES, &[])
}

/// The sealed key: a non-restricted signing key of `alg` usable only through `auth_policy`.
pub(super) fn sealed_key(alg: SigningAlgorithm, auth_policy: &[u8]) -> Vec<u8> {
    signing_key(alg, SEALED_ATTRIBUTES, auth_policy)
}

/// The storage key the sealed key of `alg` lives under: the same key type, so a TPM able
/// to make the sealed key can make its parent. Fixed template, fixed hierarchy: the same
/// key after any reset, never persisted.
pub(super) fn srk(alg: SigningAlgorithm) -> Vec<u8> {
    let mut out = header(alg, SRK_ATTRIBUTES, &[]);
    for v in [TPM_ALG_AES, 128, TPM_ALG_CFB, TPM_ALG_NULL] {
        out.extend(v.to_be_bytes());
    }
    key_parameters(alg, &mut out);
    out
}

fn signing_key(alg: SigningAlgorithm, attributes: u32, auth_policy: &[u8]) -> Vec<u8> {
    let mut out = header(alg, attributes, auth_policy);
    out.extend(TPM_ALG_NULL.to_be_bytes()); // no symmetric algorithm
    out.extend(alg.scheme().to_be_bytes());
    out.extend(alg.hash().tpm_alg_id().to_be_bytes());
    key_parameters(alg, &mut out);
    out
}

fn header(alg: SigningAlgorithm, attributes: u32, auth_policy: &[u8]) -> Vec<u8> {
    let kind = if alg.curve().is_some() {
        TPM_ALG_ECC
    } else {
        TPM_ALG_RSA
    };
    let mut out = Vec::with_capacity(128);
    out.extend(kind.to_be_bytes());
    out.extend(alg.hash().tpm_alg_id().to_be_bytes());
    out.extend(attributes.to_be_bytes());
    // A policy digest is at most 64 bytes.
    out.extend(u16::try_from(auth_policy.len()).unwrap_or(0).to_be_bytes());
    out.extend(auth_policy);
    out
}

/// The rest of TPMS_{ECC,RSA}_PARMS after the scheme, and an empty `unique`.
fn key_parameters(alg: SigningAlgorithm, out: &mut Vec<u8>) {
    match alg.curve() {
        Some(curve) => {
            out.extend(curve.to_be_bytes());
            out.extend(TPM_ALG_NULL.to_be_bytes()); // no KDF
            out.extend([0, 0, 0, 0]); // x, y
        }
        None => {
            out.extend(2048u16.to_be_bytes());
            out.extend(0u32.to_be_bytes()); // the default exponent
            out.extend([0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestor_verify::evidence::tpm::keys::{parse_tpm_public, TpmPublic};
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
    use tss_esapi::interface_types::ecc::EccCurve;
    use tss_esapi::structures::{
        EccPoint, PublicBuilder, PublicEccParametersBuilder, SymmetricDefinitionObject,
    };
    use tss_esapi::traits::Marshall;

    /// The storage key template attestor used before algorithms were chosen: the P-384 SRK
    /// must stay byte-identical, or sealed keys made before no longer load.
    #[test]
    fn p384_srk_is_the_one_sealed_keys_were_made_under() {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_restricted(true)
            .with_decrypt(true)
            .with_sign_encrypt(false)
            .build()
            .unwrap();
        let before = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha384)
            .with_object_attributes(attributes)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP384,
                )
                .build()
                .unwrap(),
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .unwrap()
            .marshall()
            .unwrap();
        assert_eq!(srk(SigningAlgorithm::EcdsaP384), before);
    }

    #[test]
    fn templates_parse_as_keys_of_their_algorithm() {
        for alg in SigningAlgorithm::ALL {
            let ak = parse_tpm_public(&ak(alg)).unwrap();
            assert!(ak.object_attributes().restricted() && ak.object_attributes().sign());
            assert_eq!(ak.name_alg(), alg.hash());
            let sealed = parse_tpm_public(&sealed_key(alg, &[1; 32])).unwrap();
            assert!(!sealed.object_attributes().user_with_auth());
            assert_eq!(sealed.auth_policy(), &[1; 32]);
            let srk = parse_tpm_public(&srk(alg)).unwrap();
            assert!(srk.object_attributes().decrypt());
            assert_eq!(matches!(srk, TpmPublic::Rsa(_)), alg.curve().is_none());
        }
    }
}
