#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint gates and every test.
# Tests start their own swtpm on free loopback ports; none are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
attestor_install_deps

# A throw-away PostgreSQL on loopback for the PostgreSQL store's tests, removed on exit.
if [ -z "${ATTESTOR_TEST_POSTGRES:-}" ]; then
    ATTESTOR_PG_DIR=$(mktemp -d -u /tmp/attestor-pg.XXXXXX)
    trap 'bash scripts/postgres.sh stop "$ATTESTOR_PG_DIR"' EXIT
    ATTESTOR_TEST_POSTGRES=$(bash scripts/postgres.sh start "$ATTESTOR_PG_DIR")
    export ATTESTOR_TEST_POSTGRES
fi

export TSS2_LOG=all+none
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
echo "== cargo deny check"
bash scripts/deny.sh
# Short fuzz runs (README "Fuzzing"); the instrumented build lives outside the clone so
# later runs reuse its dependencies.
echo "== fuzz (${ATTESTOR_FUZZ_SECONDS:-15}s per target)"
ATTESTOR_FUZZ_TARGET_DIR="${ATTESTOR_FUZZ_TARGET_DIR:-$HOME/.cache/attestor/fuzz-target}" \
    bash scripts/fuzz.sh "${ATTESTOR_FUZZ_SECONDS:-15}"
