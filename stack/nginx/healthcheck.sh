#!/bin/sh
# The container is healthy when nginx answers over HTTPS and, unless it is turned off, the
# upstream watcher has completed a check within the last 30 s (its metrics file is rewritten
# after every check): a watcher that died and is not coming back, or hangs, shows here.
curl -fsk --resolve localhost:443:127.0.0.1 https://localhost/nginx-health >/dev/null || exit 1
case "$(printf '%s' "${NGINX_UPSTREAM_WATCH_INTERVAL:-2}" | tr -d '0.')" in '') exit 0;; esac
beat=$(stat -c %Y /run/nginx-upstream-watcher/metrics 2>/dev/null) || {
  echo "upstream watcher: no check yet"; exit 1; }
age=$(($(date +%s) - beat))
[ "$age" -le 30 ] || { echo "upstream watcher: last check ${age} s ago"; exit 1; }
