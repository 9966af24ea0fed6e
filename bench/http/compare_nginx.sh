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
ng_master=$!
pids+=($ng_master)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$ng_port/" >/dev/null 2>&1 && break; sleep 0.05; done
ng_worker=$(pgrep -P "$ng_master" | head -1)
sp_pid=${pids[0]}

# wrk prints latency percentiles with units; convert to microseconds.
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000}}'; }
# CPU time (user+system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {  # pid url → "rps p50us p99us cpu_us_per_request"
  local out before after
  before=$(cpu_ticks "$1")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$2")
  after=$(cpu_ticks "$1")
  local rps p50 p99 total cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  cpu=$(awk -v t=$((after - before)) -v n="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
  echo "$rps $p50 $p99 $cpu"
}

echo "# wrk -t1 -c$conns -d${secs}s, $rounds rounds alternating; $(nproc) cores; $(date -u +%FT%TZ)"
printf "%-6s %-9s %12s %10s %10s %12s\n" round server req/s p50_us p99_us cpu_us/req
: > "$work/sp"; : > "$work/ng"
for r in $(seq "$rounds"); do
  a=$(run "$sp_pid" "http://127.0.0.1:$sp_port/healthz"); echo "$a" >> "$work/sp"
  printf "%-6s %-9s %12s %10s %10s %12s\n" "$r" sandpool $a
  b=$(run "$ng_worker" "http://127.0.0.1:$ng_port/"); echo "$b" >> "$work/ng"
  printf "%-6s %-9s %12s %10s %10s %12s\n" "$r" nginx $b
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for col in 1 2 3 4; do
  eval "sp$col=\$(cut -d' ' -f$col \"$work/sp\" | median)"
  eval "ng$col=\$(cut -d' ' -f$col \"$work/ng\" | median)"
done
echo
echo "median sandpool: $sp1 req/s, p50 ${sp2} us, p99 ${sp3} us, ${sp4} us CPU per request"
echo "median nginx:    $ng1 req/s, p50 ${ng2} us, p99 ${ng3} us, ${ng4} us CPU per request"
awk -v a="$sp1" -v b="$ng1" -v c="$sp3" -v d="$ng3" -v e="$sp4" -v f="$ng4" \
  'BEGIN {printf "ratio req/s sandpool/nginx: %.3f   p99 sandpool/nginx: %.3f   CPU per request sandpool/nginx: %.3f\n", a/b, c/d, e/f}'
