#!/usr/bin/env bash
# Runs the gate's benchmark (benches/README.md): the gate beside the direct
# upstream and nginx, loopback only, a few minutes (--quick: under one).
#
#   benches/run.sh [--install] [bench options: --quick, --only small,get ...]
#
# --install first installs what is missing from Debian: docker-registry
# (required), nginx-light and slapd (optional: without them the nginx
# column and the LDAP figures are left out). Installing nginx or slapd may
# start their system services; the bench never uses those (it starts its
# own servers on ports chosen at run time).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }

args=()
install=false
for a in "$@"; do
    if [ "$a" = "--install" ]; then install=true; else args+=("$a"); fi
done

if $install; then
    missing=()
    have docker-registry || missing+=(docker-registry)
    have nginx || missing+=(nginx-light)
    have slapd || missing+=(slapd)
    have taskset || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

have docker-registry || { echo "benches/run.sh: docker-registry missing (apt-get install docker-registry, or --install)" >&2; exit 2; }
have nginx || echo "benches/run.sh: nginx not installed: no nginx column (apt-get install nginx-light, or --install)"
have slapd || echo "benches/run.sh: slapd not installed: no LDAP figures (apt-get install slapd, or --install)"

exec cargo bench --bench gate -- "${args[@]}"
