#!/usr/bin/env bash
# End to end on one machine: a software TPM (swtpm, with a CA of its own), a ledger and
# an agent on loopback, talking mutual TLS. The agent enrols and sends a few heartbeats;
# then the policy is changed and force-resealed (as an attacker with root could) and the
# ledger refuses it; the runtime reports its egress firewall off, and the ledger's signed
# judgement (an EAR) says contraindicated; the ledger goes down while the agent keeps attesting into its spool,
# and everything arrives in order once it is back. Ends with the audit trail, every
# inclusion proof and checkpoint signature verified, and a consistency proof.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
source scripts/swtpm.sh
attestor_install_deps
export TSS2_LOG=all+none

cargo build --quiet
attestor=$PWD/target/debug/attestor
work=$(mktemp -d /tmp/attestor-demo.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    attestor_swtpm_stop "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start swtpm with its own EK CA in $work"
attestor_swtpm_start "$work"
attestor_swtpm_profile "$work" "$work/profile.toml"
echo "TCTI $SWTPM_TCTI"

step "quick-start PKI (not for production): a CA, the ledger's and the agent's certificates"
$attestor pki init "$work/pki" --agent agent-1:demo --operator oncall:demo --ledger-host 127.0.0.1 >/dev/null
ls "$work/pki" "$work/pki/agents"

# A private copy of the example agent, so the demo can change its policy.
cp -r examples "$work/agent"
policy="$work/agent/policy-kernel/policy.toml"
policy_hash=$($attestor policy-hash "$policy")
port=$(attestor_free_port)
ops_port=$(attestor_free_port)
cat >"$work/ledger.toml" <<EOF
listen = "127.0.0.1:$port"
state_dir = "ledger-state"
origin = "attestor.demo/ledger"
profile = "profile.toml"
max_gap_seconds = 10
[tls]
ca = "pki/ca.pem"
cert = "pki/ledger.pem"
key = "pki/ledger.key"
[tenants.demo]
policy_hash = "$policy_hash"
appraisal = "agent/appraisal.toml"
[ops]
listen = "127.0.0.1:$ops_port"
EOF
config="$work/agent/agent.toml"
sed -i "s#^state_dir = .*#state_dir = \"$work/agent-state\"#" "$config"
cat >>"$config" <<EOF

[ledger]
endpoint = "https://127.0.0.1:$port"
ca = "$work/pki/ca.pem"
cert = "$work/pki/agents/agent-1.pem"
key = "$work/pki/agents/agent-1.key"

[heartbeat]
interval_seconds = 2
timeout_seconds = 1
expected_policy_hash = "$policy_hash"
EOF
echo "tenant demo expects policy_hash $policy_hash"

start_ledger() {
    $attestor ledger --config "$work/ledger.toml" 2>>"$work/ledger.log" &
    ledger_pid=$!
    pids+=("$ledger_pid")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "the ledger did not start; see $work/ledger.log" >&2
    exit 1
}
# run_agent SECONDS: runs the agent daemon, then stops it with SIGTERM.
run_agent() {
    $attestor agent --config "$config" --tcti "$SWTPM_TCTI" 2>>"$work/agent.log" &
    local pid=$!
    pids+=("$pid")
    sleep "$1"
    kill -TERM "$pid"
    wait "$pid"
}
agent_events() { grep -o '"event":"[a-z-]*"' "$work/agent.log" | sort | uniq -c; }
query() { $attestor query --config "$config" --log-key "$work/ledger-state/checkpoint.vkey" "$@"; }

step "start the ledger on 127.0.0.1:$port"
start_ledger
cat "$work/ledger-state/checkpoint.vkey"

step "run the agent for 5 s: it enrols (EK chain + credential activation), then attests every 2 s"
run_agent 5
agent_events
first_size=$(query checkpoint | sed -n 2p)

step "unapproved change: the policy raises max_epsilon, and someone with root force-reseals"
sed -i 's/^max_epsilon = .*/max_epsilon = 30.0/' "$policy"
$attestor reseal --config "$config" --tcti "$SWTPM_TCTI"
run_agent 1.5
grep '"verdict":"refused"' "$work/agent.log" | tail -1

step "the change is reverted and resealed: accepted again"
sed -i 's/^max_epsilon = .*/max_epsilon = 3.0/' "$policy"
$attestor reseal --config "$config" --tcti "$SWTPM_TCTI"
run_agent 1.5

step "posture: the runtime reports its egress firewall off (genuine evidence, judged by examples/appraisal.toml)"
status="$work/agent/status.json"
sed -i 's/"egress_firewall_enabled": true/"egress_firewall_enabled": false/' "$status"
run_agent 1.5
curl -s "http://127.0.0.1:$ops_port/metrics" | grep -E '^attestor_ledger_(appraisals_total|posture_reasons_total)'
sed -i 's/"egress_firewall_enabled": false/"egress_firewall_enabled": true/' "$status"
run_agent 1.5
echo "EAR verification key set: http://127.0.0.1:$ops_port/v1/ear/jwks"

step "the ledger goes down; the agent keeps attesting into its durable spool"
kill -TERM "$ledger_pid"
wait "$ledger_pid" || true
run_agent 5
ls "$work/agent-state/spool"

step "the ledger is back: the spool is delivered in order"
start_ledger
run_agent 3
agent_events

step "audit trail of tenant demo (proofs, checkpoint and EAR signatures verified)"
query entries
query agents

step "the log only grew: consistency from size $first_size to now"
query checkpoint --since "$first_size"

step "the forced reseal is a policy-drift incident: it fails the gate until an operator resolves it"
query_incidents() { $attestor incidents --config "$config" --log-key "$work/ledger-state/checkpoint.vkey" "$@"; }
query_incidents list
drift_id=$(query_incidents --json list | python3 -c 'import json,sys; print(next(i["id"] for i in json.load(sys.stdin) if i["kind"] == "policy-drift"))')
$attestor incidents --ledger "https://127.0.0.1:$port" --ca "$work/pki/ca.pem" \
    --cert "$work/pki/operators/oncall.pem" --key "$work/pki/operators/oncall.key" \
    resolve "$drift_id" --reason "unapproved reseal reverted and resealed with the approved policy"

step "release gate for tenant demo (exit 0: every agent attested within 5 minutes, no open incident)"
$attestor gate --config "$config" --tenant demo --max-age 5m

step "metrics (Prometheus) and the dashboard"
curl -s "http://127.0.0.1:$ops_port/metrics" | grep -E '^attestor_ledger_(submissions_total|agents|log_entries)'
echo "dashboard: http://127.0.0.1:$ops_port/dashboard (while the ledger runs)"
echo
echo "demo done; logs, state and PKI are in $work"
