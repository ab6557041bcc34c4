#!/usr/bin/env bash
# Set up .venv and run the test suite (offline, ~5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train,edge,dev
exec .venv/bin/python -m pytest "$@"
