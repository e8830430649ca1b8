//! The envelope signing key at rest: encrypted (AES-256-GCM) under the secure processor's
//! derived key, which depends on the launch measurement and guest policy. A guest launched
//! with other code gets another derived key and cannot decrypt it.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Names what the ciphertext is, and binds the public key to it.
const AAD_DOMAIN: &[u8] = b"attestor/snp-sealed-signing-key/v1\0";

/// Why a key could not be sealed or unsealed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    #[error(
        "the signing key was sealed in a guest launched with another measurement or policy \
         (or on another chip); this launch's derived key cannot open it. If this launch is \
         approved, run `attestor reseal`"
    )]
    OtherLaunch,
    #[error("sealing failed")]
    Crypto,
}

/// A signing key encrypted under a derived key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSigningKey {
    /// SEC1 public key (not secret; authenticated as associated data).
    #[serde(with = "attestor_verify::encoding::b64")]
    pub public_key: Vec<u8>,
    #[serde(with = "attestor_verify::encoding::b64")]
    pub nonce: Vec<u8>,
    /// PKCS#8 private key, AES-256-GCM ciphertext and tag.
    #[serde(with = "attestor_verify::encoding::b64")]
    pub ciphertext: Vec<u8>,
}

fn aad(public_key: &[u8]) -> Vec<u8> {
    [AAD_DOMAIN, public_key].concat()
}

/// Encrypts `pkcs8` under `derived_key`.
pub fn seal(
    derived_key: &[u8; 32],
    pkcs8: &[u8],
    public_key: &[u8],
) -> Result<SealedSigningKey, SealError> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, derived_key).map_err(|_| SealError::Crypto)?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Crypto)?;
    let mut ciphertext = pkcs8.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(public_key)),
        &mut ciphertext,
    )
    .map_err(|_| SealError::Crypto)?;
    Ok(SealedSigningKey {
        public_key: public_key.to_vec(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Decrypts a sealed key; fails unless `derived_key` is the one it was sealed under.
pub fn unseal(derived_key: &[u8; 32], sealed: &SealedSigningKey) -> Result<Vec<u8>, SealError> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, derived_key).map_err(|_| SealError::Crypto)?,
    );
    let nonce =
        Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| SealError::OtherLaunch)?;
    let mut buf = sealed.ciphertext.clone();
    let plain = key
        .open_in_place(nonce, Aad::from(aad(&sealed.public_key)), &mut buf)
        .map_err(|_| SealError::OtherLaunch)?;
    Ok(plain.to_vec())
}
