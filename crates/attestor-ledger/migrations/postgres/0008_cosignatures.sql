-- Witness cosignatures (C2SP tlog-cosignature) of signed checkpoints: the first each
-- witness gave for a size.
CREATE TABLE IF NOT EXISTS cosignatures (
    size BIGINT NOT NULL REFERENCES checkpoints (size),
    witness TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
