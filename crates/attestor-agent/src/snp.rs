//! The agent in an SEV-SNP guest: the envelope is signed with a software key kept sealed
//! under the secure processor's derived key (bound to the launch measurement and policy),
//! and bound to an attestation report whose REPORT_DATA commits to the envelope, the key
//! and the verifier's nonce. The same code runs on configfs-tsm, `/dev/sev-guest` and the
//! simulation.
//!
//! State: `state_dir/snp/sealed-key.json` (the sealed signing key) and
//! `state_dir/snp/vcek/` (VCEK cache, for hosts that return no certificate table).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::collect::claims_for;
use crate::collect::{PolicyKernelConfig, RuntimeStatus};
use crate::config::{AgentConfig, SnpConfig, SnpInterface};
use crate::kds::{self, AMD_KDS_URL};
use crate::state::{create_state_dir, read_state, write_state, StateError};
use attestor_platform::snp::configfs::{ConfigfsTsm, KeySource};
use attestor_platform::snp::device::SevGuestDevice;
use attestor_platform::snp::seal::{self, SealError, SealedSigningKey};
use attestor_platform::snp::sim::SimulatedProcessor;
use attestor_platform::snp::{DeviceError, SecureProcessor};
use attestor_verify::bundle::{Bundle, Evidence, SnpEvidence, BUNDLE_TYPE};
use attestor_verify::claims::{Statement, PAYLOAD_TYPE};
use attestor_verify::dsse::{self, EcdsaP384Signer, Envelope};
use attestor_verify::evidence::snp::certs::{self, CertKind, Tcb};
use attestor_verify::evidence::snp::report::Report;
use attestor_verify::evidence::snp::vcek::{vcek_url, VcekCache};
use attestor_verify::evidence::snp_commitment;

/// Why an SNP agent could not attest.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SnpAgentError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the agent config has no [snp] section")]
    NotConfigured,
    #[error("the secure processor returned a report that does not parse: {0}")]
    Report(#[from] attestor_verify::evidence::snp::report::ReportError),
    #[error(
        "the host returned no VCEK and none is cached; fetch it from AMD's KDS into the \
         cache: curl -o {path} '{url}'"
    )]
    NoVcek { path: PathBuf, url: String },
    #[error("the host returned no VCEK, none is cached, and the KDS fetch failed: {0}")]
    Kds(#[from] crate::kds::KdsError),
    #[error("signing key: {0}")]
    Key(#[from] dsse::DsseError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot encode the claims: {0}")]
    Claims(#[from] attestor_verify::claims::ClaimsError),
}

/// The secure processor and where VCEKs come from: what makes the SEV-SNP evidence for
/// an envelope, whichever key signed it.
pub struct SnpReporter {
    processor: Box<dyn SecureProcessor>,
    vmpl: u32,
    vcek_cache: VcekCache,
    /// KDS base URL and optional CA to fetch missing VCEKs from.
    kds: Option<(String, Option<PathBuf>)>,
    product: Option<attestor_verify::evidence::snp::roots::Product>,
}

impl SnpReporter {
    /// Opens the device, or the simulation if the config names one.
    pub fn open(config: &AgentConfig) -> Result<SnpReporter, SnpAgentError> {
        let snp = config.snp.as_ref().ok_or(SnpAgentError::NotConfigured)?;
        let processor: Box<dyn SecureProcessor> = match &snp.simulation {
            Some(sim) => Box::new(SimulatedProcessor::from_settings(sim)?),
            None => open_processor(snp)?,
        };
        Ok(Self::with_processor(
            processor,
            &config.state_dir.join("snp"),
            snp,
        ))
    }

    /// A reporter on a given secure processor; `state_dir` holds the default VCEK cache.
    pub fn with_processor(
        processor: Box<dyn SecureProcessor>,
        state_dir: &Path,
        snp: &SnpConfig,
    ) -> SnpReporter {
        SnpReporter {
            processor,
            vcek_cache: VcekCache::new(
                snp.vcek_cache
                    .clone()
                    .unwrap_or_else(|| state_dir.join("vcek")),
            ),
            vmpl: snp.vmpl,
            product: snp.product,
            kds: snp.kds_url.clone().map(|url| (url, snp.kds_ca.clone())),
        }
    }

    /// The report binding `envelope` (and `nonce`) to `signing_key`, the key that signed
    /// it, with the VCEK when the host or the cache has it.
    pub fn evidence(
        &mut self,
        envelope: &Envelope,
        nonce: &[u8],
        signing_key: Vec<u8>,
    ) -> Result<SnpEvidence, SnpAgentError> {
        let pae = dsse::pae(&envelope.payload_type, &envelope.payload);
        let report_data = snp_commitment(nonce, &signing_key, &pae);
        let ext = self.processor.extended_report(report_data, self.vmpl)?;
        let vcek = self.vcek(&ext.report, &ext.certs)?;
        Ok(SnpEvidence {
            report: ext.report,
            vcek,
            signing_key,
        })
    }
}

/// An SNP guest's agent.
pub struct SnpAgent {
    reporter: SnpReporter,
    signer: EcdsaP384Signer,
    signing_key: Vec<u8>,
    state_dir: PathBuf,
}

impl SnpAgent {
    /// Opens the device, or the simulation if the config names one, and unseals (or
    /// creates and seals) the signing key.
    pub fn open(config: &AgentConfig) -> Result<SnpAgent, SnpAgentError> {
        let reporter = SnpReporter::open(config)?;
        Self::with_reporter(reporter, &config.state_dir)
    }

    /// An agent on a given secure processor (tests use this to vary the launch).
    pub fn with_processor(
        processor: Box<dyn SecureProcessor>,
        state_dir: &Path,
        snp: &SnpConfig,
    ) -> Result<SnpAgent, SnpAgentError> {
        let reporter = SnpReporter::with_processor(processor, &state_dir.join("snp"), snp);
        Self::with_reporter(reporter, state_dir)
    }

    fn with_reporter(
        mut reporter: SnpReporter,
        state_dir: &Path,
    ) -> Result<SnpAgent, SnpAgentError> {
        let state_dir = state_dir.join("snp");
        create_state_dir(&state_dir)?;
        let sealing_key = reporter.processor.sealing_key()?;
        let sealed_path = state_dir.join("sealed-key.json");
        let signer = match read_state::<SealedSigningKey>(&sealed_path)? {
            Some(sealed) => {
                let pkcs8 = seal::unseal(&sealing_key, &sealed)?;
                EcdsaP384Signer::from_pkcs8(&pkcs8)?
            }
            None => seal_new_key(&sealing_key, &sealed_path)?,
        };
        Ok(SnpAgent {
            signing_key: signer.public_key_sec1(),
            signer,
            reporter,
            state_dir,
        })
    }

    /// Replaces the signing key with a new one sealed to this launch (after an approved
    /// image change; the ledger must pin the new key).
    pub fn reseal(&mut self) -> Result<(), SnpAgentError> {
        let sealing_key = self.reporter.processor.sealing_key()?;
        self.signer = seal_new_key(&sealing_key, &self.state_dir.join("sealed-key.json"))?;
        self.signing_key = self.signer.public_key_sec1();
        Ok(())
    }

    /// The envelope signing key (SEC1), which reports commit to.
    pub fn signing_key(&self) -> &[u8] {
        &self.signing_key
    }

    /// Directory of this agent's SNP state.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Produces one attestation bundle. `nonce` is the verifier's (empty offline).
    pub fn attest(
        &mut self,
        kernel: &PolicyKernelConfig,
        status: &RuntimeStatus,
        nonce: &[u8],
    ) -> Result<Bundle, SnpAgentError> {
        let payload = Statement::new(claims_for(kernel, status)).to_json()?;
        let envelope = Envelope::sign(PAYLOAD_TYPE, payload, &self.signer)?;
        let evidence = self
            .reporter
            .evidence(&envelope, nonce, self.signing_key.clone())?;
        Ok(Bundle {
            bundle_type: BUNDLE_TYPE.into(),
            envelope,
            nonce: nonce.to_vec(),
            evidence: Evidence::Snp(evidence),
        })
    }
}

impl SnpReporter {
    /// The VCEK from the host's table (cached for later), else from the cache.
    fn vcek(&self, report: &[u8], table: &[certs::CertEntry]) -> Result<Vec<u8>, SnpAgentError> {
        let fields = Report::parse(report)?;
        let fields = fields.fields();
        let tcb = Tcb::from(fields.reported_tcb);
        let product = self.product;
        if let Some(vcek) = certs::find(table, CertKind::Vcek) {
            if let Some(product) = product {
                // A cache that cannot be written only costs a later fetch.
                let _ = self.vcek_cache.put(product, &fields.chip_id, &tcb, vcek);
            }
            return Ok(vcek.to_vec());
        }
        let product = product.unwrap_or(attestor_verify::evidence::snp::roots::Product::Milan);
        if let Some(vcek) = self.vcek_cache.get(product, &fields.chip_id, &tcb) {
            return Ok(vcek);
        }
        let Some((base, ca)) = &self.kds else {
            return Err(SnpAgentError::NoVcek {
                path: self.vcek_cache.path(product, &fields.chip_id, &tcb),
                url: vcek_url(AMD_KDS_URL, product, &fields.chip_id, &tcb),
            });
        };
        let url = vcek_url(base, product, &fields.chip_id, &tcb);
        let vcek = kds::fetch_vcek(&url, ca.as_deref())?;
        // A cache that cannot be written only costs another fetch.
        let _ = self.vcek_cache.put(product, &fields.chip_id, &tcb, &vcek);
        Ok(vcek)
    }
}

/// configfs-tsm when configured, or (`auto`) when the kernel has it; else the device.
fn open_processor(snp: &SnpConfig) -> Result<Box<dyn SecureProcessor>, DeviceError> {
    let configfs = match snp.interface {
        SnpInterface::ConfigfsTsm => true,
        SnpInterface::SevGuest => false,
        SnpInterface::Auto => snp.tsm_report_dir.is_dir(),
    };
    Ok(if configfs {
        Box::new(ConfigfsTsm::open(&snp.tsm_report_dir, KeySource::SevGuest)?)
    } else {
        Box::new(SevGuestDevice::open()?)
    })
}

fn seal_new_key(sealing_key: &[u8; 32], path: &Path) -> Result<EcdsaP384Signer, SnpAgentError> {
    let signer = EcdsaP384Signer::generate()?;
    let pkcs8 = signer.to_pkcs8()?;
    let sealed = seal::seal(sealing_key, &pkcs8, &signer.public_key_sec1())?;
    write_state(path, &sealed)?;
    Ok(signer)
}
