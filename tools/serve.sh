#!/usr/bin/env bash
# From a fresh Debian 12 machine: installs what is missing, builds the release binary and starts
# `sandpool serve` on 127.0.0.1:8080 in the foreground. Extra arguments go to `sandpool serve`.
# Usage: tools/serve.sh [serve options]     (Ctrl-C or SIGTERM stops it gracefully)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh build
dir=$(tools/build.sh release)
exec "$dir/src/sandpool" serve --listen 127.0.0.1:8080 "$@"
