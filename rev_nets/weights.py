"""Weight files as arrays in this project's layout: ``.npz``, ``.safetensors``, PyTorch state dicts and ONNX graphs.

This project stores dense weights as (in, out) and conv kernels as
(kh, kw, in, out) (HWIO). PyTorch stores (out, in) and (out, in, kh, kw);
``read_weights`` converts them (``layout``; auto: PyTorch's for state dicts
and safetensors, this project's for ``.npz``). An ONNX file carries its
layout in its graph, so each weight is mapped by the node that uses it:
Conv's OIHW kernel to HWIO, Gemm's B to (in, out) (transposed when
``transB=1``), MatMul's second input kept as (in, out). Readers other than
numpy's are optional packages (``safetensors``, ``torch``, ``onnx``: the
``onnx`` extra); a missing one is named in one sentence.
"""

from __future__ import annotations

import os

import numpy as np

from rev_nets.errors import InputError

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
LAYOUTS = ("auto", "jax", "torch")


def from_torch_layout(w: np.ndarray) -> np.ndarray:
    """PyTorch's (out, in, *kernel) as this project's (*kernel, in, out): dense (out, in) -> (in, out), OIHW -> HWIO."""
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def file_layout(path: str, layout: str) -> str:
    """``layout``, or for "auto" the usual one of the file type: PyTorch's for state dicts and safetensors.

    ONNX files are "graph": their layout is read from the nodes, never given.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    if path.endswith(".onnx"):
        if layout != "auto":
            raise InputError(f"{path} is ONNX, whose graph fixes each weight's layout; drop layout={layout!r}.")
        return "graph"
    if layout != "auto":
        return layout
    return "jax" if path.endswith(".npz") else "torch"


def _flatten(tree, prefix: str = "") -> dict:
    """Nested dicts (e.g. a checkpoint holding a state dict) as one dict with dotted keys."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _load_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise InputError(f"reading {path} needs PyTorch: pip install torch (the CPU build is enough).") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = {k: v for k, v in _flatten(state).items() if isinstance(v, torch.Tensor)}
    return {k: v.detach().float().numpy() for k, v in tensors.items()}


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise InputError(f"reading {path} needs the safetensors package: pip install safetensors.") from None
    return load_file(path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


def onnx_layer_weights(model) -> dict[str, np.ndarray]:
    """The weights of an ONNX model's Conv, Gemm and MatMul nodes, by initializer name, in this project's layout."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        w = numpy_helper.to_array(initializers[node.input[1]])
        if node.op_type == "Conv":
            w = np.transpose(w, (*range(2, w.ndim), 1, 0))  # OIHW -> HWIO
        elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            w = w.T  # B given as (out, in)
        weights[node.input[1]] = w
    return weights


def onnx_model(path: str):
    """The ONNX model in ``path``; a missing onnx package or an unreadable file is one sentence."""
    try:
        import onnx
    except ImportError:
        raise InputError(
            f"reading {path} needs the onnx package: pip install '.[onnx]' (or pip install onnx)."
        ) from None
    try:
        return onnx.load(path)
    except Exception as error:  # noqa: BLE001 -- A corrupt file of any kind becomes one sentence.
        raise InputError(f"could not read {path} ({type(error).__name__}: {error}).") from None


def _load_onnx(path: str) -> dict[str, np.ndarray]:
    return onnx_layer_weights(onnx_model(path))


def read_weights(path: str, layout: str = "auto") -> dict[str, np.ndarray]:
    """The arrays of at least two dimensions in a weight file (of an ONNX file: its layers' weights), in this
    project's layout, by their names in the file."""
    if not os.path.isfile(path):
        raise InputError(f"weight file {path} does not exist; pass an existing .npz, .safetensors, .pt or .onnx file.")
    kind = file_layout(path, layout)
    if path.endswith(".npz"):
        loader = _load_npz
    elif path.endswith(".safetensors"):
        loader = _load_safetensors
    elif path.endswith(TORCH_SUFFIXES):
        loader = _load_torch
    elif path.endswith(".onnx"):
        loader = _load_onnx
    else:
        raise InputError(f"{path} is not a supported weight file; use .npz, .safetensors, .pt, .pth, .bin or .onnx.")
    try:
        arrays = loader(path)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 -- Any reader's error on a corrupt file becomes one sentence.
        raise InputError(f"could not read {path} ({type(error).__name__}: {error}).") from None
    convert = from_torch_layout if kind == "torch" else np.asarray
    return {name: convert(np.asarray(a)) for name, a in arrays.items() if np.ndim(a) >= 2}
