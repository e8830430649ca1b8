//! A swtpm provisioned like real hardware, with tpm2-tools and openssl as a vendor's
//! provisioning line would: only the sha256 PCR bank, only the RSA-2048 EK certificate
//! (most discrete TPMs and vTPMs), an ECC P-256 EK with its certificate at 0x01c0000a, an
//! ECC P-521 EK with its certificate at 0x01c00018, an RSA-3072 EK with its certificate
//! at 0x01c0001c, or no EK certificate at all (Intel PTT, AMD fTPM).
//!
//! swtpm_setup writes two EK certificates, RSA-2048 at [`RSA_EK_CERT`] and ECC P-384 at
//! [`P384_EK_CERT`], as platform-created NV indices the platform hierarchy may remove.

use std::path::Path;
use std::process::Command;

use super::{require_tool, Swtpm};

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile, template L-1).
pub const RSA_EK_CERT: u32 = 0x01c0_0002;
/// NV index of the ECC P-256 EK certificate (template L-2).
pub const P256_EK_CERT: u32 = 0x01c0_000a;
/// NV index of the ECC P-384 EK certificate (template H-3), where swtpm_setup writes it.
pub const P384_EK_CERT: u32 = 0x01c0_0016;
/// NV index of the ECC P-521 EK certificate (template H-4).
pub const P521_EK_CERT: u32 = 0x01c0_0018;
/// Where [`Swtpm::provision_p521_ek_only`] persists the P-521 EK, for tpm2-tools.
pub const P521_EK_PERSISTENT: u32 = 0x8101_0018;
/// NV index of the RSA-3072 EK certificate (template H-6).
pub const RSA3072_EK_CERT: u32 = 0x01c0_001c;
/// Where [`Swtpm::provision_rsa3072_ek_only`] persists the RSA-3072 EK, for tpm2-tools.
pub const RSA3072_EK_PERSISTENT: u32 = 0x8101_001c;
/// PolicyB in SHA-384 as the TCG EK Credential Profile publishes it: the H-6 authPolicy.
const EK_POLICY_B_SHA384: &str = "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419ca\
     cb47ba09699646150f9fc000f3f80e12";
/// PolicyB in SHA-512 as the TCG EK Credential Profile publishes it: the H-4 authPolicy.
const EK_POLICY_B_SHA512: &str = "b8221ca69e8550a4914de3faa6a18c072cc01208073a928d5d66d59ef79e49a4\
     29c41a6b269571d57edb25fbdb1838425608b413cd616a5f6db5b6071af99bea";

impl Swtpm {
    /// Runs a tpm2-tools command against this TPM in `dir`; returns its stdout. Fails the
    /// test when the tool is missing or refuses.
    pub fn tpm2(&self, tool: &str, args: &[&str], dir: &Path) -> Vec<u8> {
        let out = Command::new(require_tool(tool))
            .args(args)
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The whole contents of an NV index (owner-readable, as EK certificates are).
    pub fn nv_read(&self, index: u32) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let index = format!("{index:#010x}");
        self.tpm2(
            "tpm2_nvread",
            &[&index, "-C", "o", "-o", "out.bin"],
            dir.path(),
        );
        std::fs::read(dir.path().join("out.bin")).unwrap()
    }

    /// Removes a platform-created NV index (`tpm2_nvundefine -C p`).
    pub fn nv_undefine(&self, index: u32) {
        let index = format!("{index:#010x}");
        self.tpm2("tpm2_nvundefine", &["-C", "p", &index], Path::new("."));
    }

    /// Writes `data` into a new platform-created NV index with the attributes of an EK
    /// certificate index (platform-written, owner- and auth-readable).
    pub fn nv_write_platform(&self, index: u32, data: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.bin"), data).unwrap();
        let index = format!("{index:#010x}");
        let size = data.len().to_string();
        self.tpm2(
            "tpm2_nvdefine",
            &[
                "-C",
                "p",
                &index,
                "-s",
                &size,
                "-a",
                "ppwrite|ppread|ownerread|authread|no_da|platformcreate",
            ],
            dir.path(),
        );
        self.tpm2(
            "tpm2_nvwrite",
            &["-C", "p", &index, "-i", "data.bin"],
            dir.path(),
        );
    }

    /// Leaves only the sha256 PCR bank allocated, as on most hardware TPMs. Takes effect
    /// at the next TPM reset, so the swtpm restarts: reopen TPM connections.
    pub fn allocate_only_sha256(&mut self) {
        self.tpm2(
            "tpm2_pcrallocate",
            &["sha256:all+sha384:none+sha1:none"],
            Path::new("."),
        );
        self.restart();
    }

    /// A typical discrete TPM: only the sha256 bank and only the RSA-2048 EK certificate.
    pub fn provision_like_discrete_tpm(&mut self) {
        self.nv_undefine(P384_EK_CERT);
        self.allocate_only_sha256();
    }

    /// Removes every EK certificate from NV (a TPM without any, like Intel PTT or AMD
    /// fTPM often are) and returns the RSA-2048 EK's certificate (DER), which an operator
    /// would then have as a file.
    pub fn remove_ek_certificates(&mut self) -> Vec<u8> {
        let rsa = self.nv_read(RSA_EK_CERT);
        self.nv_undefine(RSA_EK_CERT);
        self.nv_undefine(P384_EK_CERT);
        rsa
    }

    /// Replaces the EK certificates with one for the ECC P-256 EK (low-range template L-2)
    /// at [`P256_EK_CERT`], issued by this TPM's CA ([`Swtpm::ca_intermediate_pem`]) the
    /// way vendors issue them: empty subject, critical subjectAltName of TPM manufacturer
    /// attributes, the TCG EK certificate EKU. Returns the certificate (DER).
    pub fn provision_p256_ek_only(&mut self) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        self.remove_ek_certificates();
        self.tpm2(
            "tpm2_createek",
            &["-G", "ecc256", "-c", "ek.ctx", "-u", "ek.pem", "-f", "pem"],
            dir.path(),
        );
        self.tpm2("tpm2_flushcontext", &["-t"], dir.path());
        let pem = std::fs::read(dir.path().join("ek.pem")).unwrap();
        let certificate = self.issue_ek_certificate(&pem);
        self.nv_write_platform(P256_EK_CERT, &certificate);
        certificate
    }

    /// Replaces the EK certificates with one for an ECC P-521 EK at [`P521_EK_CERT`], issued
    /// as [`Swtpm::provision_p256_ek_only`] issues its. The EK is made by tpm2-tools from
    /// the H-4 template's parameters (SHA-512, AES-256-CFB, PolicyB, empty unique), not by
    /// attestor, and persisted at [`P521_EK_PERSISTENT`]. Returns the certificate (DER).
    pub fn provision_p521_ek_only(&mut self) -> Vec<u8> {
        self.provision_high_range_ek_only(
            "sha512",
            "ecc521:null:aes256cfb",
            EK_POLICY_B_SHA512,
            P521_EK_PERSISTENT,
            P521_EK_CERT,
        )
    }

    /// Replaces the EK certificates with one for an RSA-3072 EK at [`RSA3072_EK_CERT`],
    /// made by tpm2-tools from the H-6 template's parameters (SHA-384, AES-256-CFB,
    /// PolicyB, empty unique) and persisted at [`RSA3072_EK_PERSISTENT`], as
    /// [`Swtpm::provision_p521_ek_only`] does. Returns the certificate (DER).
    pub fn provision_rsa3072_ek_only(&mut self) -> Vec<u8> {
        self.provision_high_range_ek_only(
            "sha384",
            "rsa3072:null:aes256cfb",
            EK_POLICY_B_SHA384,
            RSA3072_EK_PERSISTENT,
            RSA3072_EK_CERT,
        )
    }

    fn provision_high_range_ek_only(
        &mut self,
        name_alg: &str,
        key_alg: &str,
        policy_b_hex: &str,
        persistent: u32,
        certificate_index: u32,
    ) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        self.remove_ek_certificates();
        let policy: Vec<u8> = (0..policy_b_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&policy_b_hex[i..i + 2], 16).unwrap())
            .collect();
        std::fs::write(dir.path().join("policy-b.bin"), policy).unwrap();
        self.tpm2(
            "tpm2_createprimary",
            &[
                "-C",
                "e",
                "-g",
                name_alg,
                "-G",
                key_alg,
                "-a",
                "fixedtpm|fixedparent|sensitivedataorigin|adminwithpolicy|userwithauth|\
                 restricted|decrypt",
                "-L",
                "policy-b.bin",
                "-c",
                "ek.ctx",
            ],
            dir.path(),
        );
        let handle = format!("{persistent:#010x}");
        self.tpm2(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "ek.ctx", &handle],
            dir.path(),
        );
        self.tpm2("tpm2_flushcontext", &["-t"], dir.path());
        self.tpm2(
            "tpm2_readpublic",
            &["-c", &handle, "-f", "pem", "-o", "ek.pem"],
            dir.path(),
        );
        let pem = std::fs::read(dir.path().join("ek.pem")).unwrap();
        let certificate = self.issue_ek_certificate(&pem);
        self.nv_write_platform(certificate_index, &certificate);
        certificate
    }

    /// An EK certificate (DER) for `public_key_pem` (a PEM SubjectPublicKeyInfo), issued
    /// by this TPM's CA ([`Swtpm::ca_intermediate_pem`]) the way vendors issue them.
    pub fn issue_ek_certificate(&self, public_key_pem: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ek.pem"), public_key_pem).unwrap();
        // "m." keeps openssl from reading the OID's leading "2." as a multi-value prefix.
        std::fs::write(
            dir.path().join("ek.cnf"),
            "[ek]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,keyAgreement\n\
             extendedKeyUsage = 2.23.133.8.1\nsubjectAltName = critical,dirName:tpm_dn\n\
             authorityKeyIdentifier = keyid\n[tpm_dn]\nm.2.23.133.2.1 = id:00001014\n\
             m.2.23.133.2.2 = swtpm-p256\nm.2.23.133.2.3 = id:20191023\n",
        )
        .unwrap();
        let out = Command::new(require_tool("openssl"))
            .current_dir(dir.path())
            .args(["x509", "-new", "-force_pubkey", "ek.pem", "-subj", "/"])
            .arg("-CA")
            .arg(self.ca.intermediate_pem())
            .arg("-CAkey")
            .arg(self.ca.dir.join("signkey.pem"))
            .args(["-days", "3650", "-extfile", "ek.cnf", "-extensions", "ek"])
            .args(["-outform", "DER", "-out", "ek.der"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl could not issue the EK certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(dir.path().join("ek.der")).unwrap()
    }
}
