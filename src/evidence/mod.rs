//! Hardware evidence that binds an envelope to a platform state.

pub mod certchain;
pub mod tpm;

use sha2::{Digest, Sha384};

/// Domain separator of the evidence commitment, so the digest cannot be confused with
/// any other hash of the same bytes.
const COMMITMENT_DOMAIN: &[u8] = b"attestor/evidence-commitment/v1\0";

/// What a quote's qualifying data must equal: SHA-384 over the domain separator, the
/// length-prefixed verifier nonce (empty offline) and the envelope's DSSE PAE bytes.
/// 48 bytes fits every TPM's TPM2B_DATA (SHA-512 would not fit TPMs without SHA-512).
pub fn tpm_commitment(nonce: &[u8], pae: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(COMMITMENT_DOMAIN);
    h.update((nonce.len() as u64).to_be_bytes());
    h.update(nonce);
    h.update(pae);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn commitment_separates_nonce_from_envelope() {
        let a = super::tpm_commitment(b"ab", b"c");
        let b = super::tpm_commitment(b"a", b"bc");
        assert_ne!(a, b);
        assert_eq!(a, super::tpm_commitment(b"ab", b"c"));
    }
}
