//! EAT Attestation Results (EAR, draft-ietf-rats-ear-04): the standard, signed form of a
//! judgement, which a relying party (a key broker, an admission controller, another
//! verifier) can consume with an ordinary JWT library.
//!
//! The JSON claim names are the draft's (`eat_profile`, `iat`, `ear_verifier_id`,
//! `submods`, `ear_status`, `ear_trustworthiness_vector`, `ear_appraisal_policy_ids`,
//! `eat_nonce`); the trustworthiness vector holds AR4SI values. attestor appraises one
//! attester per EAR, under the submodule label [`SUBMOD`], and adds two unregistered
//! claims, both named `attestor`: at the top, who was attested ([`Subject`]); in the
//! appraisal, the named reasons behind its status ([`Details`]).
//!
//! Tokens are JWS compact serialisations signed ES384 (P-384, raw `r‖s`, RFC 7518 §3.4)
//! with a key published as a JWKS (RFC 7517), its `kid` the RFC 7638 thumbprint. An
//! unsigned token (`alg: none`) exists only for offline use without a key and says so.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// `eat_profile` of draft-ietf-rats-ear-04.
pub const EAR_PROFILE: &str = "tag:ietf.org,2026:rats/ear#04";
/// The one submodule label attestor uses: the attested policy kernel.
pub const SUBMOD: &str = "policy-kernel";
/// `ear_verifier_id.developer`.
pub const DEVELOPER: &str = "https://attestor.dev";
/// Upper bound on a token's size when parsing (a real one is under 2 KiB).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// AR4SI trust tiers, from most to least trusted, except that `None` (no claim) sorts
/// first: a status is the least trusted tier of its vector's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// No claim is made.
    None,
    /// Every appraised facet is as it should be.
    Affirming,
    /// Something is off, but not enough to distrust the attester.
    Warning,
    /// The attester must not be trusted.
    Contraindicated,
}

impl Tier {
    /// The draft's name, used in tokens, metrics and the log.
    pub fn name(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Affirming => "affirming",
            Tier::Warning => "warning",
            Tier::Contraindicated => "contraindicated",
        }
    }

    /// The tier of one trustworthiness claim value (AR4SI §2.3.2).
    pub fn of(value: i8) -> Tier {
        match value {
            -1..=1 => Tier::None,
            -32..=31 => Tier::Affirming,
            -96..=95 => Tier::Warning,
            _ => Tier::Contraindicated,
        }
    }
}

/// AR4SI values attestor assigns (draft-ietf-rats-ar4si §2.3.4).
pub mod value {
    /// The evidence is insufficient to make a conclusion.
    pub const NO_CLAIM: i8 = 0;
    /// The evidence contains elements the verifier did not expect.
    pub const UNEXPECTED_EVIDENCE: i8 = 1;
    /// Cryptographic validation of the evidence failed.
    pub const CRYPTO_FAILED: i8 = 99;
    /// instance-identity: a recognised attester whose key is hardware-bound.
    pub const RECOGNIZED_INSTANCE: i8 = 2;
    /// instance-identity: recognised, but not trustworthy (e.g. revoked).
    pub const UNTRUSTWORTHY_INSTANCE: i8 = 96;
    /// instance-identity: not recognised.
    pub const UNRECOGNIZED_INSTANCE: i8 = 97;
    /// configuration: known and approved.
    pub const APPROVED_CONFIG: i8 = 2;
    /// configuration: exposes known vulnerabilities.
    pub const UNSAFE_CONFIG: i8 = 32;
    /// configuration: unacceptable.
    pub const UNSUPPORTABLE_CONFIG: i8 = 96;
    /// executables: only approved executables and configuration, at boot and run time.
    pub const APPROVED_RUNTIME: i8 = 2;
    /// executables: contraindicated run-time state.
    pub const CONTRAINDICATED_RUNTIME: i8 = 96;
    /// hardware: genuine and passed its firmware checks.
    pub const GENUINE_HARDWARE: i8 = 2;
    /// hardware: genuine, but contraindicated (e.g. firmware below the minimum).
    pub const CONTRAINDICATED_HARDWARE: i8 = 96;
    /// runtime-opaque: memory encrypted against the host.
    pub const ENCRYPTED_MEMORY: i8 = 2;
}

/// The AR4SI trustworthiness vector; an absent facet is one attestor makes no claim on
/// because it does not apply to the evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustVector {
    /// The attester is the enrolled one, with a hardware-bound key.
    #[serde(rename = "instance-identity", skip_serializing_if = "Option::is_none")]
    pub instance_identity: Option<i8>,
    /// Its configuration: the policy and the posture it reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<i8>,
    /// What runs: the measured policy kernel configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executables: Option<i8>,
    /// The file system.
    #[serde(rename = "file-system", skip_serializing_if = "Option::is_none")]
    pub file_system: Option<i8>,
    /// Hardware and firmware: firmware PCRs, or the SEV-SNP TCB and launch measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<i8>,
    /// Whether run-time memory is opaque to the host.
    #[serde(rename = "runtime-opaque", skip_serializing_if = "Option::is_none")]
    pub runtime_opaque: Option<i8>,
    /// Whether secrets at rest are opaque.
    #[serde(rename = "storage-opaque", skip_serializing_if = "Option::is_none")]
    pub storage_opaque: Option<i8>,
    /// Whether data the attester relies on comes from attested sources.
    #[serde(rename = "sourced-data", skip_serializing_if = "Option::is_none")]
    pub sourced_data: Option<i8>,
}

impl TrustVector {
    /// The facets present, by their draft names.
    pub fn entries(&self) -> Vec<(&'static str, i8)> {
        [
            ("instance-identity", self.instance_identity),
            ("configuration", self.configuration),
            ("executables", self.executables),
            ("file-system", self.file_system),
            ("hardware", self.hardware),
            ("runtime-opaque", self.runtime_opaque),
            ("storage-opaque", self.storage_opaque),
            ("sourced-data", self.sourced_data),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .collect()
    }

    /// The least trusted tier among the claims (`None` when every claim is no claim).
    pub fn worst(&self) -> Tier {
        self.entries()
            .into_iter()
            .map(|(_, v)| Tier::of(v))
            .max()
            .unwrap_or(Tier::None)
    }
}

/// `ear_verifier_id`: which verifier build judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierId {
    /// The build, e.g. `attestor-ledger 0.1.0`.
    pub build: String,
    /// Who is responsible for it: [`DEVELOPER`].
    pub developer: String,
}

impl VerifierId {
    /// This build of attestor, in the role `component` (`attestor-ledger`, `attestor verify`).
    pub fn attestor(component: &str) -> Self {
        VerifierId {
            build: format!("{component} {}", env!("CARGO_PKG_VERSION")),
            developer: DEVELOPER.into(),
        }
    }
}

/// One reason behind a status: a failed check (a refusal) or a posture finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Stable kebab-case name (`tenant-isolation`, `quote-binding`, ...).
    pub check: String,
    /// The tier this reason alone gives.
    pub tier: Tier,
    /// What was found, for people.
    pub detail: String,
}

/// The `attestor` extension of an appraisal: why it has its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Details {
    /// Every reason, the worst first; empty when affirming.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
    /// The runtime restarted since the agent's previous accepted attestation (its uptime
    /// went back), so its counters started again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_restarted: bool,
}

/// One attester's appraisal (`submods` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appraisal {
    /// `ear_status`: never more trusted than the vector's least trusted claim.
    pub ear_status: Tier,
    /// `ear_trustworthiness_vector`.
    pub ear_trustworthiness_vector: TrustVector,
    /// `ear_appraisal_policy_ids`: the appraisal policy (name, version and digest) and the
    /// firmware profile that judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ear_appraisal_policy_ids: Vec<String>,
    /// attestor's reasons.
    #[serde(default)]
    pub attestor: Details,
}

/// The `attestor` extension at the top: who and what was appraised. Identity comes from
/// the agent's client certificate at a ledger, and is absent offline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The agent's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// `bundle` (an attestation) or `drift-report`.
    pub submission: String,
    /// The evidence kind (`tpm`, `snp`, `tpm+snp`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// From the claims, once the signature over them held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_id: Option<String>,
    /// The claims' `policy_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The claims' `kernel_config_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_config_hash: Option<String>,
    /// The claims' `version` (the policy kernel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An EAR claims-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ear {
    /// [`EAR_PROFILE`].
    pub eat_profile: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// The verifier.
    pub ear_verifier_id: VerifierId,
    /// The verifier's nonce the evidence committed to (base64url), when it is 8 to 64
    /// bytes as EAT requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eat_nonce: Option<String>,
    /// One appraisal, under [`SUBMOD`].
    pub submods: BTreeMap<String, Appraisal>,
    /// attestor's subject extension.
    pub attestor: Subject,
}

impl Ear {
    /// An EAR of one appraisal issued at `iat` for `nonce`.
    pub fn new(
        verifier: VerifierId,
        iat: u64,
        nonce: &[u8],
        appraisal: Appraisal,
        subject: Subject,
    ) -> Self {
        Ear {
            eat_profile: EAR_PROFILE.into(),
            iat: i64::try_from(iat).unwrap_or(i64::MAX),
            ear_verifier_id: verifier,
            eat_nonce: (8..=64)
                .contains(&nonce.len())
                .then(|| URL_SAFE_NO_PAD.encode(nonce)),
            submods: [(SUBMOD.to_string(), appraisal)].into(),
            attestor: subject,
        }
    }

    /// The policy kernel's appraisal.
    pub fn appraisal(&self) -> Option<&Appraisal> {
        self.submods.get(SUBMOD)
    }

    /// The appraisal's status (`None` when the EAR holds no attestor appraisal).
    pub fn status(&self) -> Tier {
        self.appraisal().map_or(Tier::None, |a| a.ear_status)
    }
}

/// Why a token or key is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EarError {
    /// Not `header.payload.signature` of base64url JSON, or over [`MAX_TOKEN_BYTES`].
    #[error("not a JWT: {0}")]
    Malformed(String),
    /// The header names another algorithm or key than the caller accepts.
    #[error("JWT header: {0}")]
    Header(String),
    /// No key of the JWKS verifies the signature.
    #[error("the EAR's signature does not verify with the published key {kid:?}")]
    BadSignature {
        /// The header's `kid`.
        kid: String,
    },
    /// The claims are not an EAR of draft-ietf-rats-ear-04.
    #[error("EAR claims: {0}")]
    Claims(String),
    /// A signing key is not a P-384 private key, or signing failed.
    #[error("EAR signing key: {0}")]
    Key(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    typ: String,
}

/// The ES384 key a verifier signs its EARs with.
pub struct EarSigner {
    key: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for EarSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarSigner").field("kid", &self.kid).finish()
    }
}

impl EarSigner {
    /// A new random key.
    pub fn generate() -> Result<Self, EarError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| EarError::Key("cannot generate a P-384 key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A P-384 key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, EarError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
            .map_err(|e| EarError::Key(format!("not a P-384 PKCS#8 private key: {e}")))?;
        let kid = thumbprint(key.public_key().as_ref())?;
        Ok(EarSigner { key, kid })
    }

    /// A P-384 key from a PEM `PRIVATE KEY` (PKCS#8) block, as `openssl genpkey` writes.
    pub fn from_pem(pem: &str) -> Result<Self, EarError> {
        let body: String = pem
            .lines()
            .skip_while(|l| l.trim() != "-----BEGIN PRIVATE KEY-----")
            .skip(1)
            .take_while(|l| l.trim() != "-----END PRIVATE KEY-----")
            .map(str::trim)
            .collect();
        if body.is_empty() {
            return Err(EarError::Key(
                "expected a PEM \"PRIVATE KEY\" (PKCS#8) block".into(),
            ));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| EarError::Key(format!("PEM body is not base64: {e}")))?;
        Self::from_pkcs8(&der)
    }

    /// The key as PKCS#8 DER, to keep it in a file.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, EarError> {
        self.key
            .to_pkcs8v1()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| EarError::Key("cannot serialise the key".into()))
    }

    /// The key's id: its RFC 7638 JWK thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Jwk {
        jwk_of(self.key.public_key().as_ref(), &self.kid)
    }

    /// The EAR as a signed JWT (ES384).
    pub fn sign(&self, ear: &Ear) -> Result<String, EarError> {
        let header = Header {
            alg: "ES384".into(),
            kid: Some(self.kid.clone()),
            typ: "JWT".into(),
        };
        let signing_input = signing_input(&header, ear)?;
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| EarError::Key("ECDSA signing failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The EAR as an unsigned JWT (`alg: none`, empty signature): for offline use without a
/// key. Nothing vouches for it; [`verify`] refuses it.
pub fn unsigned(ear: &Ear) -> Result<String, EarError> {
    let header = Header {
        alg: "none".into(),
        kid: None,
        typ: "JWT".into(),
    };
    Ok(format!("{}.", signing_input(&header, ear)?))
}

fn signing_input(header: &Header, ear: &Ear) -> Result<String, EarError> {
    let json = |r: serde_json::Result<Vec<u8>>| r.map_err(|e| EarError::Claims(e.to_string()));
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json(serde_json::to_vec(header))?),
        URL_SAFE_NO_PAD.encode(json(serde_json::to_vec(ear))?)
    ))
}

/// A JSON Web Key (RFC 7517) of an EC P-384 verification key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `EC`.
    pub kty: String,
    /// `P-384`.
    pub crv: String,
    /// The point's x coordinate (base64url, 48 bytes).
    pub x: String,
    /// The point's y coordinate (base64url, 48 bytes).
    pub y: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// `ES384`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
}

/// A JWK Set: what a verifier publishes for relying parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

fn jwk_of(sec1: &[u8], kid: &str) -> Jwk {
    // An uncompressed P-384 point: 0x04 ‖ x (48) ‖ y (48).
    let (x, y) = sec1
        .get(1..)
        .unwrap_or_default()
        .split_at(48.min(sec1.len().saturating_sub(1)));
    Jwk {
        kty: "EC".into(),
        crv: "P-384".into(),
        x: URL_SAFE_NO_PAD.encode(x),
        y: URL_SAFE_NO_PAD.encode(y),
        kid: kid.into(),
        alg: "ES384".into(),
        key_use: "sig".into(),
    }
}

/// RFC 7638 thumbprint of an uncompressed P-384 point.
fn thumbprint(sec1: &[u8]) -> Result<String, EarError> {
    if sec1.len() != 97 || sec1[0] != 4 {
        return Err(EarError::Key("not an uncompressed P-384 point".into()));
    }
    // The required members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = format!(
        r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&sec1[1..49]),
        URL_SAFE_NO_PAD.encode(&sec1[49..])
    );
    Ok(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes())))
}

fn split(token: &str) -> Result<(&str, &str, &str), EarError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(EarError::Malformed(format!(
            "{} bytes, over the {MAX_TOKEN_BYTES}-byte limit",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(EarError::Malformed(
            "expected three dot-separated parts".into(),
        )),
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, EarError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| EarError::Malformed(format!("{what} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| EarError::Claims(format!("{what}: {e}")))
}

fn checked_claims(ear: Ear) -> Result<Ear, EarError> {
    if ear.eat_profile != EAR_PROFILE {
        return Err(EarError::Claims(format!(
            "eat_profile is {:?}, expected {EAR_PROFILE:?}",
            ear.eat_profile
        )));
    }
    let Some(appraisal) = ear.appraisal() else {
        return Err(EarError::Claims(format!("no {SUBMOD:?} submodule")));
    };
    if appraisal.ear_status < appraisal.ear_trustworthiness_vector.worst() {
        return Err(EarError::Claims(
            "ear_status is more trusted than its trustworthiness vector allows".into(),
        ));
    }
    Ok(ear)
}

/// Verifies a signed EAR with a published key set and returns its claims.
pub fn verify(token: &str, jwks: &Jwks) -> Result<Ear, EarError> {
    let (h, p, s) = split(token)?;
    let header: Header = decode_part(h, "header")?;
    if header.alg != "ES384" {
        return Err(EarError::Header(format!(
            "alg is {:?}, only ES384 is accepted",
            header.alg
        )));
    }
    let kid = header.kid.unwrap_or_default();
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| EarError::Header(format!("kid {kid:?} is not in the key set")))?;
    let mut point = vec![4u8];
    for coordinate in [&jwk.x, &jwk.y] {
        let bytes = URL_SAFE_NO_PAD
            .decode(coordinate)
            .map_err(|e| EarError::Header(format!("JWK coordinate: {e}")))?;
        point.extend(bytes);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| EarError::Malformed(format!("signature is not base64url: {e}")))?;
    let key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &point)
        .map_err(|_| EarError::Header("JWK is not a P-384 point".into()))?;
    let signed = &token[..h.len() + 1 + p.len()];
    key.verify_sig(signed.as_bytes(), &signature)
        .map_err(|_| EarError::BadSignature { kid })?;
    checked_claims(decode_part(p, "claims")?)
}

/// The claims of a token whose signature the caller has no reason to check again (one
/// this ledger wrote into its own log, already covered by the log's proofs).
pub fn claims_unverified(token: &str) -> Result<Ear, EarError> {
    let (_, p, _) = split(token)?;
    checked_claims(decode_part(p, "claims")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ear {
        let appraisal = Appraisal {
            ear_status: Tier::Warning,
            ear_trustworthiness_vector: TrustVector {
                instance_identity: Some(value::RECOGNIZED_INSTANCE),
                configuration: Some(value::UNSAFE_CONFIG),
                ..TrustVector::default()
            },
            ear_appraisal_policy_ids: vec!["default/1/sha256:00".into()],
            attestor: Details {
                reasons: vec![Reason {
                    check: "blocked-rate".into(),
                    tier: Tier::Warning,
                    detail: "6 % blocked".into(),
                }],
                runtime_restarted: false,
            },
        };
        Ear::new(
            VerifierId::attestor("attestor-ledger"),
            1_800_000_000,
            &[7u8; 32],
            appraisal,
            Subject {
                submission: "bundle".into(),
                ..Subject::default()
            },
        )
    }

    #[test]
    fn tiers_follow_ar4si_ranges() {
        for (v, tier) in [
            (0, Tier::None),
            (1, Tier::None),
            (-1, Tier::None),
            (2, Tier::Affirming),
            (31, Tier::Affirming),
            (32, Tier::Warning),
            (95, Tier::Warning),
            (96, Tier::Contraindicated),
            (99, Tier::Contraindicated),
            (-128, Tier::Contraindicated),
        ] {
            assert_eq!(Tier::of(v), tier, "{v}");
        }
    }

    #[test]
    fn signed_tokens_verify_and_use_the_drafts_claim_names() {
        let signer = EarSigner::generate().unwrap();
        let token = signer.sign(&sample()).unwrap();
        let jwks = Jwks {
            keys: vec![signer.jwk()],
        };
        assert_eq!(verify(&token, &jwks).unwrap(), sample());
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["eat_profile"], EAR_PROFILE);
        assert_eq!(claims["ear_verifier_id"]["developer"], DEVELOPER);
        let appraisal = &claims["submods"][SUBMOD];
        assert_eq!(appraisal["ear_status"], "warning");
        assert_eq!(appraisal["ear_trustworthiness_vector"]["configuration"], 32);
        assert_eq!(
            appraisal["ear_trustworthiness_vector"]["instance-identity"],
            2
        );
        assert!(claims["eat_nonce"].is_string());

        // Any change to what was signed, or another key, is refused.
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 5, 'A');
        assert!(verify(&tampered, &jwks).is_err());
        let other = Jwks {
            keys: vec![Jwk {
                kid: signer.kid().into(),
                ..EarSigner::generate().unwrap().jwk()
            }],
        };
        assert!(matches!(
            verify(&token, &other),
            Err(EarError::BadSignature { .. })
        ));
    }

    #[test]
    fn unsigned_tokens_are_marked_and_never_verify() {
        let token = unsigned(&sample()).unwrap();
        assert!(token.ends_with('.'));
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "none");
        let signer = EarSigner::generate().unwrap();
        let jwks = Jwks {
            keys: vec![signer.jwk()],
        };
        assert!(matches!(verify(&token, &jwks), Err(EarError::Header(_))));
        assert_eq!(claims_unverified(&token).unwrap(), sample());
    }

    #[test]
    fn a_status_more_trusted_than_its_vector_is_refused() {
        let mut ear = sample();
        ear.submods.get_mut(SUBMOD).unwrap().ear_status = Tier::Affirming;
        assert!(claims_unverified(&unsigned(&ear).unwrap()).is_err());
    }

    #[test]
    fn thumbprint_matches_rfc7638_construction() {
        let signer = EarSigner::generate().unwrap();
        let jwk = signer.jwk();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            jwk.crv, jwk.kty, jwk.x, jwk.y
        );
        assert_eq!(
            signer.kid(),
            URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
        );
        let again = EarSigner::from_pkcs8(&signer.to_pkcs8().unwrap()).unwrap();
        assert_eq!(again.kid(), signer.kid());
    }

    #[test]
    fn garbage_tokens_are_errors() {
        let jwks = Jwks { keys: vec![] };
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(verify(token, &jwks).is_err(), "{token:.20}");
            assert!(claims_unverified(token).is_err(), "{token:.20}");
        }
    }
}
