#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time, one per core at a time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
# Works on the stable toolchain: `--sanitizer none` makes cargo-fuzz pass only stable
# flags (-Cpasses=sancov-module, -Cllvm-args=...), so no nightly and no RUSTC_BOOTSTRAP.
# Rust code is memory-safe; what we look for is panics, overflows (debug assertions are on),
# unbounded allocation (-rss_limit_mb) and hangs (-timeout).
# Seeds: fuzz/seeds/TARGET (committed, from real outputs); the working corpus grows in
# fuzz/corpus/TARGET (ignored by git); a finding lands in fuzz/artifacts/TARGET and fails
# the run. Installs cargo-fuzz from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION="0.13.2"
seconds="${1:-60}"
shift || true

source scripts/deps.sh
attestor_use_cargo
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    attestor_cargo_install --quiet --locked cargo-fuzz --version "=$CARGO_FUZZ_VERSION"
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

# ATTESTOR_FUZZ_TARGET_DIR: where the instrumented build goes (default fuzz/target); CI
# points it outside the clone so the dependencies' build is reused between runs.
flags=(--sanitizer none --debug-assertions --target-dir "${ATTESTOR_FUZZ_TARGET_DIR:-target}")
# cargo-fuzz compiles release builds with one codegen unit (faster targets, slower build).
# For short runs (CI's 15 s) the build dominates: let rustc use 16 units there.
if ((seconds < 120)); then
    flags+=(--codegen-units 16)
fi
echo "== cargo fuzz build (${#targets[@]} targets)"
(cd fuzz && cargo fuzz build "${flags[@]}")

# One target per core at a time (ATTESTOR_FUZZ_JOBS overrides), each with its own log.
run_target() {
    local t="$1" log="fuzz/artifacts/$1.log"
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" fuzz/artifacts
    # libFuzzer writes new inputs to the first corpus directory only.
    if (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1) >"$log" 2>&1; then
        local runs cov
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
        echo "   $t ok: $runs executions in ${seconds}s, $cov, corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
    else
        echo "   $t FAILED: see $log and fuzz/artifacts/$t/" >&2
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
        return 1
    fi
}

jobs="${ATTESTOR_FUZZ_JOBS:-$(nproc)}"
echo "== fuzz ${#targets[@]} targets for ${seconds}s each, $jobs at a time"
declare -A pid_of
for t in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
    run_target "$t" &
    pid_of[$t]=$!
done
failed=()
for t in "${targets[@]}"; do
    wait "${pid_of[$t]}" || failed+=("$t")
done
if ((${#failed[@]})); then
    echo "fuzz targets with findings: ${failed[*]}" >&2
    exit 1
fi
