"""An ONNX graph of a plain ReLU net as this project's ``Net`` and params, so the generator and the analyses run on it.

The graph must be a chain of linear layers, each followed by a ReLU (and, for
a convolution, optionally by non-overlapping max or average pooling), ending
in one linear layer without a ReLU: the head. Conv, Gemm and MatMul (with an
Add of its bias) are the linear layers; Flatten, Reshape, Identity and
Dropout (inference: the identity) pass through. Weights are mapped by the
node that uses them (``rev_nets.weights.onnx_layer_weights``); the first
dense layer after a convolution has its rows reordered from ONNX's NCHW
flattening to this project's NHWC one. Anything
else (a residual Add, a Sigmoid, grouped or dilated convolutions) stops
with one sentence naming the node.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rev_nets import layers, nets
from rev_nets.errors import InputError
from rev_nets.weights import onnx_layer_weights, onnx_model

PASS_THROUGH = ("Flatten", "Reshape", "Identity", "Dropout")
LINEAR = ("Conv", "Gemm", "MatMul")


@dataclasses.dataclass
class _Layer:
    """One linear node as it is read: its spec, weights (this layout) and what follows it."""

    spec: layers.Layer
    w: np.ndarray
    b: np.ndarray
    relu: bool = False


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(node, w: np.ndarray, b: np.ndarray | None) -> _Layer:
    """A Conv node as a layer; ``w`` is its kernel in this project's HWIO layout."""
    attrs = _attributes(node)
    if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise InputError(f"Conv node {node.name or node.output[0]} is grouped or dilated; only plain convolutions.")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise InputError(f"Conv node {node.name or node.output[0]} uses auto_pad; export it with explicit pads.")
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    padding = "VALID" if not any((top, left, bottom, right)) else ((top, bottom), (left, right))
    spec = layers.Conv(
        int(w.shape[3]), kernel_size=tuple(w.shape[:2]), strides=tuple(attrs.get("strides", [1, 1])), padding=padding
    )
    return _Layer(spec, w, np.zeros(w.shape[3], np.float32) if b is None else b)


def _pool(node, layer: _Layer | None) -> None:
    """Attaches a pooling node to the Conv layer (and ReLU) before it."""
    attrs = _attributes(node)
    kernel, strides = list(attrs.get("kernel_shape", [])), list(attrs.get("strides", attrs.get("kernel_shape", [])))
    square = len(set(kernel)) == 1 and kernel == strides and not any(attrs.get("pads", [0]))
    if layer is None or not isinstance(layer.spec, layers.Conv) or not layer.relu or not square:
        raise InputError(
            f"{node.op_type} node {node.name or node.output[0]} must follow a Conv and its Relu, with a square "
            "window equal to its stride and no padding."
        )
    kind = "max" if node.op_type == "MaxPool" else "avg"
    layer.spec = dataclasses.replace(layer.spec, pool=kind, pool_size=int(kernel[0]))


def _input_shape(model) -> tuple[int, ...]:
    """Per-example shape in this project's layout: (H, W, C) for an NCHW image input, else the features."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    if not dims or not all(dims):
        raise InputError("the ONNX graph's input has unknown sizes; export it with a fixed input shape.")
    return (dims[1], dims[2], dims[0]) if len(dims) == 3 else tuple(dims)


def _read_layers(model) -> list[_Layer]:
    from onnx import numpy_helper

    initializers = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    mapped = onnx_layer_weights(model)  # Each linear node's weight in this project's layout.
    read: list[_Layer] = []
    for node in model.graph.node:
        where = f"{node.op_type} node {node.name or node.output[0]}"
        if node.op_type in LINEAR:
            if len(node.input) < 2 or node.input[1] not in initializers:
                raise InputError(f"{where} takes its weight from another node; only stored weights are read.")
            w = mapped[node.input[1]].astype(np.float32)
            b = initializers.get(node.input[2]) if len(node.input) > 2 else None
            if node.op_type == "Conv":
                read.append(_conv(node, w, b))
                continue
            read.append(_Layer(layers.Dense(int(w.shape[1])), w, np.zeros(w.shape[1], np.float32) if b is None else b))
        elif node.op_type == "Add" and read and not read[-1].relu and any(i in initializers for i in node.input):
            read[-1].b = read[-1].b + next(initializers[i] for i in node.input if i in initializers).reshape(-1)
        elif node.op_type == "Relu" and read and not read[-1].relu:
            read[-1].relu = True
        elif node.op_type in ("MaxPool", "AveragePool"):
            _pool(node, read[-1] if read else None)
        elif node.op_type not in PASS_THROUGH:
            raise InputError(f"{where} is not part of a plain ReLU net (linear layers, ReLU, pooling, flatten).")
    if len(read) < 2 or read[-1].relu or not all(layer.relu for layer in read[:-1]) or read[-1].spec.pool:
        raise InputError("the ONNX graph is not hidden ReLU layers followed by one linear head without a ReLU.")
    return read


def _nhwc_rows(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A dense weight whose rows follow ONNX's NCHW flattening of ``shape`` (H, W, C), reordered for NHWC."""
    height, width, channels = shape
    return w.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(w.shape)


def net_from_onnx(path: str) -> tuple[nets.Net, nets.Params]:
    """The ``Net`` and params of the ReLU net stored in the ONNX file ``path``."""
    model = onnx_model(path)
    read, shape = _read_layers(model), _input_shape(model)
    if not isinstance(read[-1].spec, layers.Dense):
        raise InputError(f"{path} ends in a convolution; the head must be a dense layer (Gemm or MatMul).")
    params, shapes = [], [shape]
    for layer in read:
        w = layer.w
        if isinstance(layer.spec, layers.Dense) and len(shapes[-1]) == 3:
            w = _nhwc_rows(w, shapes[-1])
        params.append({"w": w, "b": layer.b.astype(np.float32)})
        shapes.append(layers.out_shape(layer.spec, shapes[-1]))
    net = nets.Net(tuple(layer.spec for layer in read[:-1]), read[-1].spec.features, shape)
    return net, {"hidden": params[:-1], "head": params[-1]}
