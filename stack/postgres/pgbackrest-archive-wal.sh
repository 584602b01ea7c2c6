#!/bin/sh
# archive_command: pgbackrest archive-push of one WAL segment, and a status line the ops exporter
# reads (the repository itself is the postgres user's only): when the last segment was archived,
# and when the command last failed and how many times it has. A failing command is retried by
# PostgreSQL, WAL waits in pg_wal meanwhile: the alert on these facts fires before the disk fills.
status="${PGBACKREST_REPO1_PATH:-/var/lib/pgbackrest}/status"
umask 022
mkdir -p "$status"
if pgbackrest --stanza="${PGBACKREST_STANZA:-main}" archive-push "$1"; then
  printf '%s %s\n' "$(date +%s)" "${1##*/}" >"$status/archived.tmp" && mv -f "$status/archived.tmp" "$status/archived"
  exit 0
fi
failures=$(( $(cut -d' ' -f2 "$status/failed" 2>/dev/null || echo 0) + 1 ))
printf '%s %s %s\n' "$(date +%s)" "$failures" "${1##*/}" >"$status/failed.tmp" && mv -f "$status/failed.tmp" "$status/failed"
exit 1
