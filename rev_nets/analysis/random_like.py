"""How random-like are a net's weights: per-layer entry, dependence and spectrum tests against Gaussian calibration.

The paper's section 4 test, for this project's runs (each layer at
initialisation, step 0, against the last checkpoint) and for any weight
file (``rev_nets.weights``). Every array with at least two dimensions whose
matrix has both sides >= 3 is a layer. Each matrix shape is calibrated
once on Gaussian matrices (``rev_nets.spectra.calibrate``, cached on disk),
and each layer is judged against that calibration's 99th percentiles.
``report`` returns the ``Report`` "random_like" (every layer's statistics,
thresholds and verdict as numbers; as markdown a per-layer table and a
verdict line per layer) and draws a figure per net: standardised entries
against the fitted Gaussian and Laplace, normalised singular values
against the Marchenko-Pastur or quarter-circle law.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from scipy import stats as scipy_stats

from rev_nets import plots, spectra
from rev_nets.analysis.report_files import Report
from rev_nets.errors import InputError
from rev_nets.train import load_run
from rev_nets.weights import read_weights

MIN_SIDE = 3  # Smaller matrices have no row or column correlations to speak of.


class Snapshot(NamedTuple):
    """One set of a net's weights: a label ("step 0", a file name) and its layers in this project's layout."""

    label: str
    weights: dict[str, np.ndarray]


class WeightSet(NamedTuple):
    """A net's name and its snapshots, e.g. (initial, trained)."""

    name: str
    snapshots: tuple[Snapshot, ...]


class Row(NamedTuple):
    net: str
    layer: str
    snapshot: str
    original_shape: tuple[int, ...]
    assessment: spectra.Assessment


def run_weights(params) -> dict[str, np.ndarray]:
    """A net's weights by layer name: h1, h2, ... for the hidden layers, then head (a ``Net``'s params), or else
    every array of two or more dimensions by its path in the params, e.g. ``stems/0/kernel`` (an NNX model's)."""
    if "hidden" in params:
        named = {f"h{i + 1}": layer["w"] for i, layer in enumerate(params["hidden"])}
        return {name: np.asarray(w) for name, w in (named | {"head": params["head"]["w"]}).items()}
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    key = lambda entry: str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))
    path_name = lambda path: "/".join(key(entry) for entry in path if key(entry) != "value")  # nnx.Param's value
    return {path_name(path): np.asarray(w) for path, w in leaves if np.ndim(w) >= 2}


def run_snapshots(workdir: str, factory: str | None = None) -> tuple[Snapshot, ...]:
    """The initial (first saved step) and last checkpointed weights of a run directory (one snapshot if they are
    the same step); ``factory`` as for ``train.load_run``."""
    run = load_run(workdir, factory=factory)
    step, last = run.checkpoint()  # The latest intact; one sentence if the run has no checkpoint yet.
    by_step = {run.steps[0]: run.params(run.steps[0])} if step != run.steps[0] else {}
    by_step[step] = last
    return tuple(Snapshot(f"step {step}", run_weights(params)) for step, params in by_step.items())


def cached_calibration(shape: tuple[int, int], count: int, seed: int, folder: str) -> spectra.Stats:
    """``spectra.calibrate``, kept in ``folder`` as one .npz per shape, count, seed and statistics version."""
    n, m = shape
    path = os.path.join(folder, f"gaussian_{n}x{m}_count{count}_seed{seed}_v{spectra.CALIBRATION_VERSION}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return spectra.Stats(**{name: f[name] for name in spectra.Stats._fields})
    print(f"calibrating {n}x{m} on {count} Gaussian matrices", flush=True)
    calibration = spectra.calibrate(shape, count, seed)
    os.makedirs(folder, exist_ok=True)
    np.savez(path + ".tmp.npz", **calibration._asdict())
    os.replace(path + ".tmp.npz", path)
    return calibration


def analyse(nets: list[WeightSet], count: int, seed: int, cache: str) -> tuple[list[Row], list[str]]:
    """Every layer of every snapshot judged against its shape's calibration; also the names of layers skipped."""
    rows, skipped = [], []
    for net in nets:
        for snapshot in net.snapshots:
            for layer, w in snapshot.weights.items():
                shape = spectra.as_matrix(w).shape
                if min(shape) < MIN_SIDE:
                    skipped.append(f"{net.name}/{layer} {tuple(w.shape)}")
                    continue
                calibration = cached_calibration(shape, count, seed, cache)
                assessment = spectra.assess(w, calibration, seed)
                rows.append(Row(net.name, layer, snapshot.label, tuple(w.shape), assessment))
    return rows, sorted(set(skipped))


def _matrix_label(original: tuple[int, ...], shape: tuple[int, int]) -> str:
    label = "x".join(map(str, shape))
    return label if len(original) == 2 else f"{'x'.join(map(str, original))} as {label}"


def table(rows: list[Row]) -> str:
    """Markdown: one line per layer and snapshot; values beyond the Gaussian 99th percentile in bold."""
    columns = ["skewness", "excess_kurtosis", "ks_gauss", "ks_laplace", "row_corr", "col_corr", "ks_law", "max_sv"]
    header = (
        "| net | layer | weights | matrix | mean | std | skew | ex. kurt | KS Gauss | KS Laplace | row corr | col corr "
        "| KS law | max sv | outliers | random-like |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        a = row.assessment
        cells = []
        for name in columns:
            value = getattr(a.stats, name)
            text = f"{value:.4f}" if name in ("row_corr", "col_corr") else f"{value:.3g}"  # ratios near 1
            cells.append(f"**{text}**" if name in a.failed else text)
        lines.append(
            f"| {row.net} | {row.layer} | {row.snapshot} | {_matrix_label(row.original_shape, a.shape)} "
            f"| {a.stats.mean:.2g} | {a.stats.std:.3g} | {' | '.join(cells)} | {a.outliers} "
            f"| {'yes' if a.random_like else 'no'} |"
        )
    return "\n".join(lines)


def row_numbers(row: Row) -> dict:
    """One layer's statistics, the Gaussian calibration's 99th percentiles (NaN for mean and std: not tests) and
    the verdict, as the JSON report holds them."""
    a = row.assessment
    return {
        "net": row.net,
        "layer": row.layer,
        "snapshot": row.snapshot,
        "shape": list(row.original_shape),
        "matrix": list(a.shape),
        "stats": {name: float(value) for name, value in a.stats._asdict().items()},
        "limits": {name: float(value) for name, value in a.limits._asdict().items()},
        "calibration_count": int(a.count),
        "outliers": int(a.outliers),
        "failed": list(a.failed),
        "random_like": a.random_like,
    }


def verdicts(rows: list[Row]) -> list[str]:
    return [spectra.verdict(f"{row.net}/{row.layer} {row.snapshot}", row.assessment) for row in rows]


def figure_panels(net: WeightSet, rows: list[Row]) -> dict[str, list[plots.DensityPanel]]:
    """Per layer: standardised entries of each snapshot against N(0, 1) and the last one's Laplace fit, and
    normalised singular values against their law."""
    by_layer: dict[str, list[tuple[str, np.ndarray, spectra.Assessment]]] = {}
    for snapshot in net.snapshots:
        for row in rows:
            if row.net == net.name and row.snapshot == snapshot.label:
                by_layer.setdefault(row.layer, []).append((snapshot.label, snapshot.weights[row.layer], row.assessment))
    panels = {}
    for layer, items in by_layer.items():
        entries, singular = {}, {}
        for label, w, a in items:
            entries[label] = (np.ravel(w) - a.stats.mean) / a.stats.std
            singular[label] = spectra.normalised_singular_values(spectra.as_matrix(w))
        loc, scale = spectra.laplace_fit(entries[items[-1][0]])
        z = np.linspace(min(e.min() for e in entries.values()), max(e.max() for e in entries.values()), 400)
        a = items[-1][2]
        ratio = spectra.aspect_ratio(a.shape)
        lo, hi = spectra.law_edges(ratio)
        x = np.linspace(lo, hi, 400)
        law = "quarter circle" if ratio == 1 else f"Marchenko-Pastur, ratio {ratio:.3g}"
        panels[f"{layer} {'x'.join(map(str, a.shape))}"] = [
            plots.DensityPanel(
                entries,
                {
                    "Gaussian fit": (z, scipy_stats.norm.pdf(z)),
                    "Laplace fit": (z, scipy_stats.laplace.pdf(z, loc, scale)),
                },
                {},
                "entry, standardised by the fitted Gaussian",
                log=True,
            ),
            plots.DensityPanel(
                singular,
                {law: (x, spectra.law_density(x, ratio))},
                {"bulk edge": hi, f"Gaussian 99% max ({a.count})": a.limits.max_sv},
                "singular value / sqrt(max side * mean square)",
            ),
        ]
    return panels


def check_finite(nets: Sequence[WeightSet]) -> None:
    """Refuses a layer holding NaN or infinite weights (a diverged run, a broken file) before any calibration: no
    statistic of it means anything, and the singular values cannot be computed."""
    for net in nets:
        for snapshot in net.snapshots:
            for layer, w in snapshot.weights.items():
                bad = np.size(w) - np.count_nonzero(np.isfinite(w))
                if bad:
                    raise InputError(
                        f"{net.name}/{layer} ({snapshot.label}) holds {bad} of {np.size(w)} weights that are NaN or "
                        "infinite, so it cannot be judged random-like; give a run or a file whose weights are finite."
                    )


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def report(
    runs: Sequence[str],
    files: Sequence[str],
    out: str,
    *,
    layout: str = "auto",
    calibration: int = 50,
    seed: int = 0,
    factory: str | None = None,
) -> Report:
    """The report of run directories and weight files; draws ``figures/<net>.png`` (and keeps the calibration
    cache) under ``out``. ``factory`` names the model factory of runs whose factory is not built in."""
    if not runs and not files:
        raise InputError("nothing to analyse; pass runs (run directories) or files (weight files), or both.")
    sources = [(os.path.basename(os.path.normpath(p)), p, True) for p in runs]
    sources += [(os.path.splitext(os.path.basename(p))[0], p, False) for p in files]
    nets = []
    for name, (_, path, is_run) in zip(_unique_names([s[0] for s in sources]), sources):
        if is_run:
            snapshots = run_snapshots(path, factory)
        else:
            snapshots = (Snapshot(os.path.basename(path), read_weights(path, layout)),)
        nets.append(WeightSet(name, snapshots))
    check_finite(nets)
    rows, skipped = analyse(nets, calibration, seed, os.path.join(out, "calibration"))
    if not rows:
        raise InputError(f"no weight matrix with both sides >= {MIN_SIDE} found in the given runs and files.")
    text = [table(rows), "", *verdicts(rows)]
    if skipped:
        text += ["", f"Skipped (a side below {MIN_SIDE}): {', '.join(skipped)}"]
    for net in nets:
        path = os.path.join(out, "figures", f"{net.name}.png")
        plots.density_grid(
            figure_panels(net, rows), path, title=f"{net.name}: {' vs '.join(s.label for s in net.snapshots)}"
        )
    numbers = {"rows": [row_numbers(row) for row in rows], "skipped": skipped}
    return Report("random_like", numbers, "\n".join(text) + "\n")
