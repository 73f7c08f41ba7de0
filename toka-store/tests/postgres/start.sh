#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server for toka-store's PostgreSQL tests and prints the
# connection URL to export as TOKA_TEST_POSTGRES (the only line on standard output).
#
#   eval "export TOKA_TEST_POSTGRES=$(toka-store/tests/postgres/start.sh)"
#
# Debian's `postgresql` package is installed with apt-get when no server is found. The
# cluster is created with initdb in $TOKA_PG_DIR (default /tmp/toka-pg-test), owned by the
# `postgres` OS user when run as root (PostgreSQL refuses to run as root), listening on
# 127.0.0.1:$TOKA_PG_PORT (default 55432) only, with scram-sha-256 password login for the
# role `toka` and its database `toka`. Re-running reuses a running cluster. Stop it with
#   pg_ctl -D "$TOKA_PG_DIR/data" stop    (as the owning user)
set -euo pipefail

dir="${TOKA_PG_DIR:-/tmp/toka-pg-test}"
port="${TOKA_PG_PORT:-55432}"
password="${TOKA_PG_PASSWORD:-toka-test-password}"

bindir=""
find_bindir() {
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
}
find_bindir
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "installing PostgreSQL (apt-get install postgresql)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    find_bindir
fi
[ -x "$bindir/initdb" ] || { echo "no PostgreSQL server binaries found" >&2; exit 1; }

# Run a command as the cluster's owner.
if [ "$(id -u)" = 0 ]; then
    owner=postgres
    as_owner() { runuser -u "$owner" -- "$@"; }
else
    owner="$(id -un)"
    as_owner() { "$@"; }
fi

mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then chown "$owner" "$dir"; fi
data="$dir/data"
socket="$dir"

if [ ! -s "$data/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$password" >"$pwfile"
    if [ "$(id -u)" = 0 ]; then chown "$owner" "$pwfile"; fi
    as_owner "$bindir/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >&2
    rm -f "$pwfile"
fi

if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $socket -c max_connections=200 -c fsync=on" start >&2
fi

psql_owner() { as_owner "$bindir/psql" -h "$socket" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_owner -c "SELECT 1 FROM pg_roles WHERE rolname = 'toka'")" != 1 ]; then
    psql_owner -c "CREATE ROLE toka LOGIN PASSWORD '$password'" >&2
fi
if [ "$(psql_owner -c "SELECT 1 FROM pg_database WHERE datname = 'toka'")" != 1 ]; then
    psql_owner -c "CREATE DATABASE toka OWNER toka" >&2
fi

echo "postgres://toka:$password@127.0.0.1:$port/toka"
