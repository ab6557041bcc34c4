"""Shared fixtures. The expensive ones (a trained model, exported bundles, a
running server) are built once per session and reused.

Everything is offline: models are built with weights=None, small inputs and
small width multipliers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from trainer.pretrained import cache_name, temporary_keras_home

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Real data beside the checkout (../shared): ImageNet weights for MobileNetV2 0.35 and labelled image
# sets. Read from there, never copied into the repository; tests that need them skip where absent.
SHARED = Path(os.environ.get("EDGEPORT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_0.35_224_no_top.tm.h5"
SHARED_DATASETS = SHARED / "datasets"
# Keras' own file name for that checkpoint: with it in $KERAS_HOME/models, weights="imagenet"
# loads it through Keras' real loading code, offline.
KERAS_IMAGENET_NAME = cache_name("mobilenet_v2", 0.35, 224)
# A temporary KERAS_HOME for the whole session (and its subprocesses), seeded with the shared
# checkpoint when there is one. Set before anything imports Keras, which reads it at import.
KERAS_HOME = temporary_keras_home(SHARED_WEIGHTS, KERAS_IMAGENET_NAME)
HAVE_IMAGENET = (KERAS_HOME / "models" / KERAS_IMAGENET_NAME).is_file()
needs_imagenet = pytest.mark.skipif(not HAVE_IMAGENET, reason=f"no ImageNet weights at {SHARED_WEIGHTS}")
needs_datasets = pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason=f"no shared datasets at {SHARED_DATASETS}")

# The demo recipe the tests train (the same as scripts/demo.sh): ~2 minutes on 2 cores, and
# long enough that a from-scratch MobileNetV2 learns the shapes to ~99% (at 12 epochs it reached
# 85-94% and its borderline answers flipped under +-1 level of pixel noise: tests/test_decode_modes.py).
DEMO = dict(classes=3, per_class=1000, size=64)
TRAIN = dict(backbone="mobilenet_v2", alpha=0.35, image_size=64, weights=None, epochs=24, augment=True, patience=4)


# Files that start first. Under scripts/test.sh's workers the run should not end with one worker
# alone on a minutes-long file, so the longest go first; the first two differ in what they need: one
# worker trains the demo model (test_attack asks for it) while the other runs the real-weights transfer.
FIRST = ("test_transfer.py", "test_attack.py", "test_faults_train.py", "test_trainer.py", "test_byom.py",
         "test_clients.py", "test_exporter_publish.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from trainer.demo_data import DemoDataConfig, generate

    out = tmp_path_factory.mktemp("demo") / "data"
    generate(DemoDataConfig(out, **DEMO))
    return out


@pytest.fixture(scope="session")
def heldout_dir(tmp_path_factory) -> Path:
    """Demo images the model never saw (another seed), one folder per class."""
    from trainer.demo_data import DemoDataConfig, generate

    out = tmp_path_factory.mktemp("heldout") / "data"
    generate(DemoDataConfig(out, classes=DEMO["classes"], per_class=60, size=DEMO["size"], seed=12345))
    return out


def labelled_folder(root: Path, per_class: int, seed: int, size: int = 32) -> Path:
    """What a user bringing their own model has beside it: labels.txt (the demo's three shapes) and a
    folder of images per class (for --images and --calibration). Returns `root`."""
    from trainer.demo_data import DemoDataConfig, generate

    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text("circle\nsquare\ntriangle\n")
    generate(DemoDataConfig(root / "images", classes=3, per_class=per_class, size=size, seed=seed))
    return root


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory) -> Path:
    """A small dataset (quadrant 3/4 territory): 60 images per class."""
    from trainer.demo_data import DemoDataConfig, generate

    out = tmp_path_factory.mktemp("small") / "data"
    generate(DemoDataConfig(out, classes=3, per_class=60, size=64, seed=99))
    return out


@pytest.fixture(scope="session")
def pretrained_backbone(trained_run) -> Path:
    """Our stand-in for ImageNet weights (none can be downloaded here): the demo model's
    backbone, trained on shapes, loaded with --weights PATH."""
    return trained_run.run_dir / "model.keras"


@pytest.fixture(scope="session")
def trained_run(demo_dir, tmp_path_factory):
    """The demo model, trained once per test run. Under pytest-xdist (scripts/test.sh runs three workers)
    the first worker to ask trains it in the run's shared folder and the others wait and read it: two
    trainings at once would cost both cores for ~2.5 minutes each."""
    from trainer import TrainConfig, train
    from trainer.fit import RunResult

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp("runs")
        return train(TrainConfig(data_dir=demo_dir, out_dir=out, name="shapes", seed=0, **TRAIN), log=lambda m: None)
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / "shared-demo-run"  # this run's, not the previous one's
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if training raised
        done = shared / "done"
        if done.is_file():
            run_dir = Path(done.read_text())
            return RunResult(run_dir, None, json.loads((run_dir / "report.json").read_text()))
        result = train(TrainConfig(data_dir=demo_dir, out_dir=shared, name="shapes", seed=0, **TRAIN), log=lambda m: None)
        done.write_text(str(result.run_dir))
        return result


@pytest.fixture(scope="session")
def int8_bundle(trained_run, heldout_dir, tmp_path_factory) -> Path:
    from exporter import ExportConfig, export

    out = tmp_path_factory.mktemp("bundles") / "shapes.tflite-int8"
    export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="int8", images=heldout_dir, out=out), log=lambda m: None)
    return out


def sabotage_weights(monkeypatch):
    """The converter gets a model with shuffled weights: the export converts fine but disagrees with Keras."""
    import numpy as np

    import exporter.pipeline as E

    real = E.converter

    def sabotaged(fmt):
        convert = real(fmt)

        def inner(model, precision, out_path, calibration, workdir, log=print, **options):
            import keras

            broken = keras.models.clone_model(model)
            rng = np.random.default_rng(0)
            broken.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in model.get_weights()])
            return convert(broken, precision, out_path, calibration, workdir, log=log, **options)

        return inner

    monkeypatch.setattr(E, "converter", sabotaged)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edgeport_cmd() -> list[str]:
    return [sys.executable, "-m", "edge_server.cli"]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(bundle: Path, tmp: Path, *extra: str, timeout: float = 60.0) -> Server:
    port = free_port()
    log = tmp / f"server-{port}.log"
    proc = subprocess.Popen(
        [*edgeport_cmd(), "serve", str(bundle), "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if json.load(r).get("ready"):
                    return Server(proc, url, log)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout} s: {log.read_text()}")


@pytest.fixture(scope="session")
def server(int8_bundle, tmp_path_factory):
    srv = start_server(int8_bundle, tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """(status, parsed JSON or text, headers) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, body, hdrs = e.code, e.read(), e.headers
    try:
        return status, json.loads(body), hdrs
    except ValueError:
        return status, body.decode(errors="replace"), hdrs
