#!/usr/bin/env bash
# Memory and compile-time numbers of docs/performance.md (memory section): `gw validate` peak RSS and time, and
# `gw serve` RSS once it listens, for generated configurations of N routes, plus idle RSS of
# examples/bench.yaml. Needs the release build (cargo build --release -p gateway-cli) and GNU time.
#
#   examples/bench/memory.sh [GW_BINARY] [ROUTES...]      # default: target/release/gw 10000 100000
# The listener moves from 8088 to $PORT (default 18088) so a running bench is not disturbed.
set -euo pipefail
cd "$(dirname "$0")/../.."
gw=${1:-target/release/gw}
shift || true
sizes=("${@:-10000}")
[ $# -eq 0 ] && sizes=(10000 100000)
port=${PORT:-18088}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rustc --edition 2021 -O gateway-core/examples/gen_routes.rs -o "$tmp/gen_routes" 2>/dev/null

# RSS (kB) of a `gw serve` once its listener accepts, after a settle time.
serve_rss() {
    local cfg=$1
    "$gw" serve "$cfg" >"$tmp/serve.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.2
    done
    sleep 3
    local rss hwm threads
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    echo "rss_kb=$rss hwm_kb=$hwm threads=$threads"
}

for n in "${sizes[@]}"; do
    "$tmp/gen_routes" "$n" 2>/dev/null | sed "s/127.0.0.1:8088/127.0.0.1:$port/" >"$tmp/routes-$n.yaml"
    size=$(stat -c %s "$tmp/routes-$n.yaml")
    /usr/bin/time -f "%U %S %M" -o "$tmp/time" "$gw" validate "$tmp/routes-$n.yaml" >/dev/null
    read -r user sys peak <"$tmp/time"
    echo "routes=$n bytes=$size validate: cpu_s=$(echo "$user + $sys" | bc) peak_kb=$peak"
    echo "routes=$n serve: $(serve_rss "$tmp/routes-$n.yaml")"
done
sed "s/127.0.0.1:8088/127.0.0.1:$port/" examples/bench.yaml >"$tmp/bench.yaml"
echo "bench.yaml idle serve: $(serve_rss "$tmp/bench.yaml")"
