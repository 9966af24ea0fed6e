#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, builds the
# release and the sanitizer (ASan + UBSan) builds, and runs every suite in both.
# Tests that need user namespaces, cgroups or /dev/kvm skip (meson SKIP, exit 77) when those are missing.
# Usage: tools/test.sh            (the README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh test

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
passed=0
failed=0
skipped=0
# run_tests DIR [meson test arguments...]: one meson test run, its results added to the counts.
run_tests() {
  local dir=$1
  shift
  if meson test -C "$dir" --print-errorlogs --num-processes 1 "$@"; then :; else status=1; fi
  local log="$dir/meson-logs/testlog.json"
  if [[ -f "$log" ]]; then
    read -r p f s < <(/usr/bin/python3 - "$log" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(p, f, s)
PY
)
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  fi
}
release_dir=
for kind in release asan; do
  echo "=== $kind build" >&2
  dir=$(tools/build.sh "$kind")
  echo "=== $kind tests" >&2
  if [[ "$kind" == release ]]; then
    release_dir=$dir
    run_tests "$dir"
    continue
  fi
  # Under ASan/UBSan the suites that make real sandboxes are left out of the full run: the Python
  # template loads a native module into Debian's python3 (which has no ASan runtime), LeakSanitizer
  # cannot run under the sandbox's seccomp filter, and there is no sanitized static sandpool-init
  # (custom containers). They run in the release build.
  run_tests "$dir" --no-suite sandboxed
  # The sanitized server still meets real sandboxes here: its session suites (process tier and
  # micro-VM), the custom-container suite (the proxy included), the isolation fallbacks, the npm
  # client and both probe suites run against it, with the release build's runtime directory (an
  # unsanitized template module, and the static sandpool-init containers start with);
  # run_probes.py turns LeakSanitizer off inside sandbox-run's sandboxes.
  SANDPOOL_RUNTIME_DIR="$PWD/$release_dir/src/sandbox" run_tests "$dir" --no-rebuild \
    integration-sessions integration-sessions-microvm integration-containers integration-isolation \
    security-probes security-microvm-probes compat-llamaindex-azure
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
