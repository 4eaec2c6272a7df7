#!/usr/bin/env bash
# A real PostgreSQL server for local runs and tests, from Debian's packages.
#
#   postgres.sh start DIR PORT   create a cluster in DIR once (role and database "tend"), start it
#   postgres.sh stop DIR         stop it
#
# initdb refuses to run as root, so as root the server runs as the "postgres" user that
# Debian's package creates.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z $bin || ! -x $bin/initdb ]]; then
    apt_install postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  fi
  [[ -x $bin/initdb ]] || die "PostgreSQL server binaries not found after install: apt-get install postgresql"
  echo "$bin"
}

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir=$1 port=$2 bin
  bin=$(pg_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)  # absolute: the walk up to / below ends there
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$dir"
    # The server user must be able to reach its data directory through our folders.
    local d=$dir
    while [[ $d != / ]]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
  fi
  if [[ -f $dir/data/postmaster.pid ]] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    ensure_database "$dir" "$port" "$bin"
    return 0
  fi
  port_open "$port" && die "port $port is taken by another process (another PostgreSQL?): stop it, or set DATABASE_URL to use that server"
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || die "initdb failed (see $dir/initdb.log)"
    mkdir -p "$dir/run"; [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$dir/run"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
max_connections = 200
shared_buffers = 256MB
CONF
  fi
  # Each statement's time, for operators and for `make bench` (bench/pg_time.py); a cluster
  # made before this gets it on its next start.
  grep -q '^shared_preload_libraries' "$dir/data/postgresql.conf" \
    || echo "shared_preload_libraries = 'pg_stat_statements'" >>"$dir/data/postgresql.conf"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
    || die "PostgreSQL did not start (see $dir/postgres.log)"
  ensure_database "$dir" "$port" "$bin"
}

# The role tend and its database, on a fresh cluster and again on one where they were dropped
# (to start the demo afresh, say). `tend migrate` creates a role per service
# (shared/db_roles.py), which takes CREATEROLE; a cluster made before that gets it here too.
ensure_database() {
  local dir=$1 port=$2 bin=$3
  as_owner "$bin/psql" -q -h "$dir/run" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    >/dev/null <<'SQL' || die "could not create the role and the database tend"
SELECT 'CREATE ROLE tend LOGIN CREATEDB PASSWORD ''tend'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tend') \gexec
ALTER ROLE tend CREATEROLE;
SELECT 'CREATE DATABASE tend OWNER tend'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tend') \gexec
SQL
  as_owner "$bin/psql" -q -h "$dir/run" -p "$port" -U postgres -d tend -v ON_ERROR_STOP=1 \
    -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null 2>&1 || true
}

stop() {
  local dir=$1 bin
  [[ -f $dir/data/postmaster.pid ]] || return 0
  bin=$(pg_bin)
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

cmd=${1:-}; shift || true
case $cmd in
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) die "usage: postgres.sh start DIR PORT | stop DIR" ;;
esac
