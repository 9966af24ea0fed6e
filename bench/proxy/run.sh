#!/usr/bin/env bash
# Proxy overhead (issue 5): wrk against GET /healthz of the test image's app (tools/test-images/app.py)
# through sandpool's proxy, against the same app in the same sandbox directly (wrk runs inside the
# sandbox's network namespace via nsenter and connects to its 127.0.0.1:8080), and, as the peer a
# user would otherwise put in front, through nginx (1 worker, proxy_pass with kept-alive upstream
# connections, also inside that namespace); alternating rounds in one run. Prints per-round
# figures, medians, ratios and sandpool's CPU time per proxied request. Loopback only.
# Usage: bench/proxy/run.sh [BUILD_DIR] [ROUNDS] [SECONDS] [CONNECTIONS]
#        (SERVE_ARGS="--busy-poll-us 0 ..." adds arguments to `sandpool serve`)
set -euo pipefail
build=${1:-build}
rounds=${2:-5}
secs=${3:-5}
conns=${4:-8}
bin="$build/src/sandpool"
here=$(cd "$(dirname "$0")" && pwd)
[[ -x "$bin" ]] || { echo "no $bin: build first" >&2; exit 1; }
command -v wrk >/dev/null && command -v nsenter >/dev/null && command -v nginx >/dev/null ||
  { echo "needs wrk, nsenter and nginx: tools/install-deps.sh bench" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

/usr/bin/python3 "$here/../../tools/make-test-images.py" "$work/images" >/dev/null
cat > "$work/pools.json" <<JSON
{"pools":[{"name":"app","containerType":"CustomContainer","image":"$work/images/pyapp","targetPort":8080,
  "readySessionInstances":1,"maxConcurrentSessions":4,"env":[{"name":"QUIET","value":"1"}]}]}
JSON
"$bin" serve --listen 127.0.0.1:0 --port-file "$work/port" --no-default-pool --pools-file "$work/pools.json" \
  --image-store "$work/store" --log-level warn ${SERVE_ARGS:-} &
pids+=($!)
sp_pid=$!
for _ in $(seq 200); do [[ -s "$work/port" ]] && break; sleep 0.05; done
port=$(cat "$work/port")
via="http://127.0.0.1:$port/pools/app/healthz?identifier=bench-1"
for _ in $(seq 100); do [[ $(curl -s "$via") == ok ]] && break; sleep 0.1; done
# Find the session's container: the app process under our server whose writable layer holds a marker.
curl -s -X PUT --data-binary marker "http://127.0.0.1:$port/pools/app/file/bench-marker?identifier=bench-1" >/dev/null
app_pid=""
for p in $(pgrep -f "/app/app.py"); do
  [[ -e /proc/$p/root/app/data/bench-marker ]] && { app_pid=$p; break; }
done
[[ -n "$app_pid" ]] || { echo "cannot find the session's container process" >&2; exit 1; }

to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000}}'; }
run() {  # prefix-command... url → "rps p50us"
  local url=${*: -1} out rps p50
  out=$("${@:1:$#-1}" wrk -t1 -c"$conns" -d"${secs}s" --latency "$url")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  echo "$rps $p50"
}
lat1() {  # one connection, sequential: the latency a request adds, not queueing
  local url=${*: -1}
  "${@:1:$#-1}" wrk -t1 -c1 -d"${secs}s" --latency "$url" | awk '$1=="50%" {print $2}' | to_us
}
direct_cmd=(nsenter -t "$app_pid" -n)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  upstream app { server 127.0.0.1:8080; keepalive 16; }
  server {
    listen 127.0.0.1:18099;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
"${direct_cmd[@]}" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
for _ in $(seq 100); do "${direct_cmd[@]}" curl -s http://127.0.0.1:18099/healthz >/dev/null 2>&1 && break; sleep 0.05; done
ng_worker=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | head -1)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "machine: $(nproc) cores, $(uname -r); wrk -t1 -c$conns -d${secs}s, $rounds alternating rounds; app pid $app_pid"
declare -a d_rps p_rps n_rps d_p50 p_p50 n_p50 d_l1 p_l1 n_l1 p_cpu n_cpu
per_req() { awk -v t="$1" -v hz="$hz" -v r="$2" -v s="$secs" 'BEGIN{printf "%.1f", t/hz*1e6/(r*s)}'; }
for i in $(seq "$rounds"); do
  read -r r l < <(run "${direct_cmd[@]}" "http://127.0.0.1:8080/healthz"); d_rps+=("$r"); d_p50+=("$l")
  before=$(cpu_ticks "$sp_pid")
  read -r r l < <(run env "$via"); p_rps+=("$r"); p_p50+=("$l")
  after=$(cpu_ticks "$sp_pid")
  p_cpu+=("$(per_req $((after - before)) "$r")")
  before=$(cpu_ticks "$ng_worker")
  read -r r l < <(run "${direct_cmd[@]}" "http://127.0.0.1:18099/healthz"); n_rps+=("$r"); n_p50+=("$l")
  after=$(cpu_ticks "$ng_worker")
  n_cpu+=("$(per_req $((after - before)) "$r")")
  d_l1+=("$(lat1 "${direct_cmd[@]}" "http://127.0.0.1:8080/healthz")")
  p_l1+=("$(lat1 env "$via")")
  n_l1+=("$(lat1 "${direct_cmd[@]}" "http://127.0.0.1:18099/healthz")")
  echo "round $i: direct ${d_rps[-1]} req/s (c1 p50 ${d_l1[-1]} us) | sandpool ${p_rps[-1]} req/s (c1 ${p_l1[-1]} us, ${p_cpu[-1]} us CPU/req) | nginx ${n_rps[-1]} req/s (c1 ${n_l1[-1]} us, ${n_cpu[-1]} us CPU/req)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dr=$(median "${d_rps[@]}"); pr=$(median "${p_rps[@]}"); nr=$(median "${n_rps[@]}")
dl=$(median "${d_l1[@]}"); pl=$(median "${p_l1[@]}"); nl=$(median "${n_l1[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
echo "median throughput (c$conns): direct $dr req/s; sandpool $pr req/s = $(ratio "$pr" "$dr")x direct; nginx $nr req/s = $(ratio "$nr" "$dr")x direct"
echo "median latency (c1 p50): direct $dl us; sandpool $pl us (adds $(awk -v a="$pl" -v b="$dl" 'BEGIN{printf "%.0f", a-b}') us); nginx $nl us (adds $(awk -v a="$nl" -v b="$dl" 'BEGIN{printf "%.0f", a-b}') us)"
echo "median p50 at c$conns: direct $(median "${d_p50[@]}") us, sandpool $(median "${p_p50[@]}") us, nginx $(median "${n_p50[@]}") us"
echo "CPU per proxied request (user+system, the proxy process): sandpool median $(median "${p_cpu[@]}") us, nginx worker $(median "${n_cpu[@]}") us"
