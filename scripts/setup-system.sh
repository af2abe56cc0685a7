#!/usr/bin/env bash
# Install the Debian packages the test peers and node-side tests need.  Idempotent and quick:
# when every package is already installed (dpkg-query), it exits without touching apt.
#
#   usage (as root): scripts/setup-system.sh
#
# Why each package:
#   etcd-server etcd-client  Debian etcd 3.4 + etcdctl (fallback etcd; build-peers.sh builds 3.6)
#   iptables ipset iproute2 conntrack   node-side dataplane tests in network namespaces
#   prometheus               PrometheusServer peer (tests/peers/prometheus.py)
#   openssl ca-certificates  cert tooling / Go module proxy TLS
#   curl                     ad-hoc health probes in CI scripts
#   util-linux               flock, used by build-peers.sh
#   git                      `go mod` may fall back to VCS for a module the proxy lacks
set -euo pipefail

PACKAGES=(
    etcd-server etcd-client
    iptables ipset iproute2 conntrack
    prometheus
    openssl ca-certificates curl util-linux git
)

log() { printf '[setup-system] %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
    # dpkg-query rather than `dpkg -s | grep -q`: with pipefail, grep -q closing the pipe early
    # makes dpkg die of SIGPIPE and a present package looks missing.
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if (( ${#missing[@]} == 0 )); then
    log "all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

if (( EUID != 0 )); then
    log "ERROR: must run as root to install: ${missing[*]}"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "installing: ${missing[*]}"
# One `apt-get update` per run, and only because something is missing.  Retry the install once
# after a fresh update in case the package lists were stale.
apt-get update -qq
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    log "install failed; refreshing package lists and retrying once"
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Debian's prometheus / etcd packages may try to start services via invoke-rc.d; nothing runs here
# without systemd, and the tests start their own instances on random loopback ports.
log "done"
