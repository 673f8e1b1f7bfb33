#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for the browser tests of the ops dashboard.
#
#   scripts/chromium.sh ensure    install chromium and chromium-driver when /usr/bin/chromium is missing (idempotent)
#   scripts/chromium.sh path      print the browser's path (exit 3 when it is not installed)
#
# Runs as root to install. Concurrent test sessions may call `ensure` together: a lock serializes them, and the
# second finds the browser installed.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
LOCK_FILE="${CHROMIUM_LOCK_FILE:-/tmp/handoff-chromium-install.lock}"

log() { printf 'chromium.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

installed() { [[ -x "$CHROMIUM" ]]; }

ensure() {
    installed && return 0
    exec 9>"$LOCK_FILE"
    flock 9
    installed && return 0
    [[ "$(id -u)" == 0 ]] || die "Chromium is not installed and installing it needs root"
    log "installing chromium and chromium-driver from Debian's packages"
    apt-get update -qq
    # needrestart would otherwise ask about restarting services in the middle of a scripted install.
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
        apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
    installed || die "apt-get finished but $CHROMIUM is still missing"
}

case "${1:-}" in
    ensure) ensure ;;
    path)
        installed || { echo "not installed"; exit 3; }
        echo "$CHROMIUM"
        ;;
    *)
        echo "usage: $0 {ensure|path}" >&2
        exit 2
        ;;
esac
