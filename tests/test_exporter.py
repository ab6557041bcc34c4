"""Every allowed format x precision exports, loads in its runtime and agrees; bad requests fail clearly."""

import json

import pytest

from conftest import sabotage_weights
from edge_core.service import ModelService
from exporter import ExportConfig, ExportError, VerificationError, export
from exporter.formats import FORMATS, allowed_combinations, lookup

# Every row and every I/O type it allows; tflite/int8 with its default uint8 I/O is the shared `int8_bundle` fixture.
ROWS = [(f, p, io) for f, spec in FORMATS.items() for p, prec in spec.precisions.items() for io in prec.io_dtypes
        if (f, p, io) != ("tflite", "int8", "uint8")]


def check_contract(bundle, fmt, io_dtype):
    """What the server relies on, read from the file itself: builtin ops / opset, input name, dynamic batch, I/O type."""
    meta = json.loads((bundle / "bundle.json").read_text())
    model_file = bundle / meta["model_file"]
    if fmt == "tflite":
        from edge_core.runtimes import find_litert_interpreter
        from exporter.to_tflite import op_names

        names = op_names(model_file)
        assert names and all(n.isupper() and not n.startswith("Flex") for n in names), names
        Interpreter, _ = find_litert_interpreter()
        assert Interpreter(model_path=str(model_file)).get_signature_list()["serve"]["inputs"] == ["image"]
        assert meta["input"]["shape"][0] == -1  # shape_signature: the batch is dynamic
    else:
        import onnxruntime as ort

        from edge_core.runtimes import RuntimeOptions, open_runtime
        from exporter.to_onnx import check_graph

        check_graph(model_file)
        # The session settings the ONNX speed depends on (see benchmarks/bench_export.py).
        so = open_runtime("onnx", model_file, RuntimeOptions(threads=2)).session.get_session_options()
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert meta["input"]["name"] == "image" and meta["input"]["dtype"] == meta["output"]["dtype"] == io_dtype
    assert meta["verification"]["dynamic_batch"]["ok"], meta["verification"]["dynamic_batch"]


@pytest.mark.parametrize("fmt, precision, io_dtype", ROWS)
def test_every_allowed_row_exports_and_agrees(trained_run, heldout_dir, tmp_path, fmt, precision, io_dtype):
    out = tmp_path / f"b-{fmt}-{precision}-{io_dtype}"
    result = export(ExportConfig(source=trained_run.run_dir, format=fmt, precision=precision, images=heldout_dir, out=out,
                                 io_dtype=io_dtype, calibration_size=100, verify_size=90), log=lambda m: None)
    v = result.meta["verification"]
    assert v["top1_agreement"] >= lookup(fmt, precision)[1].min_agreement
    assert v["size_bytes"] == (out / f"model.{fmt}").stat().st_size
    assert v["latency_ms"]["p95"] >= v["latency_ms"]["p50"] > 0
    if precision == "float32":
        assert v["max_abs_diff"] < 1e-3
    svc = ModelService.from_path(out)  # loads back with its sha256 checked
    assert svc.bundle.format == fmt and svc.size == 64
    assert result.meta["export"]["io_dtype"] == io_dtype
    check_contract(out, fmt, io_dtype)


def test_int8_bundle_keeps_the_contract(int8_bundle):
    check_contract(int8_bundle, "tflite", "uint8")


def test_io_dtype_the_row_does_not_offer_is_an_error(trained_run):
    with pytest.raises(ExportError) as e:
        export(ExportConfig(source=trained_run.run_dir, format="onnx", precision="int8", io_dtype="uint8"))
    msg = str(e.value)
    assert "io_dtype='uint8'" in msg and "tflite/int8: uint8, int8, float32" in msg


def test_forbidden_combination_lists_the_allowed_ones(trained_run):
    with pytest.raises(ExportError) as e:
        export(ExportConfig(source=trained_run.run_dir, format="onnx", precision="dynamic"))
    msg = str(e.value)
    assert "onnx/dynamic" in msg and all(c in msg for c in allowed_combinations())


def test_export_under_the_floor_is_rejected_and_not_published(trained_run, heldout_dir, tmp_path, monkeypatch):
    """Construct a bad export: the converter writes a model with shuffled weights."""
    sabotage_weights(monkeypatch)
    out = tmp_path / "bad"
    with pytest.raises(VerificationError, match="floor"):
        export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="float32", images=heldout_dir,
                            out=out, verify_size=60), log=lambda m: None)
    assert not out.exists() and not list(tmp_path.glob(".bad*"))


def test_bare_keras_file_needs_labels(trained_run):
    with pytest.raises(ExportError, match="--labels"):
        export(ExportConfig(source=trained_run.run_dir / "model.keras", format="tflite", precision="float32"))


def test_bundle_json_says_how_to_serve(int8_bundle):
    meta = json.loads((int8_bundle / "bundle.json").read_text())
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["color_order"] == "RGB"
    assert meta["input"]["value_range"] == [0, 255] and meta["input"]["quantization"]["scale"] == pytest.approx(1.0, abs=1e-3)
    assert meta["output"]["activation"] == "softmax"
    assert meta["source"]["backbone"] == "mobilenet_v2" and len(meta["source"]["model_sha256"]) == 64
    for k in ("top1_agreement", "reference_accuracy", "exported_accuracy", "size_bytes", "latency_ms"):
        assert k in meta["verification"]
