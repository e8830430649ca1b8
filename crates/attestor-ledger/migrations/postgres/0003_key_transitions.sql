-- Checkpoint key rotation: each row is a signed note (by the old and the new key)
-- introducing the next checkpoint signing key; seq counts transitions from 0, so
-- two replicas can never record two different successors of one key.
CREATE TABLE IF NOT EXISTS key_transitions (
    seq BIGINT PRIMARY KEY CHECK (seq >= 0),
    note TEXT NOT NULL
);
