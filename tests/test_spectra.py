"""Random-like weight statistics: calibrated verdicts, scipy oracles, the singular-value law, the conv reshape.

Every verdict test draws many matrices with fixed seeds and asserts rates with
wide margins, so none rests on one lucky draw.
"""

import collections

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from rev_nets import layers as L
from rev_nets import spectra

GAUSSIAN_SHAPES = [(64, 64), (100, 40), (40, 100), (72, 16)]


def _orthonormal(rng, n, k):
    return np.linalg.qr(rng.standard_normal((n, k)))[0]


# ---------------------------------------------------------------- verdicts --


@pytest.mark.parametrize("shape", GAUSSIAN_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gaussian_matrices_come_out_random_like(shape):
    """Fresh Gaussians (any mean and scale) pass: each test fails about 1% of them with a 200-draw calibration."""
    calibration = spectra.calibrate(shape, count=200, seed=0)
    rng = np.random.default_rng(1)
    draws = 100
    failed = collections.Counter()
    random_like = 0
    for i in range(draws):
        w = 0.3 * rng.standard_normal(shape) + 0.1
        assessment = spectra.assess(w, calibration, seed=i)
        random_like += assessment.random_like
        failed.update(assessment.failed)
        assert assessment.outliers <= 1, assessment
    # Expected: about 93 random-like, about 1 failure per test (a 5% failure rate per test would be 5).
    assert random_like >= 80, (random_like, failed)
    assert max(failed.values(), default=0) <= 10, failed


@pytest.mark.parametrize("shape", [(120, 80), (100, 100)], ids=["120x80", "100x100"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_low_rank_plus_noise_shows_one_outlier_per_spike(shape, seed):
    """Three spikes of normalised strength 3, 4, 5 give three outliers (near 2.4 and up; the bulk stays below 1.7)."""
    n, m = shape
    rng = np.random.default_rng(seed)
    u, v = _orthonormal(rng, n, 3), _orthonormal(rng, m, 3)
    w = rng.standard_normal(shape) + np.sqrt(n) * (u * np.array([3.0, 4.0, 5.0])) @ v.T
    assessment = spectra.assess(w, spectra.calibrate(shape), seed=seed)
    assert assessment.outliers == 3, assessment
    assert "max_sv" in assessment.failed and not assessment.random_like


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heavy_tailed_entries_fail_the_gaussian_test(seed):
    w = np.random.default_rng(seed).standard_t(3, (120, 80))
    assessment = spectra.assess(w, spectra.calibrate((120, 80)), seed=seed)
    assert {"excess_kurtosis", "ks_gauss"} <= set(assessment.failed), assessment
    assert not assessment.random_like
    assert "NOT random-like" in spectra.verdict("t3", assessment)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_laplace_entries_fit_laplace_better(seed):
    w = np.random.default_rng(seed).laplace(size=(120, 80))
    assessment = spectra.assess(w, spectra.calibrate((120, 80)), seed=seed)
    assert "ks_gauss" in assessment.failed
    assert assessment.stats.ks_laplace < assessment.stats.ks_gauss / 2, assessment.stats
    assert "Laplace fits better" in spectra.verdict("laplace", assessment)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_sharing_a_component_fail_the_dependence_test(seed):
    """Every row = common vector + own noise: rows correlate, the permuted copy does not."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((120, 80)) + 0.5 * rng.standard_normal(80)
    assessment = spectra.assess(w, spectra.calibrate((120, 80)), seed=seed)
    assert "row_corr" in assessment.failed and assessment.stats.row_corr > 1.5, assessment.stats


def test_verdict_names_every_test_and_threshold():
    calibration = spectra.calibrate((64, 64))
    assessment = spectra.assess(np.random.default_rng(5).standard_normal((64, 64)), calibration)
    line = spectra.verdict("h1", assessment)
    assert "\n" not in line and line.startswith("h1 (64x64): ")
    bounds = spectra.limits(calibration)
    for name, label in spectra.TESTS.items():
        assert f"{label} " in line and f"{getattr(bounds, name):.4g}" in line
    assert "50 Gaussian 64x64" in line


# ---------------------------------------------------------- against scipy --


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.standard_normal((30, 40)),
        lambda r: r.standard_t(4, (50, 20)),
        lambda r: r.exponential(size=(25, 25)),
        lambda r: np.round(r.standard_normal((40, 30)), 1),  # ties
    ],
    ids=["normal", "t4", "exponential", "ties"],
)
def test_entry_statistics_agree_with_scipy(draw):
    x = draw(np.random.default_rng(0))
    mean, std, skew, kurt, ks_gauss, ks_laplace = spectra.entry_stats(x)
    flat = x.ravel()
    np.testing.assert_allclose([mean, std], [flat.mean(), flat.std()], rtol=1e-12)
    np.testing.assert_allclose(skew, stats.skew(flat), rtol=1e-10)
    np.testing.assert_allclose(kurt, stats.kurtosis(flat), rtol=1e-10)
    np.testing.assert_allclose(
        ks_gauss, stats.kstest(flat, "norm", args=(flat.mean(), flat.std())).statistic, rtol=1e-10
    )
    loc, scale = stats.laplace.fit(flat)
    np.testing.assert_allclose(spectra.laplace_fit(flat), (loc, scale), rtol=1e-10)
    np.testing.assert_allclose(ks_laplace, stats.kstest(flat, "laplace", args=(loc, scale)).statistic, rtol=1e-10)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (40, 40)])
def test_rms_correlation_matches_corrcoef(shape):
    m = np.random.default_rng(0).standard_normal(shape) + np.linspace(0, 1, shape[1])
    corr = np.corrcoef(m)
    off = corr[~np.eye(shape[0], dtype=bool)]
    np.testing.assert_allclose(spectra.rms_correlation(m), np.sqrt(np.mean(off**2)), rtol=1e-10)


def test_constant_rows_are_left_out_of_the_correlations():
    m = np.random.default_rng(0).standard_normal((20, 30))
    with_constant = np.vstack([m, np.full((3, 30), 2.0)])
    np.testing.assert_allclose(spectra.rms_correlation(with_constant), spectra.rms_correlation(m), rtol=1e-12)


@pytest.mark.parametrize("shape", [(60, 20), (20, 60), (30, 30)])
def test_normalised_singular_values_match_svd(shape):
    m = np.random.default_rng(0).standard_normal(shape) * 2.0 + 0.5
    c = m - m.mean()
    expected = np.linalg.svd(c, compute_uv=False) / np.sqrt(max(shape) * np.mean(c**2))
    np.testing.assert_allclose(spectra.normalised_singular_values(m), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.1, 10 / 1024])
def test_law_density_integrates_to_its_cdf(ratio):
    lo, hi = spectra.law_edges(ratio)
    total = integrate.quad(lambda x: spectra.law_density(x, ratio), lo, hi, limit=200)[0]
    assert abs(total - 1.0) < 1e-6
    for x in np.linspace(lo, hi, 7)[1:-1]:
        part = integrate.quad(lambda t: spectra.law_density(t, ratio), lo, x, limit=200)[0]
        assert abs(spectra.law_cdf(x, ratio) - part) < 1e-6, (ratio, x)
    np.testing.assert_array_equal(spectra.law_cdf([lo - 0.1, hi + 0.1], ratio), [0.0, 1.0])


def test_square_law_is_the_quarter_circle():
    x = np.linspace(0.01, 1.99, 50)
    np.testing.assert_allclose(spectra.law_density(x, 1.0), np.sqrt(4 - x**2) / np.pi, rtol=1e-12)
    quarter_circle_cdf = (x * np.sqrt(4 - x**2) / 2 + 2 * np.arcsin(x / 2)) / np.pi
    np.testing.assert_allclose(spectra.law_cdf(x, 1.0), quarter_circle_cdf, atol=1e-7)


@pytest.mark.parametrize("shape", [(800, 400), (500, 500), (1000, 100)])
def test_large_gaussian_spectrum_follows_the_law(shape):
    m = np.random.default_rng(0).standard_normal(shape)
    ks_law, max_sv = spectra.spectrum_stats(m)
    assert ks_law < 0.02
    assert abs(max_sv - spectra.law_edges(spectra.aspect_ratio(shape))[1]) < 0.05


@given(
    shape=st.sampled_from([(12, 7), (9, 30)]),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-10, 10),
    seed=st.integers(0, 2**16),
)
def test_statistics_ignore_scale_and_mean(shape, scale, shift, seed):
    w = np.random.default_rng(seed).standard_normal(shape)
    base = spectra.statistics(w, seed=3)
    moved = spectra.statistics(scale * w + shift * scale, seed=3)
    np.testing.assert_allclose(moved[2:], base[2:], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(moved.std, scale * base.std, rtol=1e-9)


def test_small_matrices_and_calibrations_are_refused():
    with pytest.raises(ValueError, match="both sides >= 3"):
        spectra.statistics(np.ones((10, 2)))
    with pytest.raises(ValueError, match="at least 2 matrices"):
        spectra.calibrate((10, 10), count=1)


# ------------------------------------------------------------------- conv --


def test_conv_kernel_reshape_puts_tap_and_channel_on_rows():
    w = np.random.default_rng(0).standard_normal((3, 5, 4, 6))
    m = spectra.as_matrix(w)
    assert m.shape == (3 * 5 * 4, 6)
    for i, j, c, o in [(0, 0, 0, 0), (2, 4, 3, 5), (1, 3, 2, 1)]:
        assert m[(i * 5 + j) * 4 + c, o] == w[i, j, c, o]
    dense = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(spectra.as_matrix(dense), dense)


@pytest.mark.parametrize("impl", ["matmul", "lax"])
def test_conv_matrix_is_the_one_the_convolution_multiplies(impl):
    """A VALID conv on a kernel-sized input is one matmul of the flattened input by the reshaped kernel."""
    spec = L.Conv(6, kernel_size=(3, 5), padding="VALID", impl=impl)
    w = jax.random.normal(jax.random.key(0), (3, 5, 4, 6))
    x = jax.random.normal(jax.random.key(1), (2, 3, 5, 4))
    out = np.asarray(L.linear(spec, w, x)).reshape(2, 6)
    np.testing.assert_allclose(out, np.asarray(x).reshape(2, -1) @ spectra.as_matrix(w), rtol=1e-5, atol=1e-5)
