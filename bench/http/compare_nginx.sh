#!/usr/bin/env bash
# End-to-end HTTP comparison: wrk against sandpool GET /healthz and against nginx (1 worker,
# `return 200`) in the same run, alternating rounds. Prints per-round figures, the medians, the
# req/s ratio and both p99s. Loopback only.
# Usage: bench/http/compare_nginx.sh [BUILD_DIR] [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
build=${1:-build}
rounds=${2:-5}
secs=${3:-5}
conns=${4:-32}
bin="$build/src/sandpool"
[[ -x "$bin" ]] || { echo "no $bin: build first" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx: tools/install-deps.sh bench" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:0 --port-file "$work/port" --log-level warn &
pids+=($!)
for _ in $(seq 100); do [[ -s "$work/port" ]] && break; sleep 0.05; done
sp_port=$(cat "$work/port")

ng_port=$((sp_port == 65535 ? 18080 : sp_port + 1))
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ng_port;
    location / { return 200 'ok\n'; }
  }
}
NGX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$ng_port/" >/dev/null 2>&1 && break; sleep 0.05; done

# wrk prints latency percentiles with units; convert to microseconds.
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000}}'; }
run() {  # name url → "rps p50us p99us"
  local out
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$2")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  echo "$rps $p50 $p99"
}

echo "# wrk -t1 -c$conns -d${secs}s, $rounds rounds alternating; $(nproc) cores; $(date -u +%FT%TZ)"
printf "%-6s %-9s %12s %10s %10s\n" round server req/s p50_us p99_us
: > "$work/sp"; : > "$work/ng"
for r in $(seq "$rounds"); do
  a=$(run sandpool "http://127.0.0.1:$sp_port/healthz"); echo "$a" >> "$work/sp"
  printf "%-6s %-9s %12s %10s %10s\n" "$r" sandpool $a
  b=$(run nginx "http://127.0.0.1:$ng_port/"); echo "$b" >> "$work/ng"
  printf "%-6s %-9s %12s %10s %10s\n" "$r" nginx $b
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for col in 1 2 3; do
  eval "sp$col=\$(cut -d' ' -f$col \"$work/sp\" | median)"
  eval "ng$col=\$(cut -d' ' -f$col \"$work/ng\" | median)"
done
echo
echo "median sandpool: $sp1 req/s, p50 ${sp2} us, p99 ${sp3} us"
echo "median nginx:    $ng1 req/s, p50 ${ng2} us, p99 ${ng3} us"
awk -v a="$sp1" -v b="$ng1" -v c="$sp3" -v d="$ng3" 'BEGIN {printf "ratio req/s sandpool/nginx: %.3f   p99 sandpool/nginx: %.3f\n", a/b, c/d}'
