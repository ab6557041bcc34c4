"""Float islands in int8 exports: the few early layers of a known backbone that int8 must leave in float.

Post-training int8 of a MobileNetV2 base flips answers of a transferred head (docs/training.md, "int8 of
a transferred model"). The error is not one outlier layer, and neither calibration ranges nor
cross-layer equalization remove it; keeping four early ops in float removes most of it: the first
block's depthwise and projection and the 1x1 expansions of blocks 1 and 2, so the 8-channel 112x112
bottleneck between block 0 and block 1, where the error starts, is never rounded to int8. Measured at 224 px on the shared sets (real ImageNet weights, default runs): the val answers
that change fall from 10.8% to 4.2% on openclipart_objects and from 9.9% to 3.3% on Tux Paint; the
price is 1.1-1.3x the all-int8 latency on a 2-core EPYC (docs/export.md). So it is a measured choice,
not a default: an int8 export converts all-int8 first and tries the float islands only when all-int8
agrees with the reference on fewer than AGREEMENT_GOAL of the held-out images (`choose`).

A backbone's layers are found by their Keras application names; a model without all of them (another
backbone, a bring-your-own model) is exported all-int8. Only CPU profiles use int8 here, so a
float op costs time, never a device that cannot run it.
"""

from __future__ import annotations

# backbone -> the Keras layers an int8 export keeps in float (conv + its folded BN + ReLU6: one op each)
FLOAT_LAYERS = {
    "mobilenet_v2": ("expanded_conv_depthwise", "expanded_conv_project", "block_1_expand", "block_2_expand"),
}


def _layer_names(model) -> set[str]:
    names, stack = set(), [model]
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        stack.extend(getattr(layer, "layers", ()))
    return names


def float_layers(model) -> tuple[str, ...]:
    """The layers of `model` an int8 export keeps in float: a FLOAT_LAYERS entry whose layers are all
    there, else none."""
    names = _layer_names(model)
    for layers in FLOAT_LAYERS.values():
        if set(layers) <= names:
            return layers
    return ()


# All-int8 is published when it agrees this well; below it, the float-island variant is measured too.
AGREEMENT_GOAL = 0.97


def variants(model) -> list[tuple[str, tuple[str, ...]]]:
    """The int8 variants an export may measure, cheapest first: (name, layers kept in float)."""
    layers = float_layers(model)
    return [("all int8", ())] + ([("early layers float", layers)] if layers else [])


def choose(tried: list[dict]) -> dict:
    """The first variant (cheapest) that reaches AGREEMENT_GOAL, else the one that agrees best (on a tie
    the cheaper). Each entry carries its verification `figures`."""
    agreement = lambda t: t["figures"]["top1_agreement"]
    return next((t for t in tried if agreement(t) >= AGREEMENT_GOAL), None) or max(tried, key=agreement)


def _owns(tensor_name: str, layer: str) -> bool:
    # The converter names a fused op's output after its Keras ops joined by ";", last op last
    # ("...;model/backbone/block_1_expand_BN/batchnorm/sub1"), sometimes with a bare suffix after it
    # (";1"): the layer is a path component of the last named op, or its prefix before "_BN"/"_relu".
    last = next((part for part in reversed(tensor_name.split(";")) if "/" in part), "")
    return f"/{layer}/" in last or f"/{layer}_" in last


def tflite_nodes(calibrated: bytes, layers) -> list[str]:
    """Output tensor names of the ops in a calibrated TFLite model that belong to `layers` (what the
    quantizer's denylisted_nodes takes)."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated)).subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in graph.tensors]
    return [names[op.outputs[0]] for op in graph.operators if any(_owns(names[op.outputs[0]], lay) for lay in layers)]


def onnx_nodes(path, layers) -> list[str]:
    """Names of the nodes of an ONNX graph that belong to `layers` (what quantize_static's nodes_to_exclude
    takes). tf2onnx keeps TF op names for most nodes ("…/block_1_expand_relu_1/Relu6") but renames a conv it
    fused with its BN ("Conv__351"); that one is found by its weight input, which keeps the layer's name."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def owns(node, layer):
        names = [node.name] + ([node.input[1]] if node.op_type == "Conv" and len(node.input) > 1 else [])
        return any(f"/{layer}/" in n or f"/{layer}_" in n for n in names)

    return [n.name for n in graph.node if any(owns(n, lay) for lay in layers)]
