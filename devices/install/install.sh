#!/usr/bin/env bash
# Installs an edgeport deploy folder on the device it was made for: a venv with
# the pinned edge runtime (never TensorFlow), the edgeport wheel from this
# folder, the bundle, and the systemd service; then waits until the server says
# it is ready. Run it as root from anywhere:  sudo bash install.sh [--insecure-public]
#
# A HOST beyond loopback without an API key is refused unless deploy.env says
# INSECURE_PUBLIC=yes (edgeport deploy --insecure-public) or --insecure-public is given.
#
# Settings come from deploy.env beside this script; the environment overrides:
#   EDGEPORT_PREFIX   where to install (default /opt/edgeport)
#   EDGEPORT_PYTHON   the interpreter for the venv (default from the device profile)
#   EDGEPORT_SYSTEMD  auto | yes | no   (no: install only and start nothing, e.g. in a
#                     container or chroot; the last lines print how to start by hand)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
source "$HERE/deploy.env"

PREFIX=${EDGEPORT_PREFIX:-$PREFIX}
PYTHON=${EDGEPORT_PYTHON:-$PYTHON}
SYSTEMD=${EDGEPORT_SYSTEMD:-auto}
API_KEY_FILE=${API_KEY_FILE:-}
INSECURE_PUBLIC=${INSECURE_PUBLIC:-no}

say() { printf 'edgeport install: %s\n' "$*"; }
die() { printf 'edgeport install: error: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
    case "$arg" in
        --insecure-public) INSECURE_PUBLIC=yes ;;
        *) die "Expected no argument or --insecure-public. Received: $arg" ;;
    esac
done

# Before anything is installed: a model open to the network needs a key, or to be told so.
is_loopback() { case "$1" in 127.*|::1|localhost) return 0 ;; *) return 1 ;; esac; }
if ! is_loopback "$HOST" && [ -z "$API_KEY_FILE" ]; then
    [ "$INSECURE_PUBLIC" = yes ] || die "Expected an API key to serve on $HOST (beyond this device). Received: none; redeploy with --api-key-file FILE, or run: sudo bash $0 --insecure-public"
    say "warning: serving on $HOST without an API key (--insecure-public): anyone who can reach it can use the model"
fi
if [ -n "$API_KEY_FILE" ] && [ ! -s "$HERE/$API_KEY_FILE" ]; then
    die "Expected the API key file $HERE/$API_KEY_FILE. Received: missing or empty (copy the whole deploy folder)"
fi
# The key goes in after the rest (chmod a+rX must never reach it); with none, an earlier one is removed.
install_key() {  # $1: owner, $2: group
    if [ -n "$API_KEY_FILE" ]; then
        install -m 0600 -o "$1" -g "$2" "$HERE/$API_KEY_FILE" "$PREFIX/api-key"
        say "API key installed: $PREFIX/api-key (mode 0600, owner $1)"
    else
        rm -f "$PREFIX/api-key"
    fi
}
KEY_ARGS=""
[ -n "$API_KEY_FILE" ] && KEY_ARGS=" --api-key-file $PREFIX/api-key"

if [ "$SYSTEMD" = auto ]; then
    # systemd is usable only when it is PID 1 (not in a chroot or most containers).
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then SYSTEMD=yes; else SYSTEMD=no; fi
fi
if [ "$SYSTEMD" = yes ] && [ "$(id -u)" != 0 ]; then
    die "Expected to run as root (it creates a user and a systemd unit). Received: uid $(id -u); run: sudo bash $0"
fi

command -v "$PYTHON" >/dev/null || die "Expected $PYTHON on PATH. Received: none; install it: sudo apt install ${APT_PACKAGES}"
"$PYTHON" - "$MIN_PYTHON" <<'PY' || die "Expected Python >= $MIN_PYTHON. Received: $("$PYTHON" -V 2>&1) ($PYTHON)"
import sys
want = tuple(int(x) for x in sys.argv[1].split("."))
sys.exit(0 if sys.version_info[:2] >= want else 1)
PY
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || die "Expected the venv module with ensurepip. Received: missing; install it: sudo apt install ${APT_PACKAGES}"
say "device $DEVICE, $("$PYTHON" -V 2>&1) on $(uname -m), installing into $PREFIX"

mkdir -p "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    "$PYTHON" -m venv "$PREFIX/venv"
fi
# Pinned runtime and server packages from the registry (the Jetson index is named in
# requirements.txt), then edgeport itself from this folder: no build step on the device.
"$PREFIX/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$HERE/requirements.txt"
"$PREFIX/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q --no-deps --force-reinstall "$HERE"/wheels/*.whl
# Fail here, not in the service, if the runtime does not import on this machine.
"$PREFIX/venv/bin/python" -c "import edge_core.bundle as b, sys; bd = b.load_bundle(sys.argv[1]); print('edgeport install: bundle', bd.name, bd.format, 'sha256 ok')" "$HERE/bundle"
"$PREFIX/venv/bin/python" -c "$RUNTIME_CHECK"

# Swap the bundle in whole: the service never sees a half-copied one.
rm -rf "$PREFIX/bundle.new"
cp -r "$HERE/bundle" "$PREFIX/bundle.new"
rm -rf "$PREFIX/bundle.old"
[ -e "$PREFIX/bundle" ] && mv "$PREFIX/bundle" "$PREFIX/bundle.old"
mv "$PREFIX/bundle.new" "$PREFIX/bundle"
rm -rf "$PREFIX/bundle.old"
cp "$HERE/README.md" "$PREFIX/README.md"

URL="http://127.0.0.1:$PORT"
if [ "$SYSTEMD" = no ]; then
    install_key "$(id -un)" "$(id -gn)"
    say "installed; systemd not used here. Start the server by hand:"
    say "  $PREFIX/venv/bin/edgeport serve $PREFIX/bundle --device $DEVICE --host $HOST --port $PORT$KEY_ARGS"
    exit 0
fi

if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$PREFIX" --shell /usr/sbin/nologin "$SERVICE_USER"
fi
for g in $SERVICE_GROUPS; do
    getent group "$g" >/dev/null && usermod -a -G "$g" "$SERVICE_USER"
done
# The service user reads the install; root keeps ownership so the service cannot rewrite its code.
rm -f "$PREFIX/api-key"  # the earlier key, before chmod could open it to all
chmod -R a+rX "$PREFIX"
install_key "$SERVICE_USER" "$SERVICE_USER"

install -m 0644 "$HERE/$UNIT_NAME" "/etc/systemd/system/$UNIT_NAME"
systemctl daemon-reload
systemctl enable "$UNIT_NAME" >/dev/null
systemctl restart "$UNIT_NAME"

say "waiting up to ${READY_TIMEOUT_S} s for $URL/v2/health/ready"
if ! "$PREFIX/venv/bin/python" - "$URL/v2/health/ready" "$READY_TIMEOUT_S" <<'PY'
import json, sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if json.load(r).get("ready"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit(1)
PY
then
    systemctl --no-pager status "$UNIT_NAME" || true
    die "Expected the server to report ready at $URL/v2/health/ready. Received: no answer in ${READY_TIMEOUT_S} s; see: journalctl -u $UNIT_NAME"
fi
say "ready: $URL  (try: curl -s --data-binary @photo.jpg $URL/predict)"
