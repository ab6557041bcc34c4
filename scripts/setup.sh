#!/usr/bin/env bash
# Create .venv and install edgeport with the given extras (default: train,edge,dev).
# Re-running is cheap: nothing is reinstalled unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,edge,dev}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: no python3 found; install Python 3.11+" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "setup: edgeport needs Python >= 3.11; $PY is $("$PY" --version 2>&1)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.edgeport-installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing edgeport[$extras] into .venv (first time takes a minute)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
  if [[ ",$extras," == *",train,"* ]]; then
    # ONNX sources convert to TFLite through onnx2tf. No onnx2tf release installs beside TensorFlow 2.21 on
    # Python 3.11 by its own pins (1.29 pins TensorFlow 2.19 and numpy 1.26; 2.x needs Python 3.12), so its
    # few imports are installed without them; exporter/source.py runs it in a subprocess.
    .venv/bin/python -m pip install -q --no-deps onnx2tf==1.29.24 onnx-graphsurgeon==0.6.1 sng4onnx==2.0.1 \
      tf-keras==2.21.0 psutil 2>&1 | grep -v "^WARNING: Location" || true
  fi
  .venv/bin/python -c "import edge_core, edge_server, exporter, trainer" \
    || { echo "setup: install failed" >&2; exit 1; }
  touch "$stamp"
fi
