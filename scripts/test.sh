#!/usr/bin/env bash
# Set up .venv and run the test suite (offline; 391 tests on two workers, about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train,edge,dev
# Host tools: the suite needs only bash and Python. The one optional tool it uses is Debian's
# chromium (tests/test_server_page.py, driven by playwright from the [dev] extra): installed here
# when missing and we can (root + apt-get); failing that, the page tests skip with the reason.
# No test needs rsync, scp/ssh, qemu, systemd or promtool: `deploy --target` is tested with the
# commands faked and both the rsync and the scp branch forced; qemu (scripts/arm64_proof.sh) is used
# outside the suite only. tests/test_attack.py caps the server with a memory cgroup where one is
# writable and skips with the reason where not. ../shared (real weights and images) is optional:
# the tests that read it skip with a one-line reason where it is absent.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing chromium for the page test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "test: could not install chromium; the page test will skip" >&2
fi
# Two workers (pytest-xdist), a test file each at a time: most tests wait on a subprocess or a socket
# and use one core, so one worker left the second core idle half the time. --dist loadfile keeps each
# file's module fixtures (a transferred model, a running server) in one worker; files start in the
# order tests/conftest.py gives them (the longest first), not xdist's by test count.
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
