//! Endorsement keys as the TCG EK Credential Profile (2.5) defines them: the low-range
//! templates L-1 (RSA-2048) and L-2 (ECC P-256) with PolicyA, the high-range templates
//! H-1..H-7 (RSA-2048/3072/4096, ECC P-256/P-384/P-521) with PolicyB, the NV indices of
//! their certificates, and the EK nonce or template a vendor may store in NV instead of
//! the default. The templates are marshalled here byte for byte, so an EK re-created from
//! them is the key the manufacturer certified.
//!
//! The SM2 EK (H-5) is not offered: its nameAlg (SM3) and cipher (SM4) are not ones
//! attestor's verifier computes credentials with.

use serde::{Deserialize, Serialize};

use attestor_verify::evidence::tpm::policy;
use attestor_verify::evidence::tpm::HashAlg;

/// TPMA_OBJECT of the low-range templates: fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt (userWithAuth clear).
const LOW_RANGE_ATTRIBUTES: u32 = 0x0003_00B2;
/// TPMA_OBJECT of the high-range templates: as the low range, plus userWithAuth.
const HIGH_RANGE_ATTRIBUTES: u32 = 0x0003_00F2;
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ECC_NIST_P256: u16 = 0x0003;
const TPM_ECC_NIST_P384: u16 = 0x0004;
const TPM_ECC_NIST_P521: u16 = 0x0005;

/// An EK template of the TCG EK Credential Profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EkTemplate {
    /// L-1: RSA-2048, SHA-256, AES-128-CFB, PolicyA; certificate at 0x01c00002.
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// L-2: ECC P-256, SHA-256, AES-128-CFB, PolicyA; certificate at 0x01c0000a.
    #[serde(rename = "ecc-p256")]
    EccP256,
    /// H-1: RSA-2048, SHA-256, AES-128-CFB, PolicyB; certificate at 0x01c00012.
    #[serde(rename = "rsa2048-high")]
    Rsa2048High,
    /// H-2: ECC P-256, SHA-256, AES-128-CFB, PolicyB; certificate at 0x01c00014.
    #[serde(rename = "ecc-p256-high")]
    EccP256High,
    /// H-3: ECC P-384, SHA-384, AES-256-CFB, PolicyB; certificate at 0x01c00016.
    #[serde(rename = "ecc-p384")]
    EccP384,
    /// H-4: ECC P-521, SHA-512, AES-256-CFB, PolicyB; certificate at 0x01c00018.
    #[serde(rename = "ecc-p521")]
    EccP521,
    /// H-6: RSA-3072, SHA-384, AES-256-CFB, PolicyB; certificate at 0x01c0001c.
    #[serde(rename = "rsa3072")]
    Rsa3072,
    /// H-7: RSA-4096, SHA-384, AES-256-CFB, PolicyB; certificate at 0x01c0001e.
    /// swtpm 0.7.1 lacks RSA-4096, so this is checked against the published template and
    /// policy values only, not on a TPM.
    #[serde(rename = "rsa4096")]
    Rsa4096,
}

impl EkTemplate {
    /// The order in which the agent looks for an EK certificate in NV: ECC before RSA (an
    /// ECC EK makes cheaper credentials), stronger first, except that P-384 comes before
    /// P-521: a TPM with both keeps the EK its agent's AK was made under before P-521
    /// existed here, and P-384 is strong enough for any AK attestor makes.
    pub const PREFERENCE: [EkTemplate; 8] = [
        EkTemplate::EccP384,
        EkTemplate::EccP521,
        EkTemplate::EccP256,
        EkTemplate::EccP256High,
        EkTemplate::Rsa4096,
        EkTemplate::Rsa3072,
        EkTemplate::Rsa2048,
        EkTemplate::Rsa2048High,
    ];

    /// The name in agent configs and errors.
    pub fn name(self) -> &'static str {
        match self {
            EkTemplate::Rsa2048 => "rsa2048",
            EkTemplate::EccP256 => "ecc-p256",
            EkTemplate::Rsa2048High => "rsa2048-high",
            EkTemplate::EccP256High => "ecc-p256-high",
            EkTemplate::EccP384 => "ecc-p384",
            EkTemplate::EccP521 => "ecc-p521",
            EkTemplate::Rsa3072 => "rsa3072",
            EkTemplate::Rsa4096 => "rsa4096",
        }
    }

    /// The template named `name` (see [`EkTemplate::name`]).
    pub fn from_name(name: &str) -> Option<EkTemplate> {
        Self::PREFERENCE.into_iter().find(|t| t.name() == name)
    }

    /// NV index of the EK certificate.
    pub fn certificate_index(self) -> u32 {
        match self {
            EkTemplate::Rsa2048 => 0x01c0_0002,
            EkTemplate::EccP256 => 0x01c0_000a,
            EkTemplate::Rsa2048High => 0x01c0_0012,
            EkTemplate::EccP256High => 0x01c0_0014,
            EkTemplate::EccP384 => 0x01c0_0016,
            EkTemplate::EccP521 => 0x01c0_0018,
            EkTemplate::Rsa3072 => 0x01c0_001c,
            EkTemplate::Rsa4096 => 0x01c0_001e,
        }
    }

    /// NV index of the EK nonce (low range only): the start of the template's `unique`.
    pub fn nonce_index(self) -> Option<u32> {
        match self {
            EkTemplate::Rsa2048 => Some(0x01c0_0003),
            EkTemplate::EccP256 => Some(0x01c0_000b),
            _ => None,
        }
    }

    /// NV index of a vendor's EK template, which replaces the default when present.
    pub fn template_index(self) -> u32 {
        match self {
            EkTemplate::Rsa2048 => 0x01c0_0004,
            EkTemplate::EccP256 => 0x01c0_000c,
            // High range: the index after the certificate's.
            high => high.certificate_index() + 1,
        }
    }

    fn is_low_range(self) -> bool {
        self.nonce_index().is_some()
    }

    /// The template's nameAlg, which is also its policy hash.
    pub fn name_alg(self) -> HashAlg {
        match self {
            EkTemplate::Rsa2048
            | EkTemplate::EccP256
            | EkTemplate::Rsa2048High
            | EkTemplate::EccP256High => HashAlg::Sha256,
            EkTemplate::EccP384 | EkTemplate::Rsa3072 | EkTemplate::Rsa4096 => HashAlg::Sha384,
            EkTemplate::EccP521 => HashAlg::Sha512,
        }
    }

    /// The default template as a marshalled TPMT_PUBLIC, with the vendor's EK nonce (if
    /// any) at the start of `unique`, zero-padded to the key size (low range only).
    pub fn default_public(self, nonce: Option<&[u8]>) -> Vec<u8> {
        let name_alg = self.name_alg();
        let (attributes, auth_policy) = if self.is_low_range() {
            (LOW_RANGE_ATTRIBUTES, policy::ek_policy_a(name_alg))
        } else {
            (HIGH_RANGE_ATTRIBUTES, policy::ek_policy_b(name_alg))
        };
        let aes_bits: u16 = if name_alg == HashAlg::Sha256 {
            128
        } else {
            256
        };
        let mut out = Vec::with_capacity(400);
        let rsa_bits = match self {
            EkTemplate::Rsa2048 | EkTemplate::Rsa2048High => Some(2048u16),
            EkTemplate::Rsa3072 => Some(3072),
            EkTemplate::Rsa4096 => Some(4096),
            _ => None,
        };
        out.extend(rsa_bits.map_or(TPM_ALG_ECC, |_| TPM_ALG_RSA).to_be_bytes());
        out.extend(name_alg.tpm_alg_id().to_be_bytes());
        out.extend(attributes.to_be_bytes());
        push_tpm2b(&mut out, &auth_policy);
        for v in [TPM_ALG_AES, aes_bits, TPM_ALG_CFB, TPM_ALG_NULL] {
            out.extend(v.to_be_bytes());
        }
        // The low range fills `unique` with zeros (or the nonce) to the key size; the high
        // range leaves it empty.
        let unique = |len: usize| -> Vec<u8> {
            if !self.is_low_range() {
                return Vec::new();
            }
            let mut u = nonce.unwrap_or_default().to_vec();
            u.resize(len.max(u.len()), 0);
            u
        };
        match rsa_bits {
            Some(bits) => {
                out.extend(bits.to_be_bytes());
                out.extend(0u32.to_be_bytes());
                push_tpm2b(&mut out, &unique(usize::from(bits / 8)));
            }
            None => {
                let curve = match self {
                    EkTemplate::EccP384 => TPM_ECC_NIST_P384,
                    EkTemplate::EccP521 => TPM_ECC_NIST_P521,
                    _ => TPM_ECC_NIST_P256,
                };
                out.extend(curve.to_be_bytes());
                out.extend(TPM_ALG_NULL.to_be_bytes());
                push_tpm2b(&mut out, &unique(32));
                // y is zeros even where a nonce fills x.
                let y = if self.is_low_range() {
                    vec![0; 32]
                } else {
                    Vec::new()
                };
                push_tpm2b(&mut out, &y);
            }
        }
        out
    }
}

impl std::fmt::Display for EkTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How an EK's authPolicy is satisfied in a policy session of the EK's nameAlg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EkPolicy {
    /// PolicySecret(TPM_RH_ENDORSEMENT).
    A,
    /// PolicySecret(TPM_RH_ENDORSEMENT), then PolicyOR(PolicyA, PolicyC).
    B,
}

impl EkPolicy {
    /// Which of the profile's policies `auth_policy` is, for an EK of nameAlg `alg`.
    pub(super) fn of(alg: HashAlg, auth_policy: &[u8]) -> Option<EkPolicy> {
        if auth_policy == policy::ek_policy_a(alg).as_slice() {
            Some(EkPolicy::A)
        } else if auth_policy == policy::ek_policy_b(alg).as_slice() {
            Some(EkPolicy::B)
        } else {
            None
        }
    }
}

fn push_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    // Template parts are at most 512 bytes (an RSA-4096 unique), far below u16::MAX.
    out.extend(u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::abstraction::{ek, AsymmetricAlgorithmSelection};
    use tss_esapi::interface_types::ecc::EccCurve;
    use tss_esapi::interface_types::key_bits::RsaKeyBits;
    use tss_esapi::traits::Marshall;

    #[test]
    fn templates_match_tss_esapi_where_it_has_them() {
        for (ours, theirs) in [
            (
                EkTemplate::Rsa2048,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            ),
            (
                EkTemplate::EccP256,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            ),
            (
                EkTemplate::EccP384,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
            ),
            (
                EkTemplate::EccP521,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP521),
            ),
            (
                EkTemplate::Rsa3072,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa3072),
            ),
            (
                EkTemplate::Rsa4096,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa4096),
            ),
        ] {
            let expected = ek::create_ek_public_from_default_template_2(theirs, None)
                .unwrap()
                .marshall()
                .unwrap();
            assert_eq!(ours.default_public(None), expected, "{ours}");
        }
    }

    #[test]
    fn high_range_templates_use_policy_b_and_an_empty_unique() {
        let t = EkTemplate::EccP256High.default_public(None);
        // type ECC, SHA-256, attributes with userWithAuth, PolicyB.
        assert_eq!(&t[..8], &[0, 0x23, 0, 0x0b, 0, 0x03, 0, 0xf2]);
        assert_eq!(&t[10..42], policy::ek_policy_b(HashAlg::Sha256).as_slice());
        assert!(t.ends_with(&[0, 0x03, 0, 0x10, 0, 0, 0, 0]));
        let r = EkTemplate::Rsa2048High.default_public(None);
        assert!(r.ends_with(&[0x08, 0x00, 0, 0, 0, 0, 0, 0]));
        // A nonce changes only the low range's unique.
        assert_eq!(
            EkTemplate::Rsa2048High.default_public(Some(b"n")),
            EkTemplate::Rsa2048High.default_public(None)
        );
        let with_nonce = EkTemplate::EccP256.default_public(Some(&[7; 16]));
        let x_at = with_nonce.len() - (2 + 32) - (2 + 32);
        assert_eq!(&with_nonce[x_at..x_at + 2], &[0, 32]);
        assert_eq!(&with_nonce[x_at + 2..x_at + 18], &[7; 16]);
        assert_eq!(&with_nonce[x_at + 18..x_at + 34], &[0; 16]);
    }

    #[test]
    fn policies_are_recognised() {
        for alg in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            assert_eq!(
                EkPolicy::of(alg, &policy::ek_policy_a(alg)),
                Some(EkPolicy::A)
            );
            assert_eq!(
                EkPolicy::of(alg, &policy::ek_policy_b(alg)),
                Some(EkPolicy::B)
            );
            assert_eq!(EkPolicy::of(alg, &[0; 32]), None);
        }
        for t in EkTemplate::PREFERENCE {
            assert_eq!(EkTemplate::from_name(t.name()), Some(t));
        }
    }
}
