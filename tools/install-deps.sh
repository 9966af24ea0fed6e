#!/usr/bin/env bash
# Installs the Debian packages sandpool needs to build, run, test and benchmark.
# Runs apt-get only for what is missing, so a second run is quick and offline.
# Usage: tools/install-deps.sh [build|test|bench|fuzz]   (default: build)
set -euo pipefail

build_pkgs=(
  build-essential pkg-config meson ninja-build
  libuv1-dev libsimdjson-dev libmimalloc-dev libbenchmark-dev doctest-dev
  libseccomp-dev libarchive-dev node-llhttp
  python3 python3-numpy python3-pandas python3-matplotlib
  iproute2 util-linux
)
test_pkgs=( curl busybox-static )
bench_pkgs=( wrk nginx-light bubblewrap python3-ipykernel python3-jupyter-client hyperfine qemu-system-x86 )
fuzz_pkgs=( clang libclang-rt-dev )  # libFuzzer (tools/fuzz.sh)

want=("${build_pkgs[@]}")
case "${1:-build}" in
  build) ;;
  test) want+=("${test_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  fuzz) want+=("${test_pkgs[@]}" "${fuzz_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|bench|fuzz]" >&2; exit 2 ;;
esac

# Node.js may come from another repository that bundles npm; only ask Debian for it when absent.
if [[ "${1:-build}" != build ]] && ! command -v npm >/dev/null; then want+=(nodejs npm); fi

missing=()
for p in "${want[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
