#!/usr/bin/env bash
# The one test command (README: `make test`): provision a PostGIS test database if needed,
# then run ruff, mypy and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[test]\033[0m %s\n' "$*"; }

if [ -z "${SMT_TEST_DATABASE_URL:-}" ]; then
  admin="postgresql://postgres@127.0.0.1:5432/postgres"
  if ! psql "$admin" -qAtc 'select 1' >/dev/null 2>&1; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      log "starting the local PostgreSQL cluster"
      for v in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
      done
      for _ in $(seq 1 30); do psql "$admin" -qAtc 'select 1' >/dev/null 2>&1 && break; sleep 1; done
    fi
  fi
  if psql "$admin" -qAtc 'select 1' >/dev/null 2>&1; then
    has_postgis=$(psql "$admin" -qAtc "select count(*) from pg_available_extensions where name = 'postgis'")
    if [ "$has_postgis" = "0" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      pgver=$(psql "$admin" -qAtc "show server_version_num" | cut -c1-2)
      log "installing PostGIS for PostgreSQL $pgver (apt)"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$pgver-postgis-3" >/dev/null
    fi
    if psql "$admin" -qAtc "select 1 from pg_database where datname = 'smt_test'" | grep -q 1; then :; else
      psql "$admin" -qc "create database smt_test" >/dev/null
    fi
    psql "postgresql://postgres@127.0.0.1:5432/smt_test" -qc "create extension if not exists postgis" >/dev/null
    export SMT_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/smt_test"
    log "test database: $SMT_TEST_DATABASE_URL"
  else
    log "no local PostgreSQL reachable; database tests will be skipped (they fail under CI=true)"
  fi
fi

log "ruff"
ruff check smt_tools tests benchmarks
ruff format --check smt_tools tests benchmarks
log "mypy"
mypy
log "pytest"
python -m pytest "$@"
