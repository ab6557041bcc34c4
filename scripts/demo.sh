#!/usr/bin/env bash
# The whole product on built-in demo data, on this machine:
# generate images -> train -> export int8 TFLite -> start the server ->
# send one real image over HTTP -> print the answer -> stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train,edge,dev
export TF_CPP_MIN_LOG_LEVEL=2
E=.venv/bin/edgeport
W=demo
PORT="${PORT:-8765}"
rm -rf "$W"
echo "== 1/5 demo data"
$E demo-data "$W/data" --classes 3 --per-class 1000 --size 64
# Held-out "photos": another seed (never trained on) and larger than the model's input, as a
# camera's are. The export verifies on them, and the server decodes them at reduced scale.
$E demo-data "$W/photos" --classes 3 --per-class 100 --size 320 --seed 7
# --weights auto: ImageNet weights when Keras' cache ($KERAS_HOME/models, default ~/.keras/models) has
# them, and then the quadrant rule decides how to fine-tune and says why; else one line, from scratch.
echo "== 2/5 train (MobileNetV2 x0.35, 64 px; ImageNet weights if Keras' cache has them, else from scratch)"
$E train "$W/data" --backbone mobilenet_v2 --alpha 0.35 --image-size 64 --weights auto \
   --epochs 24 --augment --out "$W/runs" --name shapes
echo "== 3/5 export (int8 TFLite, calibrated on the training images, verified against Keras on the photos)"
$E export "$W/runs/shapes" --format tflite --precision int8 --images "$W/photos" --out "$W/bundles/shapes.tflite-int8"
echo "== 4/5 serve on 127.0.0.1:$PORT"
$E serve "$W/bundles/shapes.tflite-int8" --port "$PORT" > "$W/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
# A held-out photo: the model never trained on it.
photos=("$W"/photos/triangle/*.jpg)
image=${photos[0]}
echo "== 5/5 POST $image to http://127.0.0.1:$PORT/predict"
.venv/bin/python - "$PORT" "$image" <<'PY'
import json, sys, time, urllib.request
port, image = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
for _ in range(300):  # wait until the server says it is ready
    try:
        if json.load(urllib.request.urlopen(base + "/v2/health/ready", timeout=1)).get("ready"):
            break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("server did not become ready; see demo/server.log")
req = urllib.request.Request(base + "/predict?top_k=3", data=open(image, "rb").read(), headers={"Content-Type": "image/jpeg"})
answer = json.load(urllib.request.urlopen(req, timeout=10))
print(json.dumps(answer, indent=2))
top = answer["predictions"][0]
print(f"\nthe server says: {top['label']} ({top['score']:.1%}) for {image}")
PY
grep -m1 "^edgeport: decoding" "$W/server.log" || true  # which decoding --decode auto chose, and why
