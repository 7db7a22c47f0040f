#!/usr/bin/env bash
# What splice(2) on uploads would change, measured: pushes of a 1 GiB
# random blob (POST, then one PUT with its length) to Debian's
# docker-registry directly, through a copying TCP relay and through a
# splicing one (relay.rs). Servers on CPU 0, curl on CPU 1, alternating.
# Prints each push's throughput and the CPU per GiB of the registry and the
# relay. See docs/benchmarks.md, "Fifth round". About two minutes.
#
#   benches/splice/run.sh [PUSHES]      (default 3 of each)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pushes=${1:-3}
for tool in docker-registry curl taskset rustc sha256sum ss; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

tmp=$(mktemp -d /dev/shm/splice-relay.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ss -ltn "sport = :$p" | grep -q LISTEN || { echo "$p"; return; }
    done
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, 1/100 s
hz=$(getconf CLK_TCK)

rustc -O --edition 2021 "$here/relay.rs" -o "$tmp/relay"
reg=$(free_port); copy=$(free_port); spl=$(free_port)
cat > "$tmp/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $tmp/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$reg}
YML
taskset -c 0 docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
regpid=$!; pids+=("$regpid")
taskset -c 0 "$tmp/relay" "127.0.0.1:$copy" "127.0.0.1:$reg" copy & cpid=$!; pids+=("$cpid")
taskset -c 0 "$tmp/relay" "127.0.0.1:$spl" "127.0.0.1:$reg" splice & spid=$!; pids+=("$spid")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$reg/v2/" >/dev/null && break; sleep 0.1; done

head -c 1073741824 /dev/urandom > "$tmp/blob"
digest=sha256:$(sha256sum "$tmp/blob" | cut -d' ' -f1)

# push PORT RELAY_PID NAME: one POST + PUT through PORT.
push() {
    local port=$1 relay=$2 name=$3 loc r0 g0 out code secs
    loc=$(curl -sf -D - -o /dev/null -X POST "http://127.0.0.1:$port/v2/bench/$name/blobs/uploads/" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "location" {print $2}')
    loc=${loc#http*://*/}            # absolute or relative: keep the path
    loc="http://127.0.0.1:$port/${loc#/}"
    g0=$(ticks "$regpid"); r0=0; [ "$relay" = - ] || r0=$(ticks "$relay")
    out=$(taskset -c 1 curl -s -o /dev/null -w '%{http_code} %{time_total}' -X PUT \
        -H 'Content-Type: application/octet-stream' -T "$tmp/blob" "$loc&digest=$digest")
    read -r code secs <<<"$out"
    [ "$code" = 201 ] || { echo "push through port $port answered $code" >&2; exit 1; }
    local reg_cpu relay_cpu=-
    reg_cpu=$(awk -v a="$g0" -v b="$(ticks "$regpid")" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}')
    [ "$relay" = - ] || relay_cpu=$(awk -v a="$r0" -v b="$(ticks "$relay")" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}')
    printf '%-8s %6.0f MB/s   registry %s s/GiB   relay %s s/GiB\n' "$name" \
        "$(awk -v s="$secs" 'BEGIN {print 1073.741824 / s}')" "$reg_cpu" "$relay_cpu"
    curl -sf -o /dev/null -X DELETE "http://127.0.0.1:$reg/v2/bench/$name/blobs/$digest" || true
}

for i in $(seq "$pushes"); do
    push "$reg" - direct
    push "$copy" "$cpid" copy
    push "$spl" "$spid" splice
done
