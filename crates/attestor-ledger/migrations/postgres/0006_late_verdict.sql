-- The `late` verdict: a spooled attestation, genuine but delivered after the freshness
-- window. PostgreSQL names the column's check `entries_verdict_check`, CockroachDB
-- `check_verdict`; whichever exists is replaced by one that allows it.
ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_verdict_check;
ALTER TABLE entries DROP CONSTRAINT IF EXISTS check_verdict;
ALTER TABLE entries ADD CONSTRAINT entries_verdict_check
    CHECK (verdict IN ('accepted', 'refused', 'late'));
