-- The SEV-SNP CHIP_ID pinned for an agent enrolled with `tpm+snp` evidence (a
-- confidential VM with a vTPM); NULL for TPM-only and SNP-only agents.
ALTER TABLE agents ADD COLUMN IF NOT EXISTS snp_chip_id BYTEA;
