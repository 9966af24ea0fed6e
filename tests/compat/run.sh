#!/usr/bin/env bash
# Runs the npm-client compatibility tests against the sandpool binary given as $1.
# Exit 77 (meson: SKIP) when npm or the npm registry is not available.
if [ -z "${1:-}" ]; then
    echo "usage: $0 /path/to/sandpool" >&2
    exit 2
fi
# Resolve the binary before changing directory, in case it was given relative.
bin="$(realpath -- "$1")" || exit 2
cd "$(dirname "$0")" || exit 1
if ! command -v node >/dev/null 2>&1; then
    echo "SKIP: node is not installed"
    exit 77
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "SKIP: npm is not installed"
    exit 77
fi
if ! npm ci --no-audit --no-fund; then
    echo "SKIP: 'npm ci' failed (no npm registry reachable?)"
    exit 77
fi

SANDPOOL_BIN="$bin" node --test
exit $?
