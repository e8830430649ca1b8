-- Agents are keyed by (tenant, agent id): the same id in two tenants names two agents,
-- never one record a second tenant could take over. Dropping and adding the primary key in
-- one statement is the form PostgreSQL and CockroachDB both accept.
ALTER TABLE agents DROP CONSTRAINT agents_pkey, ADD CONSTRAINT agents_pkey PRIMARY KEY (tenant, agent_id);

-- SHA-256 of the submitted bytes of each entry that keeps them: a re-sent submission is
-- found by it (scoped to its agent) and answered with its original receipt.
ALTER TABLE entries ADD COLUMN IF NOT EXISTS submission_hash BYTEA
    CHECK (submission_hash IS NULL OR length(submission_hash) = 32);
DROP INDEX IF EXISTS entries_agent;
CREATE INDEX IF NOT EXISTS entries_tenant_agent ON entries (tenant, agent_id, idx);
CREATE INDEX IF NOT EXISTS entries_submission ON entries (submission_hash)
    WHERE submission_hash IS NOT NULL;
