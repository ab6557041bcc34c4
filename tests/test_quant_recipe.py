"""int8 exports of a MobileNetV2 model keep exactly the recipe's early layers in float, and nothing else."""

import json

import numpy as np

from exporter.quant_recipe import FLOAT_LAYERS, float_layers, onnx_nodes


def test_int8_tflite_keeps_the_recipe_layers_float(int8_bundle):
    from edge_core.runtimes import find_litert_interpreter

    meta = json.loads((int8_bundle / "bundle.json").read_text())
    Interpreter, _ = find_litert_interpreter()
    interp = Interpreter(model_path=str(int8_bundle / meta["model_file"]))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    convs = [op for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    in_float = [tensors[op["outputs"][0]]["name"] for op in convs if tensors[op["outputs"][0]]["dtype"] == np.float32]
    layers = FLOAT_LAYERS["mobilenet_v2"]
    assert len(in_float) == len(layers), in_float
    assert all(any(f"/{lay}_" in name.split(";")[-1] for name in in_float) for lay in layers), in_float
    assert len(convs) > 10 * len(layers)  # the rest of the graph stays int8
    assert meta["input"]["dtype"] == "uint8"


def test_float_layers_only_for_a_backbone_the_recipe_names():
    import keras

    mobilenet = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    wrapped = keras.Sequential([keras.Input((32, 32, 3)), mobilenet, keras.layers.GlobalAveragePooling2D()])
    assert float_layers(wrapped) == FLOAT_LAYERS["mobilenet_v2"]
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="block_1_expand"), keras.layers.Flatten()])
    assert float_layers(other) == ()


def test_onnx_nodes_find_fused_convs_by_their_weights(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    p = "model/backbone_1/"
    w = lambda name: helper.make_tensor(name, TensorProto.FLOAT, [4, 4, 1, 1], np.zeros(16, np.float32))
    nodes = [
        helper.make_node("Conv", ["x", f"{p}block_1_expand_1/convolution/merged_input:0"], ["a"], name="Conv__351"),
        helper.make_node("Clip", ["a"], ["b"], name=f"{p}block_1_expand_relu_1/Relu6"),
        helper.make_node("Conv", ["b", f"{p}block_11_expand_1/convolution/merged_input:0"], ["c"], name="Conv__500"),
        helper.make_node("Clip", ["c"], ["y"], name=f"{p}block_11_expand_relu_1/Relu6"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[w(f"{p}block_1_expand_1/convolution/merged_input:0"),
                                           w(f"{p}block_11_expand_1/convolution/merged_input:0")])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    assert onnx_nodes(tmp_path / "m.onnx", ["block_1_expand"]) == ["Conv__351", f"{p}block_1_expand_relu_1/Relu6"]
