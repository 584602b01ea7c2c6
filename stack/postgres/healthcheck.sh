#!/bin/sh
# Docker's health check of the database (every 3 s), and its heartbeat: one row a check in
# postgres.finaiflow_heartbeat (eight days kept). The heartbeat is the reference a point-in-time
# drill compares a restored cluster with (`restore drill --pitr`), and the steady trickle of WAL that
# makes archive_timeout close a segment every PG_ARCHIVE_TIMEOUT seconds, so that the archive's lag
# means something on an idle system too. A cluster in recovery (read-only) is healthy without it.
# Over TCP: the temporary server of the first start listens on the socket only, before the
# database exists, and must not count as ready.
pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" || exit 1
psql -Xq -U "$POSTGRES_USER" -d postgres -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<'SQL' || true
SELECT pg_is_in_recovery() AS recovering \gset
\if :recovering
\else
CREATE TABLE IF NOT EXISTS finaiflow_heartbeat (at timestamptz PRIMARY KEY DEFAULT clock_timestamp());
WITH gone AS (DELETE FROM finaiflow_heartbeat WHERE at < now() - interval '8 days')
INSERT INTO finaiflow_heartbeat DEFAULT VALUES;
\endif
SQL
exit 0
