#!/usr/bin/env bash
# gw against nginx and bare Pingora on this machine, side by side (docs/performance.md).
#
# Needs: wrk, nginx, the release build (cargo build --release -p gateway-cli); the Pingora floor is built
# here when missing (cargo build --release --example pingora-floor); redis-server for the Redis target
# (skipped without it). Everything listens on 127.0.0.1.
#
# usage: bench/compare.sh [--rounds N] [--seconds S] [--conns C] [--only LIST] [--gw PATH] [--floor PATH]
#   --rounds N   rounds (default 3); targets are measured round robin (A B C A B C ...) so that machine
#                drift hits all alike, and the median of the rounds is reported
#   --seconds S  seconds per wrk run (default 5)
#   --conns C    concurrent connections (default 32, one wrk thread)
#   --only LIST  comma-separated targets to measure (default all): nginx, floor, route, routes10k,
#                full-local, full-redis
#   --gw PATH    the gw binary (default target/release/gw)
#   --floor PATH the floor binary (default target/release/examples/pingora-floor)
#
# Targets: nginx (plain proxy_pass), floor (bare Pingora), route (examples/bench.yaml), routes10k
# (bench/gen-routes.sh 10000), full-local / full-redis (examples/bench/full-chain-*.yaml: JWT HS256 with a
# role check and a claim header, 3 sliding-window limits keyed by sub, breaker, metrics).
# Output: per target median requests/s, median p99 (ms), CPU µs per request of that target's processes,
# and the ratios to nginx and to the floor.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 secs=5 conns=32 only=all
gw=$root/target/release/gw floor=$root/target/release/examples/pingora-floor
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --gw) gw=$2; shift 2 ;;
    --floor) floor=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
want() { [ "$only" = all ] || [[ ",$only," == *",$1,"* ]]; }
for tool in wrk nginx curl; do
  command -v $tool >/dev/null || { echo "compare: $tool is needed" >&2; exit 1; }
done
[ -x "$gw" ] || { echo "compare: no gw binary at $gw (cargo build --release -p gateway-cli)" >&2; exit 1; }
if want floor && [ ! -x "$floor" ]; then
  echo "compare: building the Pingora floor (cargo build --release --example pingora-floor)" >&2
  (cd "$root" && cargo build -q --release --example pingora-floor)
fi

# a token for the full-chain configs: HS256 with their secret, sub=bench-user, roles=[bench], exp in 2100
token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwicm9sZXMiOlsiYmVuY2giXSwiZXhwIjo0MTAyNDQ0ODAwfQ.FC91d9VSj7zwMWu8Gzrq10ZQHTlfBve1i-0wG4VH5no
run=$(mktemp -d /tmp/gw-compare.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3
            for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cat >"$run/upstream.conf" <<'EOF'
worker_processes 1;
daemon off;
pid upstream.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:3001; location / { return 200 "user-3001\n"; } location = /health { return 200 "ok\n"; } }
  server { listen 127.0.0.1:3002; location / { return 200 "user-3002\n"; } location = /health { return 200 "ok\n"; } }
  server { listen 127.0.0.1:4001; location / { return 200 "order-4001\n"; } location = /health { return 200 "ok\n"; } }
  server { listen 127.0.0.1:4002; location / { return 200 "order-4002\n"; } location = /health { return 200 "ok\n"; } }
}
EOF
cat >"$run/nginx-proxy.conf" <<'EOF'
worker_processes 1;
daemon off;
pid proxy.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream user  { server 127.0.0.1:3001; server 127.0.0.1:3002; keepalive 64; }
  upstream order { server 127.0.0.1:4001; server 127.0.0.1:4002; keepalive 64; }
  server {
    listen 127.0.0.1:8081;
    location /api/user/  { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://user/; }
    location /api/order/ { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://order/; }
  }
}
EOF

answers() { # url [header]
  curl -fs -o /dev/null --max-time 1 ${2:+-H "$2"} --retry 100 --retry-delay 0 --retry-connrefused \
    --retry-max-time 20 "$1"
}
tree() { local p=$1; echo "$p"; for c in $(pgrep -P "$p" 2>/dev/null); do tree "$c"; done; }
ticks() { local s=0 t; for p in $(tree "$1"); do for t in /proc/"$p"/task/*/stat; do
            [ -r "$t" ] && s=$((s + $(sed 's/.*) //' "$t" | awk '{print $12+$13}'))); done; done; echo "$s"; }

nginx -p "$run" -c "$run/upstream.conf" -e "$run/upstream.err" & pids+=($!)
answers http://127.0.0.1:3001/health; answers http://127.0.0.1:4002/health

names=() urls=() tpids=() hdrs=()
start() { # name url header command...
  local n=$1 u=$2 h=$3; shift 3
  "$@" >"$run/$n.log" 2>&1 & pids+=($!)
  names+=("$n"); urls+=("$u"); tpids+=($!); hdrs+=("$h")
}
auth="Authorization: Bearer $token"
want nginx && start nginx http://127.0.0.1:8081/api/user/x "" nginx -p "$run" -c "$run/nginx-proxy.conf" -e "$run/nginx.err"
want floor && start floor http://127.0.0.1:8086/api/user/x "" env ADDR=127.0.0.1:8086 "$floor"
want route && start route http://127.0.0.1:8088/api/user/x "" "$gw" serve "$root/examples/bench.yaml"
if want routes10k; then
  "$root/bench/gen-routes.sh" 10000 127.0.0.1:8089 >"$run/routes-10k.yaml"
  start routes10k http://127.0.0.1:8089/api/user/x "" "$gw" serve "$run/routes-10k.yaml"
fi
want full-local && start full-local http://127.0.0.1:8092/api/user/x "$auth" "$gw" serve "$root/examples/bench/full-chain-local.yaml"
if want full-redis; then
  if command -v redis-server >/dev/null; then
    redis-server --port 6391 --bind 127.0.0.1 --save '' --appendonly no >"$run/redis.log" 2>&1 & pids+=($!)
    sleep 0.5
    start full-redis http://127.0.0.1:8093/api/user/x "$auth" \
      env REDIS_URL=redis://127.0.0.1:6391 "$gw" serve "$root/examples/bench/full-chain-redis.yaml"
  else
    echo "compare: no redis-server, skipping full-redis" >&2
  fi
fi
for i in "${!names[@]}"; do
  if ! answers "${urls[$i]}" "${hdrs[$i]}"; then
    echo "compare: ${names[$i]} (${urls[$i]}) did not answer 200; its log:" >&2
    tail -20 "$run/${names[$i]}.log" >&2 || true; exit 1
  fi
done

declare -A rps p99 cpu
for r in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    n=${names[$i]}
    a=$(ticks "${tpids[$i]}")
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency ${hdrs[$i]:+-H "${hdrs[$i]}"} "${urls[$i]}" 2>&1)
    b=$(ticks "${tpids[$i]}")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    bad=$(awk '/Non-2xx/{print $4}' <<<"$out")
    [ -n "$bad" ] && echo "compare: $n round $r: $bad non-2xx responses" >&2
    rps[$n]+="$(awk '/Requests\/sec/{print $2}' <<<"$out") "
    p99[$n]+="$(awk '$1=="99%"{v=$2; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000; print v}' <<<"$out") "
    cpu[$n]+="$(awk -v t=$((b - a)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN{print t*1e6/hz/n}') "
  done
done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ratio() { [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}' || echo -; }
printf '%-12s %11s %9s %11s %9s %9s\n' target median_rps p99_ms cpu_us/req vs_nginx vs_floor
base_n=$(med <<<"${rps[nginx]:-}"); base_f=$(med <<<"${rps[floor]:-}")
for n in "${names[@]}"; do
  m=$(med <<<"${rps[$n]}")
  printf '%-12s %11.0f %9.3f %11.2f %9s %9s\n' "$n" "$m" "$(med <<<"${p99[$n]}")" "$(med <<<"${cpu[$n]}")" \
    "$(ratio "$m" "$base_n")" "$(ratio "$m" "$base_f")"
done
