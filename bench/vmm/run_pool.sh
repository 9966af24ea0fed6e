#!/usr/bin/env bash
# Pool-level micro-VM benchmarks against the process tier, same run (issue 6 E); prints markdown.
# Usage: bench/vmm/run_pool.sh [BUILD_DIR] [CLONES] [EXECUTES]    (root, /dev/kvm; build first)
# GAP_MS=N: ms between a sandbox's return and the next request (default 20; a micro-VM spare takes ≈ 20 ms to make)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
clones=${2:-40}
executes=${3:-300}
echo "### Pool level: micro-VM vs process tier, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Command: \`GAP_MS=${GAP_MS:-20} bench/vmm/run_pool.sh $build $clones $executes\`. Load at start: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "Clone to ready and idle memory (\`vmm_pool_bench\`: PoolSpawner as the server drives it, pool memory 2 GiB, guest 1984 MiB):"
echo
err=$(mktemp)
# SANDPOOL=path runs another sandpool binary (e.g. the previous commit's) under this bench.
SANDPOOL_RUNTIME_DIR="$build/src/sandbox" "$build/bench/vmm/vmm_pool_bench" "${SANDPOOL:-$build/src/sandpool}" "$root/src/agent/python" \
  --n "$clones" --idle 8 --gap-ms "${GAP_MS:-20}" 2>"$err"
/usr/bin/python3 - "$err" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
def stats(v):
    v = sorted(v)
    return "%.3f ms median (p10 %.3f, p90 %.3f, n=%d)" % (statistics.median(v), v[len(v) // 10], v[len(v) * 9 // 10], len(v))
ahead = [float(m) for m in re.findall(r"vmm: clone ([0-9.]+) ms(?:,| \(made)", text)]
guest = [float(m) for m in re.findall(r"guest ahead ([0-9.]+) ms", text)]
made = [float(m) for m in re.findall(r"spare made in ([0-9.]+) ms", text)]
after = [float(m) for m in re.findall(r"request -> VM ready to run ([0-9.]+) ms", text)]
hello = [float(m) for m in re.findall(r"its agent's Hello sent after ([0-9.]+) ms more", text)]
other = [float(m) for m in re.findall(r"vmm: clone ([0-9.]+) ms \(restart", text)]
if ahead:
    print("\nInside each VMM child: `Vm::clone` of the template VM (memory map, KVM VM + memslots + vCPU, registers "
          "and descriptors), made by the child forked ahead before its request arrives: " + stats(ahead) + ".")
if guest:
    print("\nInside each VMM child, before its request: its guest (the agent) from GO to its pause before the session (its "
          "warm-up cell included): " + stats(guest) + "; the whole spare, from its fork to that pause (scratch mounts and "
          "namespaces, clone, guest): " + stats(made) + ".")
if after:
    print("\nInside each VMM child, from its request to its VM ready to run (what isolation remains: cgroup join, the cgroup namespace, "
          "ids, capabilities, the seccomp lock; the session socket attached; then its agent's last steps and Hello come before its "
          "ready record; a child killed right after its Hello may not get to log it): " + stats(after) + ".")
if hello:
    print("\nInside each VMM child, from its VM ready to run to its agent's Hello sent and first wait for a request (then the "
          "ready record): " + stats(hello) + ".")
if other:
    print("\nInside each VMM child: `Vm::clone` after its request (memory map, KVM VM + memslots + vCPU, registers and descriptors): " + stats(other) + ".")
PY
rm -f "$err"
echo
echo "Warm \`print(1)\` execute over HTTP, one session per pool, alternating (\`pool_execute.py\`):"
echo
/usr/bin/python3 "$here/pool_execute.py" "$build" --n "$executes"
