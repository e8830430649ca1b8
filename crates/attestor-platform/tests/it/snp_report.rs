//! SEV-SNP reports from real hardware and the simulation: byte-exact parsing, the chain
//! through the `sev` crate, the report signature by aws-lc (cross-checked against the
//! crate's), and refusal of every altered or malformed input.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use attestor_platform::snp::sim::{
    SimulatedChip, SimulatedLaunch, SimulatedProcessor, DEFAULT_POLICY,
};
use attestor_verify::evidence::snp::certs::{
    self, encode_cert_table, parse_cert_table, CertEntry, CertError, CertKind, Tcb,
};
use attestor_verify::evidence::snp::chain::{verify_report_signature, verify_vcek, ChainError};
use attestor_verify::evidence::snp::report::{
    decode_report_file, Report, ReportError, REPORT_LEN, SIGNED_LEN,
};
use attestor_verify::evidence::snp::roots::{one_cert, Product, RootsOrigin, TrustRoots};

fn fixture(name: &str) -> PathBuf {
    crate::support::repo_root()
        .join("tests/fixtures/snp")
        .join(name)
}

fn milan_report() -> Vec<u8> {
    decode_report_file(&std::fs::read(fixture("report_milan.hex")).unwrap()).unwrap()
}

fn milan_vcek() -> Vec<u8> {
    std::fs::read(fixture("vcek_milan.der")).unwrap()
}

/// Chain, then signature: what a verifier does with a report and its VCEK.
fn check(roots: &TrustRoots, vcek: &[u8], report: &[u8]) -> Result<(), String> {
    let report = Report::parse(report).map_err(|e| e.to_string())?;
    verify_vcek(roots, vcek, SystemTime::now()).map_err(|e| e.to_string())?;
    verify_report_signature(vcek, &report).map_err(|e| e.to_string())
}

#[test]
fn real_milan_report_parses_byte_exactly_and_verifies_under_amd_roots() {
    let raw = milan_report();
    assert_eq!(raw.len(), REPORT_LEN);
    let report = Report::parse(&raw).unwrap();
    assert_eq!(report.bytes(), raw.as_slice());
    use sev::parser::ByteParser;
    assert_eq!(
        report.fields().to_bytes().unwrap().as_slice(),
        raw.as_slice()
    );
    assert_eq!(report.fields().version, 2);
    let roots = Product::Milan.amd_roots().unwrap();
    let facts = verify_vcek(&roots, &milan_vcek(), SystemTime::now()).unwrap();
    assert_eq!(facts.product_name.as_deref(), Some("Milan-B0"));
    assert_eq!(Tcb::from(report.fields().reported_tcb), facts.tcb);
    assert_eq!(report.fields().chip_id.as_slice(), facts.hw_id.as_slice());
    verify_report_signature(&milan_vcek(), &report).unwrap();
}

#[test]
fn the_shared_amd_chain_is_the_crates_builtin_milan_chain() {
    let pem = std::fs::read_to_string(fixture("cert_chain_milan")).unwrap();
    let ders = attestor_verify::evidence::certchain::pem_to_der_all(&pem).unwrap();
    let roots = Product::Milan.amd_roots().unwrap();
    assert!(ders.contains(&roots.ark) && ders.contains(&roots.ask));
}

#[test]
fn every_altered_signed_byte_of_the_real_report_is_refused() {
    let raw = milan_report();
    let roots = Product::Milan.amd_roots().unwrap();
    let vcek = milan_vcek();
    verify_vcek(&roots, &vcek, SystemTime::now()).unwrap();
    for i in 0..SIGNED_LEN + 144 {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        let refused = match Report::parse(&bad) {
            Err(_) => true,
            Ok(r) => verify_report_signature(&vcek, &r).is_err(),
        };
        assert!(refused, "byte {i:#x} altered was accepted");
    }
    // The unsigned tail is reserved: a changed byte there is not canonical.
    let mut tail = raw.clone();
    tail[REPORT_LEN - 1] = 1;
    assert!(matches!(
        Report::parse(&tail),
        Err(ReportError::NonCanonical(_))
    ));
}

#[test]
fn altered_vcek_or_chain_is_refused() {
    let raw = milan_report();
    let roots = Product::Milan.amd_roots().unwrap();
    let vcek = milan_vcek();
    // A flipped bit in the VCEK's signed part, its signature, or its key.
    for i in [200, vcek.len() - 10, 480] {
        let mut bad = vcek.clone();
        bad[i] ^= 0x01;
        assert!(
            check(&roots, &bad, &raw).is_err(),
            "VCEK byte {i} altered was accepted"
        );
    }
    let mut bad_ask = roots.clone();
    let n = bad_ask.ask.len();
    bad_ask.ask[n - 20] ^= 0x01;
    assert!(check(&bad_ask, &vcek, &raw).is_err());
    let mut bad_ark = roots.clone();
    let n = bad_ark.ark.len();
    bad_ark.ark[n - 20] ^= 0x01;
    assert!(check(&bad_ark, &vcek, &raw).is_err());
    // Another product's roots do not sign the Milan VCEK.
    let genoa = Product::Genoa.amd_roots().unwrap();
    let err = check(&genoa, &vcek, &raw).unwrap_err();
    assert!(err.contains("AMD Genoa roots"), "{err}");
}

fn sim_chip() -> SimulatedChip {
    SimulatedChip::load(&crate::support::repo_root().join("examples/snp-sim")).unwrap()
}

fn sim_roots(dir: &Path) -> TrustRoots {
    TrustRoots {
        ark: one_cert(&std::fs::read(dir.join("ark.pem")).unwrap()).unwrap(),
        ask: one_cert(&std::fs::read(dir.join("ask.pem")).unwrap()).unwrap(),
        origin: RootsOrigin::Simulation(dir.join("ark.pem")),
    }
}

fn sim_launch(version: u32) -> SimulatedLaunch {
    SimulatedLaunch {
        measurement: [0x5a; 48],
        policy: DEFAULT_POLICY,
        report_version: version,
        host_data: [0; 32],
        host_provides_certificates: true,
        product: Product::Milan,
    }
}

#[test]
fn simulated_reports_of_every_version_parse_and_verify_through_the_crate() {
    let dir = crate::support::repo_root().join("examples/snp-sim");
    for version in [2, 3, 5] {
        let sp = SimulatedProcessor::new(sim_chip(), sim_launch(version)).unwrap();
        let raw = sp.report([7; 64], 0).unwrap();
        let report = Report::parse(&raw).unwrap();
        let f = report.fields();
        assert_eq!(f.version, version);
        assert_eq!(f.report_data, [7; 64]);
        assert_eq!(f.measurement, [0x5a; 48]);
        assert_eq!(u64::from(f.policy), DEFAULT_POLICY);
        assert!(!f.policy.debug_allowed() && f.policy.smt_allowed());
        assert_eq!(Tcb::from(f.reported_tcb), sp.chip().facts.tcb);
        assert_eq!(f.chip_id.as_slice(), sp.chip().facts.hw_id.as_slice());
        check(&sim_roots(&dir), &sp.chip().vcek, &raw).unwrap();
        // The simulation's chain is not AMD's.
        let err = check(&Product::Milan.amd_roots().unwrap(), &sp.chip().vcek, &raw).unwrap_err();
        assert!(
            err.contains("does not verify under the AMD Milan roots"),
            "{err}"
        );
    }
}

#[test]
fn a_vcek_from_another_chain_is_refused() {
    let dir = crate::support::repo_root().join("examples/snp-sim");
    let other = SimulatedChip::load(&fixture("other-chain")).unwrap();
    let sp = SimulatedProcessor::new(other, sim_launch(5)).unwrap();
    let raw = sp.report([0; 64], 0).unwrap();
    let err = verify_vcek(&sim_roots(&dir), &sp.chip().vcek, SystemTime::now()).unwrap_err();
    assert!(matches!(err, ChainError::Signatures { .. }), "{err}");
    // Its own roots would accept it: the refusal is the pinning, not a broken report.
    check(&sim_roots(&fixture("other-chain")), &sp.chip().vcek, &raw).unwrap();
}

#[test]
fn truncated_oversized_and_garbage_reports_give_clear_errors() {
    let raw = milan_report();
    assert_eq!(
        Report::parse(&raw[..100]).unwrap_err(),
        ReportError::Length(100)
    );
    assert_eq!(Report::parse(&[]).unwrap_err(), ReportError::Length(0));
    let mut long = raw.clone();
    long.push(0);
    assert_eq!(
        Report::parse(&long).unwrap_err(),
        ReportError::Length(REPORT_LEN + 1)
    );
    let mut v = raw.clone();
    v[0] = 7;
    assert_eq!(Report::parse(&v).unwrap_err(), ReportError::Version(7));
    v[0] = 1;
    assert_eq!(Report::parse(&v).unwrap_err(), ReportError::Version(1));
    // Pseudo-random garbage of the right length, with a supported version.
    let mut state = 0x1234_5678_9abc_def0u64;
    for round in 0..200 {
        let mut g: Vec<u8> = (0..REPORT_LEN)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        g[..4].copy_from_slice(&[2u32, 3, 5][round % 3].to_le_bytes()[..]);
        assert!(Report::parse(&g).is_err(), "garbage round {round} parsed");
    }
    assert_eq!(
        decode_report_file(b"zz").unwrap_err(),
        ReportError::Encoding
    );
    assert_eq!(
        decode_report_file(b"abcd").unwrap_err(),
        ReportError::Length(2)
    );
    // Signature scalars with bytes above the 48 P-384 uses are refused, not ignored.
    let mut padded = raw.clone();
    padded[SIGNED_LEN + 60] = 1;
    assert_eq!(
        Report::parse(&padded).unwrap_err(),
        ReportError::SignaturePadding
    );
}

#[test]
fn certificate_tables_round_trip_and_bad_ones_give_clear_errors() {
    let entries = vec![
        CertEntry {
            kind: CertKind::Ark,
            data: vec![1; 10],
        },
        CertEntry {
            kind: CertKind::Vcek,
            data: milan_vcek(),
        },
    ];
    let table = encode_cert_table(&entries);
    assert_eq!(parse_cert_table(&table).unwrap(), entries);
    assert_eq!(
        certs::find(&entries, CertKind::Vcek),
        Some(milan_vcek().as_slice())
    );
    // Truncated anywhere in the entries; an entry pointing past the end; duplicates.
    for cut in [0, 10, 23] {
        assert!(
            matches!(
                parse_cert_table(&table[..cut]),
                Err(CertError::TableTruncated(_))
            ),
            "cut {cut}"
        );
    }
    for cut in [24, 47, 60, table.len() - 1] {
        assert!(parse_cert_table(&table[..cut]).is_err(), "cut {cut}");
    }
    let mut out_of_bounds = table.clone();
    out_of_bounds[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        parse_cert_table(&out_of_bounds),
        Err(CertError::TableEntryOutOfBounds { .. })
    ));
    let dup = encode_cert_table(&[entries[0].clone(), entries[0].clone()]);
    assert_eq!(
        parse_cert_table(&dup),
        Err(CertError::TableDuplicate(CertKind::Ark))
    );
    let many: Vec<CertEntry> = (0..20u8)
        .map(|i| CertEntry {
            kind: CertKind::Other([i + 1; 16]),
            data: vec![],
        })
        .collect();
    assert_eq!(
        parse_cert_table(&encode_cert_table(&many)),
        Err(CertError::TableTooLong)
    );
    assert!(matches!(
        parse_cert_table(&vec![0xAB; 70_000]),
        Err(CertError::TableTooLarge(_))
    ));
    // Garbage certificates in a table parse as a table, then fail as certificates.
    assert!(matches!(
        certs::vcek_facts(&[0x30, 0x03, 1, 2, 3]),
        Err(CertError::Der(_))
    ));
    assert!(matches!(
        certs::vcek_facts(&sim_chip().ask),
        Err(CertError::MissingExtension(..))
    ));
}

/// The `sev` crate's own report-signature check (its pure-Rust P-384), which
/// `verify_report_signature` replaced: the reference the aws-lc path must agree with.
fn sev_crate_accepts(vcek: &[u8], fields: &sev::firmware::guest::AttestationReport) -> bool {
    use sev::certs::snp::{Certificate, Verifiable};
    let cert = Certificate::from_der(vcek).unwrap();
    (&cert, fields).verify().is_ok()
}

/// What each path decides about `raw` under `vcek`: parsing as the verifier does
/// (byte-exact re-encoding, zero signature padding), then the signature by aws-lc
/// (`verify_report_signature`) and by the `sev` crate.
fn both_paths(vcek: &[u8], raw: &[u8]) -> (bool, bool) {
    match Report::parse(raw) {
        Err(_) => (false, false),
        Ok(r) => (
            verify_report_signature(vcek, &r).is_ok(),
            sev_crate_accepts(vcek, r.fields()),
        ),
    }
}

/// Offsets in the signature field (ABI spec, "ECDSA P-384 with SHA-384" format): R at
/// 0x2A0 and S at 0x2E8, 72 bytes each, little-endian, then reserved to 0x49F.
const R_AT: usize = SIGNED_LEN;
const S_AT: usize = SIGNED_LEN + 72;
const SIG_RESERVED_AT: usize = SIGNED_LEN + 144;

/// The `sev` crate's check of raw bytes alone, without the verifier's parsing: it signs
/// its re-encoding of the fields, not the input.
fn sev_crate_alone_accepts(vcek: &[u8], raw: &[u8]) -> bool {
    use sev::parser::ByteParser;
    let fields = sev::firmware::guest::AttestationReport::from_bytes(raw).unwrap();
    sev_crate_accepts(vcek, &fields)
}

/// Both paths accept the genuine report, refuse a flip in a signed field (first and
/// last), in R, in S and another chip's VCEK, and agree on every single-bit flip of
/// every byte, so they check the same bytes. The ABI spec signs bytes 0x000..=0x29F, of
/// which the last (0x208..=0x29F in version 5, from 0x1F8 before) are reserved and must
/// be zero: the crate's parser refuses a change there. The signature field after R and
/// S (0x330..=0x49F) is reserved and unsigned: the `sev` crate's check alone accepts a
/// change there (it re-encodes it as zero), and parsing refuses it as non-canonical,
/// before either signature check.
fn cross_check(raw: &[u8], vcek: &[u8], other_vceks: &[&[u8]]) {
    assert_eq!(both_paths(vcek, raw), (true, true), "genuine report");
    for other in other_vceks {
        assert_eq!(both_paths(other, raw), (false, false), "another VCEK");
    }
    let flipped = |at: usize, bit: u8| {
        let mut bad = raw.to_vec();
        bad[at] ^= bit;
        bad
    };
    for (what, at) in [
        ("guest SVN, the first field after the version", 4),
        ("report data", 0x50),
        (
            "launch TCB's microcode SPL, the last field versions 2 and 3 sign",
            0x1F7,
        ),
        ("R", R_AT),
        ("R's top scalar byte", R_AT + 47),
        ("S", S_AT),
        ("S's top scalar byte", S_AT + 47),
    ] {
        let bad = flipped(at, 0x01);
        assert!(
            Report::parse(&bad).is_ok(),
            "{what} must reach the signature"
        );
        assert_eq!(both_paths(vcek, &bad), (false, false), "{what} ({at:#x})");
    }
    let last_signed = flipped(SIGNED_LEN - 1, 0x01);
    assert!(matches!(
        Report::parse(&last_signed),
        Err(ReportError::Malformed(_))
    ));
    let unsigned = flipped(SIG_RESERVED_AT, 0x01);
    assert!(sev_crate_alone_accepts(vcek, &unsigned));
    assert_eq!(
        Report::parse(&unsigned).unwrap_err(),
        ReportError::NonCanonical(SIG_RESERVED_AT)
    );
    for at in 0..REPORT_LEN {
        for bit in [0x01, 0x80] {
            let (aws_lc, sev_crate) = both_paths(vcek, &flipped(at, bit));
            assert_eq!(aws_lc, sev_crate, "byte {at:#x} bit {bit:#x}");
            assert!(!aws_lc, "byte {at:#x} bit {bit:#x} altered was accepted");
        }
    }
}

#[test]
fn aws_lc_and_the_sev_crate_agree_on_the_real_milan_report() {
    let other = SimulatedChip::load(&fixture("other-chain")).unwrap();
    cross_check(
        &milan_report(),
        &milan_vcek(),
        &[&other.vcek, &sim_chip().vcek],
    );
}

#[test]
fn aws_lc_and_the_sev_crate_agree_on_simulated_reports() {
    let other = SimulatedChip::load(&fixture("other-chain")).unwrap();
    for version in [2, 3, 5] {
        let sp = SimulatedProcessor::new(sim_chip(), sim_launch(version)).unwrap();
        let raw = sp.report([9; 64], 0).unwrap();
        cross_check(&raw, &sp.chip().vcek, &[&other.vcek, &milan_vcek()]);
    }
}
