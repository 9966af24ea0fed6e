#!/usr/bin/env bash
# Runs the micro-VM benchmarks and appends them to bench/results/vmm-<date>.md (a section of the
# day's file: the file holds every run of the day, and other results too).
# Usage: bench/vmm/run.sh [BUILD_DIR] [RUNS]     (needs /dev/kvm; build first: ninja -C build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
runs=${2:-20}
out=$root/bench/results/vmm-$(date -u +%Y-%m-%d).md
mkdir -p "$root/bench/results"
{
  [ -s "$out" ] && echo
  echo "## Micro-VM (kernel-less KVM) benchmarks, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: \`bench/vmm/run.sh $build $runs\` on $(nproc) vCPUs, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)."
  echo "/dev/kvm: kvm-pvm (software hypervisor, see shared/research/pvm-lab.md). Other engineers' builds share the machine."
  echo
  /usr/bin/python3 "$here/bench.py" "$build" "$runs"
  cat "$here/NOTES.md"
} | tee -a "$out"
echo "appended to $out" >&2
