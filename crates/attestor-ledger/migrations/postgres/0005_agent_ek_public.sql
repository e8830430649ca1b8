-- The EK public area (TPMT_PUBLIC) an agent enrolled with: its key type, and its hash for
-- an EK trusted by an allow-list rather than a certificate. NULL for SEV-SNP agents and
-- for agents enrolled before this migration.
ALTER TABLE agents ADD COLUMN IF NOT EXISTS ek_public BYTEA;
