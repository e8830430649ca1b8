#!/usr/bin/env bash
# Supply-chain gate: cargo deny check (advisories, licenses, bans, sources; deny.toml).
# Installs cargo-deny from crates.io when missing. The RustSec advisory database lives on
# GitHub, which CI cannot reach: the advisories check runs offline against a local copy
# ($ATTESTOR_ADVISORY_DB, a checkout of the advisory-db repository, or one cargo-deny
# fetched earlier into ~/.cargo/advisory-dbs) and is skipped, with a note, when there is
# none. licenses, bans and sources always run and must pass.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION="0.20.2"
source scripts/deps.sh
attestor_use_cargo
if ! cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    echo "== installing cargo-deny $CARGO_DENY_VERSION"
    attestor_cargo_install --quiet --locked cargo-deny --version "=$CARGO_DENY_VERSION"
fi

cargo deny --log-level error check licenses bans sources

db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
config=deny.toml
if [ -n "${ATTESTOR_ADVISORY_DB:-}" ]; then
    # cargo-deny (0.20) wants the database, a git checkout, in a directory named after
    # its URL under db-path: point db-path at a temporary directory holding a link.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    db_root="$tmp/dbs"
    mkdir "$db_root"
    ln -s "$(realpath "$ATTESTOR_ADVISORY_DB")" "$db_root/advisory-db-3157b0e258782691"
    config="$tmp/deny.toml"
    sed "s|^\[advisories\]\$|[advisories]\ndb-path = \"$db_root\"|" deny.toml >"$config"
fi
if [ -d "$db_root/advisory-db-3157b0e258782691/crates" ]; then
    echo "== cargo deny check advisories (offline, database in $db_root)"
    cargo deny --offline --log-level error --config "$config" check advisories
else
    echo "NOTE: cargo deny check advisories SKIPPED: no local copy of the RustSec advisory"
    echo "      database (it is fetched from GitHub, which is unreachable here, and no"
    echo "      package registry we can reach ships it). Set ATTESTOR_ADVISORY_DB to a"
    echo "      checkout of the advisory-db repository to run it."
fi
