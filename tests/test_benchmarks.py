"""The benchmark's FLOP accounting against XLA's own count on CPU."""

import jax
import pytest

from benchmarks import throughput
from rev_nets import generator, nets


def _xla_flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])


@pytest.mark.parametrize("net", [nets.mnist_mlp(width=64), nets.cifar_cnn((32, 64, 64))], ids=["mlp", "cnn"])
def test_layer_flops_match_xla_for_forward_and_generator(net):
    params = nets.init(jax.random.key(0), net)
    batch = 64  # The generator's alpha costs a batch-independent pass over the weights: amortise it.
    x = jax.numpy.zeros((batch, *net.input_shape))
    counted = throughput.layer_flops(net)
    forward = _xla_flops(lambda p, x: nets.forward(net, p, x)[0], params, x) / batch
    assert forward == pytest.approx(sum(counted), rel=0.05)
    h = net.features(params, x, 3)
    # Copying through the pooling reads no forward value, so XLA keeps the reverse pass alone.
    generated = _xla_flops(lambda p, h: generator.twins(net, p, None, 3, h=h), params, h) / batch
    assert generated == pytest.approx(sum(counted[:3]), rel=0.05)


def test_shadow_flop_floor_of_the_default_nets():
    assert throughput.shadow_flop_floor(nets.mnist_mlp(), 3) == pytest.approx(2.37, abs=0.01)
    assert throughput.shadow_flop_floor(nets.cifar_cnn(), 3) == pytest.approx(2.34, abs=0.01)
