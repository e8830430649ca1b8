//! TPM wire structures a verifier or the ledger parses from hostile bytes: TPMS_ATTEST,
//! TPMT_SIGNATURE, TPMT_PUBLIC (AK, sealed key, EK for MakeCredential), PCR selections,
//! tpm2-tools files. The first byte chooses the parser.
#![no_main]

use attestor_verify::evidence::tpm::{credential, wire, HashAlg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, buf)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(attest) = wire::parse_attest(buf) {
                let _ = format!("{attest:?}");
            }
        }
        1 => {
            if let Ok(sig) = wire::parse_signature(buf) {
                let _ = sig.to_der();
                for len in [32, 48, 66] {
                    let _ = sig.to_fixed(len);
                }
            }
        }
        2 => {
            if let Ok(public) = wire::parse_public(buf) {
                let _ = public.sec1_uncompressed();
                let _ = public.scheme.as_ref().map(|s| s.hash_alg());
                let _ = wire::object_name(buf, public.name_alg);
            }
            let _ = credential::ak_name(buf);
        }
        3 => {
            if let Ok(selection) = wire::parse_pcr_selection(buf) {
                let _ = wire::selected_pcr_count(&selection);
                let again = wire::marshal_pcr_selection(&selection);
                let _ = wire::parse_pcr_selection(&again);
            }
        }
        4 => {
            let _ = wire::parse_tpm2_tools_pcr_file(buf);
            if let Ok(inner) = wire::strip_tpm2b(buf) {
                let _ = wire::parse_public(inner);
            }
        }
        5 => {
            if let Ok(made) = credential::MadeCredential::from_tpm2_tools_file(buf) {
                let file = made.to_tpm2_tools_file().expect("re-encode");
                assert_eq!(file, buf);
            }
        }
        6 => {
            // The EK public area an enrolling agent sends (RSA or ECC), for MakeCredential.
            let name = wire::object_name(b"ak", HashAlg::Sha384);
            let _ = credential::make_credential(buf, &name, &[7u8; 32]);
        }
        _ => {
            // Two public areas back to back: EK and AK of an enrollment request.
            let split = buf.first().map_or(0, |&b| usize::from(b)).min(buf.len());
            let (ek, ak) = buf.split_at(split);
            let _ = credential::challenge_for(ek, ak);
            let _ = credential::check_ak_name(ak, ek);
        }
    }
});
