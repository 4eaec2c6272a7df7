# Shared by the local-infrastructure scripts: paths, messages, package installs.
# shellcheck shell=bash
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE="${TEND_STATE_DIR:-$ROOT/.tend}"
mkdir -p "$STATE"

say() { printf '%s\n' "$*" >&2; }
die() { printf 'tend: %s\n' "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT SECONDS PID: wait for the port to open while PID lives.
wait_port() {
  local port=$1 seconds=$2 pid=${3:-}
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    port_open "$port" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.3
  done
  return 1
}

# A stale package list makes installs fail; refresh it at most once per run.
apt_refresh() {
  [[ -n ${TEND_APT_UPDATED:-} ]] && return 0
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "the package list is stale: run 'apt-get update' as root"
    sudo="sudo -n"
  fi
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed: check the network, then retry"
  export TEND_APT_UPDATED=1
}

# apt_install PKG...: install Debian packages when we are allowed to, else explain how.
apt_install() {
  command -v apt-get >/dev/null || die "missing $* and no apt-get here: install $* with your package manager"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing $*: run 'apt-get install -y $*' as root"
    sudo="sudo -n"
  fi
  say "tend: installing $* with apt-get (once) ..."
  apt_refresh
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed: install it by hand, then retry"
}
