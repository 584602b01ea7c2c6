#!/bin/sh
# Renders the site from its template, makes a development certificate on first start (a real
# one is installed by `finaiflow-ops tls install`), then runs nginx in the foreground.
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

# The upstream is re-rendered by the rolling update; at start every api container serves.
[ -s /etc/nginx/upstreams/api.conf ] || cat >/etc/nginx/upstreams/api.conf <<'CONF'
upstream api {
    server api:8000;
    keepalive 32;
}
CONF

ssl=/etc/nginx/ssl
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

exec "$@"
