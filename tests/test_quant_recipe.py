"""int8 exports of a MobileNetV2 model: the float-island variant keeps exactly the recipe's early layers in float,
and an export measures it only when all-int8 falls short of the agreement goal."""

import json

import numpy as np

from exporter.quant_recipe import FLOAT_LAYERS, float_layers, onnx_nodes


def _float_convs(path) -> list[str]:
    from edge_core.runtimes import find_litert_interpreter

    Interpreter, _ = find_litert_interpreter()
    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    convs = [op for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) > 10 * len(FLOAT_LAYERS["mobilenet_v2"])  # the rest of the graph stays int8
    return [tensors[op["outputs"][0]]["name"] for op in convs if tensors[op["outputs"][0]]["dtype"] == np.float32]


def test_int8_tflite_keeps_exactly_the_named_layers_float(tmp_path):
    import keras

    from exporter.to_tflite import convert

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg")
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype(np.float32)
    layers = float_layers(model)
    assert _float_convs(convert(model, "int8", tmp_path / "all.tflite", x, tmp_path / "a", log=lambda m: None, io_dtype="uint8")) == []
    in_float = _float_convs(convert(model, "int8", tmp_path / "islands.tflite", x, tmp_path / "b", log=lambda m: None,
                                    io_dtype="uint8", keep_float=layers))
    assert len(in_float) == len(layers), in_float
    assert all(any(f"/{lay}_" in name for name in in_float) for lay in layers), in_float


def test_export_measures_the_float_islands_only_below_the_goal(trained_run, heldout_dir, tmp_path, monkeypatch):
    """All-int8 first; below the goal the float-island variant is converted and verified too, the better
    one is published and both are recorded (the goal is raised past 100% here to force the second)."""
    from exporter import ExportConfig, export, quant_recipe

    lines = []
    monkeypatch.setattr(quant_recipe, "AGREEMENT_GOAL", 1.01)
    meta = export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="int8", images=heldout_dir,
                               out=tmp_path / "b", min_agreement=0.0), log=lines.append).meta
    tried = meta["export"]["int8_variants"]
    assert [t["variant"] for t in tried] == ["all int8", "early layers float"]
    best = max(tried, key=lambda t: t["top1_agreement"])
    assert [t["chosen"] for t in tried] == [t is best for t in tried]
    assert meta["export"]["float_layers"] == best["float_layers"]
    assert meta["verification"]["top1_agreement"] == best["top1_agreement"]
    assert any(line.startswith("int8 variants") for line in lines)
    model_file = json.loads((tmp_path / "b" / "bundle.json").read_text())["model_file"]
    assert len(_float_convs(tmp_path / "b" / model_file)) == len(best["float_layers"])



def test_choose_takes_the_first_variant_at_the_goal_else_the_best():
    from exporter.quant_recipe import AGREEMENT_GOAL, choose

    row = lambda name, agreement: {"variant": name, "figures": {"top1_agreement": agreement}}
    cheap, islands = row("all int8", AGREEMENT_GOAL), row("early layers float", 1.0)
    assert choose([cheap, islands]) is cheap  # at the goal the cheaper one wins, better or not
    low, better = row("all int8", AGREEMENT_GOAL - 0.05), row("early layers float", AGREEMENT_GOAL - 0.01)
    assert choose([low, better]) is better
    tie = row("early layers float", low["figures"]["top1_agreement"])
    assert choose([low, tie]) is low  # a tie goes to the cheaper


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
