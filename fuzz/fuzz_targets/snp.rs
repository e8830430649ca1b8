//! What an SEV-SNP guest hands the verifier: the attestation report (raw or hex, as report
//! files hold it) and the GHCB certificate table with its certificates. The first byte
//! chooses the parser; a table's VCEK is also tried against a parsed report's signature,
//! as the verifier would, so mutations reach the `sev` crate's checks.
#![no_main]

use attestor_verify::evidence::snp::certs::{
    self, canonical_der, find, parse_cert_table, validity, vcek_facts, CertKind,
};
use attestor_verify::evidence::snp::chain::verify_report_signature;
use attestor_verify::evidence::snp::report::{decode_report_file, Report};
use libfuzzer_sys::fuzz_target;

/// A report (1184 bytes) followed by a certificate table.
const REPORT_LEN: usize = 0x4A0;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(raw) = decode_report_file(body) {
                let _ = Report::parse(&raw);
            }
        }
        1 => {
            if let Ok(entries) = parse_cert_table(body) {
                for entry in &entries {
                    let _ = vcek_facts(&entry.data);
                    let _ = validity(&entry.data);
                }
                let _ = certs::encode_cert_table(&entries);
            }
        }
        2 => {
            let _ = vcek_facts(body);
            let _ = validity(body);
            let _ = canonical_der(body);
        }
        _ => {
            let (report, table) = body.split_at(body.len().min(REPORT_LEN));
            if let (Ok(report), Ok(entries)) = (Report::parse(report), parse_cert_table(table)) {
                if let Some(vcek) = find(&entries, CertKind::Vcek) {
                    let _ = verify_report_signature(vcek, &report);
                }
            }
        }
    }
});
