#!/usr/bin/env bash
# Proxy overhead (issue 5): wrk against GET /healthz of the test image's app (tools/test-images/app.py)
# through sandpool's proxy, and against the same app in the same sandbox directly (wrk runs inside
# the sandbox's network namespace via nsenter and connects to its 127.0.0.1:8080), alternating
# rounds in one run. Prints per-round figures, medians and the ratios. Loopback only.
# Usage: bench/proxy/run.sh [BUILD_DIR] [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
build=${1:-build}
rounds=${2:-5}
secs=${3:-5}
conns=${4:-8}
bin="$build/src/sandpool"
here=$(cd "$(dirname "$0")" && pwd)
[[ -x "$bin" ]] || { echo "no $bin: build first" >&2; exit 1; }
command -v wrk >/dev/null && command -v nsenter >/dev/null || { echo "needs wrk and nsenter: tools/install-deps.sh bench" >&2; exit 1; }

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
  --image-store "$work/store" --log-level warn &
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
echo "machine: $(nproc) cores, $(uname -r); wrk -t1 -c$conns -d${secs}s, $rounds alternating rounds; app pid $app_pid"
declare -a d_rps p_rps d_p50 p_p50 d_l1 p_l1
for i in $(seq "$rounds"); do
  read -r r l < <(run "${direct_cmd[@]}" "http://127.0.0.1:8080/healthz"); d_rps+=("$r"); d_p50+=("$l")
  read -r r l < <(run env "$via"); p_rps+=("$r"); p_p50+=("$l")
  d_l1+=("$(lat1 "${direct_cmd[@]}" "http://127.0.0.1:8080/healthz")")
  p_l1+=("$(lat1 env "$via")")
  echo "round $i: direct ${d_rps[-1]} req/s p50 ${d_p50[-1]} us (c1 ${d_l1[-1]} us) | proxy ${p_rps[-1]} req/s p50 ${p_p50[-1]} us (c1 ${p_l1[-1]} us)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dr=$(median "${d_rps[@]}"); pr=$(median "${p_rps[@]}")
dl=$(median "${d_l1[@]}"); pl=$(median "${p_l1[@]}")
echo "median throughput: direct $dr req/s, proxy $pr req/s, ratio $(awk -v a="$pr" -v b="$dr" 'BEGIN{printf "%.2f", a/b}')"
echo "median latency, one connection: direct $dl us, proxy $pl us, added $(awk -v a="$pl" -v b="$dl" 'BEGIN{printf "%.0f", a-b}') us"
echo "median p50 at c$conns: direct $(median "${d_p50[@]}") us, proxy $(median "${p_p50[@]}") us"
