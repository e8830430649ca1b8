-- Durable incidents: at most one unresolved per (tenant, agent, kind), which is what
-- deduplicates raising across replicas, restarts and fail-over.
CREATE TABLE IF NOT EXISTS incidents (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    opened_at_ms BIGINT NOT NULL,
    first_index BIGINT,
    last_index BIGINT,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    acknowledged_by TEXT,
    acknowledged_at_ms BIGINT,
    acknowledged_reason TEXT,
    resolved_by TEXT,
    resolved_at_ms BIGINT,
    resolved_reason TEXT,
    actions JSONB NOT NULL DEFAULT '[]',
    -- The latest state whose change is in the log: behind `state` after a crash between
    -- the two, until the lease holder appends what is missing.
    recorded TEXT CHECK (recorded IN ('open', 'acknowledged', 'resolved'))
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_unresolved ON incidents (tenant, agent_id, kind)
    WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_tenant ON incidents (tenant, id);
CREATE INDEX IF NOT EXISTS incidents_unrecorded ON incidents (id)
    WHERE recorded IS DISTINCT FROM state;
