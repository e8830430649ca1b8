//! Hardware evidence that binds an envelope to a platform state.

pub mod certchain;
pub mod snp;
pub mod tpm;

use sha2::{Digest, Sha384, Sha512};

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

/// Domain separator of the SNP commitment: a REPORT_DATA value can never equal a TPM
/// qualifying data value or any other hash of the same bytes.
const SNP_COMMITMENT_DOMAIN: &[u8] = b"attestor/snp-report-data/v1\0";

/// What an SNP report's REPORT_DATA must equal: SHA-512 (the field is 64 bytes) over the
/// domain separator, the length-prefixed verifier nonce, the length-prefixed envelope
/// signing key (SEC1) and the envelope's DSSE PAE bytes. Committing to the key as well
/// makes the hardware vouch for the key that signed the envelope, which a ledger can pin.
pub fn snp_commitment(nonce: &[u8], signing_key: &[u8], pae: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(SNP_COMMITMENT_DOMAIN);
    h.update((nonce.len() as u64).to_be_bytes());
    h.update(nonce);
    h.update((signing_key.len() as u64).to_be_bytes());
    h.update(signing_key);
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

    #[test]
    fn snp_commitment_separates_its_inputs() {
        let a = super::snp_commitment(b"ab", b"k", b"c");
        assert_ne!(a, super::snp_commitment(b"a", b"bk", b"c"));
        assert_ne!(a, super::snp_commitment(b"ab", b"", b"kc"));
        assert_ne!(a[..48], super::tpm_commitment(b"ab", b"c"));
    }
}
