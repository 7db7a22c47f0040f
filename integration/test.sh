#!/usr/bin/env bash
# The project's test command: installs the servers the integration tests run
# (Debian packages) if missing, then runs every test target.
# slapd's package may start a system slapd on port 389: the tests never use
# it (they start their own servers on ports chosen at run time).
# Also the clients docker, podman, skopeo and containerd (Debian's
# docker.io, podman, skopeo, containerd): the client tests run them as root
# (dockerd and containerd need it), each with private state in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }

missing=()
have docker-registry || missing+=(docker-registry)
have skopeo || missing+=(skopeo)
have slapd || missing+=(slapd)
have ldapadd || missing+=(ldap-utils)
# The real clients of integration/clients.rs: a private dockerd (docker.io),
# podman, containerd and its ctr. The CLI must be the package's own
# /usr/bin/docker (a docker elsewhere on PATH is not the engine's).
[ -x /usr/bin/docker ] && have dockerd || missing+=(docker.io)
have podman || missing+=(podman)
{ have containerd && have ctr; } || missing+=(containerd)
# The store's tests (integration/credentials.rs): a throwaway PostgreSQL
# cluster (initdb + the server from Debian's postgresql, run as the
# postgres user when root), and psql/pg_dump to look inside it.
{ compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && have psql; } || missing+=(postgresql)
# Load balancers in front of several gates (integration/fleet.rs).
have nginx || missing+=(nginx-light)
have haproxy || missing+=(haproxy)
# Web UI browser tests (integration/ui.rs): headless Chromium through chromedriver.
have chromium || missing+=(chromium)
have chromedriver || missing+=(chromium-driver)
# The OpenID provider of integration/oidc.rs: node's oidc-provider (npm).
have node || missing+=(nodejs)
have npm || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing: ${missing[*]}"
    # docker.io and containerd would start system services on install; the
    # tests never use them (they start their own daemons, stopped by PID).
    # Where no policy-rc.d exists, deny service starts for this install only.
    policy=/usr/sbin/policy-rc.d
    added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || status=$?
    [ -n "$added_policy" ] && as_root rm -f "$policy"
    [ "$status" -eq 0 ] || exit "$status"
fi

# oidc-provider, exactly as locked (integration/oidc/package-lock.json).
if [ ! -f integration/oidc/node_modules/oidc-provider/package.json ]; then
    (cd integration/oidc && npm ci --no-audit --no-fund)
fi

cargo test --all-targets
