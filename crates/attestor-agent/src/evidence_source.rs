//! The agent's evidence source, chosen by the config's `evidence` key: the callers that
//! collect claims, sign and ship bundles use this and do not care which root of trust
//! stands behind it.

use std::path::Path;

use super::snp::{SnpAgent, SnpReporter};
use crate::attest::{Agent, AgentError};
use crate::collect::{PolicyKernelConfig, RuntimeStatus};
use crate::config::{AgentConfig, EvidenceKind};
use attestor_verify::bundle::Bundle;
use attestor_verify::evidence::tpm::keys::SigningAlgorithm;
use attestor_verify::evidence::tpm::HashAlg;

/// A TPM agent, an SEV-SNP guest agent, or a confidential VM's vTPM agent that adds its
/// secure processor's report.
pub enum EvidenceSource {
    Tpm(Box<Agent>),
    Snp(Box<SnpAgent>),
    TpmSnp(Box<Agent>, Box<SnpReporter>),
}

impl EvidenceSource {
    /// Opens what the config's `evidence` names; `tcti` is used only for a TPM.
    pub fn open(config: AgentConfig, tcti: &str) -> Result<EvidenceSource, AgentError> {
        Ok(match config.evidence {
            EvidenceKind::Tpm => EvidenceSource::Tpm(Box::new(Agent::open(config, tcti)?)),
            EvidenceKind::Snp => EvidenceSource::Snp(Box::new(SnpAgent::open(&config)?)),
            EvidenceKind::TpmSnp => {
                let reporter = Box::new(SnpReporter::open(&config)?);
                EvidenceSource::TpmSnp(Box::new(Agent::open(config, tcti)?), reporter)
            }
        })
    }

    /// Makes the source ready to attest (TPM: measure, seal; SNP: done at open).
    pub fn init(&mut self, kernel: &PolicyKernelConfig) -> Result<(), AgentError> {
        match self {
            EvidenceSource::Tpm(agent) | EvidenceSource::TpmSnp(agent, _) => agent.init(kernel),
            EvidenceSource::Snp(_) => Ok(()),
        }
    }

    /// Seals a new signing key to the current state, after an approved change.
    pub fn reseal(&mut self, kernel: &PolicyKernelConfig) -> Result<(), AgentError> {
        match self {
            EvidenceSource::Tpm(agent) | EvidenceSource::TpmSnp(agent, _) => agent.reseal(kernel),
            EvidenceSource::Snp(agent) => Ok(agent.reseal()?),
        }
    }

    /// One attestation bundle committing to `nonce`.
    pub fn attest(
        &mut self,
        kernel: &PolicyKernelConfig,
        status: &RuntimeStatus,
        nonce: &[u8],
    ) -> Result<Bundle, AgentError> {
        match self {
            EvidenceSource::Tpm(agent) => agent.attest(kernel, status, nonce),
            EvidenceSource::Snp(agent) => Ok(agent.attest(kernel, status, nonce)?),
            EvidenceSource::TpmSnp(agent, reporter) => {
                agent.attest_with_snp(reporter, kernel, status, nonce)
            }
        }
    }

    /// The TPM agent, for what only a TPM does (credential activation).
    pub fn tpm(&mut self) -> Result<&mut Agent, AgentError> {
        match self {
            EvidenceSource::Tpm(agent) | EvidenceSource::TpmSnp(agent, _) => Ok(agent),
            EvidenceSource::Snp(_) => Err(AgentError::NotTpm),
        }
    }

    /// Where this source keeps its state.
    pub fn state_dir(&self) -> &Path {
        match self {
            EvidenceSource::Tpm(agent) | EvidenceSource::TpmSnp(agent, _) => agent.state_dir(),
            EvidenceSource::Snp(agent) => agent.state_dir(),
        }
    }

    /// For a TPM: the AK's and the sealed key's algorithms and the PCR bank in use.
    pub fn tpm_algorithms(
        &self,
    ) -> Result<Option<(SigningAlgorithm, SigningAlgorithm, HashAlg)>, AgentError> {
        match self {
            EvidenceSource::Tpm(agent) | EvidenceSource::TpmSnp(agent, _) => {
                agent.algorithms().map(Some)
            }
            EvidenceSource::Snp(_) => Ok(None),
        }
    }
}
