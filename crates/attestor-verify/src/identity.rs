//! A caller's identity: (tenant, role, id), carried as the single URI SAN of its client
//! certificate and never taken from what it sends. An agent's is
//! `spiffe://attestor/tenant/<tenant>/agent/<agent-id>`, and everything the ledger keeps
//! of an agent is keyed by it; an operator's is
//! `spiffe://attestor/tenant/<tenant>/operator/<name>`: it reads its tenant and acts on its
//! incidents, but never attests.

use der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{SubjectAltName, ID_CE_SUBJECT_ALT_NAME};

/// URI SAN prefix shared by every agent identity.
pub const IDENTITY_URI_PREFIX: &str = "spiffe://attestor/tenant/";

/// Longest tenant or agent id accepted.
pub const MAX_ID_LEN: usize = 64;

/// Why an identity (or the certificate carrying it) is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A tenant or agent id is not 1..=64 characters of `[A-Za-z0-9._-]`.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidId {
        /// `tenant` or `agent id`.
        field: &'static str,
        /// The refused value (bounded).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A URI is not of the form `spiffe://attestor/tenant/<tenant>/{agent|operator}/<id>`.
    #[error("invalid agent identity URI {uri:?}: {reason}")]
    InvalidUri {
        /// The refused URI (truncated).
        uri: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The certificate is not a parseable X.509 certificate.
    #[error("peer certificate is not valid X.509: {0}")]
    Certificate(der::Error),
    /// The certificate carries no URI SAN.
    #[error("peer certificate carries no agent identity (no URI subject alternative name)")]
    MissingIdentity,
    /// The certificate carries several URI SANs, so its identity is ambiguous.
    #[error("peer certificate identity is ambiguous: {count} URI subject alternative names")]
    AmbiguousIdentity {
        /// How many URI SANs were found.
        count: usize,
    },
    /// The certificate repeats the SAN extension, which RFC 5280 forbids.
    #[error("peer certificate has more than one subject alternative name extension")]
    DuplicateSanExtension,
}

/// What a certificate's holder is to the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// An attesting agent: enrols, asks nonces, submits, reads its tenant.
    #[default]
    Agent,
    /// A person (or their tooling) of the tenant: reads it and acknowledges or resolves
    /// its incidents; never enrols, asks nonces or submits.
    Operator,
}

impl Role {
    /// The URI path segment naming the role.
    pub fn segment(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }
}

/// A caller's identity as carried in its client certificate: an agent's (the usual case,
/// hence the name) or an operator's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentIdentity {
    /// The tenant the caller acts for.
    pub tenant: String,
    /// The agent's id (or the operator's name), unique within its tenant and role.
    pub agent_id: String,
    /// Agent or operator: ids of the two roles never name the same caller.
    pub role: Role,
}

impl AgentIdentity {
    /// Builds an agent identity, refusing ids that are not 1..=64 characters of
    /// `[A-Za-z0-9._-]`.
    pub fn new(tenant: &str, agent_id: &str) -> Result<Self, IdentityError> {
        Self::with_role(tenant, Role::Agent, agent_id)
    }

    /// Builds an operator identity, with the same rules for its name.
    pub fn operator(tenant: &str, name: &str) -> Result<Self, IdentityError> {
        Self::with_role(tenant, Role::Operator, name)
    }

    fn with_role(tenant: &str, role: Role, id: &str) -> Result<Self, IdentityError> {
        check_id("tenant", tenant)?;
        check_id("agent id", id)?;
        Ok(Self {
            tenant: tenant.to_string(),
            agent_id: id.to_string(),
            role,
        })
    }

    /// Whether this is an operator's identity.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Re-checks both ids, since the fields are public and may have been set directly.
    pub fn validate(&self) -> Result<(), IdentityError> {
        check_id("tenant", &self.tenant)?;
        check_id("agent id", &self.agent_id)
    }

    /// The URI SAN form, `spiffe://attestor/tenant/<tenant>/agent/<agent-id>` (or
    /// `.../operator/<name>`).
    pub fn to_uri(&self) -> String {
        format!(
            "{IDENTITY_URI_PREFIX}{}/{}/{}",
            self.tenant,
            self.role.segment(),
            self.agent_id
        )
    }

    /// Parses the URI SAN form strictly: exact scheme and authority, exactly four path
    /// segments (the third `agent` or `operator`), no query or fragment, valid ids.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let invalid = |reason| IdentityError::InvalidUri {
            uri: truncate(uri),
            reason,
        };
        let rest = uri.strip_prefix(IDENTITY_URI_PREFIX).ok_or_else(|| {
            invalid(
                "expected the prefix spiffe://attestor/tenant/ (scheme and trust domain are exact)",
            )
        })?;
        let mut segments = rest.split('/');
        let (Some(tenant), Some(role), Some(agent_id), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(invalid(
                "expected exactly tenant/<tenant>/agent/<agent-id> (or operator/<name>) as the path",
            ));
        };
        let role = match role {
            "agent" => Role::Agent,
            "operator" => Role::Operator,
            _ => return Err(invalid("the role must be agent or operator")),
        };
        Self::with_role(tenant, role, agent_id).map_err(|e| match e {
            IdentityError::InvalidId { reason, .. } => invalid(reason),
            other => other,
        })
    }
}

impl std::fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_uri())
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), IdentityError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_ID_LEN {
        Some("longer than 64 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed")
    } else if value == "." || value == ".." {
        // The agent id names files under agents/, so path components are refused.
        Some("'.' and '..' are not ids")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(IdentityError::InvalidId {
            field,
            value: truncate(value),
            reason,
        }),
    }
}

/// Bounds hostile strings before they reach error messages and logs.
pub fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Extracts the caller's identity (an agent's or an operator's) from a DER end-entity
/// certificate.
///
/// This does not verify the certificate: call it only on a certificate the TLS handshake
/// has already verified against the CA. Exactly one URI SAN, of the identity form, is
/// accepted; none, several, or a malformed one is an error.
pub fn certificate_identity(end_entity_der: &[u8]) -> Result<AgentIdentity, IdentityError> {
    let cert =
        x509_cert::Certificate::from_der(end_entity_der).map_err(IdentityError::Certificate)?;
    let extensions = cert.tbs_certificate.extensions.unwrap_or_default();
    let mut sans = extensions
        .iter()
        .filter(|ext| ext.extn_id == ID_CE_SUBJECT_ALT_NAME);
    let san_ext = match (sans.next(), sans.next()) {
        (None, _) => return Err(IdentityError::MissingIdentity),
        (Some(ext), None) => ext,
        // RFC 5280 forbids repeated extensions; two SAN extensions could disagree.
        (Some(_), Some(_)) => return Err(IdentityError::DuplicateSanExtension),
    };
    let san = SubjectAltName::from_der(san_ext.extn_value.as_bytes())
        .map_err(IdentityError::Certificate)?;
    let uris: Vec<&str> = san
        .0
        .iter()
        .filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str()),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(IdentityError::MissingIdentity),
        [uri] => AgentIdentity::from_uri(uri),
        more => Err(IdentityError::AmbiguousIdentity { count: more.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_identities_parse_strictly_and_differ_from_agents_of_the_same_name() {
        let operator =
            AgentIdentity::from_uri("spiffe://attestor/tenant/t/operator/alice").unwrap();
        assert!(operator.is_operator());
        assert_eq!(operator, AgentIdentity::operator("t", "alice").unwrap());
        assert_ne!(operator, AgentIdentity::new("t", "alice").unwrap());
        assert_eq!(
            operator.to_uri(),
            "spiffe://attestor/tenant/t/operator/alice"
        );
        for bad in [
            "spiffe://attestor/tenant/t/admin/alice",
            "spiffe://attestor/tenant/t/Operator/alice",
            "spiffe://attestor/tenant/t/operator/",
            "spiffe://attestor/tenant/t/operator/alice/x",
            "spiffe://attestor/tenant/t/operator/al@ce",
        ] {
            assert!(
                matches!(
                    AgentIdentity::from_uri(bad),
                    Err(IdentityError::InvalidUri { .. })
                ),
                "{bad}"
            );
        }
    }
}
