"""ONNX weight files: each layer's weight comes out in this project's layout and computes what the graph computes."""

import jax
import numpy as np
import onnx_graphs
import pytest

from rev_nets.errors import InputError
from rev_nets.weights import read_weights

onnx = pytest.importorskip("onnx")
from onnx import helper
from onnx.reference import ReferenceEvaluator


def _small_graph(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv (OIHW, pad 1) -> Relu -> Flatten -> Gemm (transB=1) -> MatMul, with random weights."""
    conv_w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    conv_b = rng.standard_normal(4).astype(np.float32)
    gemm_b = rng.standard_normal((10, 4 * 6 * 6)).astype(np.float32)  # (out, in), read with transB=1
    gemm_c = rng.standard_normal(10).astype(np.float32)
    matmul_w = rng.standard_normal((10, 5)).astype(np.float32)  # (in, out)
    arrays = {"conv.w": conv_w, "conv.b": conv_b, "fc.w": gemm_b, "fc.b": gemm_c, "head.w": matmul_w}
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "head.w"], ["y"]),
    ]
    return onnx_graphs.model(nodes, arrays, [2, 3, 6, 6], [2, 5]), arrays


def _forward_in_project_layout(w: dict[str, np.ndarray], arrays: dict[str, np.ndarray], x_nchw: np.ndarray):
    """The same graph in NHWC with HWIO kernels and (in, out) matrices, as this project computes."""
    x = np.transpose(x_nchw, (0, 2, 3, 1))
    c = jax.lax.conv_general_dilated(x, w["conv.w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    r = np.maximum(np.asarray(c) + arrays["conv.b"], 0)
    f = np.transpose(r, (0, 3, 1, 2)).reshape(len(x), -1)  # ONNX's Flatten reads NCHW order
    return (f @ w["fc.w"] + arrays["fc.b"]) @ w["head.w"]


def test_onnx_layers_come_out_in_this_projects_layout(tmp_path):
    model, arrays = _small_graph(np.random.default_rng(0))
    onnx.save(model, tmp_path / "small.onnx")
    w = read_weights(str(tmp_path / "small.onnx"))
    assert sorted(w) == ["conv.w", "fc.w", "head.w"]  # Biases (1-D) are not layers.
    np.testing.assert_array_equal(w["conv.w"], np.transpose(arrays["conv.w"], (2, 3, 1, 0)))  # OIHW -> HWIO
    np.testing.assert_array_equal(w["fc.w"], arrays["fc.w"].T)  # transB=1: (out, in) -> (in, out)
    np.testing.assert_array_equal(w["head.w"], arrays["head.w"])  # MatMul's B is (in, out) already


def test_read_weights_compute_what_the_onnx_graph_computes(tmp_path):
    model, arrays = _small_graph(np.random.default_rng(1))
    onnx.save(model, tmp_path / "small.onnx")
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    (expected,) = ReferenceEvaluator(model).run(None, {"x": x})
    got = _forward_in_project_layout(read_weights(str(tmp_path / "small.onnx")), arrays, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_gemm_without_transb_is_kept(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    onnx.save(
        onnx_graphs.model([helper.make_node("Gemm", ["x", "w"], ["y"])], {"w": w}, [1, 3], [1, 4]),
        tmp_path / "gemm.onnx",
    )
    np.testing.assert_array_equal(read_weights(str(tmp_path / "gemm.onnx"))["w"], w)


def test_onnx_refuses_a_forced_layout_and_a_corrupt_file(tmp_path):
    model, _ = _small_graph(np.random.default_rng(0))
    onnx.save(model, tmp_path / "small.onnx")
    with pytest.raises(InputError, match="graph fixes each weight's layout; drop layout='torch'"):
        read_weights(str(tmp_path / "small.onnx"), layout="torch")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError, match="could not read"):
        read_weights(str(tmp_path / "broken.onnx"))


def test_random_like_report_reads_an_onnx_file(tmp_path):
    from rev_nets.analysis import random_like

    model, _ = _small_graph(np.random.default_rng(0))
    onnx.save(model, tmp_path / "small.onnx")
    report = random_like.report([], [str(tmp_path / "small.onnx")], str(tmp_path / "out"))
    text = report.markdown
    assert report.name == "random_like" and len(report.numbers["rows"]) == 3
    for layer, matrix in (("conv.w", "3x3x3x4 as 27x4"), ("fc.w", "144x10"), ("head.w", "10x5")):
        assert f"| small | {layer} | small.onnx | {matrix} |" in text
    assert (tmp_path / "out" / "figures" / "small.png").stat().st_size > 1000
