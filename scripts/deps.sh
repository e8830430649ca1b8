#!/usr/bin/env bash
# Installs the Debian packages attestor's tests and demo need, only when something is
# missing (quick and idempotent when all is there). Sourced by test.sh and demo.sh.
set -euo pipefail

# gcc and libc6-dev build aws-lc-sys and the bundled SQLite; postgresql runs the
# PostgreSQL store's tests (scripts/postgres.sh starts a throw-away cluster); prometheus
# provides promtool (metrics and alert-rule tests); chromium renders the dashboard;
# systemd brings systemd-analyze (tests/systemd_units.rs); python3-jwt (PyJWT) verifies
# the ledger's EARs independently; nginx fronts a backend with the enforcement point
# (auth_request) in tests/it/enforcement.rs; python3-venv holds scripts/bench.sh's
# throw-away Keylime, linux-perf profiles its ledger, jq reads its JSON, iproute2's ss
# counts its connections.
ATTESTOR_DEBIAN_PACKAGES=(swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config openssl gcc libc6-dev postgresql prometheus chromium curl systemd python3-jwt python3-cryptography nginx python3-venv linux-perf jq iproute2)

attestor_install_deps() {
    local missing=()
    for pkg in "${ATTESTOR_DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing Debian packages: ${missing[*]}" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
    attestor_use_cargo
}

attestor_use_cargo() {
    if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
}

# `cargo install` for the CI tools (cargo-deny, cargo-fuzz). Their release profiles ask for
# fat LTO and one codegen unit, which costs minutes on a 2-core machine for no benefit to a
# lint that runs for seconds: build them without LTO at opt-level 1.
attestor_cargo_install() {
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install "$@"
}
