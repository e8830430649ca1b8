#!/usr/bin/env bash
# Shell helpers to run a throw-away swtpm with a CA of our own (sourced by demo.sh).
# Facts behind the flags: absolute state paths (swtpm --daemon changes directory),
# not-need-init,startup-clear (nothing else sends TPM2_Startup), loopback only.

# attestor_free_port: prints a TCP port on 127.0.0.1 that nothing listens on (and the next one).
attestor_free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    echo "no free port found" >&2; return 1
}

# attestor_swtpm_start DIR: makes a CA in DIR/ca, provisions a TPM in DIR/tpm whose EK
# certificate that CA issues, serves it on a free port; sets SWTPM_PORT and SWTPM_TCTI.
attestor_swtpm_start() {
    local dir; dir=$(realpath "$1")
    mkdir -p "$dir/ca" "$dir/tpm"
    cat >"$dir/ca/localca.conf" <<CONF
statedir = $dir/ca
signingkey = $dir/ca/signkey.pem
issuercert = $dir/ca/issuercert.pem
certserial = $dir/ca/certserial
CONF
    cat >"$dir/ca/setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $dir/ca/localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
active_pcr_banks = sha256,sha384
CONF
    swtpm_setup --tpm2 --tpmstate "$dir/tpm" --create-ek-cert --config "$dir/ca/setup.conf" \
        --pcr-banks sha256,sha384 --overwrite >"$dir/swtpm_setup.log" 2>&1 \
        || { cat "$dir/swtpm_setup.log" >&2; return 1; }
    SWTPM_PORT=$(attestor_free_port)
    swtpm socket --tpm2 --tpmstate dir="$dir/tpm" \
        --server type=tcp,port="$SWTPM_PORT",bindaddr=127.0.0.1 \
        --ctrl type=tcp,port=$((SWTPM_PORT + 1)),bindaddr=127.0.0.1 \
        --flags not-need-init,startup-clear --daemon --pid file="$dir/swtpm.pid"
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$SWTPM_PORT") 2>/dev/null && break
        sleep 0.1
    done
    SWTPM_TCTI="swtpm:host=127.0.0.1,port=$SWTPM_PORT"
    export SWTPM_PORT SWTPM_TCTI
}

# attestor_swtpm_stop DIR
attestor_swtpm_stop() {
    [ -f "$1/swtpm.pid" ] && kill "$(cat "$1/swtpm.pid")" 2>/dev/null || true
}

# attestor_swtpm_profile DIR OUT: the swtpm firmware profile, trusting DIR's CA instead of
# the machine-wide /var/lib/swtpm-localca.
attestor_swtpm_profile() {
    local dir; dir=$(realpath "$1")
    sed -e "s#/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem#$dir/ca/swtpm-localca-rootca-cert.pem#" \
        -e "s#/var/lib/swtpm-localca/issuercert.pem#$dir/ca/issuercert.pem#" \
        "$(dirname "${BASH_SOURCE[0]}")/../firmware-profiles/swtpm.toml" >"$2"
}
