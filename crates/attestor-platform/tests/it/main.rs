//! attestor-platform's test binary: the TPM calls on a real swtpm (checked with tpm2-tools),
//! with re-created and with resident keys, and the SEV-SNP simulation's reports against the
//! real layout, directly and through a configfs-tsm entry.
// Harness items are `pub` for the test modules, not for anyone outside this binary.
#![allow(unreachable_pub)]

mod support;

mod snp_configfs;
mod snp_report;
mod tpm_credential;
mod tpm_device;
mod tpm_persistent;
