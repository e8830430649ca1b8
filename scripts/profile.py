#!/usr/bin/env python3
"""Where the ledger's CPU goes: `perf script` output (cpu-clock samples with call
stacks, `perf record --call-graph dwarf`) on stdin, a Markdown table on stdout.

    perf script -i ledger.perf | scripts/profile.py [--cpu-ms-per-submission MS]

Each sample is charged to one category. Owners first: a sample whose stack passes
through the logger, SQLite, the Merkle tree, rustls, the EAR or the appraisal is theirs
whatever the leaf (SHA-256 under rustls is TLS, an fsync under SQLite is SQLite; "logging"
is tracing itself: spans, the stage timer and the JSON lines). Then
the innermost library frame decides: aws-lc and RustCrypto outside those owners are the
evidence's cryptography, serde_json JSON, ciborium CBOR, hyper HTTP, kernel frames the
kernel; the rest (allocator, tokio, our own code) is "other". With the ledger's CPU per
submission (loadgen's report), each share is also given in ms per submission.
"""

import argparse
import re
import sys

# (category, pattern searched in every frame of the stack), first match wins.
OWNERS = [
    ("logging", re.compile(r"tracing_subscriber|tracing_core|attestor_net::logging")),
    ("SQLite", re.compile(r"rusqlite|sqlite3")),
    ("Merkle tree (leaf hashes, inclusion proofs)", re.compile(r"attestor_verify::log::(merkle|tiled)")),
    ("checkpoint signature", re.compile(r"attestor_verify::log::checkpoint")),
    ("TLS", re.compile(r"rustls")),
    ("EAR (JSON and ES384 signature)", re.compile(r"attestor_verify::ear")),
    ("appraisal", re.compile(r"attestor_verify::appraisal|attestor_ledger::appraise")),
]
# (category, pattern), matched from the innermost frame outwards.
LIBRARIES = [
    ("crypto (aws-lc: signature verify, hashing)", re.compile(r"aws_lc|ring_core|sha2::|p384::|ecdsa")),
    ("CBOR", re.compile(r"ciborium")),
    ("JSON", re.compile(r"serde_json|base64")),
    ("HTTP", re.compile(r"hyper|httparse|http_body|h1::")),
    ("kernel (socket I/O, scheduling, memory)", re.compile(r"\[kernel|kallsyms|^\S*\s+\S+\s+\[k\]")),
]
OTHER = "other (allocator, memcpy, tokio, attestor's own code)"
ORDER = [c for c, _ in LIBRARIES[:1]] + [c for c, _ in OWNERS] + [c for c, _ in LIBRARIES[1:]] + [OTHER]


def samples(lines):
    """Yields each sample's frames, innermost first."""
    frames = []
    in_sample = False
    for line in lines:
        if not line.strip():
            if in_sample:
                yield frames
            frames, in_sample = [], False
        elif line[0] in " \t":
            frames.append(line.strip())
        else:
            in_sample = True
    if in_sample:
        yield frames


def category(frames):
    for name, pattern in OWNERS:
        if any(pattern.search(f) for f in frames):
            return name
    for frame in frames:
        for name, pattern in LIBRARIES:
            if pattern.search(frame):
                return name
    return OTHER


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-ms-per-submission", type=float)
    args = parser.parse_args()
    counts = {}
    for frames in samples(sys.stdin):
        name = category(frames)
        counts[name] = counts.get(name, 0) + 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("no samples on stdin (perf script output expected)")
    per = args.cpu_ms_per_submission
    print(f"| category | share of the ledger's samples ({total}) |"
          + (" ms per submission |" if per else ""))
    print("|---|---|" + ("---|" if per else ""))
    for name in ORDER:
        n = counts.get(name, 0)
        row = f"| {name} | {100 * n / total:.1f} % |"
        if per:
            row += f" {per * n / total:.3f} |"
        print(row)


if __name__ == "__main__":
    main()
