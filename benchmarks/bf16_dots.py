"""Whether bfloat16 can speed up the airbench net's train step on this CPU: its convolutions' dots, one at a time.

    python -m benchmarks.bf16_dots

The matmul convolution (``layers.conv_as_matmul``) is one dot of the
stacked patches, (B*H*W, 9*c_in) @ (9*c_in, c_out), forward, plus two in
the backward pass (input and weight gradients). For each of the net's
shapes at batch 512, and for a square 2048 dot beside them, prints the
median time of forward + backward (``jax.vjp``) in three precisions:

- float32 (the runs' default);
- bfloat16 operands and result, as ``compute_dtype="bfloat16"`` (flax's
  ``dtype``) writes the dot;
- bfloat16 operands with float32 accumulation in every dot, the result
  rounded to bfloat16 (``mixed_matmul``: the form that reaches the CPU's
  bf16 matrix units through XLA, where a bf16 result is computed in float32
  and converted);

and, for the forward dot alone, GFLOP/s of JAX and of PyTorch (when
importable) in float32 and in bfloat16. BUILD_NOTES ("bfloat16 on this
CPU") reads the answer from these lines.
"""

from __future__ import annotations

import importlib.util
import math

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import throughput

# Not --batch or --repeats: throughput's flags (imported here) and op_profile's.
_BATCH = flags.DEFINE_integer("conv_batch", 512, "Images per batch in the convolutions' shapes.")
_REPEATS = flags.DEFINE_integer("timings", 5, "Timings per entry; the median is printed.")

# The airbench net's 3x3 convolutions as (output side, 9 * c_in, c_out): group 1's two, group 2's, group 3's.
CONV_SHAPES = ((31, 9 * 24, 64), (15, 9 * 64, 64), (15, 9 * 64, 256), (7, 9 * 256, 256))


@jax.custom_vjp
def mixed_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for bfloat16 ``a`` and 2-D ``b``, accumulated in float32 and rounded to ``a``'s dtype, with a
    backward pass whose two dots accumulate the same way (a plain VJP would take float32 cotangents)."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def _mixed_forward(a, b):
    return mixed_matmul(a, b), (a, b)


def _mixed_backward(residuals, g):
    a, b = residuals
    da = jnp.matmul(g, b.T, preferred_element_type=jnp.float32).astype(a.dtype)
    flat_a, flat_g = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
    db = jnp.matmul(flat_a.T, flat_g, preferred_element_type=jnp.float32).astype(b.dtype)
    return da, db


mixed_matmul.defvjp(_mixed_forward, _mixed_backward)

PRECISIONS = {
    "float32": (jnp.float32, jnp.matmul),
    "bfloat16": (jnp.bfloat16, jnp.matmul),
    "bfloat16, float32 accumulation": (jnp.bfloat16, mixed_matmul),
}


def forward_backward(matmul):
    """The jitted forward and backward of ``matmul`` at (a, b) with cotangent g: its outputs and both gradients."""

    def run(a, b, g):
        out, vjp = jax.vjp(matmul, a, b)
        return out, *vjp(g)

    return jax.jit(run)


def median_ms(fn, *args) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds over ``--timings`` calls, after one untimed call."""
    jax.block_until_ready(fn(*args))
    return 1e3 * throughput.median_seconds(lambda: jax.block_until_ready(fn(*args)), _REPEATS.value)


def operands(shape: tuple[int, ...], k: int, n: int, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random patches of ``shape + (k,)``, a (k, n) weight and a cotangent of ``shape + (n,)``."""
    keys = jax.random.split(jax.random.key(0), 3)
    return tuple(
        jax.random.normal(key, s, dtype) for key, s in zip(keys, ((*shape, k), (k, n), (*shape, n)), strict=True)
    )


def torch_gflops(m: int, k: int, n: int) -> dict[str, float]:
    """PyTorch's forward dot in float32 and bfloat16, GFLOP/s; empty without torch."""
    if importlib.util.find_spec("torch") is None:
        return {}
    import torch

    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        rates[name] = 2 * m * k * n / median_ms(torch.mm, a, b) / 1e6
    return rates


def main(argv) -> None:
    del argv
    batch = _BATCH.value
    cases = [((2048,), 2048, 2048)] + [((batch, side, side), k, n) for side, k, n in CONV_SHAPES]
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, 1 device, median of {_REPEATS.value}")
    print(
        "| dot (m x k @ k x n) | " + " | ".join(f"fwd+bwd ms, {p}" for p in PRECISIONS) + " | forward GFLOP/s: "
        "jax float32 / bfloat16 (f32 acc.) | PyTorch float32 / bfloat16 |"
    )
    print("|---" * (len(PRECISIONS) + 3) + "|")
    for shape, k, n in cases:
        m = math.prod(shape)
        times = [median_ms(forward_backward(mm), *operands(shape, k, n, dtype)) for dtype, mm in PRECISIONS.values()]
        jax_rates = [
            2 * m * k * n / median_ms(jax.jit(mm), *operands(shape, k, n, dtype)[:2]) / 1e6
            for dtype, mm in (PRECISIONS["float32"], PRECISIONS["bfloat16, float32 accumulation"])
        ]
        torch_rates = torch_gflops(m, k, n)
        torch_text = " / ".join(f"{r:.0f}" for r in torch_rates.values()) or "-"
        print(
            f"| {m} x {k} @ {k} x {n} | "
            + " | ".join(f"{t:.0f}" for t in times)
            + f" | {jax_rates[0]:.0f} / {jax_rates[1]:.0f} | {torch_text} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
