//! Messages between agent and ledger (JSON over mTLS). The agent's identity (agent id,
//! tenant) comes from its client certificate, never from a message.

use serde::{Deserialize, Serialize};

use crate::encoding::{b64, b64_list};

/// First enrollment step: the agent shows its TPM's EK and its AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// EK certificate (DER) first, then intermediates.
    #[serde(with = "b64_list")]
    pub ek_certificates: Vec<Vec<u8>>,
    /// EK public area (marshalled TPMT_PUBLIC): the key the credential is encrypted to.
    #[serde(with = "b64")]
    pub ek_public: Vec<u8>,
    /// AK public area (marshalled TPMT_PUBLIC) to be pinned.
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
}

/// The ledger's credential challenge: only the TPM holding both the EK and the AK can
/// recover the secret (TPM2_ActivateCredential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollChallenge {
    /// TPM2B_ID_OBJECT contents.
    #[serde(with = "b64")]
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents.
    #[serde(with = "b64")]
    pub encrypted_secret: Vec<u8>,
}

/// Second enrollment step: the secret the TPM recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollProof {
    #[serde(with = "b64")]
    pub secret: Vec<u8>,
}
