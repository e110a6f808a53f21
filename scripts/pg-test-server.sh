#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests, from Debian's postgresql package.
#
#   scripts/pg-test-server.sh start DIR [PORT]   initdb into DIR (when empty), start, wait
#   scripts/pg-test-server.sh stop DIR           fast shutdown (keeps DIR)
#   scripts/pg-test-server.sh kill DIR           SIGKILL the postmaster (crash)
#   scripts/pg-test-server.sh destroy DIR        stop and remove DIR
#
# The server listens on 127.0.0.1:PORT only (a free port is picked when none is given) and on
# a Unix socket in DIR. It has TLS on, with a certificate for 127.0.0.1/localhost signed by a
# CA of its own (DIR/ca.crt), and a role `codehub` (password in DIR/password, CREATEDB) that
# must authenticate with SCRAM over TCP. `start` writes DIR/url (postgres://codehub@127.0.0.1:
# PORT/codehub, no password: tests pass it with store.password_file=DIR/password) and prints
# it. PostgreSQL refuses to run as root, so when run as root the server runs as the
# `postgres` user the package creates, and DIR is handed to it.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z $cmd || -z $dir ]]; then
    echo "usage: $0 start|stop|kill|destroy DIR [PORT]" >&2
    exit 2
fi

bindir=
for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/postgres ]] && bindir=$d
done
if [[ -z $bindir ]]; then
    echo "$0: PostgreSQL is not installed (Debian package postgresql; make deps installs it)" >&2
    exit 1
fi

as_owner() {
    if ((EUID == 0)); then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    local port=${1:-}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ ! -f $dir/pgdata/PG_VERSION ]]; then
        rm -rf "$dir/pgdata"
        mkdir -p "$dir/pgdata"
        head -c 18 /dev/urandom | base64 | tr -d '+/=' >"$dir/password"
        chmod 0600 "$dir/password"
        # A CA and a server certificate for 127.0.0.1 and localhost.
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=codehub test CA" \
            -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 30 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
        chmod 0600 "$dir/server.key"
        if ((EUID == 0)); then
            chown -R postgres:postgres "$dir"
            chmod 0755 "$dir"
            chown root:root "$dir/password" "$dir/ca.key"
        fi
        as_owner "$bindir/initdb" -D "$dir/pgdata" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
        cat >>"$dir/pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
max_connections = 400
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
        # The role, over the Unix socket (trust) before any TCP client exists.
        as_owner "$bindir/pg_ctl" -D "$dir/pgdata" -o "-p 5432 -c listen_addresses=''" \
            -l "$dir/server.log" -w start >/dev/null
        as_owner "$bindir/psql" -h "$dir" -p 5432 -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
            -c "CREATE ROLE codehub LOGIN CREATEDB PASSWORD '$(cat "$dir/password")'" \
            -c "CREATE DATABASE codehub OWNER codehub" >/dev/null
        as_owner "$bindir/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null
    fi
    if [[ -z $port ]]; then
        if [[ -f $dir/port ]]; then port=$(<"$dir/port"); else port=$(free_port); fi
    fi
    echo "$port" >"$dir/port"
    # A server left running by an interrupted run is stopped first, so start always means
    # "a fresh postmaster on PORT".
    if [[ -f $dir/pgdata/postmaster.pid ]]; then
        as_owner "$bindir/pg_ctl" -D "$dir/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    as_owner "$bindir/pg_ctl" -D "$dir/pgdata" -o "-p $port" -l "$dir/server.log" -w -t 60 \
        start >/dev/null || {
        tail -20 "$dir/server.log" >&2
        exit 1
    }
    echo "postgres://codehub@127.0.0.1:$port/codehub" >"$dir/url"
    cat "$dir/url"
}

case $cmd in
start) start "${3:-}" ;;
stop) as_owner "$bindir/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null 2>&1 || true ;;
kill)
    pid=$(head -1 "$dir/pgdata/postmaster.pid" 2>/dev/null || true)
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    ;;
destroy)
    as_owner "$bindir/pg_ctl" -D "$dir/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop|kill|destroy DIR [PORT]" >&2
    exit 2
    ;;
esac
