//! X.509 EK certificate chains as a bundle or an enrollment request carries them: the
//! input is split into DER certificates (2-byte big-endian length prefixes), the first is
//! the leaf, the rest are intermediates; the anchors are the test fixtures' swtpm CA. The
//! leaf is also read as an AK certificate.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use attestor_verify::evidence::certchain::{self, pem_to_der_all};
use attestor_verify::evidence::tpm::akcert;
use libfuzzer_sys::fuzz_target;

fn anchors() -> &'static (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    static ANCHORS: OnceLock<(Vec<Vec<u8>>, Vec<Vec<u8>>)> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let root = include_str!("../fixtures/tpm/ca_root.pem");
        let issuer = include_str!("../fixtures/tpm/ca_intermediate.pem");
        (
            pem_to_der_all(root).expect("fixture root"),
            pem_to_der_all(issuer).expect("fixture intermediate"),
        )
    })
}

fn split(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (cert, rest) = rest.split_at(len);
        out.push(cert.to_vec());
        data = rest;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (roots, issuers) = anchors();
    // 2027-06-01, inside the fixtures' validity.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_811_808_000);
    let certs = split(data);
    if let Some((leaf, rest)) = certs.split_first() {
        let mut pool = rest.to_vec();
        pool.extend(issuers.iter().cloned());
        if let Ok(chain) = certchain::verify_chain(leaf, &pool, roots, now) {
            let _ = chain.leaf_spki();
            let _ = chain.leaf_public_key();
        }
        let _ = certchain::public_key_of(leaf);
        let _ = certchain::spki_of(leaf);
        // The leaf may also be its own anchor (profiles may trust any certificate).
        let _ = certchain::verify_chain(leaf, rest, &certs, now);
        // As an AK certificate: its profile's fields, and whether it certifies an AK
        // (the second piece, as a TPMT_PUBLIC).
        let _ = akcert::AkCertificate::parse(leaf);
        if let Some(ak_public) = rest.first() {
            let _ = akcert::certifies_ak(leaf, ak_public);
            let _ = akcert::ak_spki(ak_public);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pem_to_der_all(text);
    }
});
