#!/usr/bin/env bash
# End to end on a software TPM: start swtpm (with a CA of its own), attest the example
# policy kernel, verify offline, then drift the configuration to show the sealed key
# refusing, reseal, and verify again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
source scripts/swtpm.sh
attestor_install_deps
export TSS2_LOG=all+none

cargo build --quiet
attestor=target/debug/attestor
work=$(mktemp -d /tmp/attestor-demo.XXXXXX)
trap 'attestor_swtpm_stop "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start swtpm with its own EK CA in $work"
attestor_swtpm_start "$work"
attestor_swtpm_profile "$work" "$work/profile.toml"
echo "TCTI $SWTPM_TCTI"

# A private copy of the example agent, so the demo can change its policy kernel config.
cp -r examples "$work/agent"
sed -i "s#^state_dir = .*#state_dir = \"$work/state\"#" "$work/agent/agent.toml"
config="$work/agent/agent.toml"
policy_hash=$($attestor policy-hash "$work/agent/policy-kernel/policy.toml")
echo "expected policy_hash $policy_hash"

step "attest (provisions AK and PCR-sealed key on first use) and verify offline"
$attestor attest --config "$config" --tcti "$SWTPM_TCTI" --out "$work/bundle1.json"
$attestor verify "$work/bundle1.json" --profile "$work/profile.toml" --policy-hash "$policy_hash"

step "drift: the policy kernel config changes without approval"
echo "workers = 64" >>"$work/agent/policy-kernel/kernel.toml"
if $attestor attest --config "$config" --tcti "$SWTPM_TCTI" --out "$work/bundle2.json"; then
    echo "the sealed key signed after drift: this must not happen" >&2; exit 1
fi

step "the change is approved: reseal, attest, verify"
$attestor reseal --config "$config" --tcti "$SWTPM_TCTI"
$attestor attest --config "$config" --tcti "$SWTPM_TCTI" --out "$work/bundle3.json"
$attestor verify "$work/bundle3.json" --profile "$work/profile.toml" --policy-hash "$policy_hash"

step "a tampered bundle is refused, naming the failed check"
sed 's/"payloadType": "application/"payloadType": "xapplication/' "$work/bundle3.json" >"$work/tampered.json"
$attestor verify "$work/tampered.json" --profile "$work/profile.toml" || true
echo
echo "demo done; bundles and profile are in $work"
