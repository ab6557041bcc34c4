#!/usr/bin/env bash
# Set up .venv and run the test suite (offline, about 7 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train,edge,dev
# The page test drives Debian's chromium. Install it when missing and we can (root + apt-get);
# failing that, that one test skips with the reason.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing chromium for the page test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "test: could not install chromium; the page test will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
