#!/usr/bin/env bash
# Development setup on one machine, for trying the gate by hand:
#   - Debian's docker-registry (distribution), open, on 127.0.0.1:5001,
#     storage under $REGISTRY_GATE_STATE (default /tmp/registry-gate-dev);
#   - a throwaway OpenLDAP slapd on 127.0.0.1:3389 with the example directory
#     (config/ldap/example.ldif: musicians, philosophers, a service account,
#     a group), its config and database under $STATE/slapd;
#   - the gate (release build) on :5000 with config/registry-gate.toml.
# All run in the background; their PIDs are in $STATE/*.pid and their logs
# in $STATE/*.log. Stop them with integration/down.sh (by those PID files).
# Running it again leaves what is already running alone.
set -euo pipefail

STATE=${REGISTRY_GATE_STATE:-/tmp/registry-gate-dev}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd) # slapd.conf needs absolute paths
cd "$(dirname "$0")/.."

UPSTREAM=127.0.0.1:5001
GATE_PORT=5000
LDAP_PORT=3389
LDAP_URL=ldap://127.0.0.1:$LDAP_PORT
CONFIG=config/registry-gate.toml

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. What is missing, from Debian's packages. (Installing slapd also starts
# Debian's own slapd on port 389; this setup does not use it.)
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
missing=()
have docker-registry || missing+=(docker-registry)
have curl || missing+=(curl)
have slapd || missing+=(slapd)
have ldapwhoami || missing+=(ldap-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup or Debian's cargo)" >&2; exit 1; }

# 2. The gate, release build.
cargo build --release
BIN="${CARGO_TARGET_DIR:-target}/release/registry-gate"

mkdir -p "$STATE/storage"

# Is the process in PID file $1 alive and running program $2?
running() {
    [ -f "$1" ] || return 1
    local pid
    pid=$(cat "$1")
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

wait_http() { # URL WHAT LOG PIDFILE
    for _ in $(seq 1 150); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
        kill -0 "$(cat "$4")" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$4"
    echo "$2 did not answer 200 on $1; its log ($3):" >&2
    tail -n 30 "$3" >&2
    exit 1
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# 3. The upstream registry.
if running "$STATE/registry.pid" docker-registry; then
    echo "docker-registry already running (PID $(cat "$STATE/registry.pid"))"
else
    if port_taken 5001; then
        echo "Something already listens on $UPSTREAM; stop it first." >&2
        exit 1
    fi
    cat >"$STATE/registry.yml" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $STATE/storage
  delete:
    enabled: true
http:
  addr: $UPSTREAM
YAML
    nohup docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
    echo $! >"$STATE/registry.pid"
    wait_http "http://$UPSTREAM/v2/" docker-registry "$STATE/registry.log" "$STATE/registry.pid"
    echo "docker-registry started on $UPSTREAM (PID $(cat "$STATE/registry.pid"))"
fi

# 4. A throwaway slapd with the example directory: slapd.conf made from
# config/ldap/slapd.conf.template (see its header), the database loaded once
# with slapadd, slapd in the foreground (-d 256: connections, binds and
# searches go to its log) under nohup.
SLAPD=$(command -v slapd || echo /usr/sbin/slapd)
SLAPADD=$(command -v slapadd || echo /usr/sbin/slapadd)
SLAPD_DIR=$STATE/slapd
if running "$STATE/slapd.pid" slapd; then
    echo "slapd already running (PID $(cat "$STATE/slapd.pid"))"
else
    if port_taken "$LDAP_PORT"; then
        echo "Something already listens on 127.0.0.1:$LDAP_PORT; stop it first." >&2
        exit 1
    fi
    mkdir -p "$SLAPD_DIR/data"
    if [ ! -f "$SLAPD_DIR/slapd.conf" ]; then
        # The rootdn (cn=admin,dc=example,dc=com) password: random, kept
        # beside the config for whoever wants to edit the directory.
        (umask 077 && od -An -tx1 -N12 /dev/urandom | tr -d ' \n' >"$SLAPD_DIR/rootpw")
        sed -e "s|@DIR@|$SLAPD_DIR|" -e 's|@TLS@||' -e "s|@ROOTPW@|$(cat "$SLAPD_DIR/rootpw")|" \
            config/ldap/slapd.conf.template >"$SLAPD_DIR/slapd.conf"
        chmod 600 "$SLAPD_DIR/slapd.conf"
    fi
    if [ ! -f "$SLAPD_DIR/data/data.mdb" ]; then
        "$SLAPADD" -q -f "$SLAPD_DIR/slapd.conf" -l config/ldap/example.ldif
    fi
    nohup "$SLAPD" -d 256 -f "$SLAPD_DIR/slapd.conf" -h "$LDAP_URL/" >"$STATE/slapd.log" 2>&1 &
    echo $! >"$STATE/slapd.pid"
    ready=no
    for _ in $(seq 1 150); do
        if ldapwhoami -x -H "$LDAP_URL" >/dev/null 2>&1; then ready=yes; break; fi
        kill -0 "$(cat "$STATE/slapd.pid")" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ready" != yes ]; then
        rm -f "$STATE/slapd.pid"
        echo "slapd did not answer on $LDAP_URL; its log ($STATE/slapd.log):" >&2
        tail -n 30 "$STATE/slapd.log" >&2
        exit 1
    fi
    echo "slapd started on $LDAP_URL (PID $(cat "$STATE/slapd.pid"))"
fi

# 5. The gate.
if running "$STATE/gate.pid" registry-gate; then
    echo "registry-gate already running (PID $(cat "$STATE/gate.pid")); restart it with integration/down.sh first to run a new build"
else
    if port_taken "$GATE_PORT"; then
        echo "Something already listens on port $GATE_PORT. On Debian, installing docker-registry" >&2
        echo "starts its own service there: sudo systemctl disable --now docker-registry" >&2
        exit 1
    fi
    # The store (robot accounts, personal tokens) lives with the rest of
    # the dev stack's state, not in the checkout.
    REGISTRY_GATE_UPSTREAM__URL="http://$UPSTREAM" \
    REGISTRY_GATE_STORE__URL="sqlite://$STATE/store/registry-gate.db" \
        nohup "$BIN" serve --config "$CONFIG" >"$STATE/gate.log" 2>&1 &
    echo $! >"$STATE/gate.pid"
    wait_http "http://127.0.0.1:$GATE_PORT/healthz" registry-gate "$STATE/gate.log" "$STATE/gate.pid"
    echo "registry-gate started on :$GATE_PORT (PID $(cat "$STATE/gate.pid"))"
fi

cat <<MSG

Ready. Logs: $STATE/gate.log, $STATE/slapd.log, $STATE/registry.log. Stop: integration/down.sh
Users (config/registry-gate.toml): admin/badmin may do anything, test/123 may only pull;
from LDAP ($LDAP_URL), the musicians mozart/password and bach/password push and pull;
the philosophers kant and schopenhauer exist in the directory but are refused.

  docker login localhost:$GATE_PORT -u admin -p badmin     # or -u test -p 123, or -u mozart -p password
  docker tag busybox localhost:$GATE_PORT/anyuser/busybox && docker push localhost:$GATE_PORT/anyuser/busybox

  skopeo login --tls-verify=false -u mozart -p password localhost:$GATE_PORT
  skopeo copy --dest-tls-verify=false --dest-creds admin:badmin \\
      docker-archive:busybox.tar docker://localhost:$GATE_PORT/anyuser/busybox:latest
  skopeo copy --dest-tls-verify=false --dest-creds mozart:password \\
      docker-archive:busybox.tar docker://localhost:$GATE_PORT/mozart/busybox:latest
  skopeo inspect --tls-verify=false --creds test:123 docker://localhost:$GATE_PORT/anyuser/busybox:latest

A robot account for CI (docs/tokens.md), its secret on the last line:
  REGISTRY_GATE_STORE__URL=sqlite://$STATE/store/registry-gate.db \
      $BIN token create --robot ci --scope 'repository:team/*:pull,push'
  docker login localhost:$GATE_PORT -u robot+ci -p rgt_...

LDAP checks (docs/ldap.md), run from $PWD: what the gate sees, and whether mozart would log in:
  $BIN ldap-check
  echo password | $BIN ldap-check mozart --password-stdin
  ldapsearch -x -H $LDAP_URL -D uid=serviceaccount,ou=it,dc=example,dc=com -w password \\
      -b ou=musicians,dc=example,dc=com '(objectClass=person)' uid mail memberOf
The directory's rootdn is cn=admin,dc=example,dc=com, password in $SLAPD_DIR/rootpw.

By hand: curl -i http://localhost:$GATE_PORT/v2/_catalog   (401 and its challenge), then
  curl -u admin:badmin 'http://localhost:$GATE_PORT/auth?service=Docker%20registry&scope=registry:catalog:*'
  curl -H "Authorization: Bearer TOKEN" http://localhost:$GATE_PORT/v2/_catalog
MSG
