#!/bin/sh
# Rolls a deployment marker back from a release that failed attestor's release gate to the
# release in service before it. Called by github-actions-gate.yml when `attestor gate`
# fails after a deploy; copy it next to your deploy script.
#
# Usage: rollback.sh RELEASE [GATE_REPORT]
#   RELEASE      the release the job deployed and the gate refused (e.g. the commit SHA)
#   GATE_REPORT  the gate's `--format json` report, printed into the job's log
#
# The marker, in $DEPLOY_DIR (default ./deployment):
#   current    the release in service, one line; your deploy script writes it
#   history    every release that went into service, oldest first, one per line; your
#              deploy script appends to it
#   rollbacks  this script appends one line per rollback: time, refused release, previous
#
# The previous release is the latest one in `history` before RELEASE that was never rolled
# back itself. With $REDEPLOY set, `$REDEPLOY PREVIOUS` runs first, to put that release
# back in service (e.g. your deploy script), and the marker moves only once it succeeded.
#
# Idempotent: run again (a re-run job), it finds RELEASE no longer in service, rolled back
# already, and changes nothing.
#
# Exit status: 0 rolled back (or already); 2 usage; 3 RELEASE is not the release in service
# and was never rolled back (someone else deployed meanwhile: nothing is touched);
# 4 no earlier good release to return to; 5 the marker could not be written, or REDEPLOY failed.
set -eu

usage() {
    echo "usage: rollback.sh RELEASE [GATE_REPORT]" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
release=$1
report=${2:-}
case $release in
    '' | *[!A-Za-z0-9._-]*) echo "rollback: release names are [A-Za-z0-9._-]: $release" >&2; exit 2 ;;
esac
dir=${DEPLOY_DIR:-./deployment}
current_file=$dir/current
history_file=$dir/history
rollbacks_file=$dir/rollbacks

if [ -n "$report" ] && [ -f "$report" ]; then
    echo "rollback: the release gate refused $release:" >&2
    cat "$report" >&2
fi

current=$(cat "$current_file" 2>/dev/null || true)
rolled_back() {
    [ -f "$rollbacks_file" ] && awk -v r="$1" '$2 == r { found = 1 } END { exit !found }' "$rollbacks_file"
}
if [ "$current" != "$release" ]; then
    if rolled_back "$release"; then
        echo "rollback: $release was rolled back already; $current is in service"
        exit 0
    fi
    echo "rollback: $release is not in service ($current is): nothing touched" >&2
    exit 3
fi

# The latest release before RELEASE's last deployment that was never rolled back.
previous=
if [ -f "$history_file" ]; then
    previous=$(awk -v r="$release" '{ line[NR] = $1 } $1 == r { last = NR }
        END { for (i = last - 1; i >= 1; i--) print line[i] }' "$history_file" |
        while read -r candidate; do
            [ "$candidate" = "$release" ] && continue
            rolled_back "$candidate" && continue
            echo "$candidate"
            break
        done)
fi
if [ -z "$previous" ]; then
    echo "rollback: no earlier good release than $release in $history_file" >&2
    exit 4
fi

# Back in service first, then the marker says so: a failed REDEPLOY leaves both as they
# were, for a re-run to try again.
if [ -n "${REDEPLOY:-}" ]; then
    $REDEPLOY "$previous" || exit 5
fi
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "$when $release $previous" >>"$rollbacks_file" || exit 5
printf '%s\n' "$previous" >"$current_file.tmp" && mv -f "$current_file.tmp" "$current_file" || exit 5
echo "rollback: $release -> $previous"
