#!/usr/bin/env bash
# Configures (once) and builds one build directory.
# Usage: tools/build.sh release|asan   → build/ or build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
werror=false
[[ "${CI:-}" == true ]] && werror=true
case "$kind" in
  release) dir=build; opts=(-Dbuildtype=release -Dwerror=$werror) ;;
  asan) dir=build-asan; opts=(-Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=$werror) ;;
  *) echo "usage: $0 release|asan" >&2; exit 2 ;;
esac
if [[ ! -f "$dir/build.ninja" ]]; then
  meson setup "$dir" "${opts[@]}" >/dev/null
else
  meson configure "$dir" "${opts[@]}" >/dev/null
fi
ninja -C "$dir" -j "$(nproc)" >&2
echo "$dir"
