//! SEV-SNP reports through configfs-tsm, against an entry the simulation serves as the
//! kernel lays it out: the same report and certificate table as the direct path, the VMPL
//! written as `privlevel`, a concurrent writer caught by `generation`, and derived keys
//! from the device only.

use std::path::Path;
use std::time::SystemTime;

use attestor_platform::snp::configfs::{ConfigfsTsm, KeySource, ATTEMPTS, ENTRY_NAME};
use attestor_platform::snp::sim::configfs::SimulatedTsm;
use attestor_platform::snp::sim::{
    SimulatedChip, SimulatedLaunch, SimulatedProcessor, DEFAULT_POLICY,
};
use attestor_platform::snp::{DeviceError, SecureProcessor};
use attestor_verify::evidence::snp::certs::{self, CertKind};
use attestor_verify::evidence::snp::chain::{verify_report_signature, verify_vcek};
use attestor_verify::evidence::snp::report::{Report, SIGNED_LEN};
use attestor_verify::evidence::snp::roots::{one_cert, Product, RootsOrigin, TrustRoots};

const DATA: [u8; 64] = [0x42; 64];

fn chip_dir() -> std::path::PathBuf {
    crate::support::repo_root().join("examples/snp-sim")
}

fn launch(host_provides_certificates: bool) -> SimulatedLaunch {
    SimulatedLaunch {
        measurement: [0x5a; 48],
        policy: DEFAULT_POLICY,
        report_version: 5,
        host_data: [0; 32],
        host_provides_certificates,
        product: Product::Milan,
    }
}

fn processor(host_provides_certificates: bool) -> SimulatedProcessor {
    SimulatedProcessor::new(
        SimulatedChip::load(&chip_dir()).unwrap(),
        launch(host_provides_certificates),
    )
    .unwrap()
}

/// A simulated configfs-tsm report directory and the processor opened on it; derived keys
/// from a second processor of the same launch.
struct Guest {
    // Dropped before the directory it serves.
    sim: SimulatedTsm,
    dir: tempfile::TempDir,
}

impl Guest {
    fn new(host_provides_certificates: bool) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimulatedTsm::start(
            &dir.path().join("report"),
            ENTRY_NAME,
            processor(host_provides_certificates),
        )
        .unwrap();
        Guest { sim, dir }
    }

    fn report_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("report")
    }

    fn open(&self) -> Result<ConfigfsTsm, DeviceError> {
        ConfigfsTsm::open(
            &self.report_dir(),
            KeySource::Processor(Box::new(processor(true))),
        )
    }
}

fn sim_roots(dir: &Path) -> TrustRoots {
    TrustRoots {
        ark: one_cert(&std::fs::read(dir.join("ark.pem")).unwrap()).unwrap(),
        ask: one_cert(&std::fs::read(dir.join("ask.pem")).unwrap()).unwrap(),
        origin: RootsOrigin::Simulation(dir.join("ark.pem")),
    }
}

#[test]
fn a_configfs_report_is_the_simulations_report_and_verifies_with_the_host_table() {
    let guest = Guest::new(true);
    let mut tsm = guest.open().unwrap();
    assert_eq!(tsm.entry(), guest.sim.entry());
    let ext = tsm.extended_report(DATA, 0).unwrap();

    // The same bytes the processor gives directly, but for the signature (ECDSA is
    // randomized), and the same certificate table the device path parses.
    let direct = guest.sim.direct(DATA, 0).unwrap();
    assert_eq!(ext.report[..SIGNED_LEN], direct.report[..SIGNED_LEN]);
    assert_eq!(ext.certs, direct.certs);
    assert_eq!(
        ext.certs.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [CertKind::Ark, CertKind::Ask, CertKind::Vcek]
    );

    let report = Report::parse(&ext.report).unwrap();
    assert_eq!(report.fields().report_data, DATA);
    assert_eq!(report.fields().measurement, [0x5a; 48]);
    let vcek = certs::find(&ext.certs, CertKind::Vcek).unwrap();
    verify_vcek(&sim_roots(&chip_dir()), vcek, SystemTime::now()).unwrap();
    verify_report_signature(vcek, &report).unwrap();

    // Our two writes per request, one report per request.
    assert_eq!(guest.sim.generation(), 2);
    assert_eq!(guest.sim.reports_made(), 1);
    tsm.extended_report([1; 64], 0).unwrap();
    assert_eq!(guest.sim.generation(), 4);
    assert_eq!(guest.sim.reports_made(), 2);
}

#[test]
fn the_vmpl_is_written_as_privlevel_and_the_floor_is_kept() {
    let guest = Guest::new(true);
    let mut tsm = guest.open().unwrap();
    let ext = tsm.extended_report(DATA, 2).unwrap();
    assert_eq!(Report::parse(&ext.report).unwrap().fields().vmpl, 2);
    assert_eq!(
        std::fs::read_to_string(guest.sim.entry().join("privlevel")).unwrap(),
        "2\n"
    );

    // A guest running at VMPL 1 cannot ask for VMPL 0 reports (the kernel's EINVAL).
    std::fs::write(guest.sim.entry().join("privlevel_floor"), "1\n").unwrap();
    let mut tsm = guest.open().unwrap();
    assert!(matches!(
        tsm.extended_report(DATA, 0),
        Err(DeviceError::TsmPrivlevel { vmpl: 0, floor: 1 })
    ));
    assert_eq!(guest.sim.generation(), 2, "nothing written below the floor");
}

#[test]
fn without_host_certificates_the_auxblob_is_empty_and_so_is_the_table() {
    let guest = Guest::new(false);
    let ext = guest.open().unwrap().extended_report(DATA, 0).unwrap();
    assert!(ext.certs.is_empty());
    Report::parse(&ext.report).unwrap();
}

#[test]
fn a_concurrent_writer_is_caught_by_the_generation_and_the_request_repeated() {
    let guest = Guest::new(true);
    let mut tsm = guest.open().unwrap();
    // Another process writes its inblob between ours and our read of outblob.
    guest.sim.interleave_foreign_writes(1);
    let ext = tsm.extended_report(DATA, 0).unwrap();
    assert_eq!(
        Report::parse(&ext.report).unwrap().fields().report_data,
        DATA
    );
    // The first report was for the other writer's inblob; ours came on the second try.
    assert_eq!(guest.sim.reports_made(), 2);
    assert_eq!(guest.sim.generation(), 2 + 1 + 2);
}

#[test]
fn a_writer_that_never_stops_exhausts_the_attempts() {
    let guest = Guest::new(true);
    let mut tsm = guest.open().unwrap();
    guest.sim.interleave_foreign_writes(ATTEMPTS);
    match tsm.extended_report(DATA, 0) {
        Err(DeviceError::TsmContended { attempts, path }) => {
            assert_eq!(attempts, ATTEMPTS);
            assert_eq!(path, guest.sim.entry());
        }
        other => panic!("expected TsmContended, got {other:?}"),
    }
    // The writer gone, the next request succeeds.
    tsm.extended_report(DATA, 0).unwrap();
}

#[test]
fn a_missing_interface_or_another_provider_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-tsm/report");
    assert!(matches!(
        ConfigfsTsm::open(&missing, KeySource::SevGuest),
        Err(DeviceError::NoTsm(path)) if path == missing
    ));

    let guest = Guest::new(true);
    std::fs::write(guest.sim.entry().join("provider"), "tdx_guest\n").unwrap();
    match guest.open() {
        Err(e @ DeviceError::TsmProvider { .. }) => {
            assert!(e.to_string().contains("\"tdx_guest\""), "{e}")
        }
        other => panic!("expected TsmProvider, got {:?}", other.err()),
    }
}

#[test]
fn derived_keys_come_from_the_key_source_never_from_configfs() {
    let guest = Guest::new(true);
    let mut tsm = guest.open().unwrap();
    assert_eq!(
        tsm.sealing_key().unwrap(),
        processor(true).sealing_key().unwrap()
    );
    assert_eq!(guest.sim.generation(), 0, "a key request writes nothing");

    // With the device as key source, the key needs /dev/sev-guest: on a machine without
    // it, the error names it and why; in a real guest, the device answers.
    let mut tsm = ConfigfsTsm::open(&guest.report_dir(), KeySource::SevGuest).unwrap();
    let device = Path::new("/dev/sev-guest");
    match tsm.sealing_key() {
        Err(e @ DeviceError::NoDerivedKeys { .. }) => {
            assert!(!device.exists(), "the device exists but gave no key: {e}");
            let text = e.to_string();
            assert!(text.contains("MSG_KEY_REQ"), "{text}");
            assert!(text.contains("/dev/sev-guest does not exist"), "{text}");
        }
        Err(other) => panic!("expected NoDerivedKeys, got {other}"),
        Ok(_) => assert!(device.exists()),
    }
}
