"""ONNX Runtime behind the same server: a bare .onnx file plus labels, and providers from device profiles."""

import argparse
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import http, start_server


def tiny_onnx(path, size: int = 8) -> None:
    """uint8 (N, S, S, 3) -> mean colour -> softmax over 3 classes: red, green, blue wins."""
    onnx = pytest.importorskip("onnx", reason="onnx (the [train] extra) builds the test model")
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "gain"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "mean_colour",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                     helper.make_tensor("gain", TensorProto.FLOAT, [], [0.1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "PNG")
    return buf.getvalue()


def test_bare_onnx_model_served_over_http(tmp_path):
    model = tmp_path / "colours.onnx"
    tiny_onnx(model)
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    srv = start_server(model, tmp_path, "--labels", str(tmp_path / "labels.txt"), "--workers", "2", "--threads", "1")
    try:
        for colour, label in (((250, 10, 10), "red"), ((10, 250, 10), "green"), ((10, 10, 250), "blue")):
            status, body, _ = http("POST", srv.url + "/predict?top_k=1", png(colour), {"Content-Type": "image/png"})
            assert status == 200 and body["model"] == "colours" and body["predictions"][0]["label"] == label, body
        meta = http("GET", srv.url + "/v2/models/colours")[1]
        assert meta["platform"] == "onnxruntime_onnx" and meta["inputs"][0]["shape"] == [-1, 8, 8, 3]
        x = np.zeros((1, 8, 8, 3), np.uint8)
        x[..., 2] = 200
        status, body, _ = http("POST", srv.url + "/v2/models/colours/infer",
                               json.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 3], "datatype": "UINT8",
                                                                     "data": x.ravel().tolist()}]}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 200 and np.argmax(body["outputs"][0]["data"]) == 2
        assert http("GET", srv.url + "/model")[1]["backend"] == "onnxruntime"
    finally:
        srv.stop()


@pytest.mark.parametrize("device, providers, arena", [
    ("jetson-orin-nano", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), True),
    ("raspberry-pi-4", ("CPUExecutionProvider",), False),
])
def test_device_profile_sets_onnx_providers(device, providers, arena):
    from devices import load_profile

    from edge_server.cli import _service_options

    args = argparse.Namespace(threads=None, workers=None, max_pixels=1000, decode="exact")
    opts = _service_options(args, load_profile(device))
    assert opts.onnx_providers == providers and opts.onnx_mem_arena is arena
    assert opts.threads == load_profile(device)["serve"]["threads"]
    if device.startswith("jetson"):
        assert opts.trt_cache_dir  # TensorRT engines take minutes to build: cached
