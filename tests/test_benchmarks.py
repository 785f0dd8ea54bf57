"""The throughput benchmark's FLOP accounting against counts from the layers' shapes."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bf16_dots, op_profile, throughput
from rev_nets import generator, models, nets
from rev_nets import layers as L


def _layer_flops(net: nets.Net) -> list[int]:
    """Per-image FLOPs of each linear map of ``net`` (hidden layers, then the head): 2 x fan-in x output units."""
    shapes = nets.layer_shapes(net)
    flops = [
        2 * L.fan_in(layer, shape) * math.prod(L.pre_pool_shape(layer, shape))
        for layer, shape in zip(net.layers, shapes)
    ]
    return [*flops, 2 * math.prod(shapes[-1]) * net.num_classes]


def _compiled_flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])


@pytest.mark.parametrize("net", [nets.mnist_mlp(width=64), nets.cifar_cnn((32, 64, 64))], ids=["mlp", "cnn"])
def test_forward_flops_count_the_linear_maps_and_the_generator_costs_the_forward(net):
    counted = _layer_flops(net)
    assert throughput.forward_flops(net) == pytest.approx(sum(counted), rel=0.05)
    assert throughput.forward_flops(net, 3) == pytest.approx(sum(counted[:3]), rel=0.05)
    params = nets.init(jax.random.key(0), net)
    batch = 64  # The generator's alpha costs a batch-independent pass over the weights: amortise it.
    h = net.features(params, jax.numpy.zeros((batch, *net.input_shape)), 3)
    # Copying through the pooling reads no forward value, so XLA keeps the reverse pass alone.
    generated = _compiled_flops(lambda p, h: generator.twins(net, p, None, 3, h=h), params, h) / batch
    assert generated == pytest.approx(sum(counted[:3]), rel=0.05)


def test_forward_flops_of_the_airbench_net_match_its_convolutions():
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", widths=[8, 16, 16])
    conv = lambda side, c_in, c_out, k=3: 2 * k * k * c_in * c_out * side * side
    # 2x2 whitening (32 -> 31), then per group: conv at the input side, pool, conv at the pooled side.
    counted = (
        conv(31, 3, 24, 2)
        + conv(31, 24, 8)
        + conv(15, 8, 8)
        + conv(15, 8, 16)
        + conv(7, 16, 16)
        + conv(7, 16, 16)
        + conv(3, 16, 16)
        + 2 * 16 * 10
    )
    assert throughput.forward_flops(model) == pytest.approx(counted, rel=0.05)


def test_shadow_flop_floor_of_the_default_nets():
    assert throughput.shadow_flop_floor(nets.mnist_mlp(), 3) == pytest.approx(2.33, abs=0.01)
    assert throughput.shadow_flop_floor(nets.cifar_cnn(), 3) == pytest.approx(2.33, abs=0.01)


def test_op_profile_reads_each_instruction_of_the_compiled_text():
    f = jax.jit(lambda w, x: jax.numpy.tanh(x @ w).sum())
    text = jax.jit(jax.grad(f)).lower(jax.numpy.ones((5, 3)), jax.numpy.ones((4, 5))).compile().as_text()
    table = op_profile.instructions(text)
    dots = {name: i for name, i in table.items() if op_profile.kind(name) in ("dot", "dot_general")}
    assert dots, f"no dot among {sorted(table)}"
    assert all(i.opcode == "dot" and i.shape.startswith("f32[") for i in dots.values())
    assert all("test_benchmarks.py:" in i.source for i in dots.values())
    fusions = [i.opcode for i in table.values() if i.opcode.startswith("fusion")]
    assert fusions and all(op.removeprefix("fusion: ") in ("add", "multiply", "subtract", "tanh") for op in fusions)
    assert {op_profile.phase(i.op_name) for i in dots.values()} == {"forward", "transposed (backward, generator)"}
    assert all("{" not in i.shape and i.opcode != "fusion: ?" for i in table.values())


HLO_WITH_AN_UNLABELLED_FUSION = """HloModule jit_f, is_scheduled=true

FileNames
1 "/env/lib/python3.11/site-packages/rev_nets/layers.py"

FunctionNames
1 "max_pool"

FileLocations
1 {file_name_id=1 function_name_id=1 line=254 end_line=254 column=4 end_column=9}

StackFrames
1 {file_location_id=1 parent_frame_id=1}


%fused_computation (param_0: f32[2,3]) -> f32[2] {
  %param_0 = f32[2,3]{1,0} parameter(0)
  %square.1 = f32[2,3]{1,0} multiply(%param_0, %param_0), metadata={op_name="jit(f)/square" stack_frame_id=1}
  ROOT %reduce.2 = f32[2]{0} reduce(%square.1, %constant), dimensions={1}, to_apply=%add
}

ENTRY %main (x: f32[2,3]) -> (f32[2], f32[2,3]) {
  %x = f32[2,3]{1,0} parameter(0)
  %ynn_fusion = f32[2]{0} fusion(%x), kind=kCustom, calls=%fused_computation
  ROOT %tuple = (f32[2]{0}, /*index=1*/f32[2,3]{1,0}) tuple(%ynn_fusion, %x)
}
"""


def test_op_profile_labels_a_fusion_by_its_body_and_strips_layouts():
    table = op_profile.instructions(HLO_WITH_AN_UNLABELLED_FUSION)
    assert table["ynn_fusion"] == op_profile.Instruction(
        "f32[2]", "fusion: reduce", "jit(f)/square", "rev_nets/layers.py:254 (max_pool)"
    )
    assert table["tuple"].shape == "(f32[2], f32[2,3])" and table["tuple"].opcode == "tuple"
    assert table["x"] == op_profile.Instruction("f32[2,3]", "parameter", "", "")


def test_op_profile_times_the_instructions_of_a_real_train_step():
    config = throughput.train_config("mlp", 16, 0)
    step, arguments = throughput.made_step(nets.mnist_mlp(), config, 16)
    seconds, table, wall = op_profile.profile(step, arguments, steps=2)
    phases = {op_profile.phase(table[name].op_name) for name in seconds}
    assert {"forward", "transposed (backward, generator)"} <= phases
    assert not any(table[name].opcode in ("while", "conditional", "call") for name in seconds)
    report = op_profile.report(seconds, table, wall, steps=2, top=3)
    slowest = seconds.most_common(1)[0][0]
    seconds_by_kind = collections.Counter()
    for name, s in seconds.items():
        seconds_by_kind[op_profile.kind(name)] += s
    heaviest_kind = seconds_by_kind.most_common(1)[0][0]  # not always the slowest instruction's kind
    assert f"\n| {slowest} | " in report and f"\n| {heaviest_kind} | " in report


def test_the_mixed_precision_dot_and_its_gradients_are_float32s_to_bfloat16_rounding():
    a, b, g = bf16_dots.operands((2, 5, 5), 18, 8, jnp.float32)
    low = [t.astype(jnp.bfloat16) for t in (a, b, g)]
    out, da, db = bf16_dots.forward_backward(bf16_dots.mixed_matmul)(*low)
    reference = bf16_dots.forward_backward(jnp.matmul)(*(t.astype(jnp.float32) for t in low))
    assert {x.dtype for x in (out, da, db)} == {jnp.dtype(jnp.bfloat16)}
    for got, want in zip((out, da, db), reference, strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2, atol=1e-2 * float(jnp.abs(want).max()))
