//! DSSE envelope JSON (the bundle's `envelope`, and any envelope handed to `verify`).
#![no_main]

use attestor_verify::dsse::{pae, EcdsaP384Signer, Envelope, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        EcdsaP384Signer::generate()
            .and_then(|s| s.verifying_key())
            .expect("software P-384 key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::from_json(data) else {
        return;
    };
    let _ = envelope.verify_payload_type("application/vnd.in-toto+json");
    // A random key never verifies a fuzzed signature, but the DER parsing runs.
    assert!(envelope.verify(key()).is_err());
    let _ = pae(&envelope.payload_type, &envelope.payload);
    // What we parse, we can write back, and it parses to the same envelope.
    let json = envelope.to_json().expect("a parsed envelope serialises");
    assert_eq!(Envelope::from_json(&json).expect("round trip"), envelope);
    // The signature bytes are also a key-format input elsewhere (SEC1 points, SPKI).
    if let Some(sig) = envelope.signatures.first() {
        let _ = VerifyingKey::from_sec1(&sig.sig);
        let _ = VerifyingKey::from_spki_der(&sig.sig);
    }
});
