#!/usr/bin/env bash
# A throw-away PostgreSQL cluster on loopback for the tests: its own data directory,
# socket directory and free port, trust authentication for the `attestor` role on
# 127.0.0.1 only, fsync and synchronous_commit left on (the ledger refuses fsync=off).
# TLS is on (plaintext still accepted): a throw-away CA in DIR/tls/ca.pem issued the
# server's certificate for IP 127.0.0.1 and DIR/tls/client.{pem,key} for the role
# `attestor_cert`, which may log in only over TLS with that certificate.
#
#   scripts/postgres.sh start DIR   # initdb + start; prints postgres://attestor@127.0.0.1:PORT/postgres
#   scripts/postgres.sh pause DIR   # immediate stop (as a crash), keeping the data
#   scripts/postgres.sh resume DIR  # starts a paused cluster again, on the same port
#   scripts/postgres.sh stop DIR    # immediate stop, removes DIR
#
# As root, the server runs as the `postgres` user (PostgreSQL refuses root). Used by
# scripts/test.sh (ATTESTOR_TEST_POSTGRES) and by the test harness when that is unset.
set -euo pipefail

# The server started here runs as long as the tests: descriptors inherited from the
# caller would stay open in it. Among them a test process's swtpm connections, which
# swtpm (it serves one connection at a time) would then never see closed.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    case $fd in 0 | 1 | 2 | 255) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
done

bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$dir" ] && command -v initdb >/dev/null; then
        dir=$(dirname "$(command -v initdb)")
    fi
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] || {
        echo "PostgreSQL server binaries not found: install Debian's postgresql package (scripts/test.sh does)" >&2
        exit 1
    }
    echo "$dir"
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A CA and a server certificate (ECDSA P-256) for 127.0.0.1, readable by the server only.
server_tls() {
    local tls=$1
    mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=attestor-test-postgres-ca -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -days 2 \
        -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=attestor_cert \
        -keyout "$tls/client.key" -out "$tls/client.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$tls/client.ext"
    openssl x509 -req -in "$tls/client.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -days 2 \
        -extfile "$tls/client.ext" -out "$tls/client.pem" 2>/dev/null
    chmod 600 "$tls/server.key"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$tls"
    chmod 644 "$tls/ca.pem" "$tls/client.pem" "$tls/client.key"
}

start() {
    local dir=$1 bin port
    bin=$(bindir)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U attestor --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    server_tls "$dir/tls"
    sed -i '1i hostssl all attestor_cert 127.0.0.1/32 cert' "$dir/data/pg_hba.conf"
    for _ in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 20000))
        echo "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on -c synchronous_commit=on -c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key -c ssl_ca_file=$dir/tls/ca.pem" >"$dir/server.options"
        if server_start "$bin" "$dir"; then
            "$bin/psql" -q -h 127.0.0.1 -p "$port" -U attestor -d postgres \
                -c "CREATE ROLE attestor_cert LOGIN SUPERUSER" >/dev/null
            echo "postgres://attestor@127.0.0.1:$port/postgres"
            return 0
        fi
    done
    echo "PostgreSQL did not start; its log:" >&2
    cat "$dir/server.log" >&2 || true
    exit 1
}

server_start() {
    as_owner "$1/pg_ctl" -D "$2/data" -l "$2/server.log" -w -t 60 -o "$(cat "$2/server.options")" \
        start >/dev/null 2>&1
}

pause() {
    as_owner "$(bindir)/pg_ctl" -D "$1/data" -m immediate -w stop >/dev/null
}

resume() {
    server_start "$(bindir)" "$1" || { cat "$1/server.log" >&2; exit 1; }
}

stop() {
    local dir=$1 bin
    bin=$(bindir)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start "${2:?usage: postgres.sh start DIR}" ;;
    pause) pause "${2:?usage: postgres.sh pause DIR}" ;;
    resume) resume "${2:?usage: postgres.sh resume DIR}" ;;
    stop) stop "${2:?usage: postgres.sh stop DIR}" ;;
    *) echo "usage: scripts/postgres.sh start|pause|resume|stop DIR" >&2; exit 2 ;;
esac
