#!/bin/sh
# Writes the password into a private config file (not argv, which `ps` shows), then runs redis.
set -eu
# REDIS_PASSWORD_FILE: the password in a file (a Docker secret), as the official images do.
if [ -z "${REDIS_PASSWORD:-}" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDIS_PASSWORD=$(cat "$REDIS_PASSWORD_FILE")
fi
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "redis: REDIS_PASSWORD is not set; set it in .env (finaiflow-ops env generate)" >&2
  exit 2
fi
umask 077
conf=$(mktemp /tmp/redis.XXXXXX.conf)
cat >"$conf" <<CONF
bind 0.0.0.0 ::
protected-mode no
port 6379
dir /data
appendonly yes
appendfsync everysec
save 900 1
maxmemory-policy allkeys-lru
requirepass $REDIS_PASSWORD
CONF
exec redis-server "$conf" "$@"
