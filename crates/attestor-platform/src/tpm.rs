//! The TPM device layer: the only module that talks to tss-esapi.
//!
//! It offers a few intention-named, synchronous calls (extend, quote, sign with the sealed
//! key, ...) and hides sessions, handles and templates. Every object or session it creates
//! is flushed before the call returns, on success and on error alike, because a TPM without
//! a resource manager (swtpm over TCP) has only three object and three session slots and
//! keeps leaked ones until it is reset.
//!
//! By default keys do not persist in the TPM: a [`KeyBlob`] holds the TPM-encrypted private
//! part and is loaded again under a parent that is re-created from a fixed template on every
//! call (the endorsement key for the AK, an owner-hierarchy storage key of the sealed key's
//! type for the sealed key). [`Tpm::use_persistent_keys`] instead keeps the storage key and
//! the AK resident under persistent handles ([`persistent`]), for TPMs behind a resource
//! manager.
//!
//! Which EK ([`Tpm::select_ek`]: the first with a certificate in NV, the one a supplied
//! certificate certifies, or a named template without certificate) and which algorithms
//! ([`Tpm::capabilities`]) are the caller's choice; the keys carry their algorithm.

mod ek;
pub mod persistent;
mod templates;

pub use ek::EkTemplate;
pub use persistent::PersistentHandles;

use std::collections::BTreeSet;
use std::convert::TryFrom;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tss_esapi::abstraction::nv;
use tss_esapi::constants::response_code::Tss2ResponseCode;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{CapabilityType, CommandCode, SessionType};
use tss_esapi::handles::{
    AuthHandle, KeyHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, SessionHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Data, Digest, DigestList, DigestValues, EncryptedSecret, HashcheckTicket,
    IdObject, PcrSelectSize, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private, Public,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};

use attestor_verify::evidence::certchain::{self, PublicKey};
use attestor_verify::evidence::tpm::keys::{parse_tpm_public, SigningAlgorithm};
use attestor_verify::evidence::tpm::{policy, HashAlg};
use ek::EkPolicy;

/// PCRs a PC-Client TPM implements; higher indices are refused before reaching the TPM.
pub const PCR_COUNT: u8 = 24;

/// Largest qualifying data (TPM2B_DATA) every TPM accepts in a quote or certification.
pub const MAX_QUALIFYING_DATA: usize = 64;

/// The TSS tags response codes with the layer that produced them in bits 16..24.
const RC_LAYER_MASK: u32 = 0x00ff_0000;
/// Layer of the transport (socket or device file), as opposed to the TPM itself (layer 0).
const RC_LAYER_TCTI: u32 = 0x000a_0000;
/// Format-one TPM response codes: strip parameter/handle/session number and the P bit.
const RC_FMT1_MASK: u32 = 0x0000_00bf;
const TPM_RC_VALUE: u32 = 0x084;
const TPM_RC_POLICY_FAIL: u32 = 0x09d;
/// Format-one bit P: the error is about a command parameter (not a handle or session).
const RC_FMT1_PARAMETER: u32 = 0x040;

/// The NV range the TCG EK Credential Profile's certificates, nonces and templates use.
const EK_NV_FIRST: u32 = 0x01c0_0002;
const EK_NV_LAST: u32 = 0x01c0_001f;

/// First handles of the transient-object and session ranges, for the stale-handle sweep.
const TRANSIENT_FIRST: u32 = 0x8000_0000;
const LOADED_SESSION_FIRST: u32 = 0x0200_0000;
const SAVED_SESSION_FIRST: u32 = 0x0300_0000;
/// GetCapability page size for the handle sweep; swtpm holds at most 3+3 anyway.
const HANDLE_PAGE: u32 = 64;

/// Everything that can go wrong between attestor and the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string could not be parsed.
    #[error("invalid TCTI configuration {tcti:?}: {reason}")]
    TctiConfig { tcti: String, reason: String },
    /// The transport to the TPM failed (socket closed, device missing, ...).
    #[error("cannot talk to the TPM during {op} (TCTI response code {rc:#x}): {source}")]
    Tcti {
        op: &'static str,
        rc: u32,
        source: tss_esapi::Error,
    },
    /// The sealed key's policy was not satisfied: the PCRs it is bound to changed since it
    /// was created (configuration drift), or the PCR selection differs from the sealing one.
    #[error("TPM refused the sealed key's policy during {op} (response code {rc:#x}): the PCRs no longer hold the values the key was sealed to")]
    PolicyRefused { op: &'static str, rc: u32 },
    /// The TPM (or the TSS stack below tss-esapi) answered a command with an error.
    #[error("TPM command {op} failed with response code {rc:#x}: {source}")]
    Command {
        op: &'static str,
        rc: u32,
        source: tss_esapi::Error,
    },
    /// tss-esapi rejected an argument or a TPM answer before/after the command.
    #[error("TPM library refused {op}: {source}")]
    Library {
        op: &'static str,
        source: tss_esapi::Error,
    },
    /// No EK certificate at any of the EK Credential Profile's NV indices.
    #[error("no EK certificate in NV (looked at {searched}): supply the EK certificate as a file (tpm.ek_certificate_file), or run without one (tpm.ek_without_certificate) and allow-list the EK's public-key hash where it is verified")]
    EkCertificateMissing { searched: String },
    /// No EK template this code knows yields the key of the supplied EK certificate.
    #[error(
        "the EK certificate's key is not the key of any EK template this TPM makes (tried {tried})"
    )]
    EkCertificateMismatch { tried: String },
    /// A vendor EK template in NV that does not decode.
    #[error("the EK template at NV index {nv_index:#010x} does not decode: {reason}")]
    MalformedEkTemplate { nv_index: u32, reason: String },
    /// A supplied EK certificate that does not decode.
    #[error("the supplied EK certificate: {0}")]
    EkCertificateUnreadable(#[source] attestor_verify::evidence::certchain::CertChainError),
    /// The TPM lacks what a requested algorithm needs (curve, scheme, hash).
    #[error("the TPM does not support {0}")]
    AlgorithmUnsupported(SigningAlgorithm),
    /// A key blob does not decode, is of no supported algorithm, or lacks what the key
    /// needs (policy branches).
    #[error("malformed key blob: {0}")]
    MalformedKeyBlob(String),
    /// A PCR index beyond what a PC-Client TPM implements.
    #[error("PCR index {0} is out of range (0..{PCR_COUNT})")]
    PcrOutOfRange(u8),
    /// An operation over PCRs was given none.
    #[error("no PCRs selected")]
    EmptyPcrSelection,
    /// A digest's length does not match its algorithm.
    #[error("{alg:?} digest has {actual} bytes, expected {expected}")]
    DigestLength {
        alg: HashAlg,
        expected: usize,
        actual: usize,
    },
    /// Qualifying data longer than a TPM2B_DATA can carry.
    #[error("qualifying data has {0} bytes, at most {MAX_QUALIFYING_DATA} fit")]
    QualifyingDataTooLong(usize),
    /// The TPM returned no value for a requested PCR: usually the bank is not active.
    #[error("the TPM returned no value for PCR {pcr} of the {} bank (is the bank active?)", alg.name())]
    PcrUnavailable { alg: HashAlg, pcr: u8 },
    /// A credential blob or encrypted secret that cannot even be handed to the TPM.
    #[error("malformed {what}: {reason}")]
    MalformedCredential { what: &'static str, reason: String },
    /// The TPM refused to activate the credential: it was made for another EK or another
    /// AK Name, or was altered (usually TPM_RC_INTEGRITY).
    #[error("TPM refused to activate the credential (response code {rc:#x}): it was not made for this TPM's EK and this AK, or was altered")]
    CredentialRefused { rc: u32 },
    /// The EK's authPolicy is none of the TCG EK profile policies this code satisfies, or
    /// its nameAlg is not SHA-256, SHA-384 or SHA-512.
    #[error("the EK's authPolicy is not a TCG EK Credential Profile policy this code can satisfy")]
    UnsupportedEkPolicy,
    /// The EK is uncertified (`EkSource::Uncertified`): there is no certificate to give.
    #[error("this EK has no certificate (it is used without one)")]
    EkUncertified,
    /// A persistent handle attestor would use holds an object that is not its key.
    #[error("persistent handle {handle:#010x} holds an object (Name {found}) that is not this agent's {what}; it is left alone. If it is a stale attestor key, evict it (tpm2_evictcontrol -C o -c {handle:#010x}); otherwise choose another handle ([tpm] srk_handle / ak_handle) or set [tpm] persistent_keys = false")]
    PersistentHandleTaken {
        handle: u32,
        what: &'static str,
        found: String,
    },
    /// A resident key was replaced or evicted after the agent adopted it.
    #[error("the {what} at persistent handle {handle:#010x} changed since the agent adopted it (now Name {found:?}); refusing to use it. Restart the agent to adopt or persist its key again")]
    PersistentKeyChanged {
        handle: u32,
        what: &'static str,
        found: String,
    },
    /// Persistent handles outside the owner's range, or one handle for both keys.
    #[error("unusable persistent handles: {0}")]
    PersistentHandleRange(String),
    /// The TPM answered with something other than what the command promises.
    #[error("unexpected TPM output from {op}: {what}")]
    UnexpectedResponse {
        op: &'static str,
        what: &'static str,
    },
}

/// A TPM-wrapped key that can be loaded again later, in another process or after a reset.
///
/// `public` is the marshalled TPMT_PUBLIC (no size prefix), exactly the bytes the key's Name
/// is computed over; it also says the key's algorithm. `private` is the body of the
/// TPM2B_PRIVATE (no size prefix), encrypted by the parent and useless outside this TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBlob {
    /// Marshalled TPMT_PUBLIC.
    #[serde(with = "attestor_verify::encoding::b64")]
    pub public: Vec<u8>,
    /// Body of the TPM2B_PRIVATE.
    #[serde(with = "attestor_verify::encoding::b64")]
    pub private: Vec<u8>,
    /// PolicyOR branches of the sealed key, in order [PolicyPCR, PolicyCommandCode(Certify)];
    /// empty for the AK.
    #[serde(with = "attestor_verify::encoding::b64_list")]
    pub policy_branches: Vec<Vec<u8>>,
}

impl KeyBlob {
    /// The signing algorithm of the blob's key.
    pub fn algorithm(&self) -> Result<SigningAlgorithm, TpmError> {
        let public = parse_tpm_public(&self.public)
            .map_err(|e| TpmError::MalformedKeyBlob(format!("public part: {e}")))?;
        SigningAlgorithm::of(&public).map_err(|e| TpmError::MalformedKeyBlob(e.to_string()))
    }
}

/// What the TPM implements, as far as the choice of keys and PCR bank depends on it
/// (TPM2_GetCapability of algorithms, ECC curves and allocated PCRs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// TPM_ALG_IDs the TPM implements.
    pub algorithms: BTreeSet<u16>,
    /// TPM_ECC_CURVE identifiers the TPM implements.
    pub curves: BTreeSet<u16>,
    /// The banks with PCRs allocated, of those attestor supports, ascending.
    pub banks: Vec<HashAlg>,
}

impl Capabilities {
    /// Whether the TPM can make and use keys of `alg`: key type (and curve), scheme and
    /// hash all implemented.
    pub fn supports(&self, alg: SigningAlgorithm) -> bool {
        let key = match alg.curve() {
            Some(curve) => {
                self.algorithms
                    .contains(&attestor_verify::evidence::tpm::wire::TPM_ALG_ECC)
                    && self.curves.contains(&curve)
            }
            None => self
                .algorithms
                .contains(&attestor_verify::evidence::tpm::keys::TPM_ALG_RSA),
        };
        key && self.algorithms.contains(&alg.scheme())
            && self.algorithms.contains(&alg.hash().tpm_alg_id())
    }

    /// The first of `preference` the TPM supports.
    pub fn first_supported(&self, preference: &[SigningAlgorithm]) -> Option<SigningAlgorithm> {
        preference.iter().copied().find(|a| self.supports(*a))
    }
}

/// Where the EK and its certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkSource {
    /// The first EK, in [`EkTemplate::PREFERENCE`] order, whose certificate is in NV.
    Nv,
    /// The EK that this certificate (DER, supplied by the operator) certifies.
    Certificate(Vec<u8>),
    /// This template's EK, used without a certificate: a verifier can trust it only by
    /// its public-key hash.
    Uncertified(EkTemplate),
}

/// The EK in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ek {
    /// Its template.
    pub template: EkTemplate,
    /// Its marshalled TPMT_PUBLIC, as the TPM created it.
    pub public: Vec<u8>,
    /// Its certificate (DER), from NV or the operator; `None` when used without one.
    pub certificate: Option<Vec<u8>>,
}

/// The selected EK and what re-creating and authorizing it takes.
#[derive(Debug, Clone)]
struct SelectedEk {
    ek: Ek,
    template: Public,
    name_alg: HashAlg,
    policy: EkPolicy,
}

/// One open connection to a TPM. Calls block; give it one owner (a dedicated thread).
pub struct Tpm {
    ctx: Context,
    ek: Option<SelectedEk>,
    resident: Option<persistent::Resident>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

impl Tpm {
    /// Connects through a tss-esapi TCTI ("swtpm:host=127.0.0.1,port=P",
    /// "device:/dev/tpmrm0") and flushes transient objects and sessions that killed
    /// processes left behind. Without a resource manager that sweep also removes handles of
    /// any other live user of the same TPM: one user per swtpm.
    pub fn open(tcti: &str) -> Result<Tpm, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| TpmError::TctiConfig {
            tcti: tcti.to_owned(),
            reason: e.to_string(),
        })?;
        let ctx = Context::new(conf).map_err(|e| classify("Esys_Initialize", e))?;
        let mut tpm = Tpm {
            ctx,
            ek: None,
            resident: None,
        };
        tpm.flush_stale_handles()?;
        Ok(tpm)
    }

    /// The algorithms, ECC curves and PCR banks the TPM implements.
    pub fn capabilities(&mut self) -> Result<Capabilities, TpmError> {
        let op = "GetCapability(ALGS)";
        let (data, _more) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Algorithms, 0, 127))
            .map_err(|e| classify(op, e))?;
        let CapabilityData::Algorithms(list) = data else {
            return Err(TpmError::UnexpectedResponse {
                op,
                what: "capability data is not an algorithm list",
            });
        };
        let algorithms = list
            .iter()
            .map(|a| u16::from(a.algorithm_identifier()))
            .collect();
        let op = "GetCapability(ECC_CURVES)";
        let (data, _more) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::EccCurves, 0, 64))
            .map_err(|e| classify(op, e))?;
        let curves = match data {
            CapabilityData::EccCurves(list) => list
                .as_ref()
                .iter()
                .map(|c| tss_esapi::tss2_esys::TPM2_ECC_CURVE::from(*c))
                .collect(),
            _ => {
                return Err(TpmError::UnexpectedResponse {
                    op,
                    what: "capability data is not a curve list",
                })
            }
        };
        Ok(Capabilities {
            algorithms,
            curves,
            banks: self.active_banks()?,
        })
    }

    /// The PCR banks with PCRs assigned, restricted to the ones attestor supports.
    pub fn active_banks(&mut self) -> Result<Vec<HashAlg>, TpmError> {
        let (data, _more) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::AssignedPcr, 0, 16))
            .map_err(|e| classify("GetCapability(PCRS)", e))?;
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(TpmError::UnexpectedResponse {
                op: "GetCapability(PCRS)",
                what: "capability data is not a PCR selection",
            });
        };
        let mut banks: Vec<HashAlg> = list
            .get_selections()
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| from_hashing(s.hashing_algorithm()))
            .collect();
        banks.sort();
        banks.dedup();
        Ok(banks)
    }
    /// Extends `pcr` once with one digest per bank (TPM2_PCR_Extend). A bank the TPM has not
    /// activated accepts the extend silently: extend every bank of [`Tpm::active_banks`].
    pub fn extend(&mut self, pcr: u8, digests: &[(HashAlg, Vec<u8>)]) -> Result<(), TpmError> {
        check_pcr(pcr)?;
        let mut values = DigestValues::new();
        for (alg, digest) in digests {
            check_digest(*alg, digest)?;
            values.set(hashing(*alg), to_digest("PCR_Extend", digest)?);
        }
        let handle = PcrHandle::try_from(u32::from(pcr)).map_err(|e| classify("PCR_Extend", e))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(|e| classify("PCR_Extend", e))
    }

    /// Reads `pcrs` of `bank`, in ascending PCR order without duplicates. The TPM returns at
    /// most 8 values per TPM2_PCR_Read, so this reads until every PCR has been answered.
    pub fn read_pcrs(
        &mut self,
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<Vec<(u8, Vec<u8>)>, TpmError> {
        let wanted = pcr_set(pcrs)?;
        let mut out: Vec<(u8, Vec<u8>)> = Vec::with_capacity(wanted.len());
        let mut remaining = wanted.clone();
        while let Some(&first) = remaining.iter().next() {
            let request: Vec<u8> = remaining.iter().copied().collect();
            let selection = selection(bank, &request)?;
            let (_counter, returned, values) = self
                .ctx
                .execute_without_session(|c| c.pcr_read(selection))
                .map_err(|e| classify("PCR_Read", e))?;
            let mut read: Vec<u8> = Vec::new();
            for sel in returned.get_selections() {
                if from_hashing(sel.hashing_algorithm()) != Some(bank) {
                    return Err(TpmError::UnexpectedResponse {
                        op: "PCR_Read",
                        what: "values for a bank that was not requested",
                    });
                }
                read.extend(sel.selected().into_iter().map(slot_index));
            }
            read.sort_unstable();
            let digests = values.value();
            if read.is_empty() {
                return Err(TpmError::PcrUnavailable {
                    alg: bank,
                    pcr: first,
                });
            }
            if digests.len() != read.len() {
                return Err(TpmError::UnexpectedResponse {
                    op: "PCR_Read",
                    what: "number of values differs from the returned selection",
                });
            }
            for (pcr, digest) in read.into_iter().zip(digests) {
                if !remaining.remove(&pcr) {
                    return Err(TpmError::UnexpectedResponse {
                        op: "PCR_Read",
                        what: "a PCR that was not requested",
                    });
                }
                if digest.value().len() != bank.digest_len() {
                    return Err(TpmError::UnexpectedResponse {
                        op: "PCR_Read",
                        what: "a PCR value of the wrong length",
                    });
                }
                out.push((pcr, digest.value().to_vec()));
            }
        }
        out.sort_by_key(|(pcr, _)| *pcr);
        Ok(out)
    }

    /// Chooses the EK every later call uses and returns it. Without a call, the first
    /// call that needs the EK selects [`EkSource::Nv`].
    pub fn select_ek(&mut self, source: &EkSource) -> Result<Ek, TpmError> {
        let present = self.ek_nv_indices()?;
        let selected = match source {
            EkSource::Nv => {
                let Some(template) = EkTemplate::PREFERENCE
                    .into_iter()
                    .find(|t| present.contains(&t.certificate_index()))
                else {
                    let searched: Vec<String> = EkTemplate::PREFERENCE
                        .iter()
                        .map(|t| format!("{:#010x} ({t})", t.certificate_index()))
                        .collect();
                    return Err(TpmError::EkCertificateMissing {
                        searched: searched.join(", "),
                    });
                };
                let certificate = self.nv_read(template.certificate_index())?;
                let selected = self.prepare_ek(template, &present, Some(certificate.clone()))?;
                // The vendor's nonce or template (if any) made this EK: it must be the key
                // the certificate names, or verifiers would refuse every bundle.
                if !certifies(&selected.ek.public, &certificate) {
                    return Err(TpmError::EkCertificateMismatch {
                        tried: template.name().into(),
                    });
                }
                selected
            }
            EkSource::Certificate(der) => self.ek_for_certificate(der, &present)?,
            EkSource::Uncertified(template) => self.prepare_ek(*template, &present, None)?,
        };
        let ek = selected.ek.clone();
        self.ek = Some(selected);
        Ok(ek)
    }

    /// The EK in use (selected from NV on first use).
    pub fn ek(&mut self) -> Result<Ek, TpmError> {
        Ok(self.selected_ek()?.ek)
    }

    /// DER of the EK certificate in use.
    pub fn ek_certificate(&mut self) -> Result<Vec<u8>, TpmError> {
        self.ek()?.certificate.ok_or(TpmError::EkUncertified)
    }

    /// Marshalled TPMT_PUBLIC of the EK in use, e.g. for MakeCredential by a verifier.
    pub fn ek_public(&mut self) -> Result<Vec<u8>, TpmError> {
        Ok(self.ek()?.public)
    }

    /// Creates an attestation key of `alg`: a restricted signing key whose nameAlg is the
    /// algorithm's hash, in the endorsement hierarchy under the EK.
    pub fn create_ak(&mut self, alg: SigningAlgorithm) -> Result<KeyBlob, TpmError> {
        let template = template_public("Create(AK)", &templates::ak(alg))?;
        let ek = self.create_ek()?;
        let created = self.with_flushed(ek.into(), |t| {
            t.with_ek_policy_session(|t, session| {
                t.ctx
                    .execute_with_session(Some(session.into()), |c| {
                        c.create(ek, template, None, None, None, None)
                    })
                    .map_err(|e| classify("Create(AK)", e))
            })
        })?;
        Ok(KeyBlob {
            public: marshall_public("Create(AK)", &created.out_public)?,
            private: created.out_private.value().to_vec(),
            policy_branches: Vec::new(),
        })
    }

    /// Creates the sealed signing key of `alg`: non-restricted, userWithAuth off,
    /// adminWithPolicy, noDA, fixedTPM, fixedParent, nameAlg the algorithm's hash, under a
    /// storage key of the same type. Its authPolicy is PolicyOR(PolicyPCR(current values of
    /// `pcrs` in `bank`), PolicyCommandCode(Certify)): it signs only while those PCRs keep
    /// their present values, and the AK can certify it at any time.
    pub fn create_sealed_key(
        &mut self,
        alg: SigningAlgorithm,
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<KeyBlob, TpmError> {
        let hash = alg.hash();
        let selection_list = selection(bank, &pcr_set(pcrs)?.into_iter().collect::<Vec<_>>())?;
        // Trial sessions let the TPM compute the branches over its own current PCR values,
        // so no read-then-seal race and no software policy code to keep in sync.
        let pcr_branch = self.trial_digest(hash, "PolicyPCR(trial)", |c, s| {
            c.policy_pcr(s, Digest::default(), selection_list)
        })?;
        let certify_branch = self.trial_digest(hash, "PolicyCommandCode(trial)", |c, s| {
            c.policy_command_code(s, CommandCode::Certify)
        })?;
        let branches = vec![pcr_branch.value().to_vec(), certify_branch.value().to_vec()];
        let or_list = digest_list("PolicyOR(trial)", &branches)?;
        let auth_policy =
            self.trial_digest(hash, "PolicyOR(trial)", |c, s| c.policy_or(s, or_list))?;
        let template = template_public(
            "Create(sealed key)",
            &templates::sealed_key(alg, auth_policy.value()),
        )?;
        let created = self.with_srk(alg, |t, srk| {
            t.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.create(srk, template, None, None, None, None)
                })
                .map_err(|e| classify("Create(sealed key)", e))
        })?;
        Ok(KeyBlob {
            public: marshall_public("Create(sealed key)", &created.out_public)?,
            private: created.out_private.value().to_vec(),
            policy_branches: branches,
        })
    }

    /// TPM2_Certify of the sealed key by the AK (through the key's Certify policy branch).
    /// Returns (marshalled TPMS_ATTEST, marshalled TPMT_SIGNATURE).
    pub fn certify_sealed(
        &mut self,
        ak: &KeyBlob,
        sealed: &KeyBlob,
        qualifying_data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let data = qualifying(qualifying_data)?;
        let hash = sealed.algorithm()?.hash();
        let branches = sealed_branches(sealed, hash)?;
        self.with_ak(ak, |t, ak_handle| {
            t.with_sealed(sealed, |t, key_handle| {
                t.with_policy_session(hash, |t, session| {
                    t.ctx
                        .policy_command_code(session, CommandCode::Certify)
                        .map_err(|e| classify("PolicyCommandCode", e))?;
                    t.ctx
                        .policy_or(session, branches)
                        .map_err(|e| policy_error("PolicyOR", e))?;
                    let (attest, signature) = t
                        .ctx
                        .execute_with_sessions(
                            (Some(session.into()), Some(AuthSession::Password), None),
                            |c| {
                                c.certify(key_handle.into(), ak_handle, data, SignatureScheme::Null)
                            },
                        )
                        .map_err(|e| policy_error("Certify", e))?;
                    marshall_attestation("Certify", &attest, &signature)
                })
            })
        })
    }

    /// Signs a digest of the sealed key's hash (SHA-384 for P-384, SHA-256 otherwise)
    /// through its PCR policy branch; returns the marshalled TPMT_SIGNATURE. When the PCRs
    /// drifted from the sealed values this is [`TpmError::PolicyRefused`].
    pub fn sign_sealed(
        &mut self,
        sealed: &KeyBlob,
        bank: HashAlg,
        pcrs: &[u8],
        digest: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let hash = sealed.algorithm()?.hash();
        if digest.len() != hash.digest_len() {
            return Err(TpmError::DigestLength {
                alg: hash,
                expected: hash.digest_len(),
                actual: digest.len(),
            });
        }
        let selection_list = selection(bank, &pcr_set(pcrs)?.into_iter().collect::<Vec<_>>())?;
        let branches = sealed_branches(sealed, hash)?;
        let digest = to_digest("Sign", digest)?;
        let ticket = null_ticket()?;
        let signature = self.with_sealed(sealed, |t, key_handle| {
            t.with_policy_session(hash, |t, session| {
                t.ctx
                    .policy_pcr(session, Digest::default(), selection_list)
                    .map_err(|e| policy_error("PolicyPCR", e))?;
                t.ctx
                    .policy_or(session, branches)
                    .map_err(|e| policy_error("PolicyOR", e))?;
                t.ctx
                    .execute_with_session(Some(session.into()), |c| {
                        c.sign(key_handle, digest, SignatureScheme::Null, ticket)
                    })
                    .map_err(|e| policy_error("Sign", e))
            })
        })?;
        signature.marshall().map_err(|e| classify("Sign", e))
    }

    /// TPM2_Quote of `pcrs` in `bank` by the AK, with the AK's scheme. Returns (marshalled
    /// TPMS_ATTEST, marshalled TPMT_SIGNATURE). A verifier must trust only the PCR
    /// selection inside the attestation (an inactive bank yields an empty one).
    pub fn quote(
        &mut self,
        ak: &KeyBlob,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let data = qualifying(qualifying_data)?;
        let selection_list = selection(bank, &pcr_set(pcrs)?.into_iter().collect::<Vec<_>>())?;
        self.with_ak(ak, |t, ak_handle| {
            let (attest, signature) = t
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(ak_handle, data, SignatureScheme::Null, selection_list)
                })
                .map_err(|e| classify("Quote", e))?;
            marshall_attestation("Quote", &attest, &signature)
        })
    }

    /// TPM2_ActivateCredential: recovers the secret a verifier protected for this TPM's
    /// EK (RSA: OAEP, ECC: ECDH) and the AK's Name (`credential_blob` = TPM2B_ID_OBJECT
    /// contents, `encrypted_secret` = TPM2B_ENCRYPTED_SECRET contents, both without size
    /// prefix). The AK is authorized by password (admin role), the EK through its TCG
    /// policy. A credential for another EK or AK, or an altered one, is
    /// [`TpmError::CredentialRefused`] and yields nothing.
    pub fn activate_credential(
        &mut self,
        ak: &KeyBlob,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let blob =
            credential_part::<IdObject>("credential blob (TPM2B_ID_OBJECT)", credential_blob)?;
        let secret = credential_part::<EncryptedSecret>(
            "encrypted secret (TPM2B_ENCRYPTED_SECRET)",
            encrypted_secret,
        )?;
        let public = parse_public(ak)?;
        let private = parse_private(ak)?;
        // Both keys stay loaded for the command: two of swtpm's three object slots.
        let ek = self.create_ek()?;
        self.with_flushed(ek.into(), |t| {
            let ak_handle = t.load_under_ek(ek, private, public)?;
            t.with_flushed(ak_handle.into(), |t| {
                t.with_ek_policy_session(|t, session| {
                    let credential = t
                        .ctx
                        .execute_with_sessions(
                            (Some(AuthSession::Password), Some(session.into()), None),
                            |c| c.activate_credential(ak_handle, ek, blob, secret),
                        )
                        .map_err(|e| credential_error("ActivateCredential", e))?;
                    Ok(credential.value().to_vec())
                })
            })
        })
    }

    /// Marshalled TPMT_PUBLIC (no size prefix) of a blob's key, in canonical form: what a
    /// verifier parses and hashes into the key's Name.
    pub fn public_of(blob: &KeyBlob) -> Result<Vec<u8>, TpmError> {
        let public = parse_public(blob)?;
        marshall_public("marshal public", &public)
    }

    // ---- the EK -----------------------------------------------------------------------

    fn selected_ek(&mut self) -> Result<SelectedEk, TpmError> {
        if self.ek.is_none() {
            self.select_ek(&EkSource::Nv)?;
        }
        self.ek.clone().ok_or(TpmError::UnexpectedResponse {
            op: "select EK",
            what: "no EK selected",
        })
    }

    /// The EK Credential Profile NV indices that exist.
    fn ek_nv_indices(&mut self) -> Result<BTreeSet<u32>, TpmError> {
        let (data, _more) = self
            .ctx
            .execute_without_session(|c| {
                c.get_capability(
                    CapabilityType::Handles,
                    EK_NV_FIRST,
                    EK_NV_LAST - EK_NV_FIRST + 1,
                )
            })
            .map_err(|e| classify("GetCapability(HANDLES)", e))?;
        Ok(match data {
            CapabilityData::Handles(list) => list
                .iter()
                .map(|h| u32::from(*h))
                .filter(|h| (EK_NV_FIRST..=EK_NV_LAST).contains(h))
                .collect(),
            _ => BTreeSet::new(),
        })
    }

    /// The whole contents of an NV index readable with its own (empty) auth.
    fn nv_read(&mut self, index: u32) -> Result<Vec<u8>, TpmError> {
        let op = "NV_Read";
        let nv_index = NvIndexTpmHandle::new(index).map_err(|e| classify(op, e))?;
        let mut handle = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv_index)))
            .map_err(|e| classify(op, e))?;
        let read = self.ctx.execute_with_nullauth_session(|c| {
            nv::read_full(c, NvAuth::NvIndex(handle.into()), nv_index)
        });
        // Reading may have closed the ESYS handle already; only its bookkeeping is at stake.
        let _ = self.ctx.tr_close(&mut handle);
        read.map_err(|e| classify(op, e))
    }

    /// The template of `template`'s EK on this TPM: the vendor's from NV if present, else
    /// the default with the vendor's nonce (if any).
    fn ek_template(
        &mut self,
        template: EkTemplate,
        present: &BTreeSet<u32>,
    ) -> Result<Vec<u8>, TpmError> {
        if present.contains(&template.template_index()) {
            return self.nv_read(template.template_index());
        }
        let nonce = match template.nonce_index() {
            Some(index) if present.contains(&index) => Some(self.nv_read(index)?),
            _ => None,
        };
        Ok(template.default_public(nonce.as_deref()))
    }

    /// Re-creates `template`'s EK to learn its public area and how to authorize it.
    fn prepare_ek(
        &mut self,
        template: EkTemplate,
        present: &BTreeSet<u32>,
        certificate: Option<Vec<u8>>,
    ) -> Result<SelectedEk, TpmError> {
        let bytes = self.ek_template(template, present)?;
        let malformed = |reason: String| TpmError::MalformedEkTemplate {
            nv_index: template.template_index(),
            reason,
        };
        let public = Public::unmarshall(&bytes).map_err(|e| malformed(e.to_string()))?;
        let parsed = parse_tpm_public(&bytes).map_err(|_| TpmError::UnsupportedEkPolicy)?;
        let name_alg = parsed.name_alg();
        let policy =
            EkPolicy::of(name_alg, parsed.auth_policy()).ok_or(TpmError::UnsupportedEkPolicy)?;
        let handle = self.create_primary_ek(public.clone())?;
        let created = self.with_flushed(handle.into(), |t| {
            let (public, _, _) = t
                .ctx
                .read_public(handle)
                .map_err(|e| classify("ReadPublic(EK)", e))?;
            marshall_public("ReadPublic(EK)", &public)
        })?;
        Ok(SelectedEk {
            ek: Ek {
                template,
                public: created,
                certificate,
            },
            template: public,
            name_alg,
            policy,
        })
    }

    /// The EK whose key `certificate` certifies, among the templates of its key type.
    fn ek_for_certificate(
        &mut self,
        certificate: &[u8],
        present: &BTreeSet<u32>,
    ) -> Result<SelectedEk, TpmError> {
        let candidates = match certchain::public_key_of(certificate) {
            Ok(PublicKey::Ec {
                curve: certchain::EcCurve::P384,
                ..
            }) => vec![EkTemplate::EccP384],
            Ok(PublicKey::Ec {
                curve: certchain::EcCurve::P521,
                ..
            }) => vec![EkTemplate::EccP521],
            Ok(PublicKey::Ec { .. }) => vec![EkTemplate::EccP256, EkTemplate::EccP256High],
            Ok(PublicKey::Rsa { rsa_public_key }) => match rsa_modulus_len(&rsa_public_key) {
                Some(384) => vec![EkTemplate::Rsa3072],
                Some(512) => vec![EkTemplate::Rsa4096],
                _ => vec![EkTemplate::Rsa2048, EkTemplate::Rsa2048High],
            },
            Err(e) => return Err(TpmError::EkCertificateUnreadable(e)),
        };
        for template in &candidates {
            let selected = self.prepare_ek(*template, present, Some(certificate.to_vec()))?;
            if certifies(&selected.ek.public, certificate) {
                return Ok(selected);
            }
        }
        let tried: Vec<&str> = candidates.iter().map(|t| t.name()).collect();
        Err(TpmError::EkCertificateMismatch {
            tried: tried.join(", "),
        })
    }

    fn create_primary_ek(&mut self, template: Public) -> Result<KeyHandle, TpmError> {
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(|e| classify("CreatePrimary(EK)", e))
    }

    fn create_ek(&mut self) -> Result<KeyHandle, TpmError> {
        let template = self.selected_ek()?.template;
        self.create_primary_ek(template)
    }

    /// A policy session of the EK's nameAlg brought to the EK's authPolicy
    /// (PolicySecret(endorsement), then for the high-range PolicyB a PolicyOR(PolicyA,
    /// PolicyC)), flushed after `f`. The endorsement hierarchy's auth is assumed empty, as
    /// on swtpm and most platforms.
    fn with_ek_policy_session<T>(
        &mut self,
        f: impl FnOnce(&mut Self, PolicySession) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let selected = self.selected_ek()?;
        let alg = selected.name_alg;
        self.with_policy_session(alg, |t, session| {
            t.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.policy_secret(
                        session,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(|e| classify("PolicySecret(endorsement)", e))?;
            if selected.policy == EkPolicy::B {
                let branches = digest_list(
                    "PolicyOR(EK)",
                    &[policy::ek_policy_a(alg), policy::ek_policy_c(alg)],
                )?;
                t.ctx
                    .policy_or(session, branches)
                    .map_err(|e| classify("PolicyOR(EK)", e))?;
            }
            f(t, session)
        })
    }

    /// Loads a key whose parent is the EK, authorizing the EK through its policy.
    fn load_under_ek(
        &mut self,
        ek: KeyHandle,
        private: Private,
        public: Public,
    ) -> Result<KeyHandle, TpmError> {
        self.with_ek_policy_session(|t, session| {
            t.ctx
                .execute_with_session(Some(session.into()), |c| c.load(ek, private, public))
                .map_err(|e| classify("Load(AK)", e))
        })
    }

    // ---- plumbing -------------------------------------------------------------------

    /// Runs `f`, then flushes `handle` whatever `f` returned; `f`'s error wins.
    fn with_flushed<T>(
        &mut self,
        handle: ObjectHandle,
        f: impl FnOnce(&mut Self) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let out = f(self);
        let flushed = self
            .ctx
            .flush_context(handle)
            .map_err(|e| classify("FlushContext", e));
        match (out, flushed) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        }
    }

    fn start_session(&mut self, kind: SessionType, hash: HashAlg) -> Result<AuthSession, TpmError> {
        self.ctx
            .start_auth_session(
                None,
                None,
                None,
                kind,
                SymmetricDefinition::Null,
                hashing(hash),
            )
            .map_err(|e| classify("StartAuthSession", e))?
            .ok_or(TpmError::UnexpectedResponse {
                op: "StartAuthSession",
                what: "no session handle",
            })
    }

    /// A policy session of `hash` (the nameAlg of the object it authorizes), flushed
    /// afterwards.
    fn with_policy_session<T>(
        &mut self,
        hash: HashAlg,
        f: impl FnOnce(&mut Self, PolicySession) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let session = self.start_session(SessionType::Policy, hash)?;
        self.with_flushed(SessionHandle::from(session).into(), |t| {
            let policy =
                PolicySession::try_from(session).map_err(|e| classify("StartAuthSession", e))?;
            f(t, policy)
        })
    }

    /// Digest a trial policy session of `hash` reaches after `f`.
    fn trial_digest(
        &mut self,
        hash: HashAlg,
        op: &'static str,
        f: impl FnOnce(&mut Context, PolicySession) -> tss_esapi::Result<()>,
    ) -> Result<Digest, TpmError> {
        let session = self.start_session(SessionType::Trial, hash)?;
        self.with_flushed(SessionHandle::from(session).into(), |t| {
            let policy = PolicySession::try_from(session).map_err(|e| classify(op, e))?;
            f(&mut t.ctx, policy).map_err(|e| classify(op, e))?;
            t.ctx
                .policy_get_digest(policy)
                .map_err(|e| classify("PolicyGetDigest", e))
        })
    }

    fn create_srk(&mut self, alg: SigningAlgorithm) -> Result<KeyHandle, TpmError> {
        let template = template_public("CreatePrimary(SRK)", &templates::srk(alg))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(|e| classify("CreatePrimary(SRK)", e))
    }

    /// Runs `f` with the resident AK; otherwise loads the AK under a re-created EK, flushes
    /// the EK, runs `f`, flushes the AK.
    fn with_ak<T>(
        &mut self,
        blob: &KeyBlob,
        f: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        if self.is_resident_ak(blob) {
            return self.with_resident_ak(f);
        }
        let public = parse_public(blob)?;
        let private = parse_private(blob)?;
        let ek = self.create_ek()?;
        let handle = self.with_flushed(ek.into(), |t| t.load_under_ek(ek, private, public))?;
        self.with_flushed(handle.into(), |t| f(t, handle))
    }

    /// Loads the sealed key under the storage key (resident, or re-created and flushed),
    /// runs `f`, flushes the sealed key.
    fn with_sealed<T>(
        &mut self,
        blob: &KeyBlob,
        f: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let alg = blob.algorithm()?;
        let public = parse_public(blob)?;
        let private = parse_private(blob)?;
        let handle = self.with_srk(alg, |t, srk| {
            t.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.load(srk, private, public)
                })
                .map_err(|e| classify("Load(sealed key)", e))
        })?;
        self.with_flushed(handle.into(), |t| f(t, handle))
    }

    /// Flushes transient objects and sessions a killed process left in a TPM that has no
    /// resource manager (under /dev/tpmrm0 the lists are empty).
    fn flush_stale_handles(&mut self) -> Result<(), TpmError> {
        let mut stale: BTreeSet<u32> = BTreeSet::new();
        for first in [TRANSIENT_FIRST, LOADED_SESSION_FIRST, SAVED_SESSION_FIRST] {
            let (data, _more) = self
                .ctx
                .execute_without_session(|c| {
                    c.get_capability(CapabilityType::Handles, first, HANDLE_PAGE)
                })
                .map_err(|e| classify("GetCapability(HANDLES)", e))?;
            if let CapabilityData::Handles(list) = data {
                stale.extend(list.iter().map(|h| u32::from(*h)));
            }
        }
        for raw in stale {
            let handle = TpmHandle::try_from(raw).map_err(|e| classify("flush stale handle", e))?;
            let object = self
                .ctx
                .execute_without_session(|c| c.tr_from_tpm_public(handle))
                .map_err(|e| classify("TR_FromTPMPublic(stale handle)", e))?;
            match self.ctx.flush_context(object) {
                Ok(()) => {}
                // tss-esapi files policy-session handles as "close, don't flush" and so
                // reports a flush that the TPM performed as a bookkeeping error.
                Err(tss_esapi::Error::WrapperError(
                    tss_esapi::WrapperErrorKind::InvalidHandleState,
                )) if matches!(handle, TpmHandle::PolicySession(_)) => {}
                Err(e) => return Err(classify("FlushContext(stale handle)", e)),
            }
        }
        Ok(())
    }
}

// ---- free helpers ---------------------------------------------------------------------

fn hashing(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

/// The PCR bank of a TPM bank's algorithm; `None` for one attestor does not quote (a
/// sha512 bank included).
fn from_hashing(alg: HashingAlgorithm) -> Option<HashAlg> {
    match alg {
        HashingAlgorithm::Sha256 => Some(HashAlg::Sha256),
        HashingAlgorithm::Sha384 => Some(HashAlg::Sha384),
        _ => None,
    }
}

fn check_pcr(pcr: u8) -> Result<(), TpmError> {
    if pcr < PCR_COUNT {
        Ok(())
    } else {
        Err(TpmError::PcrOutOfRange(pcr))
    }
}

fn check_digest(alg: HashAlg, digest: &[u8]) -> Result<(), TpmError> {
    if digest.len() == alg.digest_len() {
        Ok(())
    } else {
        Err(TpmError::DigestLength {
            alg,
            expected: alg.digest_len(),
            actual: digest.len(),
        })
    }
}

fn pcr_set(pcrs: &[u8]) -> Result<BTreeSet<u8>, TpmError> {
    let set: BTreeSet<u8> = pcrs.iter().copied().collect();
    if set.is_empty() {
        return Err(TpmError::EmptyPcrSelection);
    }
    set.iter().try_for_each(|p| check_pcr(*p))?;
    Ok(set)
}

fn slot_index(slot: PcrSlot) -> u8 {
    // A PcrSlot is a single bit of a 32-bit mask, so its index is below 32.
    u32::from(slot).trailing_zeros() as u8
}

fn selection(bank: HashAlg, pcrs: &[u8]) -> Result<PcrSelectionList, TpmError> {
    let mut slots = Vec::with_capacity(pcrs.len());
    for &pcr in pcrs {
        check_pcr(pcr)?;
        slots.push(PcrSlot::try_from(1u32 << pcr).map_err(|e| classify("PCR selection", e))?);
    }
    // Three octets (24 PCRs) explicitly: sizeofSelect is hashed into PolicyPCR digests,
    // so a verifier recomputing the sealed key's policy must use the same value.
    PcrSelectionListBuilder::new()
        .with_size_of_select(PcrSelectSize::ThreeOctets)
        .with_selection(hashing(bank), &slots)
        .build()
        .map_err(|e| classify("PCR selection", e))
}

fn to_digest(op: &'static str, bytes: &[u8]) -> Result<Digest, TpmError> {
    Digest::try_from(bytes.to_vec()).map_err(|e| classify(op, e))
}

fn digest_list(op: &'static str, digests: &[Vec<u8>]) -> Result<DigestList, TpmError> {
    let mut list = DigestList::new();
    for d in digests {
        list.add(to_digest(op, d)?).map_err(|e| classify(op, e))?;
    }
    Ok(list)
}

fn qualifying(data: &[u8]) -> Result<Data, TpmError> {
    if data.len() > MAX_QUALIFYING_DATA {
        return Err(TpmError::QualifyingDataTooLong(data.len()));
    }
    Data::try_from(data.to_vec()).map_err(|e| classify("qualifying data", e))
}

fn null_ticket() -> Result<HashcheckTicket, TpmError> {
    // A null ticket: the digest was not computed by the TPM, which is fine for a
    // non-restricted key.
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .map_err(|e| classify("Sign", e))
}

fn parse_public(blob: &KeyBlob) -> Result<Public, TpmError> {
    let public = Public::unmarshall(&blob.public)
        .map_err(|e| TpmError::MalformedKeyBlob(format!("public part: {e}")))?;
    // Trailing bytes would make the blob's Name differ from the loaded key's.
    let canonical = public
        .marshall()
        .map_err(|e| TpmError::MalformedKeyBlob(format!("public part: {e}")))?;
    if canonical != blob.public {
        return Err(TpmError::MalformedKeyBlob(
            "public part has trailing or non-canonical bytes".into(),
        ));
    }
    Ok(public)
}

fn parse_private(blob: &KeyBlob) -> Result<Private, TpmError> {
    if blob.private.is_empty() {
        return Err(TpmError::MalformedKeyBlob("private part is empty".into()));
    }
    Private::try_from(blob.private.clone())
        .map_err(|e| TpmError::MalformedKeyBlob(format!("private part: {e}")))
}

fn sealed_branches(blob: &KeyBlob, hash: HashAlg) -> Result<DigestList, TpmError> {
    if blob.policy_branches.len() != 2
        || blob
            .policy_branches
            .iter()
            .any(|b| b.len() != hash.digest_len())
    {
        return Err(TpmError::MalformedKeyBlob(format!(
            "a sealed key needs exactly two {}-byte policy branches",
            hash.digest_len()
        )));
    }
    digest_list("PolicyOR", &blob.policy_branches)
        .map_err(|e| TpmError::MalformedKeyBlob(format!("policy branches: {e}")))
}

/// Whether `certificate` (DER) certifies the key of the EK public area `ek_public`.
fn certifies(ek_public: &[u8], certificate: &[u8]) -> bool {
    parse_tpm_public(ek_public)
        .map_err(attestor_verify::evidence::tpm::keys::KeyError::from)
        .and_then(|ek| ek.matches_certificate(certificate))
        .unwrap_or(false)
}

/// A template marshalled by [`templates`] or [`ek`] as tss-esapi's `Public`.
fn template_public(op: &'static str, bytes: &[u8]) -> Result<Public, TpmError> {
    Public::unmarshall(bytes).map_err(|e| classify(op, e))
}

/// Byte length of the modulus of a DER RSAPublicKey, without leading zero octets.
fn rsa_modulus_len(rsa_public_key: &[u8]) -> Option<usize> {
    use der::asn1::UintRef;
    use der::{Decode, Sequence};
    #[derive(Sequence)]
    struct RsaPublicKey<'a> {
        modulus: UintRef<'a>,
        exponent: UintRef<'a>,
    }
    let key = RsaPublicKey::from_der(rsa_public_key).ok()?;
    let _ = key.exponent;
    Some(key.modulus.as_bytes().len())
}

fn marshall_public(op: &'static str, public: &Public) -> Result<Vec<u8>, TpmError> {
    public.marshall().map_err(|e| classify(op, e))
}

fn marshall_attestation(
    op: &'static str,
    attest: &impl Marshall,
    signature: &impl Marshall,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    Ok((
        attest.marshall().map_err(|e| classify(op, e))?,
        signature.marshall().map_err(|e| classify(op, e))?,
    ))
}

/// The raw TSS2_RC: tss-esapi 7.7 exposes it only through its Display impl
/// ("Response code value: 0x...").
fn raw_rc(code: Tss2ResponseCode) -> u32 {
    let text = match code {
        Tss2ResponseCode::Success => return 0,
        Tss2ResponseCode::FormatZero(c) => c.to_string(),
        Tss2ResponseCode::FormatOne(c) => c.to_string(),
    };
    text.rsplit("0x")
        .next()
        .and_then(|hex| u32::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

fn classify(op: &'static str, e: tss_esapi::Error) -> TpmError {
    match e {
        tss_esapi::Error::WrapperError(_) => TpmError::Library { op, source: e },
        tss_esapi::Error::Tss2Error(code) => {
            let rc = raw_rc(code);
            if rc & RC_LAYER_MASK == RC_LAYER_TCTI {
                TpmError::Tcti { op, rc, source: e }
            } else {
                TpmError::Command { op, rc, source: e }
            }
        }
    }
}

/// Like [`classify`], but a policy mismatch (PolicyOR finding no matching branch, or the
/// TPM refusing the policy at use) becomes [`TpmError::PolicyRefused`].
fn policy_error(op: &'static str, e: tss_esapi::Error) -> TpmError {
    match classify(op, e) {
        TpmError::Command { rc, .. } if is_policy_refusal(rc) => TpmError::PolicyRefused { op, rc },
        other => other,
    }
}

/// One ActivateCredential input as its tss-esapi buffer type; empty or oversized input is
/// refused here rather than by the TPM.
fn credential_part<T: TryFrom<Vec<u8>, Error = tss_esapi::Error>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, TpmError> {
    if bytes.is_empty() {
        return Err(TpmError::MalformedCredential {
            what,
            reason: "empty".into(),
        });
    }
    T::try_from(bytes.to_vec()).map_err(|e| TpmError::MalformedCredential {
        what,
        reason: e.to_string(),
    })
}

/// Like [`classify`], but a TPM error about a command parameter (the blob or the secret)
/// becomes [`TpmError::CredentialRefused`]: the credential does not fit this EK and AK.
fn credential_error(op: &'static str, e: tss_esapi::Error) -> TpmError {
    match classify(op, e) {
        TpmError::Command { rc, .. } if is_parameter_error(rc) => {
            TpmError::CredentialRefused { rc }
        }
        other => other,
    }
}

fn is_parameter_error(rc: u32) -> bool {
    rc & RC_LAYER_MASK == 0 && rc & 0x80 != 0 && rc & RC_FMT1_PARAMETER != 0
}

fn is_policy_refusal(rc: u32) -> bool {
    // Only TPM-layer format-one codes; other layers reuse the low bits.
    rc & RC_LAYER_MASK == 0
        && rc & 0x80 != 0
        && matches!(rc & RC_FMT1_MASK, TPM_RC_VALUE | TPM_RC_POLICY_FAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_can_move_to_a_dedicated_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Tpm>();
    }

    #[test]
    fn policy_refusal_codes() {
        // TPM_RC_VALUE on parameter 1 of PolicyOR, TPM_RC_POLICY_FAIL on session 1.
        assert!(is_policy_refusal(0x1c4));
        assert!(is_policy_refusal(0x99d));
        assert!(!is_policy_refusal(0x902)); // object memory: a warning, not a policy miss
        assert!(!is_policy_refusal(0x000a_0084)); // same low bits from another layer
    }

    #[test]
    fn credential_refusals_are_parameter_errors() {
        // TPM_RC_INTEGRITY on parameter 1 (the blob), TPM_RC_ECC_POINT on parameter 2.
        assert!(is_parameter_error(0x1df));
        assert!(is_parameter_error(0x2e7));
        assert!(!is_parameter_error(0x99d)); // policy failure on session 1
        assert!(!is_parameter_error(0x18b)); // TPM_RC_HANDLE on handle 1
        assert!(!is_parameter_error(0x902)); // object memory warning
        assert!(!is_parameter_error(0x000a_01df)); // same bits from another layer
    }

    #[test]
    fn blob_with_garbage_is_malformed() {
        let blob = KeyBlob {
            public: vec![0xff; 7],
            private: vec![1],
            policy_branches: vec![],
        };
        assert!(matches!(
            Tpm::public_of(&blob),
            Err(TpmError::MalformedKeyBlob(_))
        ));
        assert!(matches!(
            sealed_branches(&blob, HashAlg::Sha384),
            Err(TpmError::MalformedKeyBlob(_))
        ));
        assert!(matches!(
            blob.algorithm(),
            Err(TpmError::MalformedKeyBlob(_))
        ));
    }

    #[test]
    fn pcr_selection_is_checked() {
        assert!(matches!(pcr_set(&[]), Err(TpmError::EmptyPcrSelection)));
        assert!(matches!(pcr_set(&[24]), Err(TpmError::PcrOutOfRange(24))));
        assert_eq!(
            pcr_set(&[3, 1, 3]).unwrap().into_iter().collect::<Vec<_>>(),
            vec![1, 3]
        );
    }
}
