#!/usr/bin/env bash
# Prepare a Debian host (as root) to run the FinaiFlow stack, idempotently:
#   - a Docker engine (Debian's docker.io), started when it is not running
#   - compose v2 (`docker compose`), from Debian trixie's package when bookworm has none
#   - cron, which runs the daily backup (finaiflow-ops backup schedule), started when it is not
#   - age, which encrypts backups to public keys
#   - with --python-venv: python3-venv, for finaiflow-ops's own virtualenv on the host
# Each step checks first and does nothing when its result is already there; a host that already
# runs Docker keeps its engine, its daemon settings and its images.
#
# One script for both sides: scripts/provision runs it on this machine, and
# `finaiflow-ops host setup` streams it to a remote host (`bash -s`), so they cannot drift apart.
#
# Usage: setup.sh [--python-venv] [--facts]
#   --facts   change nothing: print what is installed and running, one `name=value` a line
#   FINAIFLOW_SETUP_NAME   the prefix of progress lines (default "host setup")
set -euo pipefail

name=${FINAIFLOW_SETUP_NAME:-host setup}
state=/var/lib/finaiflow-ops

say() { printf '[%s] %s\n' "$name" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$name" "$*" >&2; exit 1; }
apt_ready=0
apt_install() {
  [ "$apt_ready" = 1 ] || { apt-get update -qq; apt_ready=1; }
  # needrestart (where installed) would otherwise print warnings about services it cannot query.
  NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# -- facts: each step below and --facts ask the same questions ------------------------------------
has_systemd() { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }
engine_running() { docker info >/dev/null 2>&1; }
has_compose() { docker compose version >/dev/null 2>&1; }
has_cron() { command -v crontab >/dev/null 2>&1; }
cron_running() { kill -0 "$(cat /run/crond.pid 2>/dev/null)" 2>/dev/null; }
has_age() { command -v age >/dev/null 2>&1; }
has_venv() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }

facts() {
  local v
  v=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \([^,]*\).*/\1/p' || true)
  echo "docker_installed=$v"
  v=$(docker version -f '{{.Server.Version}}' 2>/dev/null || true)
  echo "docker_running=$v"
  v=$(docker compose version --short 2>/dev/null || true)
  echo "compose=$v"
  has_cron && echo "cron_installed=yes" || echo "cron_installed="
  if has_systemd; then
    systemctl is-active -q cron 2>/dev/null && echo "cron_running=yes" || echo "cron_running="
  else
    cron_running && echo "cron_running=yes" || echo "cron_running="
  fi
  v=$(age --version 2>/dev/null || true)
  echo "age=$v"
  has_venv && echo "python_venv=yes" || echo "python_venv="
}

# The Debian mirror this host uses and the keyring it trusts it with ("URI KEYRING"): from the
# deb822 file of Debian 12's installer, else from a one-line sources.list (minimal images, hosts
# upgraded from Debian 11). A keyring is optional: without one, apt trusts /etc/apt/trusted.gpg.d.
debian_mirror() {
  local src=/etc/apt/sources.list.d/debian.sources list=/etc/apt/sources.list uri="" key="" options=""
  if [ -r "$src" ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' "$src")
    key=$(awk '/^Signed-By:/{print $2; exit}' "$src")
  elif [ -r "$list" ]; then
    # deb [OPTIONS] URI SUITE COMPONENTS...: the first line of the release itself (not -security).
    read -r uri options < <(sed -n -E \
      's/^deb[[:space:]]+(\[([^]]*)\][[:space:]]+)?([^[:space:]]+)[[:space:]]+(bookworm|stable)[[:space:]].*/\3 \2/p' \
      "$list" | head -n 1) || true
    key=$(printf '%s\n' "$options" | sed -n 's/.*signed-by=\([^[:space:]]*\).*/\1/p')
    [ -n "$key" ] || [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ] \
      || key=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  [ -n "$uri" ] && printf '%s %s\n' "$uri" "$key"
}

main() {
  local python_venv=0 only_facts=0
  for arg in "$@"; do
    case $arg in
      --python-venv) python_venv=1 ;;
      --facts) only_facts=1 ;;
      *) die "unknown option $arg (usage: setup.sh [--python-venv] [--facts])" ;;
    esac
  done
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts the Docker engine)"
  [ -r /etc/debian_version ] || die "this script provisions Debian hosts; install Docker and compose v2 yourself"
  if [ "$only_facts" = 1 ]; then facts; return; fi

  # Docker engine ------------------------------------------------------------------------------
  if ! command -v dockerd >/dev/null 2>&1; then
    say "installing the Docker engine (docker.io)"
    apt_install docker.io
  fi
  if ! engine_running; then
    if has_systemd; then
      say "starting docker.service"
      systemctl start docker
    else
      # No init system (containers, CI sandboxes): run the daemon ourselves, detached.
      say "starting dockerd (log: /var/log/dockerd.log)"
      setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 1 60); do engine_running && break; sleep 1; done
    engine_running || die "the Docker engine did not start within 60 s: see /var/log/dockerd.log"
  fi

  # compose v2 ---------------------------------------------------------------------------------
  if ! has_compose; then
    if apt-cache show docker-compose-plugin >/dev/null 2>&1; then
      apt_install docker-compose-plugin
    else
      # bookworm has only compose v1; trixie's docker-compose 2.x is a static Go binary.
      # Its suite goes in a private apt state so the host's own sources stay untouched.
      say "installing compose v2 from Debian trixie"
      local trixie="$state/apt-trixie"
      mkdir -p "$trixie/parts" "$trixie/lists/partial" "$trixie/cache/archives/partial"
      local mirror uri key
      mirror=$(debian_mirror) || die "found no Debian mirror in /etc/apt/sources.list.d/debian.sources or \
/etc/apt/sources.list; install compose v2 by hand"
      read -r uri key <<<"$mirror"
      { printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\n' "$uri"
        [ -z "$key" ] || printf 'Signed-By: %s\n' "$key"; } >"$trixie/parts/trixie.sources"
      local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$trixie/parts"
                  -o "Dir::State::Lists=$trixie/lists" -o "Dir::Cache=$trixie/cache")
      apt-get "${opts[@]}" update -qq
      (cd "$trixie" && rm -f docker-compose_*.deb && apt-get "${opts[@]}" download -qq docker-compose)
      dpkg -i --force-overwrite "$trixie"/docker-compose_*.deb >/dev/null
    fi
    has_compose || die "compose v2 is still missing after install"
  fi

  # cron: the daily backup is an entry in root's crontab; without systemd nothing starts the daemon.
  has_cron || { say "installing cron (runs the daily backup)"; apt_install cron; }
  if [ ! -d /run/systemd/system ] && ! cron_running; then
    say "starting cron"
    cron
  fi

  # age: backups encrypted to public keys (backup create --encrypt-to, restore --identity).
  has_age || { say "installing age (encrypted backups)"; apt_install age; }

  if [ "$python_venv" = 1 ] && ! has_venv; then
    say "installing python3-venv (finaiflow-ops's virtualenv)"
    apt_install python3-venv
  fi
}

# Standard input is not passed on: streamed with `bash -s`, the rest of this script is on it, and a
# command that reads its input (apt, dpkg) would swallow it. bash reads main() whole before it runs.
main "$@" </dev/null
