//! attestor-verify's test binary: the formats against their specs' vectors and independent
//! implementations (RFC 8949 CBOR, DSSE, TPM structures, RFC 9162 trees against ct-merkle).
// Harness items are `pub` for the test modules, not for anyone outside this binary.
#![allow(unreachable_pub)]

mod support {
    pub use attestor_testkit::repo_root;
}

mod cbor_vectors;
mod dsse_vectors;
mod ek_trust;
mod ledger_log;
mod tpm_wire;
mod uefi_eventlog;
