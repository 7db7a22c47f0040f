#!/usr/bin/env bash
# The project's test command: installs the servers the integration tests run
# (Debian packages) if missing, then runs every test target.
# slapd's package may start a system slapd on port 389: the tests never use
# it (they start their own servers on ports chosen at run time).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }

missing=()
have docker-registry || missing+=(docker-registry)
have skopeo || missing+=(skopeo)
have slapd || missing+=(slapd)
have ldapadd || missing+=(ldap-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo test --all-targets
