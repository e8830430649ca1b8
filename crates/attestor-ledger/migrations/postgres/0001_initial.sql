-- attestor ledger on PostgreSQL, schema version 1.
--
-- Applied once, inside the transaction that records it in schema_migrations. Written
-- with IF NOT EXISTS / ON CONFLICT DO NOTHING so that an engine running DDL outside the
-- transaction can apply it again harmlessly. Only plain tables, B-tree indexes, CHECK
-- constraints and INSERT .. ON CONFLICT: no sequences, triggers, advisory locks,
-- extensions or stored procedures (CockroachDB and YugabyteDB compatible).

-- The log's head: one row, taken FOR UPDATE by every append, so indexes stay dense
-- without counting rows and ledger time is checked against the last entry's.
CREATE TABLE IF NOT EXISTS log_head (
    id INT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL CHECK (size >= 0),
    last_received_at_ms BIGINT
);
INSERT INTO log_head (id, size, last_received_at_ms) VALUES (1, 0, NULL)
    ON CONFLICT (id) DO NOTHING;

-- Entries: dense indexes from 0 (the Merkle leaf indexes); never updated or deleted.
CREATE TABLE IF NOT EXISTS entries (
    idx BIGINT PRIMARY KEY CHECK (idx >= 0),
    received_at_ms BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'refused')),
    attestation_id TEXT,
    leaf BYTEA NOT NULL,
    leaf_hash BYTEA NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE INDEX IF NOT EXISTS entries_tenant_time ON entries (tenant, received_at_ms);
CREATE INDEX IF NOT EXISTS entries_agent ON entries (agent_id, idx);
CREATE INDEX IF NOT EXISTS entries_attestation ON entries (attestation_id);

-- Signed checkpoints, kept by tree size; the first one stored for a size wins.
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT PRIMARY KEY CHECK (size >= 0),
    note TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Enrolled agents and the state their last accepted entry established.
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    ek_certificate BYTEA NOT NULL,
    ak_public BYTEA NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen_at_ms BIGINT,
    last_accepted_at_ms BIGINT,
    last_zero_retention BOOLEAN,
    last_reset_count BIGINT,
    last_restart_count BIGINT,
    last_clock_ms BIGINT
);

-- The sequencer lease: one row. Only its holder, before it expires (database clock),
-- may append; every append re-checks and renews it in its own transaction (fencing).
-- term grows by one each time another replica takes the lease over.
CREATE TABLE IF NOT EXISTS sequencer_lease (
    id INT PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    term BIGINT NOT NULL
);
INSERT INTO sequencer_lease (id, holder, expires_at, term)
    VALUES (1, '', TIMESTAMPTZ '1970-01-01 00:00:00+00', 0)
    ON CONFLICT (id) DO NOTHING;
