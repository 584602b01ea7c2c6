#!/bin/sh
# Renders the site from its template, makes a self-signed certificate on first start (replaced
# by `finaiflow-ops tls dev-cert` on a staging, `tls issue` in production), then runs nginx.
set -eu

: "${DOMAIN:=localhost}"
: "${RATE_LIMIT_RPS:=20}"
: "${RATE_LIMIT_BURST:=40}"
case "$RATE_LIMIT_RPS$RATE_LIMIT_BURST" in *[!0-9]*) echo "RATE_LIMIT_RPS and RATE_LIMIT_BURST must be whole numbers" >&2; exit 2;; esac

for template in /etc/nginx/templates/*.conf.template; do
  sed -e "s/@DOMAIN@/$DOMAIN/g" -e "s/@RATE_LIMIT_RPS@/$RATE_LIMIT_RPS/g" \
      -e "s/@RATE_LIMIT_BURST@/$RATE_LIMIT_BURST/g" \
      "$template" >"/etc/nginx/conf.d/$(basename "$template" .template)"
done

# One upstream per proxied service, named after it. At start it is the service's DNS name, which
# resolves to every container of the service running now; a rolling update then names the new
# containers and reloads (finaiflow_ops.proxy). Rewritten at every start, restarts included: a
# file naming containers that a later deploy removed would keep nginx from starting.
for spec in ${NGINX_UPSTREAMS:-api:8000}; do
  case "$spec" in
    *[!A-Za-z0-9_.:-]*|:*|*:|*:*:*) ;;
    *:*) printf 'upstream %s {\n    server %s;\n    keepalive 32;\n}\n' "${spec%%:*}" "$spec" \
           >"/etc/nginx/upstreams/${spec%%:*}.conf"; continue;;
  esac
  echo "bad NGINX_UPSTREAMS entry: $spec (want service:port)" >&2; exit 2
done
rm -f /etc/nginx/upstreams/switching  # a deploy's "close your connections" flag dies with nginx

ssl=/etc/nginx/ssl
# `tls install` renames key.pem then cert.pem into place, keeping the old pair as *.prev. Killed
# between the two renames, it would leave a key that does not match its certificate, which
# nginx refuses at start: put the previous pair back in that case.
pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
pubkey_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
if [ -s "$ssl/cert.pem" ] && [ -s "$ssl/key.pem" ] \
   && [ "$(pubkey_of_cert "$ssl/cert.pem")" != "$(pubkey_of_key "$ssl/key.pem")" ] \
   && [ -s "$ssl/cert.pem.prev" ] && [ -s "$ssl/key.pem.prev" ] \
   && [ "$(pubkey_of_cert "$ssl/cert.pem.prev")" = "$(pubkey_of_key "$ssl/key.pem.prev")" ]; then
  echo "nginx: $ssl/key.pem does not match cert.pem (an interrupted install): restoring the previous pair" >&2
  cp -p "$ssl/key.pem.prev" "$ssl/key.pem"
  cp -p "$ssl/cert.pem.prev" "$ssl/cert.pem"
fi
rm -f "$ssl/cert.pem.new" "$ssl/key.pem.new"
if [ ! -s "$ssl/cert.pem" ] || [ ! -s "$ssl/key.pem" ]; then
  echo "nginx: no certificate in $ssl, generating a self-signed development certificate for $DOMAIN" >&2
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN,DNS:localhost,IP:127.0.0.1" \
    -keyout "$ssl/key.pem.tmp" -out "$ssl/cert.pem.tmp" 2>/dev/null
  mv "$ssl/key.pem.tmp" "$ssl/key.pem"
  mv "$ssl/cert.pem.tmp" "$ssl/cert.pem"
  chmod 0644 "$ssl/cert.pem"
fi

# nginx resolves upstream names only when it starts or reloads: the upstream watcher
# (upstream_watcher.py) reloads it when a container behind an upstream comes back at another
# address. It is restarted when it exits (after 2 s, doubling up to 60 s while it keeps dying
# young), and the health check fails when it stops checking. NGINX_UPSTREAM_WATCH_INTERVAL:
# seconds between two checks (default 2); 0 turns it off.
watch_interval=${NGINX_UPSTREAM_WATCH_INTERVAL:-2}
case "$watch_interval" in
  ''|.|*[!0-9.]*|*.*.*) echo "NGINX_UPSTREAM_WATCH_INTERVAL must be a number of seconds (0: off)" >&2; exit 2;;
esac
if [ "${1:-}" = nginx ] && [ "$(printf '%s' "$watch_interval" | tr -d '0.')" != "" ]; then
  (
    resync=""
    delay=2
    while :; do
      started=$(date +%s)
      status=0
      # shellcheck disable=SC2086  # $resync is empty or one option
      nginx-upstream-watcher --interval "$watch_interval" $resync || status=$?
      [ $(($(date +%s) - started)) -lt 60 ] || delay=2
      echo "$(date '+%Y/%m/%d %H:%M:%S') [warn] upstream-watcher: exited (status $status); restarting it in $delay s" >&2
      sleep "$delay"
      delay=$((delay < 30 ? delay * 2 : 60))
      resync=--resync  # nginx ran meanwhile: the new watcher cannot know what it resolved
    done
  ) </dev/null &
elif [ "${1:-}" = nginx ]; then
  # Off: Prometheus' nginx target still answers, and says so.
  mkdir -p /run/nginx-upstream-watcher
  printf '%s\n' "# HELP nginx_upstream_watcher_enabled 1 while the watcher runs (NGINX_UPSTREAM_WATCH_INTERVAL=0 turns it off)." \
    "# TYPE nginx_upstream_watcher_enabled gauge" "nginx_upstream_watcher_enabled 0" >/run/nginx-upstream-watcher/metrics
  chmod 0644 /run/nginx-upstream-watcher/metrics
fi

exec "$@"
