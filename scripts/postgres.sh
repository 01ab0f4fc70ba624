#!/usr/bin/env bash
# The machine's PostgreSQL cluster, for tests, benchmarks, CI and local use (no systemd, run as root).
#
#   scripts/postgres.sh up       install PostgreSQL if missing, start the cluster, create the role and the
#                                database (idempotent), then print the URL on stdout
#   scripts/postgres.sh down     stop the cluster (data is kept)
#   scripts/postgres.sh url      print the URL (no side effects)
#   scripts/postgres.sh status   one line: running or stopped
#
# Clients connect over TCP (127.0.0.1) with a password: the Unix socket uses peer authentication.
# The role may create databases: tests and benchmarks make a scratch database each (db/testing.py).
# Environment knobs: DLTH_PG_VERSION (default: newest installed, else 15), DLTH_PG_CLUSTER (main),
# DLTH_PG_PORT (5432), DLTH_PG_USER (dlth), DLTH_PG_PASSWORD (dlth), DLTH_PG_DB (dlth).
set -euo pipefail

CLUSTER=${DLTH_PG_CLUSTER:-main}
PORT=${DLTH_PG_PORT:-5432}
PG_USER=${DLTH_PG_USER:-dlth}
PG_PASSWORD=${DLTH_PG_PASSWORD:-dlth}
PG_DB=${DLTH_PG_DB:-dlth}
URL="postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"

say() { printf '[postgres] %s\n' "$*" >&2; }
die() { printf '[postgres] ERROR: %s\n' "$*" >&2; exit 1; }

pg_version() {
    if [[ -n ${DLTH_PG_VERSION:-} ]]; then
        echo "$DLTH_PG_VERSION"
    elif [[ -d /usr/lib/postgresql ]] && ls /usr/lib/postgresql | grep -qE '^[0-9]+$'; then
        ls /usr/lib/postgresql | grep -E '^[0-9]+$' | sort -n | tail -1
    else
        echo 15
    fi
}

install_if_missing() {
    if command -v pg_ctlcluster >/dev/null && [[ -x /usr/lib/postgresql/$(pg_version)/bin/postgres ]]; then
        return
    fi
    say "installing postgresql (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
}

cluster_running() { pg_lsclusters -h | awk -v v="$1" -v c="$CLUSTER" '$1 == v && $2 == c {print $4}' | grep -q online; }

# psql_admin SQL: run SQL as the postgres superuser over the Unix socket (peer authentication).
psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -tA -c "$1"; }

cmd_up() {
    [[ $(id -u) == 0 ]] || die "must run as root (starts the cluster and uses peer authentication as postgres)"
    install_if_missing
    local version
    version=$(pg_version)
    if ! pg_lsclusters -h | awk -v v="$version" -v c="$CLUSTER" '$1 == v && $2 == c' | grep -q .; then
        say "creating cluster $version/$CLUSTER on port $PORT"
        pg_createcluster "$version" "$CLUSTER" --port "$PORT" >&2
    fi
    if ! cluster_running "$version"; then
        say "starting cluster $version/$CLUSTER"
        pg_ctlcluster "$version" "$CLUSTER" start >&2
    fi
    local deadline=$(( $(date +%s) + 30 ))
    until pg_isready -q -h 127.0.0.1 -p "$PORT"; do
        (( $(date +%s) < deadline )) || die "PostgreSQL did not accept TCP connections on 127.0.0.1:$PORT within 30 s"
        sleep 0.2
    done
    if [[ $(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'") != 1 ]]; then
        say "creating role $PG_USER"
        psql_admin "CREATE ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
    else
        psql_admin "ALTER ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
    fi
    if [[ $(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") != 1 ]]; then
        say "creating database $PG_DB"
        psql_admin "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
    fi
    PGPASSWORD=$PG_PASSWORD psql -X -q -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" -tA -c 'SELECT 1' >/dev/null \
        || die "cannot log in as $PG_USER over TCP (check pg_hba.conf for 127.0.0.1/32 password authentication)"
    say "PostgreSQL $version is up"
    echo "$URL"
}

cmd_down() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local version
    version=$(pg_version)
    if command -v pg_ctlcluster >/dev/null && cluster_running "$version"; then
        pg_ctlcluster "$version" "$CLUSTER" stop >&2
    fi
    say "PostgreSQL $version/$CLUSTER is stopped"
}

cmd_status() {
    if command -v pg_lsclusters >/dev/null && cluster_running "$(pg_version)"; then
        echo "running ($URL)"
    else
        echo "stopped"; return 1
    fi
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    url) echo "$URL" ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|url|status" >&2; exit 2 ;;
esac
