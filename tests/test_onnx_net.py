"""An ONNX ReLU net read as a Net computes what onnx's reference evaluator computes, and runs backwards."""

import jax
import numpy as np
import onnx_graphs
import pytest

from rev_nets import generator, nets
from rev_nets.errors import InputError
from rev_nets.onnx_net import net_from_onnx

onnx = pytest.importorskip("onnx")
from onnx import helper
from onnx.reference import ReferenceEvaluator


def _cnn(rng):
    """Conv 3->4 (pad 1) Relu MaxPool 2, Conv 4->6 (VALID, stride 1) Relu AveragePool 2, Flatten, Gemm -> 5."""
    arrays = {
        "c1.w": rng.standard_normal((4, 3, 3, 3)) * 0.5,
        "c1.b": rng.standard_normal(4) * 0.1,
        "c2.w": rng.standard_normal((6, 4, 3, 3)) * 0.3,
        "c2.b": rng.standard_normal(6) * 0.1,
        "fc.w": rng.standard_normal((5, 6 * 2 * 2)) * 0.3,  # (out, in): transB=1
        "fc.b": rng.standard_normal(5) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["c", "c2.w", "c2.b"], ["d"]),
        helper.make_node("Relu", ["d"], ["e"]),
        helper.make_node("AveragePool", ["e"], ["f"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["f"], ["g"], axis=1),
        helper.make_node("Gemm", ["g", "fc.w", "fc.b"], ["y"], transB=1),
    ]
    return onnx_graphs.model(
        nodes, arrays, [2, 3, 12, 12], [2, 5]
    )  # 12 -> pool 6 -> conv 4 -> pool 2: 6 x 2 x 2 = 24 inputs


def _mlp(rng):
    """MatMul + Add, Relu, twice, then MatMul + Add: the layout of a PyTorch Linear stack exported as MatMul."""
    arrays = {"w1": rng.standard_normal((20, 16)), "b1": rng.standard_normal(16), "w2": rng.standard_normal((16, 3))}
    arrays |= {"b2": rng.standard_normal(3)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("Add", ["a", "b1"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("MatMul", ["c", "w2"], ["d"]),
        helper.make_node("Add", ["d", "b2"], ["y"]),
    ]
    return onnx_graphs.model(nodes, arrays, [4, 20], [4, 3])


@pytest.mark.parametrize("build", [_cnn, _mlp], ids=["cnn", "mlp"])
def test_onnx_net_computes_what_the_graph_computes(build, tmp_path):
    model = build(np.random.default_rng(0))
    onnx.save(model, tmp_path / "net.onnx")
    net, params = net_from_onnx(str(tmp_path / "net.onnx"))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (expected,) = ReferenceEvaluator(model).run(None, {"x": x})
    x_ours = np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x
    logits, _ = nets.forward(net, params, x_ours)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    x_syn = generator.twins(net, params, x_ours, net.depth)
    assert x_syn.shape == x_ours.shape and bool(jax.numpy.all(jax.numpy.isfinite(x_syn)))


def test_the_cnn_keeps_its_layers_settings(tmp_path):
    onnx.save(_cnn(np.random.default_rng(0)), tmp_path / "net.onnx")
    net, _ = net_from_onnx(str(tmp_path / "net.onnx"))
    first, second = net.layers
    assert (first.padding, first.pool, second.padding, second.pool) == (((1, 1), (1, 1)), "max", "VALID", "avg")
    assert net.input_shape == (12, 12, 3) and net.num_classes == 5


def test_a_graph_that_is_not_a_plain_relu_net_is_refused(tmp_path):
    arrays = {"w": np.ones((4, 3)), "v": np.ones((3, 2))}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["b"]),
        helper.make_node("MatMul", ["b", "v"], ["y"]),
    ]
    onnx.save(onnx_graphs.model(nodes, arrays, [1, 4], [1, 2]), tmp_path / "sigmoid.onnx")
    with pytest.raises(InputError, match="Sigmoid node .* is not part of a plain ReLU net"):
        net_from_onnx(str(tmp_path / "sigmoid.onnx"))
    nodes[1] = helper.make_node("Identity", ["a"], ["b"])
    onnx.save(onnx_graphs.model(nodes, arrays, [1, 4], [1, 2]), tmp_path / "no_relu.onnx")
    with pytest.raises(InputError, match="hidden ReLU layers followed by one linear head"):
        net_from_onnx(str(tmp_path / "no_relu.onnx"))
