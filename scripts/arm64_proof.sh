#!/usr/bin/env bash
# The arm64 proof: a deploy folder installs and serves on a Debian bookworm arm64
# system, run here under qemu-user emulation. Not part of the test suite (it takes
# 15-30 minutes and needs root, debootstrap, qemu-user-static and the package registries).
#
#   sudo bash scripts/arm64_proof.sh IMAGES_DIR BUNDLE [BUNDLE...]
#
# IMAGES_DIR has one folder per class (e.g. from `edgeport demo-data`); one image per
# class is sent to /predict and must come back with its folder's label.
# For each BUNDLE: `edgeport deploy --device raspberry-pi-4` on this machine, then inside
# the arm64 root the folder's own install.sh (EDGEPORT_SYSTEMD=no: there is no systemd
# in a chroot) installs Debian's arm64 python3 venv with the real aarch64 wheels from
# PyPI (ai-edge-litert for .tflite bundles, onnxruntime for .onnx), and the arm64
# `edgeport serve` answers over 127.0.0.1.
#
# Settings (environment): ARM64_ROOT (default /var/tmp/edgeport-arm64/root, reused when it
# exists), EDGEPORT (the host's edgeport command), MIRROR, RESULTS (JSON written at the end).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: sudo bash $0 IMAGES_DIR BUNDLE [BUNDLE...]" >&2; exit 2; }
IMAGES=$(realpath "$1"); shift
ROOT=${ARM64_ROOT:-/var/tmp/edgeport-arm64/root}
EDGEPORT=${EDGEPORT:-edgeport}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
RESULTS=${RESULTS:-$(dirname "$ROOT")/arm64_proof.json}
PORT=${PORT:-18480}

say() { printf '[arm64 %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf 'arm64 proof: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "Expected root (debootstrap, chroot, binfmt_misc). Received: uid $(id -u)"
t_start=$(date +%s)

# 1. qemu-user through binfmt_misc. The F flag makes the kernel open the interpreter
#    now, so it works inside the chroot without copying qemu into it.
command -v debootstrap >/dev/null && [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || {
    say "installing debootstrap and qemu-user-static"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap qemu-user-static
}
mountpoint -q /proc/sys/fs/binfmt_misc || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "Expected the qemu-aarch64 binfmt entry with the F flag. Received: $(grep flags /proc/sys/fs/binfmt_misc/qemu-aarch64)"

# 2. The arm64 root: Debian bookworm (what Raspberry Pi OS Bookworm 64-bit is built on).
t0=$(date +%s); debootstrap_s=0
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    say "debootstrap bookworm arm64 into $ROOT (10-20 minutes under emulation)"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,curl,procps \
        bookworm "$ROOT" "$MIRROR"
    debootstrap_s=$(( $(date +%s) - t0 ))
else
    say "reusing the arm64 root at $ROOT"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The root trusts what this machine trusts (e.g. a TLS-inspecting proxy's CA): the host's
# bundle is Debian's plus local additions, and SSL_CERT_FILE/REQUESTS_CA_BUNDLE, if set,
# name this path inside the root too.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"

mounts=()
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
# /sys stays out: qemu-user 7.2 does not translate it, so LiteRT's cpuinfo would read
# the host's x86 CPU topology as an ARM one and crash in XNNPACK set-up. Without it,
# cpuinfo logs "failed to parse ... processors" and falls back; a real board has its own.
for m in proc dev; do
    mountpoint -q "$ROOT/$m" || { mount --rbind "/$m" "$ROOT/$m"; mounts+=("$ROOT/$m"); }
done
arch=$(chroot "$ROOT" uname -m)
pyver=$(chroot "$ROOT" python3 -c 'import platform; print(platform.python_version(), platform.machine())')
[ "$arch" = aarch64 ] || die "Expected aarch64 inside the root. Received: $arch"
say "inside the root: uname -m = $arch, python3 $pyver"

results=()
for bundle in "$@"; do
    name=$(basename "$bundle")
    out="$ROOT/root/deploy/$name"
    say "deploy $bundle for raspberry-pi-4 -> $out"
    "$EDGEPORT" deploy "$bundle" --device raspberry-pi-4 --out "$out" --port "$PORT"

    # 3. The deploy folder's own install script, inside the arm64 root.
    prefix="/opt/edgeport-$name"
    t0=$(date +%s)
    chroot "$ROOT" env PIP_FIND_LINKS= EDGEPORT_SYSTEMD=no EDGEPORT_PREFIX="$prefix" bash "/root/deploy/$name/install.sh"
    install_s=$(( $(date +%s) - t0 ))
    wheels=$(chroot "$ROOT" "$prefix/venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(ai-edge-litert|onnxruntime|numpy|tensorflow)' | tr -s ' ' | paste -sd, -)
    say "installed in ${install_s}s: $wheels"

    # 4. Serve under emulation and ask.
    t0=$(date +%s)
    chroot "$ROOT" "$prefix/venv/bin/edgeport" serve "$prefix/bundle" --device raspberry-pi-4 --host 127.0.0.1 --port "$PORT" \
        > "$(dirname "$ROOT")/serve-$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "the arm64 server exited: $(tail -5 "$(dirname "$ROOT")/serve-$name.log")"
        sleep 0.5
    done
    ready_s=$(( $(date +%s) - t0 ))
    server_arch=$(curl -s "http://127.0.0.1:$PORT/v2" | head -c 300)
    correct=0; total=0; answers=()
    for cls in $(ls "$IMAGES"); do
        img=$(ls "$IMAGES/$cls" | head -1)
        reply=$(curl -s --data-binary @"$IMAGES/$cls/$img" -H 'Content-Type: image/jpeg' "http://127.0.0.1:$PORT/predict?top_k=1")
        label=$(printf '%s' "$reply" | python3 -c 'import json,sys; r=json.load(sys.stdin); p=r["predictions"][0]; print(p["label"], p["score"], r["timings_ms"]["inference"])')
        read -r got score inf <<<"$label"
        total=$((total+1)); [ "$got" = "$cls" ] && correct=$((correct+1))
        answers+=("\"$cls/$img\": {\"label\": \"$got\", \"score\": $score, \"inference_ms\": $inf}")
        say "/predict $cls/$img -> $got ($score), inference $inf ms (emulated)"
    done
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
    results+=("{\"bundle\": \"$name\", \"install_s\": $install_s, \"start_to_ready_s\": $ready_s, \"correct\": $correct, \"total\": $total, \"packages\": \"$wheels\", \"answers\": {$(IFS=,; echo "${answers[*]}")}}")
    [ "$correct" = "$total" ] || die "Expected every /predict to answer its folder's label. Received: $correct of $total"
done

total_s=$(( $(date +%s) - t_start ))
cat > "$RESULTS" <<EOF
{"arch": "$arch", "python": "$pyver", "debootstrap_s": $debootstrap_s, "total_s": $total_s,
 "host": "$(uname -m), $(nproc) cores, qemu-user $(qemu-aarch64-static --version | head -1 | awk '{print $3}')",
 "bundles": [$(IFS=,; echo "${results[*]}")]}
EOF
say "done in ${total_s}s (debootstrap ${debootstrap_s}s); results in $RESULTS"
cat "$RESULTS"
