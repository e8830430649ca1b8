//! Minimal, independent readers of TPM wire structures (TPM 2.0 Part 2) and writers of
//! tpm2-tools file formats, so tests can check TPM output without the code under test.
//! Test-only: they panic on malformed input.

/// A cursor over big-endian TPM wire bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    /// Next byte.
    pub fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    /// Next big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.bytes(2).try_into().unwrap())
    }
    /// Next big-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }
    /// Next big-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.bytes(8).try_into().unwrap())
    }
    /// A TPM2B: u16 size then that many bytes.
    pub fn tpm2b(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }
    /// True when every byte was consumed.
    pub fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;
/// TPM_ALG_ECC.
pub const ALG_ECC: u16 = 0x0023;
/// TPM_ALG_ECDSA.
pub const ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000c;
/// TPM_ECC_NIST_P384.
pub const ECC_NIST_P384: u16 = 0x0004;
/// TPM_GENERATED_VALUE.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// TPM_ST_ATTEST_CERTIFY.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;

/// TPMA_OBJECT bits.
pub mod attr {
    /// fixedTPM
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// noDA
    pub const NO_DA: u32 = 1 << 10;
    /// restricted
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt
    pub const DECRYPT: u32 = 1 << 17;
    /// sign
    pub const SIGN: u32 = 1 << 18;
}

/// The fields of an ECC TPMT_PUBLIC a test checks.
#[derive(Debug, Clone)]
pub struct EccPublic {
    /// nameAlg.
    pub name_alg: u16,
    /// objectAttributes.
    pub attributes: u32,
    /// authPolicy.
    pub auth_policy: Vec<u8>,
    /// scheme (TPM_ALG_NULL if none) and its hash.
    pub scheme: (u16, u16),
    /// curveID.
    pub curve: u16,
    /// Public point coordinates.
    pub x: Vec<u8>,
    /// Public point coordinates.
    pub y: Vec<u8>,
}

impl EccPublic {
    /// Uncompressed SEC1 point 04 || x || y (what aws-lc-rs and X.509 use).
    pub fn sec1_point(&self) -> Vec<u8> {
        let mut p = vec![4u8];
        p.extend_from_slice(&self.x);
        p.extend_from_slice(&self.y);
        p
    }
}

/// Parses a marshalled ECC TPMT_PUBLIC (no size prefix); panics on anything else.
pub fn parse_ecc_public(bytes: &[u8]) -> EccPublic {
    let mut r = Reader::new(bytes);
    assert_eq!(r.u16(), ALG_ECC, "not an ECC key");
    let name_alg = r.u16();
    let attributes = r.u32();
    let auth_policy = r.tpm2b().to_vec();
    let sym = r.u16();
    if sym != ALG_NULL {
        r.u16(); // keyBits
        r.u16(); // mode
    }
    let scheme_alg = r.u16();
    let scheme_hash = if scheme_alg != ALG_NULL {
        r.u16()
    } else {
        ALG_NULL
    };
    let curve = r.u16();
    let kdf = r.u16();
    if kdf != ALG_NULL {
        r.u16();
    }
    let x = r.tpm2b().to_vec();
    let y = r.tpm2b().to_vec();
    assert!(r.done(), "trailing bytes after TPMT_PUBLIC");
    EccPublic {
        name_alg,
        attributes,
        auth_policy,
        scheme: (scheme_alg, scheme_hash),
        curve,
        x,
        y,
    }
}

/// The common header of a TPMS_ATTEST plus its type-specific body, unparsed.
#[derive(Debug, Clone)]
pub struct Attest {
    /// magic (TPM_GENERATED_VALUE for genuine TPM attestations).
    pub magic: u32,
    /// type (TPM_ST_ATTEST_*).
    pub kind: u16,
    /// qualifiedSigner.
    pub qualified_signer: Vec<u8>,
    /// extraData (the qualifying data).
    pub extra_data: Vec<u8>,
    /// clockInfo.clock.
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe.
    pub safe: u8,
    /// The attested union's bytes.
    pub attested: Vec<u8>,
}

/// Parses a marshalled TPMS_ATTEST.
pub fn parse_attest(bytes: &[u8]) -> Attest {
    let mut r = Reader::new(bytes);
    let magic = r.u32();
    let kind = r.u16();
    let qualified_signer = r.tpm2b().to_vec();
    let extra_data = r.tpm2b().to_vec();
    let clock = r.u64();
    let reset_count = r.u32();
    let restart_count = r.u32();
    let safe = r.u8();
    let _firmware = r.u64();
    let attested = r.bytes(bytes.len() - r.pos).to_vec();
    Attest {
        magic,
        kind,
        qualified_signer,
        extra_data,
        clock,
        reset_count,
        restart_count,
        safe,
        attested,
    }
}

/// TPMS_QUOTE_INFO: the quoted selection as (bank, sorted PCR indices) and pcrDigest.
pub fn parse_quote_info(attested: &[u8]) -> (Vec<(u16, Vec<u8>)>, Vec<u8>) {
    let mut r = Reader::new(attested);
    let count = r.u32();
    let mut banks = Vec::new();
    for _ in 0..count {
        let alg = r.u16();
        let size = r.u8() as usize;
        let mask = r.bytes(size);
        let mut pcrs = Vec::new();
        for (i, byte) in mask.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    pcrs.push((i * 8 + bit) as u8);
                }
            }
        }
        banks.push((alg, pcrs));
    }
    let digest = r.tpm2b().to_vec();
    assert!(r.done());
    (banks, digest)
}

/// TPMS_CERTIFY_INFO: (name, qualifiedName) of the certified object.
pub fn parse_certify_info(attested: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut r = Reader::new(attested);
    let name = r.tpm2b().to_vec();
    let qualified = r.tpm2b().to_vec();
    assert!(r.done());
    (name, qualified)
}

/// Parses an ECDSA TPMT_SIGNATURE into (hash alg, r, s) with r and s left-padded to
/// `width` bytes.
pub fn parse_ecdsa_signature(bytes: &[u8], width: usize) -> (u16, Vec<u8>, Vec<u8>) {
    let mut r = Reader::new(bytes);
    assert_eq!(r.u16(), ALG_ECDSA, "not an ECDSA signature");
    let hash = r.u16();
    let sig_r = pad(r.tpm2b(), width);
    let sig_s = pad(r.tpm2b(), width);
    assert!(r.done());
    (hash, sig_r, sig_s)
}

fn pad(v: &[u8], width: usize) -> Vec<u8> {
    let v = &v[v.iter().take_while(|b| **b == 0).count()..];
    assert!(v.len() <= width);
    let mut out = vec![0u8; width - v.len()];
    out.extend_from_slice(v);
    out
}

/// TPM2B form (u16 size prefix), e.g. a TPM2B_PUBLIC for `tpm2_checkquote -u`.
pub fn tpm2b(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// PEM SubjectPublicKeyInfo of an uncompressed P-384 point (04 || x || y).
pub fn p384_spki_pem(sec1_point: &[u8]) -> String {
    use base64::Engine;
    assert_eq!(sec1_point.len(), 97);
    // SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING (0 unused bits) }.
    let mut der = vec![
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    der.extend_from_slice(sec1_point);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The PCR file `tpm2_quote -o` writes and `tpm2_checkquote -f` reads (tpm2-tools 5.x): a
/// host-endian dump of TPML_PCR_SELECTION (132 bytes), a u32 count of TPML_DIGESTs, then
/// that many TPML_DIGESTs (532 bytes each, at most 8 values each). One bank, PCRs in
/// ascending order.
pub fn tpm2_tools_pcr_file(bank_alg: u16, values: &[(u8, Vec<u8>)]) -> Vec<u8> {
    const BANKS: usize = 16; // TPM2_NUM_PCR_BANKS
    const SELECTION: usize = 8; // u16 hash, u8 sizeofSelect, [u8; 4], 1 byte padding
    const DIGEST: usize = 2 + 64; // TPM2B_DIGEST: u16 size, [u8; sizeof(TPMU_HA)]
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_ne_bytes());
    let mut mask = [0u8; 4];
    for (pcr, _) in values {
        mask[*pcr as usize / 8] |= 1 << (pcr % 8);
    }
    out.extend_from_slice(&bank_alg.to_ne_bytes());
    out.push(3); // sizeofSelect: 24 PCRs
    out.extend_from_slice(&mask);
    out.push(0);
    out.resize(4 + BANKS * SELECTION, 0);
    let chunks: Vec<&[(u8, Vec<u8>)]> = values.chunks(8).collect();
    out.extend_from_slice(&(chunks.len() as u32).to_ne_bytes());
    for chunk in chunks {
        let start = out.len();
        out.extend_from_slice(&(chunk.len() as u32).to_ne_bytes());
        for (_, v) in chunk {
            let at = out.len();
            out.extend_from_slice(&(v.len() as u16).to_ne_bytes());
            out.extend_from_slice(v);
            out.resize(at + DIGEST, 0);
        }
        out.resize(start + 4 + 8 * DIGEST, 0);
    }
    out
}
