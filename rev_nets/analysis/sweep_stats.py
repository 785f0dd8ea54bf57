"""A sweep's statistics over seeds, and how the reports write them: differences with their standard errors,
p-values, verdicts, percentages.

Few seeds make "beyond 2 standard errors" a lenient bar (with 3 seeds it is
about p = 0.18 for a paired difference), so every verdict is written with
its p-value beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def pct(x: float | None) -> str:
    """An error rate as a percentage with 2 decimals: "-" for a run not finished (None), "diverged" for inf,
    "n/a" for nan (a spread of one seed)."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "n/a"
    return "diverged" if math.isinf(x) else f"{100 * x:.2f}"


def difference_text(mean: float, se: float) -> str:
    """A difference of error rates as "+0.61 ± 0.46": in points, signed, with its standard error."""
    return f"{100 * mean:+.2f} ± {pct(se)}"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for fewer than 2 values)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), std


def mean_std_text(values: list[float]) -> str:
    """Mean ± standard deviation in percent, as "1.57 ± 0.04"."""
    mean, std = mean_std(values)
    return f"{pct(mean)} ± {pct(std)}"


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of means and its Welch standard error (nan with fewer than 2 runs on a side)."""
    if len(a) < 2 or len(b) < 2:
        return float(np.mean(a) - np.mean(b)), float("nan")
    return float(np.mean(a) - np.mean(b)), math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (nan with fewer than 2 runs on a side, or no spread on either)."""
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _paired(errors: dict[int, float], baseline: dict[int, float]) -> list[float]:
    return [errors[s] - baseline[s] for s in sorted(set(errors) & set(baseline))]


def paired_difference(errors: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of ``errors[s] - baseline[s]`` over the seeds both have, and their number (SE nan
    below 2)."""
    diffs = _paired(errors, baseline)
    if not diffs:
        return float("nan"), float("nan"), 0
    se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(np.mean(diffs)), se, len(diffs)


def paired_p(errors: dict[int, float], baseline: dict[int, float]) -> float:
    """Two-sided p-value of the paired t-test on the seeds both have (nan below 2 seeds or without spread)."""
    diffs = _paired(errors, baseline)
    if len(diffs) < 2 or np.std(diffs) == 0:
        return float("nan")
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def verdict(mean: float, se: float, *, without_se: str = "no effect") -> str:
    """Says "effect" beyond 2 standard errors, else "no effect"; ``without_se`` where there is no SE (one seed)."""
    if math.isnan(se):
        return without_se
    return "effect" if abs(mean) > 2 * se else "no effect"


def p_text(p: float, *, floor: float | None = None) -> str:
    """The p-value as "; p=0.07", or "; p<0.01" below ``floor`` where one is given, or "" for nan (no test)."""
    if math.isnan(p):
        return ""
    return f"; p<{floor:g}" if floor is not None and p < floor else f"; p={p:.2f}"
