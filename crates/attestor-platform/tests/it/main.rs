//! attestor-platform's test binary: the TPM calls on a real swtpm (checked with tpm2-tools)
//! and the SEV-SNP simulation's reports against the real layout.
// Harness items are `pub` for the test modules, not for anyone outside this binary.
#![allow(unreachable_pub)]

mod support;

mod snp_report;
mod tpm_credential;
mod tpm_device;
