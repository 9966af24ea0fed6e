#!/usr/bin/env bash
# Builds the custom-container test images (see tools/make-test-images.py) into OUTDIR.
# Usage: tools/make-test-images.sh [OUTDIR]   (default: build/test-images)
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 tools/make-test-images.py "${1:-build/test-images}"
