#!/usr/bin/env bash
# Stops what integration/up.sh started, by the PID files in
# $REGISTRY_GATE_STATE (default /tmp/registry-gate-dev). Storage, the gate's
# store (robot accounts, personal tokens, activity) and the LDAP directory
# are kept, unless --purge: then they, the generated configs and the logs go
# too (what up.sh made there; nothing else in the directory is touched).
set -euo pipefail

usage() { echo "usage: integration/down.sh [--purge]" >&2; exit 2; }
PURGE=false
for arg in "$@"; do
    case $arg in
    --purge) PURGE=true ;;
    *) usage ;;
    esac
done

STATE=${REGISTRY_GATE_STATE:-/tmp/registry-gate-dev}

stop() { # PIDFILE PROGRAM
    local pidfile=$1 program=$2 pid
    [ -f "$pidfile" ] || { echo "$program: no PID file"; return 0; }
    pid=$(cat "$pidfile")
    # Only the process we started: alive, and still that program (no PID reuse).
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program"; then
        kill "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid"
        fi
        echo "$program (PID $pid) stopped"
    else
        echo "$program (PID $pid) was not running"
    fi
    rm -f "$pidfile"
}

stop "$STATE/gate.pid" registry-gate
stop "$STATE/slapd.pid" slapd
stop "$STATE/registry.pid" docker-registry

if $PURGE; then
    if [ -d "$STATE" ]; then
        before=$(du -sh "$STATE" 2>/dev/null | cut -f1)
        rm -rf -- "$STATE/storage" "$STATE/slapd" "$STATE/store"
        rm -f -- "$STATE"/registry.yml "$STATE"/gate.log "$STATE"/slapd.log "$STATE"/registry.log
        # The directory itself only when up.sh's files were all it held.
        rmdir -- "$STATE" 2>/dev/null || true
        echo "purged the dev stack's storage, store, LDAP directory and logs in $STATE (was $before)"
    else
        echo "nothing to purge: no $STATE"
    fi
fi
