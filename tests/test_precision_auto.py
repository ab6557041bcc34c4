"""`edgeport export --precision auto`: every precision that passes its floor in one bundle; the server times
them at start and serves the fastest, or the one a flag or a device profile pins, and says which and why."""

import json
import shutil
import subprocess
import time

import pytest

from conftest import edgeport_cmd, http, start_server
from edge_core.bundle import load_bundle, sha256_file
from edge_core.errors import BundleError
from edge_core.precision_choice import decide, fastest, time_runners
from edge_core.service import ModelService, ServiceOptions


@pytest.fixture(scope="module")
def auto_export(trained_run, heldout_dir, tmp_path_factory):
    """int8 and float16 of the demo model in one bundle (two precisions keep the export to about a minute)."""
    from exporter import ExportConfig, export

    lines = []
    out = tmp_path_factory.mktemp("auto") / "shapes.tflite-auto"
    export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="auto", precisions=("int8", "float16"),
                        images=heldout_dir, out=out, calibration_size=50, verify_size=60), log=lines.append)
    return out, "\n".join(lines)


@pytest.fixture
def auto_bundle(auto_export):
    return auto_export[0]


def _meta(bundle):
    return json.loads((bundle / "bundle.json").read_text())


def test_auto_writes_every_passing_precision_each_with_its_file_hash_and_verification(auto_export):
    bundle, log = auto_export
    meta = _meta(bundle)
    entries = {m["precision"]: m for m in meta["models"]}
    assert list(entries) == ["int8", "float16"]
    # The default entry is the top level, what a reader that knows one model file serves: the smallest (int8).
    assert (meta["precision"], meta["model_file"]) == ("int8", "model.tflite") == (entries["int8"]["precision"], entries["int8"]["model_file"])
    assert entries["float16"]["model_file"] == "model.float16.tflite"
    for m in entries.values():
        assert sha256_file(bundle / m["model_file"]) == m["sha256"]
        v = m["verification"]
        assert v["top1_agreement"] >= v["min_agreement"] and v["images"] == 60
    assert entries["int8"]["input"]["dtype"] == "uint8" and entries["float16"]["input"]["dtype"] == "float32"
    assert [t["in_bundle"] for t in meta["precisions_tried"]] == [True, True]
    assert "precision auto: 2 of 2 tflite precisions pass their floor" in log
    assert load_bundle(bundle).precisions == ["int8", "float16"]


def test_decide_picks_the_fastest_of_the_timings_it_is_given(auto_bundle):
    b = load_bundle(auto_bundle)
    for timings, expected in (({"int8": 4.1, "float16": 1.9}, "float16"), ({"int8": 1.9, "float16": 4.1}, "int8")):
        choice = decide(b, lambda _: timings)
        assert (choice.precision, choice.reason, choice.timings_ms) == (expected, "fastest here", timings)
    assert decide(b, lambda _: {"int8": 4.1, "float16": 1.9}).summary() == "float16 (fastest here: float16 1.90 ms, int8 4.10 ms)"
    # time_runners interleaves the runs and keeps the median of each
    slept = time_runners({"slow": lambda x: sum(range(20000)), "quick": lambda x: None}, None, warm=1, runs=3)
    assert fastest(slept) == "quick"


def test_server_serves_the_fastest_and_says_so_in_its_startup_line_and_get_model(auto_bundle):
    """Timings injected as the supervisor hands them to its workers: which one is faster is then certain."""
    from edge_server.app import create_app
    from edge_server.settings import ServerSettings
    from edge_server.startup import describe

    b = load_bundle(auto_bundle)
    settings = ServerSettings(bundle=auto_bundle, access_log=False)
    for timings, expected in (({"int8": 4.1, "float16": 1.9}, "float16"), ({"int8": 1.9, "float16": 4.1}, "int8")):
        decided = {"precision": expected, "reason": "fastest here", "timings_ms": timings, "bundle_sha256": b.meta["sha256"]}
        svc = ModelService(load_bundle(auto_bundle), ServiceOptions(precision_decided=decided, pool_size=1, threads=1, solo_threads=0))
        assert svc.bundle.meta["precision"] == expected
        assert svc.bundle.model_path.name == {"int8": "model.tflite", "float16": "model.float16.tflite"}[expected]
        text = describe(svc, settings, 0.1)
        assert f"tflite/{expected}," in text
        slower = "int8" if expected == "float16" else "float16"
        assert f"edgeport: precision {expected} (fastest here: {expected} 1.90 ms, {slower} 4.10 ms)" in text, text
        body = create_app(svc, settings).test_client().get("/model").get_json()
        assert body["precision"] == expected and body["sha256"] == b.meta["models"][["int8", "float16"].index(expected)]["sha256"]
        assert body["precision_choice"] | {} == {**decided, "available": ["int8", "float16"]}


def test_real_timing_serves_the_minimum_of_its_own_measurements(auto_bundle, tmp_path):
    srv = start_server(auto_bundle, tmp_path, "--no-access-log")
    try:
        body = http("GET", srv.url + "/model")[1]
        choice = body["precision_choice"]
        assert set(choice["timings_ms"]) == {"int8", "float16"}
        assert choice["precision"] == min(choice["timings_ms"], key=choice["timings_ms"].get) == body["precision"]
        line = next(l for l in srv.log.read_text().splitlines() if l.startswith("edgeport: precision "))
        assert line.startswith(f"edgeport: precision {choice['precision']} (fastest here: {choice['precision']} "), line
    finally:
        srv.stop()


def test_processes_time_once_and_every_worker_serves_the_same(auto_bundle, tmp_path):
    srv = start_server(auto_bundle, tmp_path, "--processes", "2", "--no-access-log")
    try:
        seen = [http("GET", srv.url + "/model")[1]["precision_choice"] for _ in range(6)]
        assert len({c["precision"] for c in seen}) == 1
        assert all(c["reason"] == "fastest here, timed once for every worker" for c in seen), seen
        # the supervisor prints the first worker's start-up lines once every worker is ready: a little after the first answers
        deadline = time.monotonic() + 30
        while "timed once for every worker" not in srv.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "timed once for every worker" in srv.log.read_text()
    finally:
        srv.stop()


def _options(argv, profile=None):
    from edge_server.cli import _service_options, build_parser

    return _service_options(build_parser().parse_args(argv), profile)


def test_a_flag_or_a_device_profile_pins_one_and_skips_timing(auto_bundle):
    untimed = lambda b: pytest.fail("a pinned precision is not timed")  # noqa: E731
    opts = _options(["serve", str(auto_bundle), "--precision", "float16"])
    choice = decide(load_bundle(auto_bundle), untimed, opts.precision, opts.precision_pinned_by)
    assert (choice.precision, choice.reason, choice.timings_ms) == ("float16", "pinned by --precision", None)
    opts = _options(["serve", str(auto_bundle)], {"name": "test-board", "serve": {"precision": "float16"}})
    svc = ModelService(load_bundle(auto_bundle), opts)
    assert (svc.bundle.meta["precision"], svc.precision_choice.reason) == ("float16", "pinned by device profile test-board")
    # the flag wins over the profile
    opts = _options(["serve", str(auto_bundle), "--precision", "int8"], {"name": "test-board", "serve": {"precision": "float16"}})
    assert (opts.precision, opts.precision_pinned_by) == ("int8", "--precision")
    assert _options(["predict", str(auto_bundle), "x.jpg", "--precision", "int8"]).precision == "int8"
    with pytest.raises(BundleError, match=r"one of \['int8', 'float16'\]. Received: --precision float32"):
        decide(load_bundle(auto_bundle), untimed, "float32")


def test_a_damaged_second_model_file_is_one_line_naming_it(auto_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(auto_bundle, bundle)
    with open(bundle / "model.float16.tflite", "r+b") as f:
        f.seek(100)
        f.write(b"\0\1\2\3")
    with pytest.raises(BundleError, match=r"model\.float16\.tflite with the sha256 in bundle.json"):
        load_bundle(bundle)
    out = subprocess.run([*edgeport_cmd(), "serve", str(bundle), "--port", "0"], capture_output=True, text=True, timeout=60)
    errors = [l for l in out.stderr.splitlines() if "error" in l]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(errors) == 1 and "model.float16.tflite" in errors[0] and "Expected" in errors[0], out.stderr
    (bundle / "model.float16.tflite").unlink()
    with pytest.raises(BundleError, match=r"Expected the model file model\.float16\.tflite in the bundle \(float16\)"):
        load_bundle(bundle)


@pytest.mark.parametrize("damage, word", [
    (lambda m: m["models"][1].update(model_file="../model.tflite"), "Expected model_file 'model.float16.tflite'"),
    (lambda m: m["models"][1].update(precision="int8"), "each precision once"),
    (lambda m: m["models"][1].update(sha256="xyz"), "'sha256' to be 64 hex digits"),
    (lambda m: m.update(models={}), "'models' to be a list"),
    (lambda m: m["models"].pop(0), "top-level precision among 'models'"),
])
def test_bundle_json_models_is_checked(auto_bundle, tmp_path, damage, word):
    bundle = tmp_path / "b"
    shutil.copytree(auto_bundle, bundle)
    meta = _meta(bundle)
    damage(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="Expected") as e:
        load_bundle(bundle)
    assert word in str(e.value) and "\n" not in str(e.value)


def test_a_precision_under_its_floor_is_left_out_and_shown(trained_run, heldout_dir, tmp_path, monkeypatch):
    import exporter.pipeline as E
    from exporter import ExportConfig, VerificationError, export

    real = E._export_precision

    def dynamic_fails(job, precision, *args):
        if precision == "dynamic":
            raise VerificationError("tflite/dynamic agrees with the Keras model on 80.0% of 30 images; the floor is 95.0%.")
        return real(job, precision, *args)

    monkeypatch.setattr(E, "_export_precision", dynamic_fails)
    lines = []
    out = tmp_path / "b"
    export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="auto", precisions=("dynamic", "float16"),
                        images=heldout_dir, out=out, verify_size=30), log=lines.append)
    meta = _meta(out)
    assert meta["precision"] == "float16" and "models" not in meta  # one precision left: a plain bundle
    assert meta["precisions_tried"][1] == {"precision": "dynamic", "in_bundle": False, "why": meta["precisions_tried"][1]["why"]}
    assert "left out: tflite/dynamic agrees with the Keras model on 80.0%" in "\n".join(lines)

    monkeypatch.setattr(E, "_export_precision", lambda job, precision, *a: dynamic_fails(job, "dynamic"))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(VerificationError, match=r"no precision passed its floor, nothing was published"):
        export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="auto", precisions=("dynamic", "float16"),
                            images=heldout_dir, out=out, verify_size=30), log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_profile_precision_must_be_a_name(tmp_path, monkeypatch):
    import devices

    src = (devices.PROFILE_DIR / "x86-64.toml").read_text()
    (tmp_path / "odd.toml").write_text(src.replace("[serve]\n", "[serve]\nprecision = 8\n"))
    monkeypatch.setattr(devices, "PROFILE_DIR", tmp_path)
    with pytest.raises(devices.DeviceError, match=r"Expected serve.precision to be a precision name .* Received: 8"):
        devices.load_profile("odd")


def test_bench_measures_every_precision_of_the_bundle(auto_bundle):
    from exporter.bench import bench

    rows = bench([auto_bundle], None, threads=1, keras=False, log=lambda m: None)
    assert [(r["bundle"], r["precision"]) for r in rows] == [(f"{auto_bundle} [int8]", "int8"), (f"{auto_bundle} [float16]", "float16")]
