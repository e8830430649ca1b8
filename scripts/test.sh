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
    export ATTESTOR_TEST_POSTGRES ATTESTOR_TEST_POSTGRES_TLS="$ATTESTOR_PG_DIR/tls"
fi

export TSS2_LOG=all+none
# Each gate prints how long it took, so CI logs show where the time goes.
step() {
    local name="$1" started=$SECONDS
    shift
    echo "== $name"
    "$@"
    echo "   ($name: $((SECONDS - started)) s)"
}
step "cargo fmt --all --check" cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings" cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo test" cargo test --workspace --all-targets
step "cargo deny check" bash scripts/deny.sh
# Short fuzz runs (README "Fuzzing"); the instrumented build lives outside the clone so
# later runs reuse its dependencies.
step "fuzz (${ATTESTOR_FUZZ_SECONDS:-15}s per target)" \
    env ATTESTOR_FUZZ_TARGET_DIR="${ATTESTOR_FUZZ_TARGET_DIR:-$HOME/.cache/attestor/fuzz-target}" \
    bash scripts/fuzz.sh "${ATTESTOR_FUZZ_SECONDS:-15}"
echo "== all gates passed in $SECONDS s"
