"""Small ONNX models for the tests, built node by node (the caller has checked that onnx is installed)."""

import numpy as np


def model(nodes, arrays: dict[str, np.ndarray], input_shape: list[int], output_shape: list[int]):
    """A float32 model with input ``x``, output ``y`` and ``arrays`` as its initializers, at opset 17."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=[numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in arrays.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
