#!/usr/bin/env bash
# Development setup on one machine, for trying the gate by hand:
#   - Debian's docker-registry (distribution), open, on 127.0.0.1:5001,
#     storage under $REGISTRY_GATE_STATE (default /tmp/registry-gate-dev);
#   - the gate (release build) on :5000 with config/registry-gate.toml.
# Both run in the background; their PIDs are in $STATE/*.pid and their logs
# in $STATE/*.log. Stop them with integration/down.sh (by those PID files).
# Running it again leaves what is already running alone.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${REGISTRY_GATE_STATE:-/tmp/registry-gate-dev}
UPSTREAM=127.0.0.1:5001
GATE_PORT=5000
CONFIG=config/registry-gate.toml

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. What is missing, from Debian's packages.
missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v curl >/dev/null || missing+=(curl)
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

# 4. The gate.
if running "$STATE/gate.pid" registry-gate; then
    echo "registry-gate already running (PID $(cat "$STATE/gate.pid")); restart it with integration/down.sh first to run a new build"
else
    if port_taken "$GATE_PORT"; then
        echo "Something already listens on port $GATE_PORT. On Debian, installing docker-registry" >&2
        echo "starts its own service there: sudo systemctl disable --now docker-registry" >&2
        exit 1
    fi
    REGISTRY_GATE_UPSTREAM__URL="http://$UPSTREAM" \
        nohup "$BIN" serve --config "$CONFIG" >"$STATE/gate.log" 2>&1 &
    echo $! >"$STATE/gate.pid"
    wait_http "http://127.0.0.1:$GATE_PORT/healthz" registry-gate "$STATE/gate.log" "$STATE/gate.pid"
    echo "registry-gate started on :$GATE_PORT (PID $(cat "$STATE/gate.pid"))"
fi

cat <<MSG

Ready. Logs: $STATE/gate.log, $STATE/registry.log. Stop: integration/down.sh
Users (config/registry-gate.toml): admin/badmin may do anything, test/123 may only pull.

  docker login localhost:$GATE_PORT -u admin -p badmin
  docker tag busybox localhost:$GATE_PORT/anyuser/busybox && docker push localhost:$GATE_PORT/anyuser/busybox

  skopeo copy --dest-tls-verify=false --dest-creds admin:badmin \\
      docker-archive:busybox.tar docker://localhost:$GATE_PORT/anyuser/busybox:latest
  skopeo inspect --tls-verify=false --creds test:123 docker://localhost:$GATE_PORT/anyuser/busybox:latest

By hand: curl -i http://localhost:$GATE_PORT/v2/_catalog   (401 and its challenge), then
  curl -u admin:badmin 'http://localhost:$GATE_PORT/auth?service=Docker%20registry&scope=registry:catalog:*'
  curl -H "Authorization: Bearer TOKEN" http://localhost:$GATE_PORT/v2/_catalog
MSG
