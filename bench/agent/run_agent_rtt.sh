#!/bin/sh
# C++ host <-> Python agent round trip of `print(1)` over a socketpair, sandpool's agent
# and the baseline agent, unpinned and with both processes on one CPU.
# Usage: bench/agent/run_agent_rtt.sh [BUILD_DIR] [N]   (from the source root)
set -eu
build=${1:-build}
n=${2:-20000}
rtt=$build/bench/agent/agent_rtt
# The agent's supervisor lives in the template's library (sandpool_agent.serve).
SANDPOOL_AGENT_LIB=$(cd "$build" && pwd)/src/sandbox/libsandpool_clone.so
export SANDPOOL_AGENT_LIB
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) $(uname -r) nproc=$(nproc)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for agent in src/agent/python/sandpool_agent.py bench/agent/baseline_agent.py; do
  echo "## $agent, unpinned"
  "$rtt" --agent "$agent" --n "$n" --warmup 2000
  echo "## $agent, taskset -c 1 (host and agent on one CPU)"
  taskset -c 1 "$rtt" --agent "$agent" --n "$n" --warmup 2000
done
echo "## src/agent/python/sandpool_agent.py --preload numpy,pandas,matplotlib, unpinned"
"$rtt" --n "$n" --warmup 2000 --agent-arg --preload --agent-arg numpy,pandas,matplotlib
echo "## src/agent/python/sandpool_agent.py, 10 lines of output + a value"
"$rtt" --n "$n" --warmup 2000 --code 'for i in range(10): print(i)
i * 2' --expect '0
1
2
3
4
5
6
7
8
9
'
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
