"""How random-like is a weight matrix: entry, dependence and singular-value statistics, calibrated on Gaussians.

The paper's theory assumes trained weights behave like i.i.d. random numbers
and checks it on real nets: entries look Gaussian, singular values follow the
quarter-circle law. Here each claim is a statistic of one matrix, and each
statistic is judged against the same statistic on ``count`` (at least 50)
i.i.d. Gaussian matrices of the same shape drawn with a fixed seed: a matrix
passes a test when its value is at most that set's 99th percentile.

Matrix: a dense weight ``(in, out)`` is used as is; a conv kernel
``(kh, kw, c_in, c_out)`` (HWIO) is reshaped to ``(kh*kw*c_in, c_out)``, row
``(i*kw + j)*c_in + c`` holding tap ``(i, j)`` of input channel ``c``: the
matrix the convolution multiplies its stacked patches by.

Statistics (``Stats``), all unchanged by the scale and the overall mean of the
entries, except ``mean`` and ``std``, which are the fitted Gaussian:

- entries: skewness, excess kurtosis, and the Kolmogorov-Smirnov distance of
  the entries to the fitted Gaussian (mean, std with ddof 0) and to the fitted
  Laplace (location the median, scale the mean absolute deviation from it);
- dependence: the root mean square of the correlations between distinct rows
  (and between distinct columns), divided by the same for a random permutation
  (without replacement) of the same entries; 1 for independent entries;
- singular values: with ``W`` centred by its overall mean, ``s^2`` the mean
  squared centred entry, ``N >= M`` its sides and ``lambda = M / N``, the
  normalised singular values ``x = sigma / sqrt(N s^2)`` of a random matrix
  have ``x^2`` Marchenko-Pastur distributed with ratio ``lambda`` and variance
  1, so ``x`` fills ``[1 - sqrt(lambda), 1 + sqrt(lambda)]``; a square matrix
  gives the quarter circle ``sqrt(4 - x^2) / pi`` on ``[0, 2]``. ``ks_law`` is
  the KS distance of the ``x`` to that law, ``max_sv`` the largest ``x``.

An outlier is a singular value above the calibration set's 99th-percentile
``max_sv``: the plain bulk edge ``1 + sqrt(lambda)`` is crossed by 10-20% of
pure Gaussian matrices of moderate size. With 50 draws the 99th percentile lies
between the two largest, so a fresh Gaussian matrix fails each test with
probability about 2-3% and at least one of the seven tests about one time in
eight (measured: 8-18% on four shapes; 6-8% with 200 draws). A failure by a
few percent of the threshold is that noise; trained layers fail by far more.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import linalg, special

from rev_nets.errors import InputError

# Statistics a matrix must keep at or below the calibration set's 99th percentile, with a short label for each.
TESTS = {
    "skewness": "|skew|",
    "excess_kurtosis": "|ex.kurt|",
    "ks_gauss": "KS-Gauss",
    "row_corr": "row-corr",
    "col_corr": "col-corr",
    "ks_law": "KS-law",
    "max_sv": "max-sv",
}
PERCENTILE = 99.0
CALIBRATION_VERSION = 1  # Bump when a statistic's definition changes: saved calibrations are keyed by it.


class Stats(NamedTuple):
    """One matrix's statistics (floats), or a calibration set's (arrays of one value per Gaussian draw)."""

    mean: float
    std: float
    skewness: float
    excess_kurtosis: float
    ks_gauss: float
    ks_laplace: float
    row_corr: float
    col_corr: float
    ks_law: float
    max_sv: float


class Assessment(NamedTuple):
    """A matrix's statistics judged against its calibration: the verdict's inputs."""

    shape: tuple[int, int]
    count: int  # Gaussian matrices in the calibration set
    stats: Stats
    limits: Stats  # the calibration set's 99th percentiles (mean and std: NaN, not tests)
    outliers: int
    failed: tuple[str, ...]  # names from TESTS

    @property
    def random_like(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------- matrix --


def as_matrix(w) -> np.ndarray:
    """A weight as a float64 matrix: dense (in, out) as is, conv HWIO (kh, kw, c_in, c_out) as (kh*kw*c_in, c_out)."""
    w = np.asarray(w, np.float64)
    if w.ndim < 2:
        raise InputError(f"A weight matrix needs at least 2 dimensions, got shape {w.shape}.")
    return w.reshape(-1, w.shape[-1])


# ----------------------------------------------------------------- entries --


def ks_distance(sorted_x: np.ndarray, cdf: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample ``sorted_x`` and a law whose CDF there is ``cdf``."""
    n = sorted_x.size
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(n) / n
    return float(max(above.max(), below.max()))


def laplace_fit(x: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood Laplace location (the median) and scale (mean absolute deviation from it)."""
    loc = float(np.median(x))
    return loc, float(np.mean(np.abs(x - loc)))


def laplace_cdf(x: np.ndarray, loc: float, scale: float) -> np.ndarray:
    z = (x - loc) / scale
    return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))


def entry_stats(w) -> tuple[float, float, float, float, float, float]:
    """Mean, std (ddof 0), skewness, excess kurtosis, KS distance to the fitted Gaussian and to the fitted Laplace."""
    x = np.sort(np.asarray(w, np.float64).ravel())
    mean = x.mean()
    c = x - mean
    m2 = np.mean(c**2)
    std = np.sqrt(m2)
    skew = np.mean(c**3) / m2**1.5
    kurt = np.mean(c**4) / m2**2 - 3.0
    ks_gauss = ks_distance(x, special.ndtr(c / std))
    ks_laplace = ks_distance(x, laplace_cdf(x, *laplace_fit(x)))
    return float(mean), float(std), float(skew), float(kurt), ks_gauss, ks_laplace


# -------------------------------------------------------------- dependence --


def rms_correlation(m: np.ndarray) -> float:
    """Root mean square of the correlations between distinct rows of ``m`` (rows that are constant are left out).

    The sum of squared correlations is ``||Z Z^T||_F^2 = ||Z^T Z||_F^2`` for
    rows ``Z`` centred and scaled to unit norm, so only the smaller Gram matrix
    is formed.
    """
    z = m - m.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = z[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    k = z.shape[0]
    if k < 2:
        return float("nan")
    gram = z @ z.T if k <= z.shape[1] else z.T @ z
    return float(np.sqrt(max(np.sum(gram**2) - k, 0.0) / (k * (k - 1))))


def dependence(m: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Row and column correlation spread of ``m``, each divided by the same for a random permutation of its entries."""
    shuffled = rng.permutation(m.ravel()).reshape(m.shape)
    rows = rms_correlation(m) / rms_correlation(shuffled)
    cols = rms_correlation(m.T) / rms_correlation(shuffled.T)
    return rows, cols


# ---------------------------------------------------------- singular values --


def aspect_ratio(shape: Sequence[int]) -> float:
    """``lambda = min(shape) / max(shape)`` of a matrix shape."""
    return min(shape) / max(shape)


def normalised_singular_values(m: np.ndarray) -> np.ndarray:
    """Singular values of ``m`` minus its mean, over ``sqrt(max side * mean squared centred entry)``, descending.

    Computed as square roots of the eigenvalues of the smaller Gram matrix (float64).
    """
    c = m - m.mean()
    gram = c.T @ c if c.shape[0] >= c.shape[1] else c @ c.T
    eig = np.clip(linalg.eigvalsh(gram, driver="evr", check_finite=False), 0.0, None)[::-1]
    return np.sqrt(eig / (max(m.shape) * np.mean(c**2)))


def law_edges(ratio: float) -> tuple[float, float]:
    """Support ``[1 - sqrt(ratio), 1 + sqrt(ratio)]`` of the normalised singular values."""
    return 1.0 - np.sqrt(ratio), 1.0 + np.sqrt(ratio)


def law_density(x, ratio: float) -> np.ndarray:
    """Density of the normalised singular values: ``2x p(x^2)``, ``p`` Marchenko-Pastur (ratio, variance 1).

    ``ratio = 1`` gives the quarter circle ``sqrt(4 - x^2) / pi`` on ``[0, 2]``.
    """
    x = np.asarray(x, np.float64)
    lo, hi = law_edges(ratio)
    t = x**2
    inside = (x > lo) & (x < hi)
    root = np.sqrt(np.where(inside, (hi**2 - t) * (t - lo**2), 0.0))
    return np.where(inside, 2 * x * root / (2 * np.pi * ratio * np.where(inside, t, 1.0)), 0.0)


@functools.lru_cache(maxsize=64)
def _law_cdf_table(ratio: float, points: int = 4097) -> tuple[np.ndarray, np.ndarray]:
    """(x, CDF) on a grid, integrating in ``t = a + (b - a)(1 - cos theta) / 2`` where the integrand is smooth."""
    a, b = (v**2 for v in law_edges(ratio))
    theta = np.linspace(0.0, np.pi, points)
    t = a + (b - a) * (1 - np.cos(theta)) / 2
    half = (b - a) / 2
    # p(t) dt with sqrt((b-t)(t-a)) = half sin(theta), dt = half sin(theta) dtheta; at t = 0 (ratio 1) the limit
    # of sin^2(theta) / t is 1 (t = 4 sin^2(theta/2), sin^2(theta) = 4 sin^2(theta/2) cos^2(theta/2)).
    ratio_sin_t = np.where(t > 0, np.sin(theta) ** 2 / np.where(t > 0, t, 1.0), np.cos(theta / 2) ** 2)
    integrand = half**2 * ratio_sin_t / (2 * np.pi * ratio)
    steps = (integrand[1:] + integrand[:-1]) / 2 * np.diff(theta)
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    return np.sqrt(t), cdf / cdf[-1]


def law_cdf(x, ratio: float) -> np.ndarray:
    """CDF of the normalised singular values (see ``law_density``)."""
    grid, cdf = _law_cdf_table(float(ratio))
    return np.interp(np.asarray(x, np.float64), grid, cdf, left=0.0, right=1.0)


def spectrum_stats(m: np.ndarray) -> tuple[float, float]:
    """KS distance of the normalised singular values to their law, and the largest of them."""
    sv = normalised_singular_values(m)
    ascending = sv[::-1]
    return ks_distance(ascending, law_cdf(ascending, aspect_ratio(m.shape))), float(sv[0])


# ------------------------------------------------------------- statistics --


def statistics(w, seed: int = 0) -> Stats:
    """All statistics of one weight (see the module docstring); ``seed`` draws the dependence test's permutation."""
    m = as_matrix(w)
    if min(m.shape) < 3:
        raise InputError(f"A matrix needs both sides >= 3 for correlations and a spectrum, got {m.shape}.")
    rows, cols = dependence(m, np.random.default_rng(seed))
    return Stats(*entry_stats(m), rows, cols, *spectrum_stats(m))


def calibrate(shape: Sequence[int], count: int = 50, seed: int = 0) -> Stats:
    """The statistics of ``count`` i.i.d. N(0, 1) matrices of ``shape`` (2-D), as arrays; cached per arguments.

    The matrices and their permutations come from ``np.random.default_rng([seed, *shape])``.
    """
    if count < 2:
        raise InputError(f"A calibration set needs at least 2 matrices (50 or more to judge), got {count}.")
    return _calibrate(tuple(int(s) for s in shape), int(count), int(seed))


@functools.lru_cache(maxsize=32)
def _calibrate(shape: tuple[int, int], count: int, seed: int) -> Stats:
    rng = np.random.default_rng([seed, *shape])
    draws = [statistics(rng.standard_normal(shape), seed=int(rng.integers(2**31))) for _ in range(count)]
    columns = [np.array(values) for values in zip(*draws)]
    for column in columns:
        column.flags.writeable = False
    return Stats(*columns)


def limits(calibration: Stats) -> Stats:
    """The calibration set's 99th percentile of each test statistic (of ``|skew|`` and ``|excess kurtosis|``)."""
    values = calibration._asdict()
    for name in ("skewness", "excess_kurtosis"):
        values[name] = np.abs(values[name])
    return Stats(
        **{name: float(np.percentile(v, PERCENTILE)) if name in TESTS else float("nan") for name, v in values.items()}
    )


def assess(w, calibration: Stats, seed: int = 0) -> Assessment:
    """Judges one weight against a calibration set of its matrix shape."""
    m = as_matrix(w)
    stats = statistics(m, seed)
    bounds = limits(calibration)
    values = stats._replace(skewness=abs(stats.skewness), excess_kurtosis=abs(stats.excess_kurtosis))
    failed = tuple(name for name in TESTS if not getattr(values, name) <= getattr(bounds, name))
    outliers = int(np.sum(normalised_singular_values(m) > bounds.max_sv))
    return Assessment(m.shape, len(calibration.max_sv), stats, bounds, outliers, failed)


def verdict(name: str, assessment: Assessment) -> str:
    """One line: random-like or not, each test's value against its threshold, and the outlier count."""
    stats, bounds = assessment.stats, assessment.limits
    parts = []
    for test, label in TESTS.items():
        value = abs(getattr(stats, test))
        limit = getattr(bounds, test)
        parts.append(f"{label} {value:.4g}{'>' if test in assessment.failed else '<='}{limit:.4g}")
    n, m = assessment.shape
    hi = law_edges(aspect_ratio(assessment.shape))[1]
    head = "random-like" if assessment.random_like else "NOT random-like"
    better = "; Laplace fits better than Gaussian" if stats.ks_laplace < stats.ks_gauss else ""
    return (
        f"{name} ({n}x{m}): {head}: {', '.join(parts)}; outliers {assessment.outliers} (sv > {bounds.max_sv:.4g}, "
        f"bulk edge {hi:.4g}){better} [thresholds: 99th percentiles over {assessment.count} Gaussian {n}x{m}]"
    )
