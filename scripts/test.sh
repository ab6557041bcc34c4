#!/usr/bin/env bash
# Set up .venv (and the side venvs below) and run the test suite (the tests run offline; ~560 tests on three workers, ~11 minutes on 2 cores with ../shared beside the checkout, a few more for the first setup).
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
# Client libraries that cannot share .venv (each pins a protobuf TensorFlow 2.21 cannot use) get a venv
# of their own, made once and reused: the tests that drive them run them in a subprocess, and skip
# with the reason where the venv could not be made (no package registry).
side_venv() {  # side_venv DIR ENV_VAR IMPORT PIP_SPEC...
  local dir="$1" var="$2" module="$3"
  shift 3
  if [ "$(cat "$dir/.edgeport-spec" 2>/dev/null)" != "$*" ] || ! "$dir/bin/python" -c "import $module" >/dev/null 2>&1; then
    echo "test: installing $* into $dir (for the tests that drive it)"
    if ! { rm -rf "$dir" && .venv/bin/python -m venv "$dir" && "$dir/bin/python" -m pip install -q "$@"; } >/dev/null 2>&1; then
      echo "test: could not install $*; its tests will skip" >&2
      rm -rf "$dir"
      return 0
    fi
    echo "$*" > "$dir/.edgeport-spec"
  fi
  export "$var=$PWD/$dir/bin/python"
}
side_venv .venv-tflite-support EDGEPORT_TFLITE_SUPPORT_PYTHON tflite_support.metadata_writers tflite-support==0.4.4
side_venv .venv-kserve EDGEPORT_KSERVE_PYTHON kserve kserve==0.21.0  # ~40 s once; protobuf 6 beside .venv's 7
# Three workers (pytest-xdist) on two cores, a test file each at a time: most tests wait on a subprocess
# or a socket, so two workers left the cores idle part of the time. The whole suite took 10:56 with three on a
# 2-core Intel Xeon, and 16:35-18:43 with two on a 2-core AMD EPYC (two CPUs: not a same-machine ratio). --dist loadfile keeps each
# file's module fixtures (a transferred model, a running server) in one worker; files start in the
# order tests/conftest.py gives them (the longest first), not xdist's by test count.
exec .venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
