"""The random-net model and its recovery: the rates of the paper's section 1, exact zeros, shapes, jit, memory."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from rev_nets import theory

TABLE_CS = jnp.array([0.0, 2.0])


def _mean(trials_field, c_index=None, layer=0):
    values = np.asarray(trials_field)
    return float(values[:, :, c_index, layer].mean() if c_index is not None else values[..., layer].mean())


def test_sample_hidden_is_k_sparse_with_bounded_values():
    h = theory.sample_hidden(jax.random.key(0), 64, 300, 7, low=0.5, high=1.5)
    chex.assert_shape(h, (64, 300))
    np.testing.assert_array_equal(np.sum(h > 0, -1), 7)
    nonzero = np.asarray(h)[np.asarray(h) > 0]
    assert nonzero.min() >= 0.5 and nonzero.max() <= 1.5
    # Supports are spread over all units: every unit is used about 64 * 7 / 300 = 1.5 times.
    assert np.sum(np.asarray(h) > 0, 0).max() <= 8


def test_thresholded_error_falls_like_one_over_n():
    """m = 200, k = 5, rho = 1, c = 2: fitted slope of log(error) against log(n) is -1 within 0.1.

    Each point averages 4 weight draws x 25 hidden draws; the points' standard errors (~3%) give
    the slope an uncertainty of ~0.03 over this factor-9 range of n, and the tail term of the
    error (false nonzeros, also ~1/n) does not bend the line.
    """
    ns = (500, 1500, 4500)
    errors = [
        _mean(
            theory.simulate(jax.random.key(n), (n, 200), 5, 1.0, TABLE_CS, weight_draws=4, hidden_draws=25).threshold, 1
        )
        for n in ns
    ]
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert abs(slope + 1.0) < 0.1, (slope, errors)


@pytest.fixture(scope="module")
def table_trials():
    """The n = 4000 row of the paper's section 1 (m = 1000, k = 10, rho = 1), 10 x 10 trials."""
    cs = jnp.array([0.0, 2.0, theory.exact_recovery_c(1000, 1e-3)])
    return theory.simulate(jax.random.key(0), (4000, 1000), 10, 1.0, cs)


def test_exact_recovery_of_zeros_needs_the_union_bound_c(table_trials):
    """c = sqrt(2 ln(m / eps)) ~ 5.26 (m = 1000, eps = 1e-3): >= 95% of trials recover every zero; c = 2: ~none."""
    assert theory.exact_recovery_c(1000, 1e-3) == pytest.approx(5.257, abs=1e-3)
    zeros = np.asarray(table_trials.zeros_recovered)
    assert zeros[:, :, 2, 0].mean() >= 0.95
    # At c = 2 each of 990 zeros escapes with probability Phi(-2) = 2.3%: 22 false nonzeros per trial.
    assert zeros[:, :, 1, 0].mean() <= 0.05


def test_errors_without_bias_match_paper_section_1(table_trials):
    """Linear W^T x: 2m/(rho n) = 0.5; relu(W^T x): (m + k)/(rho n) = 0.2525; both within 5% (s.e. ~1%)."""
    assert _mean(table_trials.linear) == pytest.approx(2 * 1000 / 4000, rel=0.05)
    assert _mean(table_trials.relu) == pytest.approx((1000 + 10) / 4000, rel=0.05)


def test_thresholded_error_matches_paper_table_and_prediction(table_trials):
    """c = 2: the paper's 0.029 ± 0.001 within 15%, and ``predicted_error`` within 15% of the measurement."""
    measured = _mean(table_trials.threshold, 1)
    assert measured == pytest.approx(0.029, rel=0.15)
    assert theory.predicted_error(10, 1000, 4000, 1.0, 2.0) == pytest.approx(measured, rel=0.15)
    assert _mean(table_trials.predicted, 1) == pytest.approx(measured, rel=0.15)


def test_sampling_doubles_the_errors():
    """rho = 0.5, n = 4000: the paper's 1.01 / 0.52 / 0.058 within 5%, 5%, 15%."""
    trials = theory.simulate(jax.random.key(1), (4000, 1000), 10, 0.5, TABLE_CS)
    assert _mean(trials.linear) == pytest.approx(1.01, rel=0.05)
    assert _mean(trials.relu) == pytest.approx(0.52, rel=0.05)
    assert _mean(trials.threshold, 1) == pytest.approx(0.058, rel=0.15)


@pytest.fixture(scope="module")
def sampled():
    """Weights (4000 x 500), a batch of 32 top layers with k = 10, and their samples x at rho = 0.5."""
    weights = theory.random_weights(jax.random.key(0), (4000, 500))
    h = theory.sample_hidden(jax.random.key(1), 32, 500, 10)
    return weights, h, theory.sample_layers(jax.random.key(2), weights, h, 0.5)[0]


def test_input_norm_bias_matches_the_oracle_bias(sampled):
    """For N(0, 1) weights ||x|| estimates the noise level ||h|| sqrt(2/(rho n)): within 5% at n = 4000."""
    weights, h, x = sampled
    (oracle,) = theory.threshold_biases((jnp.linalg.norm(h, axis=-1),), weights, 0.5, 1.0)
    np.testing.assert_allclose(-jnp.linalg.norm(x, axis=-1), oracle, rtol=0.05)


def test_generation_keeps_the_signal_on_the_support(sampled):
    """alpha = 2/(rho n): (W^T x)_i / h_i ~ 1 on the support, as in the paper's section 1 (within 5%)."""
    weights, h, x = sampled
    (linear,) = theory.recover(weights, x, relu=False)
    support = np.asarray(h) > 0
    assert float(np.mean(np.asarray(linear)[support] / np.asarray(h)[support])) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("c", [0.0, 1.0, 2.0, 3.0])
def test_predicted_error_for_matches_monte_carlo(c):
    """The closed form against numpy sampling of relu(h + sigma Z - c sigma) for a dense h with small values."""
    rng = np.random.default_rng(0)
    h = np.where(rng.random(400) < 0.4, rng.exponential(1.0, 400), 0.0).astype(np.float32)
    n = 2000
    sigma = np.linalg.norm(h) * np.sqrt(2.0 / n)
    noise = sigma * rng.standard_normal((4000, h.size))
    monte_carlo = np.mean(np.sum((np.maximum(h + noise - c * sigma, 0) - h) ** 2, -1)) / np.sum(h**2)
    predicted = float(theory.predicted_error_for(jnp.asarray(h)[None], n, 1.0, c)[0])
    assert predicted == pytest.approx(monte_carlo, rel=0.02)


def test_predicted_error_for_reduces_to_the_sparse_formula():
    """Values far above the noise: ``predicted_error_for`` equals ``predicted_error`` for their k."""
    h = theory.sample_hidden(jax.random.key(0), 4, 1000, 10, low=50.0, high=60.0)
    for c in (0.0, 2.0, 4.0):
        np.testing.assert_allclose(
            theory.predicted_error_for(h, 100_000, 1.0, c), theory.predicted_error(10, 1000, 100_000, 1.0, c), rtol=1e-3
        )
    assert theory.predicted_error(10, 1000, 4000, 1.0, recovery_relu=False) == pytest.approx(0.5)
    assert theory.theorem_rate(10, 4000, 0.5) == pytest.approx(0.005)


class MultilayerTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters([(300, 50), 1.0], [(800, 300, 100, 20), 0.5])
    def test_shapes_and_jit_agreement(self, widths, rho):
        weights = theory.random_weights(jax.random.key(0), widths)
        h = theory.sample_hidden(jax.random.key(1), 6, widths[-1], 3)

        @self.variant
        def sample_and_recover(key, weights, h):
            layers = theory.sample_layers(key, weights, h, rho)
            return layers, theory.recover(weights, layers[0], c=1.0)

        layers, estimates = sample_and_recover(jax.random.key(2), weights, h)
        chex.assert_shape(layers, [(6, n) for n in widths])
        chex.assert_shape(estimates, [(6, n) for n in widths[1:]])
        np.testing.assert_array_equal(layers[-1], h)
        assert all(bool(jnp.all(layer >= 0)) for layer in layers)
        reference = theory.sample_layers(jax.random.key(2), weights, h, rho)
        chex.assert_trees_all_close(layers, reference, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(estimates, theory.recover(weights, reference[0], c=1.0), rtol=1e-5, atol=1e-6)

    def test_simulate_shapes(self):
        widths = (400, 100, 20)
        trials = theory.simulate(jax.random.key(0), widths, 4, 1.0, TABLE_CS, weight_draws=3, hidden_draws=5)
        for name in ("nonzeros", "linear", "relu"):
            chex.assert_shape(getattr(trials, name), (3, 5, 2))
        for name in ("threshold", "threshold_input_norm", "zeros_recovered", "predicted"):
            chex.assert_shape(getattr(trials, name), (3, 5, 2, 2))
        np.testing.assert_array_equal(trials.nonzeros[..., 1], 4)  # the top layer is exactly k-sparse
        chex.assert_tree_all_finite(trials.threshold)


def test_memory_does_not_grow_with_the_number_of_weight_draws():
    """lax.map over weight draws: XLA's temporary buffers are the same for 2 and 40 draws of a 4 MB W."""
    temp = [
        theory.simulate.lower(jax.random.key(0), (2000, 500), 5, 1.0, TABLE_CS, weight_draws=d, hidden_draws=8)
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
        for d in (2, 40)
    ]
    assert temp[1] <= 1.01 * temp[0] < 40 * 2000 * 500 * 4, temp


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"sparsity k must be in 1..50"):
        theory.sample_hidden(jax.random.key(0), 2, 50, 60)
    with pytest.raises(ValueError, match="rho must be in"):
        theory.simulate(jax.random.key(0), (100, 20), 2, 1.5, TABLE_CS)
    with pytest.raises(ValueError, match="either biases or c"):
        theory.recover((jnp.ones((4, 2)),), jnp.ones((1, 4)), [0.0], c=1.0)
