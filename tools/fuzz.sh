#!/usr/bin/env bash
# Coverage-guided fuzzing of the targets in tests/fuzz with clang's libFuzzer, under ASan + UBSan.
# The test suite only replays each target's seed corpus and a fixed set of mutations; this is the
# long, opt-in run to do after changing a parser.
# Usage: tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 60 s each, every target)
# Each target starts from build-fuzz/corpus/NAME (kept between runs, grown by libFuzzer) and its
# seeds in tests/fuzz/corpus/NAME. A crash or a failed check leaves the input in build-fuzz/crashes/
# and the script exits 1: fix the bug, then add the input to tests/fuzz/corpus/NAME so that the
# test suite replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh fuzz
secs=${1:-60}
shift || true
dir=build-fuzz
if [[ ! -f "$dir/build.ninja" ]]; then
  CC=clang CXX=clang++ meson setup "$dir" -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized -Dbenchmarks=false >/dev/null
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
ninja -C "$dir" $(printf 'tests/fuzz/fuzz-%s ' "${targets[@]}") >&2
mkdir -p "$dir/crashes"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t"
  echo "=== $t ($secs s)" >&2
  if ! "$dir/tests/fuzz/fuzz-$t" -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$dir/crashes/$t-" "$dir/corpus/$t" "tests/fuzz/corpus/$t" 2>"$dir/fuzz-$t.log"; then
    status=1
    grep -E "ERROR|check failed|SUMMARY|artifact" "$dir/fuzz-$t.log" >&2 || tail -20 "$dir/fuzz-$t.log" >&2
  fi
  grep -E "^stat::number_of_executed_units|^stat::new_units_added|cov: .*ft:" "$dir/fuzz-$t.log" | tail -3 >&2 || true
done
exit $status
