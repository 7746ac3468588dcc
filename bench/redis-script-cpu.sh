#!/usr/bin/env bash
# redis-server's CPU per call of gw's rate-limit check script (docs/performance.md, "Redis-backed limits").
#
# Needs: redis-server, redis-cli, redis-benchmark, python3. Starts its own redis-server on a free loopback
# port, loads the script as it stands in gateway-core/src/policy/rate_limit/redis_store.rs (or FILE), and
# runs N calls of one request with 3 limits in one key group (6 keys, 24 arguments), pipelined
# (redis-benchmark -P 8 -c 8). Prints the server's CPU (user + system, from /proc) per call.
#
# usage: bench/redis-script-cpu.sh [FILE.lua] [N]    (default: the script in the source, 400000 calls)
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-}
n=${2:-400000}
work=$(mktemp -d)
port=
trap 'redis-cli -p "${port:-0}" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if [[ -z $file ]]; then
  file=$work/check.lua
  python3 - "$file" <<'EOF'
import re, sys
src = open("gateway-core/src/policy/rate_limit/redis_store.rs").read()
m = re.search(r'const CHECK_LUA: &str = r#"(.*?)"#;', src, re.S)
open(sys.argv[1], "w").write(m.group(1))
EOF
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
pid=$(cat "$work/redis.pid")
sha=$(redis-cli -p "$port" script load "$(cat "$file")")
ticks() { local s=0; for t in /proc/$pid/task/*/stat; do s=$((s + $(sed 's/.*) //' "$t" | awk '{print $12+$13}'))); done; echo $s; }
k="gw:rl:{4e4806038978b6c66bc659a8b82a2c68}"
# cost 1, one group of 3 limits; per limit: window, elapsed, max, TTL, shadow, hints (prev, curr)
args=(EVALSHA "$sha" 6 "$k:a:100" "$k:a:99" "$k:b:100" "$k:b:99" "$k:c:100" "$k:c:99" 1 1 3)
for _ in 1 2 3; do args+=(60000 12345 1000000000 167655 0 0 0); done
echo "reply: $(redis-cli -p "$port" "${args[@]}" | tr '\n' ' ')"
hz=$(getconf CLK_TCK)
a=$(ticks)
redis-benchmark -p "$port" -n "$n" -c 8 -P 8 -q "${args[@]}" >/dev/null
b=$(ticks)
echo "$(basename "$file"): $(echo "scale=2; ($b - $a) * 1000000 / $hz / $n" | bc) us of redis-server CPU per call ($n calls)"
