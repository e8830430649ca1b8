//! The agent's attestation flow on a TPM: measure the policy kernel configuration into
//! the measured PCR, sign the claims with the PCR-sealed key, quote over the PCRs with
//! qualifying data committing to the envelope, and pack the bundle.
//!
//! State (one directory per TPM, named after its EK, since key blobs only load in the TPM
//! that made them): `ak.json` (AK blob), `ak-certificate.pem` (the AK's certificate from
//! the enrollment CA that last enrolled it, carried in every bundle), `sealed.json` (sealed
//! key blob and its certification), `eventlog.json` (measurements since the TPM's last
//! reset). With `[tpm] persistent_keys` the storage key and this AK are also kept resident
//! in the TPM.

use std::path::{Path, PathBuf};

use crate::collect::claims_for;
use crate::state::{create_state_dir, read_state, write_state, StateError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::collect::{PolicyKernelConfig, RuntimeStatus};
use crate::config::AgentConfig;
use crate::config::EkSourceKind;
use attestor_platform::tpm::{Capabilities, EkSource, KeyBlob, Tpm, TpmError};
use attestor_verify::api::{EnrollChallenge, EnrollProof, EnrollRequest};
use attestor_verify::bundle::{
    Bundle, Evidence, SealedKeyEvidence, SignedAttest, TpmEvidence, TpmSnpEvidence, BUNDLE_TYPE,
};
use attestor_verify::claims::{Statement, PAYLOAD_TYPE};
use attestor_verify::drift::{DriftClaims, DriftReport, DRIFT_PAYLOAD_TYPE, DRIFT_REPORT_TYPE};
use attestor_verify::dsse::{self, Envelope};
use attestor_verify::evidence::certchain;
use attestor_verify::evidence::tpm::akcert::{self, AkCertError};
use attestor_verify::evidence::tpm::eventlog::{
    measurement_digest, EventLog, EventLogError, MeasurementEvent, EVENT_POLICY_KERNEL_CONFIG,
};
use attestor_verify::evidence::tpm::keys::{
    parse_tpm_public, parse_tpm_signature, SigningAlgorithm,
};
use attestor_verify::evidence::tpm::uefi_log::{self, UefiLogError};
use attestor_verify::evidence::tpm::{policy, wire, HashAlg};
use attestor_verify::evidence::tpm_commitment;

/// Qualifying data of the sealed key's certification: names its purpose.
const CERTIFY_QUALIFYING_DATA: &[u8] = b"attestor/sealed-key-certification/v1";
/// A quote races with other extends of its PCRs; retry this often before giving up.
const QUOTE_ATTEMPTS: usize = 3;
/// The AK's certificate in the per-TPM state directory (PEM, the certificate first).
pub const AK_CERTIFICATE_FILE: &str = "ak-certificate.pem";

/// Why the agent could not attest.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("agent state file {path} is corrupt: {source}")]
    StateCorrupt {
        path: PathBuf,
        source: EventLogError,
    },
    #[error("agent state file {path} vanished right after sealing")]
    StateVanished { path: PathBuf },
    #[error(
        "policy kernel configuration drifted: PCR {pcr} now measures {measured}, but the \
         signing key is sealed to {sealed_to}; the TPM refuses to sign. If the change is \
         approved, run `attestor reseal`"
    )]
    Drift {
        pcr: u8,
        measured: String,
        sealed_to: String,
        /// What the TPM still proves: a quote of the new measurement, for the ledger.
        report: Box<DriftReport>,
    },
    #[error(
        "PCR {pcr} holds {found} but the measurement log replays to {expected}: something \
         other than attestor extended it, or the log was lost. Reboot (or restart the TPM) \
         to start a clean measurement"
    )]
    EventLogMismatch {
        pcr: u8,
        expected: String,
        found: String,
    },
    #[error(
        "the signing key is sealed to PCR {pcr} of the {sealed} bank, but the agent now \
         quotes the {configured} bank; run `attestor reseal` to seal a key to it"
    )]
    BankMismatch {
        pcr: u8,
        sealed: &'static str,
        configured: &'static str,
    },
    #[error("the quoted PCRs kept changing during {QUOTE_ATTEMPTS} quotes")]
    QuoteRace,
    #[error("cannot read the EK certificate file {path}: {source}")]
    EkCertificateRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("EK certificate file {path}: {source}")]
    EkCertificateFile {
        path: PathBuf,
        source: certchain::CertChainError,
    },
    #[error(
        "the TPM supports none of the configured key algorithms ({wanted}); tpm.key_algorithms \
         may name ecdsa-p384, ecdsa-p256, rsapss-2048, rsassa-2048"
    )]
    NoKeyAlgorithm { wanted: String },
    #[error(
        "the TPM has PCRs allocated in none of the configured banks ({wanted}; it has {active}); \
         set tpm.pcr_banks to one of those"
    )]
    NoPcrBank { wanted: String, active: String },
    #[error("cannot read the firmware event log {path}: {source}")]
    FirmwareEventLogRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("firmware event log {path}: {source}")]
    FirmwareEventLog { path: PathBuf, source: UefiLogError },
    #[error("cannot read EK intermediates {path}: {source}")]
    EkIntermediatesRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("EK intermediates {path}: {source}")]
    EkIntermediates {
        path: PathBuf,
        source: certchain::CertChainError,
    },
    #[error(
        "AK certificate {path}: {source}; remove the file and enrol again (a ledger \
         enrollment, or `attestor enroll --local`)"
    )]
    AkCertificate { path: PathBuf, source: AkCertError },
    #[error(
        "AK certificate {path} certifies another key than this TPM's AK; remove the file and \
         enrol again"
    )]
    AkCertificateMismatch { path: PathBuf },
    #[error("the enrollment CA issued an AK certificate for another key than this TPM's AK")]
    AkCertificateForAnotherKey,
    #[error("cannot remove {path}: {source}")]
    RemoveAkCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the envelope signature: {0}")]
    Signature(#[source] dsse::DsseError),
    #[error("cannot encode the drift report's claims: {0}")]
    DriftClaims(#[source] serde_json::Error),
    #[error("cannot encode the claims: {0}")]
    Claims(#[from] attestor_verify::claims::ClaimsError),
    #[error("this operation needs a TPM, but the agent's evidence is SEV-SNP")]
    NotTpm,
    #[error("TPM output did not parse: {0}")]
    TpmOutput(#[from] wire::WireError),
    #[error(transparent)]
    Snp(#[from] crate::snp::SnpAgentError),
}

/// The sealed signing key as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealedKeyState {
    blob: KeyBlob,
    /// The bank the key's policy covers (keys sealed before banks were chosen: sha384).
    #[serde(default = "sha384")]
    bank: HashAlg,
    /// Marshalled TPMT_PUBLIC, as certified.
    #[serde(with = "attestor_verify::encoding::b64")]
    public: Vec<u8>,
    certification: SignedAttest,
    /// Measured PCR value the key's policy requires (hex).
    sealed_pcr_value: String,
    /// Configuration measured last when sealing (hex kernel_config_hash).
    sealed_config_hash: String,
}

fn sha384() -> HashAlg {
    HashAlg::Sha384
}

/// An agent bound to one TPM and its state directory.
pub struct Agent {
    config: AgentConfig,
    tpm: Tpm,
    state_dir: PathBuf,
    ak: KeyBlob,
    ak_public: Vec<u8>,
    ek_public: Vec<u8>,
    /// The AK's certificate (then any intermediates), empty until an enrollment gave one.
    ak_certificates: Vec<Vec<u8>>,
    ek_certificates: Vec<Vec<u8>>,
    capabilities: Capabilities,
    /// The bank the current sealed key covers, or for a new one the preferred active bank.
    bank: HashAlg,
    /// What a new sealed key (and a new AK) is made with.
    key_algorithm: SigningAlgorithm,
}

impl Agent {
    /// Opens the TPM, selects its EK as configured, chooses the key algorithm and PCR bank
    /// from what the TPM implements, and loads this TPM's keys, provisioning the AK on
    /// first use.
    pub fn open(config: AgentConfig, tcti: &str) -> Result<Self, AgentError> {
        let mut tpm = Tpm::open(tcti)?;
        let mut ek_certificates = Vec::new();
        let source = match config.tpm.ek_source_kind() {
            EkSourceKind::Nv => EkSource::Nv,
            EkSourceKind::Uncertified(template) => EkSource::Uncertified(template),
            EkSourceKind::File(path) => {
                let mut chain = read_certificates(path, |source| AgentError::EkCertificateRead {
                    path: path.to_path_buf(),
                    source,
                })
                .and_then(|r| {
                    r.map_err(|source| AgentError::EkCertificateFile {
                        path: path.to_path_buf(),
                        source,
                    })
                })?;
                let leaf = chain.remove(0);
                ek_certificates.extend(chain);
                EkSource::Certificate(leaf)
            }
        };
        let ek = tpm.select_ek(&source)?;
        if let Some(certificate) = &ek.certificate {
            ek_certificates.insert(0, certificate.clone());
            if let Some(path) = &config.tpm.ek_intermediates {
                let read = read_certificates(path, |source| AgentError::EkIntermediatesRead {
                    path: path.clone(),
                    source,
                })?;
                ek_certificates.extend(read.map_err(|source| AgentError::EkIntermediates {
                    path: path.clone(),
                    source,
                })?);
            }
        }
        let ek_id = hex::encode(&Sha256::digest(&ek.public)[..8]);
        let state_dir = config.state_dir.join(format!("tpm-{ek_id}"));
        create_state_dir(&state_dir)?;
        let capabilities = tpm.capabilities()?;
        let key_algorithm = capabilities
            .first_supported(&config.tpm.key_algorithms)
            .ok_or_else(|| AgentError::NoKeyAlgorithm {
                wanted: names(config.tpm.key_algorithms.iter().map(|a| a.name())),
            })?;
        let ak_path = state_dir.join("ak.json");
        let ak = match read_state::<KeyBlob>(&ak_path)? {
            Some(ak) => ak,
            None => {
                // A certificate left from an earlier AK would name a key that is gone.
                remove_ak_certificate(&state_dir.join(AK_CERTIFICATE_FILE))?;
                let ak = tpm.create_ak(key_algorithm)?;
                write_state(&ak_path, &ak)?;
                ak
            }
        };
        if config.tpm.persistent_keys_for(tcti) {
            tpm.use_persistent_keys(config.tpm.persistent_handles(), &ak)?;
        }
        let ak_public = Tpm::public_of(&ak)?;
        let sealed: Option<SealedKeyState> = read_state(&state_dir.join("sealed.json"))?;
        let bank = match sealed {
            Some(sealed) => sealed.bank,
            None => preferred_bank(&config, &capabilities)?,
        };
        let ak_certificates =
            load_ak_certificates(&state_dir.join(AK_CERTIFICATE_FILE), &ak_public)?;
        Ok(Agent {
            config,
            tpm,
            state_dir,
            ak,
            ak_public,
            ek_public: ek.public,
            ak_certificates,
            ek_certificates,
            capabilities,
            bank,
            key_algorithm,
        })
    }

    /// The AK's and the sealed key's algorithms and the bank in use, for people.
    pub fn algorithms(&self) -> Result<(SigningAlgorithm, SigningAlgorithm, HashAlg), AgentError> {
        let sealed = read_state::<SealedKeyState>(&self.state_dir.join("sealed.json"))?
            .map(|s| s.blob.algorithm())
            .transpose()?
            .unwrap_or(self.key_algorithm);
        Ok((self.ak.algorithm()?, sealed, self.bank))
    }

    /// The AK's TPM Name (nameAlg || digest of its TPMT_PUBLIC): what
    /// `attestor verify --ak-name` pins.
    pub fn ak_name(&self) -> Result<Vec<u8>, AgentError> {
        let ak = parse_tpm_public(&self.ak_public)?;
        Ok(wire::object_name(&self.ak_public, ak.name_alg()))
    }

    /// The AK's certificate (DER), if an enrollment gave one.
    pub fn ak_certificate(&self) -> Option<&[u8]> {
        self.ak_certificates.first().map(Vec::as_slice)
    }

    /// Keeps the AK certificate an enrollment gave (`None`: the enrollment gave none, so
    /// an older one, naming an earlier enrollment, is dropped), durably, for every bundle
    /// from now on. A certificate of another key is refused.
    pub fn keep_ak_certificate(&mut self, certificate: Option<&[u8]>) -> Result<(), AgentError> {
        let path = self.state_dir.join(AK_CERTIFICATE_FILE);
        match certificate {
            Some(der) => {
                let certifies = akcert::certifies_ak(der, &self.ak_public).map_err(|source| {
                    AgentError::AkCertificate {
                        path: path.clone(),
                        source,
                    }
                })?;
                if !certifies {
                    return Err(AgentError::AkCertificateForAnotherKey);
                }
                attestor_verify::fs::write_atomically(
                    &path,
                    akcert::certificate_pem(der).as_bytes(),
                )
                .map_err(StateError::from)?;
                self.ak_certificates = vec![der.to_vec()];
            }
            None => {
                remove_ak_certificate(&path)?;
                self.ak_certificates.clear();
            }
        }
        Ok(())
    }

    /// Directory holding this TPM's key blobs and measurement log.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn measured_pcr_value(&mut self) -> Result<Vec<u8>, AgentError> {
        let (pcr, bank) = (self.config.tpm.measured_pcr, self.bank);
        let values = self.tpm.read_pcrs(bank, &[pcr])?;
        Ok(values
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default())
    }

    /// Makes the measured PCR reflect `kernel`: extends it when the configuration differs
    /// from the last measurement of this boot, logging every extend before making it.
    pub fn measure(&mut self, kernel: &PolicyKernelConfig) -> Result<EventLog, AgentError> {
        let (pcr, bank) = (self.config.tpm.measured_pcr, self.bank);
        let log_path = self.state_dir.join("eventlog.json");
        let mut log: EventLog = read_state(&log_path)?.unwrap_or_default();
        let current = self.measured_pcr_value()?;
        let replay = |log: &EventLog| {
            log.for_bank(bank)
                .replay(pcr, bank)
                .map_err(|source| AgentError::StateCorrupt {
                    path: log_path.clone(),
                    source,
                })
        };
        if replay(&log)? != current {
            let mut without_last = log.clone();
            without_last.events.pop();
            if current == vec![0; bank.digest_len()] {
                // The TPM was reset since the log was written: a new boot, a new log.
                log = EventLog::default();
            } else if !log.events.is_empty() && replay(&without_last)? == current {
                // A crash came between logging an extend and making it.
                log = without_last;
            } else {
                return Err(AgentError::EventLogMismatch {
                    pcr,
                    expected: hex::encode(replay(&log)?),
                    found: hex::encode(current),
                });
            }
            write_state(&log_path, &log)?;
        }
        let measured = hex::encode(kernel.kernel_config_hash);
        if log.last().map(|e| &e.data) != Some(&measured) {
            let event = MeasurementEvent {
                pcr,
                event_type: EVENT_POLICY_KERNEL_CONFIG.into(),
                digests: [HashAlg::Sha384, HashAlg::Sha256]
                    .into_iter()
                    .map(|b| {
                        let digest = measurement_digest(b, &kernel.kernel_config_hash);
                        (b, hex::encode(digest))
                    })
                    .collect(),
                data: measured,
                timestamp: attestor_verify::time::now_secs(),
            };
            let digests = self.extend_digests(&event)?;
            log.events.push(event);
            write_state(&log_path, &log)?;
            self.tpm.extend(pcr, &digests)?;
        }
        Ok(log)
    }

    /// The event's digests for every active bank attestor knows, so banks stay consistent.
    fn extend_digests(
        &mut self,
        event: &MeasurementEvent,
    ) -> Result<Vec<(HashAlg, Vec<u8>)>, AgentError> {
        let active = &self.capabilities.banks;
        Ok(event
            .digests
            .iter()
            .filter(|(bank, _)| active.contains(bank))
            .filter_map(|(bank, d)| Some((*bank, hex::decode(d).ok()?)))
            .collect())
    }

    /// Creates a new sealed signing key bound to the measured PCR's current value and has
    /// the AK certify it. Run after an approved configuration change.
    pub fn reseal(&mut self, kernel: &PolicyKernelConfig) -> Result<(), AgentError> {
        // A new key takes the bank the configuration prefers now.
        self.bank = preferred_bank(&self.config, &self.capabilities)?;
        self.measure(kernel)?;
        let (pcr, bank) = (self.config.tpm.measured_pcr, self.bank);
        let blob = self
            .tpm
            .create_sealed_key(self.key_algorithm, bank, &[pcr])?;
        let public = Tpm::public_of(&blob)?;
        let (attest, signature) =
            self.tpm
                .certify_sealed(&self.ak, &blob, CERTIFY_QUALIFYING_DATA)?;
        let state = SealedKeyState {
            blob,
            bank,
            public,
            certification: SignedAttest { attest, signature },
            sealed_pcr_value: hex::encode(self.measured_pcr_value()?),
            sealed_config_hash: hex::encode(kernel.kernel_config_hash),
        };
        Ok(write_state(&self.state_dir.join("sealed.json"), &state)?)
    }

    /// Measures the configuration and seals a signing key if this TPM has none yet.
    pub fn init(&mut self, kernel: &PolicyKernelConfig) -> Result<(), AgentError> {
        self.measure(kernel)?;
        self.sealed_key(kernel).map(|_| ())
    }

    fn sealed_key(&mut self, kernel: &PolicyKernelConfig) -> Result<SealedKeyState, AgentError> {
        let path = self.state_dir.join("sealed.json");
        if let Some(state) = read_state(&path)? {
            return Ok(state);
        }
        self.reseal(kernel)?;
        read_state(&path)?.ok_or(AgentError::StateVanished { path })
    }

    /// What the ledger needs to enrol this agent: the EK (certificate chain and public
    /// area) and the AK to pin.
    pub fn enrollment_request(&mut self) -> Result<EnrollRequest, AgentError> {
        Ok(EnrollRequest {
            ek_certificates: self.ek_certificates.clone(),
            ek_public: self.ek_public.clone(),
            ak_public: self.ak_public.clone(),
        })
    }

    /// Answers the ledger's credential challenge with the TPM (ActivateCredential).
    pub fn activate(&mut self, challenge: &EnrollChallenge) -> Result<EnrollProof, AgentError> {
        let secret = self.tpm.activate_credential(
            &self.ak,
            &challenge.credential_blob,
            &challenge.encrypted_secret,
        )?;
        Ok(EnrollProof { secret })
    }

    /// Produces one attestation bundle. `nonce` is the verifier's (empty offline).
    pub fn attest(
        &mut self,
        kernel: &PolicyKernelConfig,
        status: &RuntimeStatus,
        nonce: &[u8],
    ) -> Result<Bundle, AgentError> {
        let (envelope, evidence) = self.sign_and_quote(kernel, status, nonce)?;
        Ok(Bundle {
            bundle_type: BUNDLE_TYPE.into(),
            envelope,
            nonce: nonce.to_vec(),
            evidence: Evidence::Tpm(evidence),
        })
    }

    /// One bundle from a confidential VM's vTPM and its secure processor: the sealed key
    /// signs, the quote commits to the envelope as in [`Agent::attest`], and the report
    /// commits to the same envelope and to the sealed key.
    pub fn attest_with_snp(
        &mut self,
        reporter: &mut crate::snp::SnpReporter,
        kernel: &PolicyKernelConfig,
        status: &RuntimeStatus,
        nonce: &[u8],
    ) -> Result<Bundle, AgentError> {
        let (envelope, tpm) = self.sign_and_quote(kernel, status, nonce)?;
        let sealed_key = wire::parse_public(&tpm.sealed_key.public)?.sec1_uncompressed()?;
        let snp = reporter.evidence(&envelope, nonce, sealed_key)?;
        Ok(Bundle {
            bundle_type: BUNDLE_TYPE.into(),
            envelope,
            nonce: nonce.to_vec(),
            evidence: Evidence::TpmSnp(TpmSnpEvidence { tpm, snp }),
        })
    }

    /// The envelope signed by the sealed key and the quote committing to it and `nonce`.
    fn sign_and_quote(
        &mut self,
        kernel: &PolicyKernelConfig,
        status: &RuntimeStatus,
        nonce: &[u8],
    ) -> Result<(Envelope, TpmEvidence), AgentError> {
        let log = self.measure(kernel)?;
        let sealed = self.sealed_key(kernel)?;
        let (pcr, bank) = (self.config.tpm.measured_pcr, sealed.bank);
        // A key sealed to a bank the configuration no longer allows waits for a reseal.
        if !self.config.tpm.pcr_banks.contains(&bank) {
            return Err(AgentError::BankMismatch {
                pcr,
                sealed: bank.name(),
                configured: preferred_bank(&self.config, &self.capabilities)?.name(),
            });
        }

        let statement = Statement::new(claims_for(kernel, status));
        let payload = statement.to_json()?;
        let pae = dsse::pae(PAYLOAD_TYPE, &payload);
        let hash = sealed.blob.algorithm()?.hash();
        let digest = hash.digest(&pae);
        let signature = match self.tpm.sign_sealed(&sealed.blob, bank, &[pcr], &digest) {
            Err(TpmError::PolicyRefused { .. }) => {
                if let Some(sealed_bank) = self.sealed_bank(&sealed.public, bank)? {
                    return Err(AgentError::BankMismatch {
                        pcr,
                        sealed: sealed_bank.name(),
                        configured: bank.name(),
                    });
                }
                return Err(self.drift_report(kernel, sealed, log, nonce));
            }
            other => other?,
        };
        let sig = parse_tpm_signature(&signature)?.to_dsse()?;
        let envelope = Envelope {
            payload_type: PAYLOAD_TYPE.into(),
            payload,
            signatures: vec![dsse::Signature {
                keyid: hex::encode(wire::object_name(&sealed.public, hash)),
                sig,
            }],
        };

        let evidence = self.quoted_evidence(&tpm_commitment(nonce, &pae), &log, sealed)?;
        Ok((envelope, evidence))
    }

    /// The TPM evidence around a quote of the firmware and measured PCRs whose qualifying
    /// data is `commitment`.
    fn quoted_evidence(
        &mut self,
        commitment: &[u8],
        log: &EventLog,
        sealed: SealedKeyState,
    ) -> Result<TpmEvidence, AgentError> {
        let (pcr, bank) = (self.config.tpm.measured_pcr, sealed.bank);
        let mut selection: Vec<u8> = self.config.tpm.firmware_pcrs.clone();
        selection.push(pcr);
        selection.sort_unstable();
        let (quote, pcrs) = self.quote_consistent(commitment, bank, &selection)?;
        Ok(TpmEvidence {
            quote,
            pcr_bank: bank,
            pcrs,
            event_log: log.for_bank(bank),
            firmware_event_log: self.firmware_event_log(bank)?,
            ak_public: self.ak_public.clone(),
            sealed_key: SealedKeyEvidence {
                public: sealed.public,
                certification: sealed.certification,
            },
            ek_certificates: self.ek_certificates.clone(),
            ek_public: self.ek_public.clone(),
            ak_certificates: self.ak_certificates.clone(),
        })
    }

    /// The sealed key refused to sign `kernel`'s measurement: the drift, with a report of
    /// what the TPM still proves (a quote of the new measurement, committed to the
    /// report's claims and `nonce`). Failing to quote is the error instead.
    fn drift_report(
        &mut self,
        kernel: &PolicyKernelConfig,
        sealed: SealedKeyState,
        log: EventLog,
        nonce: &[u8],
    ) -> AgentError {
        let measured = hex::encode(kernel.kernel_config_hash);
        let sealed_to = sealed.sealed_config_hash.clone();
        let claims = DriftClaims {
            kernel_config_hash: measured.clone(),
            sealed_config_hash: sealed_to.clone(),
            detected_at: attestor_verify::time::unix_ms(std::time::SystemTime::now()) / 1000,
            attestor_version: env!("CARGO_PKG_VERSION").into(),
        };
        let payload = match serde_json::to_vec(&claims) {
            Ok(payload) => payload,
            Err(e) => return AgentError::DriftClaims(e),
        };
        let commitment = tpm_commitment(nonce, &dsse::pae(DRIFT_PAYLOAD_TYPE, &payload));
        match self.quoted_evidence(&commitment, &log, sealed) {
            Ok(evidence) => AgentError::Drift {
                pcr: self.config.tpm.measured_pcr,
                measured,
                sealed_to,
                report: Box::new(DriftReport {
                    report_type: DRIFT_REPORT_TYPE.into(),
                    payload,
                    nonce: nonce.to_vec(),
                    evidence,
                }),
            },
            Err(e) => e,
        }
    }

    /// Another active bank whose current measured-PCR value the sealed key's policy
    /// requires: the key was sealed while the agent quoted that bank, so the refusal is a
    /// bank change, not a drift.
    fn sealed_bank(
        &mut self,
        sealed_public: &[u8],
        bank: HashAlg,
    ) -> Result<Option<HashAlg>, AgentError> {
        let pcr = self.config.tpm.measured_pcr;
        let key = parse_tpm_public(sealed_public)?;
        for other in self.capabilities.banks.clone() {
            if other == bank {
                continue;
            }
            let value = self.tpm.read_pcrs(other, &[pcr])?;
            let values: Vec<&[u8]> = value.iter().map(|(_, v)| v.as_slice()).collect();
            let selection = [wire::PcrSelection {
                bank: other,
                pcrs: vec![pcr],
            }];
            let policy = policy::sealed_key_policy(key.name_alg(), &selection, &values);
            if key.auth_policy() == policy {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }

    /// The configured firmware event log, checked to parse and to carry the quoted bank,
    /// so a log the verifier cannot replay is reported here rather than as a refusal.
    fn firmware_event_log(&self, bank: HashAlg) -> Result<Vec<u8>, AgentError> {
        use std::io::Read;
        let Some(path) = &self.config.tpm.firmware_event_log else {
            return Ok(Vec::new());
        };
        let read_err = |source| AgentError::FirmwareEventLogRead {
            path: path.clone(),
            source,
        };
        // securityfs reports a size of 0: read to the end, one byte past the limit.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(uefi_log::MAX_LOG_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(read_err)?;
        let log_err = |source| AgentError::FirmwareEventLog {
            path: path.clone(),
            source,
        };
        uefi_log::parse(&bytes)
            .and_then(|log| log.replay(bank.into()))
            .map_err(log_err)?;
        Ok(bytes)
    }

    /// Quotes, then reads the PCR values; retries if an extend slipped in between.
    fn quote_consistent(
        &mut self,
        qualifying: &[u8],
        bank: HashAlg,
        selection: &[u8],
    ) -> Result<(SignedAttest, std::collections::BTreeMap<u8, String>), AgentError> {
        // The TPM digests the quoted values with the AK's signing hash.
        let hash = self.ak.algorithm()?.hash();
        for _ in 0..QUOTE_ATTEMPTS {
            let (attest, signature) = self.tpm.quote(&self.ak, qualifying, bank, selection)?;
            let values = self.tpm.read_pcrs(bank, selection)?;
            let parsed = wire::parse_attest(&attest)?;
            let value_refs: Vec<&[u8]> = values.iter().map(|(_, v)| v.as_slice()).collect();
            let quoted = match parsed.attested {
                wire::Attested::Quote { pcr_digest, .. } => pcr_digest,
                _ => Vec::new(),
            };
            if quoted == wire::quote_pcr_digest(hash, &value_refs) {
                let pcrs = values
                    .into_iter()
                    .map(|(i, v)| (i, hex::encode(v)))
                    .collect();
                return Ok((SignedAttest { attest, signature }, pcrs));
            }
        }
        Err(AgentError::QuoteRace)
    }
}

/// The first configured bank the TPM has PCRs allocated in.
fn preferred_bank(
    config: &AgentConfig,
    capabilities: &Capabilities,
) -> Result<HashAlg, AgentError> {
    config
        .tpm
        .pcr_banks
        .iter()
        .copied()
        .find(|b| capabilities.banks.contains(b))
        .ok_or_else(|| AgentError::NoPcrBank {
            wanted: names(config.tpm.pcr_banks.iter().map(|b| b.name())),
            active: names(capabilities.banks.iter().map(|b| b.name())),
        })
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// The certificates (DER) of a PEM file, or of a DER file holding one certificate.
fn read_certificates(
    path: &Path,
    read_error: impl FnOnce(std::io::Error) -> AgentError,
) -> Result<Result<Vec<Vec<u8>>, certchain::CertChainError>, AgentError> {
    let bytes = std::fs::read(path).map_err(read_error)?;
    Ok(match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => certchain::pem_to_der_all(text),
        _ => certchain::spki_of(&bytes).map(|_| vec![bytes]),
    })
}

fn remove_ak_certificate(path: &Path) -> Result<(), AgentError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AgentError::RemoveAkCertificate {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The AK certificate chain kept in `path`, if any; one that does not certify `ak_public`
/// is an error, not something to ship.
fn load_ak_certificates(path: &Path, ak_public: &[u8]) -> Result<Vec<Vec<u8>>, AgentError> {
    let pem = match std::fs::read_to_string(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AgentError::State(StateError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }))
        }
    };
    let bad = |source| AgentError::AkCertificate {
        path: path.to_path_buf(),
        source,
    };
    let chain = certchain::pem_to_der_all(&pem).map_err(|e| bad(AkCertError::from(e)))?;
    let leaf = chain.first().map(Vec::as_slice).unwrap_or_default();
    if !akcert::certifies_ak(leaf, ak_public).map_err(bad)? {
        return Err(AgentError::AkCertificateMismatch {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}
