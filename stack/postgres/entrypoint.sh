#!/bin/sh
# Initialises the cluster on first start (empty volume), then runs postgres in the foreground.
set -eu

: "${POSTGRES_USER:=postgres}"
# POSTGRES_PASSWORD_FILE: the password in a file (a Docker secret), as the official image does.
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
: "${POSTGRES_DB:=$POSTGRES_USER}"

# A point-in-time restore (finaiflow-ops restore --to-time|--latest) that was cut short leaves this
# mark in the repository: the data directory is half restored and must not be started as it is.
restoring="${PGBACKREST_REPO1_PATH:-/var/lib/pgbackrest}/restore-in-progress"
if [ "${1:-}" = "postgres" ] && [ -e "$restoring" ]; then
  echo "postgres: a point-in-time restore was interrupted ($(cat "$restoring" 2>/dev/null)); run it again:" \
    "finaiflow-ops restore --latest --yes (or --to-time T): it resumes; the data from before it is kept" >&2
  exit 2
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres: POSTGRES_PASSWORD is not set; set it in .env (finaiflow-ops env generate)" >&2
    exit 2
  fi
  echo "postgres: initialising a new cluster in $PGDATA" >&2
  pwfile=$(mktemp)
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$POSTGRES_DB" != "postgres" ]; then
    createdb -U "$POSTGRES_USER" -O "$POSTGRES_USER" "$POSTGRES_DB"
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi

# Continuous WAL archiving into the pgBackRest repository (docs/backups.md): a segment is closed
# and archived at least every PG_ARCHIVE_TIMEOUT seconds when anything was written, so at most that
# much of committed work is only in the cluster's own volume. PG_ARCHIVE=off turns it off.
# Commit timestamps are kept (track_commit_timestamp) so that a restore can say when the last
# transaction it holds was committed.
export PGBACKREST_PG1_USER="$POSTGRES_USER"
# A repository volume made by an older image: its status/ directory, readable by the ops exporter.
repo="${PGBACKREST_REPO1_PATH:-/var/lib/pgbackrest}"
if [ -w "$repo" ]; then
  chmod 0751 "$repo" && mkdir -p "$repo/status" && chmod 0755 "$repo/status"
fi
if [ "$1" = "postgres" ]; then
  shift
  if [ "${PG_ARCHIVE:-on}" = "on" ]; then
    set -- -c archive_mode=on \
      -c "archive_command=/usr/local/bin/pgbackrest-archive-wal %p" \
      -c "archive_timeout=${PG_ARCHIVE_TIMEOUT:-30}" "$@"
  fi
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c wal_level=replica \
    -c track_commit_timestamp=on "$@"
fi
exec "$@"
