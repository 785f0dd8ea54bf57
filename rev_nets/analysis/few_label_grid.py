"""The few-label grid: its plan's shape, the sweep it makes, and its report (each arm against backprop on the same
label subsets).

Every arm trains for the same number of steps from N labels. Supervised arms
run at every label count, semi-supervised ones at some; each arm tunes its
axes on seed 0's validation error, one at a time, after taking the settings
of the arms it inherits from at the same label count (the consistency arms
take backprop's learning rate). Each seed is its own label subset, shared by
every arm. Run order: the supervised arms (tuning, then seeds), the
semi-supervised arms' tuning, their other seeds, then the probes: one-seed
variants of an arm at its chosen settings, read on validation.

The report gives, per label count and arm at its chosen settings: final test
error (mean ± std over seeds), the paired difference to backprop of the same
seed (mean ± SE of the per-seed differences, "effect" only beyond 2 SE),
synthetic test error, training minutes per run, the twin's norm and
agreement, the validation errors the settings were chosen from, and every
row's command. ``summarise`` returns the ``Report`` (numbers and markdown), draws test
error against the number of labels, and archives every finished run's records.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import numpy as np

from rev_nets import plots
from rev_nets.analysis import sweep
from rev_nets.analysis.report_files import Report
from rev_nets.analysis.sweep_stats import (
    difference_text,
    mean_std_text,
    p_text,
    paired_difference,
    paired_p,
    pct,
    verdict,
)
from rev_nets.train.rundir import read_metrics

BASELINE = "backprop"


@dataclasses.dataclass(frozen=True)
class Arm:
    """A cell of the grid at each of its label counts: fixed overrides, tuned axes, and the arms whose chosen
    settings it takes first."""

    overrides: sweep.Overrides
    axes: tuple[sweep.Axis, ...] = ()
    inherits: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Probe:
    """A one-seed variant of an arm at its chosen settings, judged on validation: ``overrides`` are added to the
    arm's (replacing one of the same path), ``pinned`` replace chosen settings, e.g. a weight beyond the tuning
    grid's edge."""

    num_labels: int
    base: str
    overrides: sweep.Overrides = dataclasses.field(default_factory=dict)
    pinned: sweep.Overrides = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LabelPlan:
    """A dataset's few-label grid: ``supervised`` arms run at every count of ``labels`` on ``seeds``, ``semi`` arms
    at ``semi_labels`` on ``semi_seeds``; ``probes`` (name -> ``Probe``) run last, on the base arm's first seed."""

    common: sweep.Overrides
    labels: tuple[int, ...]
    seeds: tuple[int, ...]
    supervised: Mapping[str, Arm]
    semi_labels: tuple[int, ...]
    semi: Mapping[str, Arm]
    semi_seeds: tuple[int, ...]
    probes: Mapping[str, Probe] = dataclasses.field(default_factory=dict)

    def arms(self, num_labels: int) -> dict[str, Arm]:
        """The arms run at ``num_labels``, supervised first."""
        return {**self.supervised, **(self.semi if num_labels in self.semi_labels else {})}

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        return self.semi_seeds if arm in self.semi else self.seeds

    def to_sweep(self) -> sweep.Sweep:
        """The grid as a sweep: cells keyed ``labels<N>/<arm>`` (the runs' folders and names), probes alike."""
        cells = {}
        for n in self.labels:
            for name, arm in self.arms(n).items():
                inherits = tuple(cell_key(n, parent) for parent in arm.inherits)
                overrides = {"train.num_labels": n, **arm.overrides}
                cells[cell_key(n, name)] = sweep.Cell(overrides, arm.axes, inherits, self.seeds_of(name))
        for name, probe in self.probes.items():
            base = cell_key(probe.num_labels, probe.base)
            overrides = {**cells[base].overrides, **probe.overrides}
            seeds = cells[base].seeds[:1]
            cells[cell_key(probe.num_labels, name)] = sweep.Cell(overrides, (), (base,), seeds, probe.pinned)
        semi = [cell_key(n, arm) for n in self.semi_labels for arm in self.semi]
        order = [("run", cell_key(n, arm)) for n in self.labels for arm in self.supervised]
        order += [("tune", k) for k in semi] + [("run", k) for k in semi]
        order += [("run", cell_key(probe.num_labels, name)) for name, probe in self.probes.items()]
        return sweep.Sweep(self.common, cells, tuple(order))


def cell_key(num_labels: int, name: str) -> str:
    """An arm's or probe's cell key, which is also the folder and name prefix of its runs."""
    return f"labels{num_labels}/{name}"


def cell_numbers(runs: dict[int, list[dict]]) -> dict:
    """Per-seed finals and medians of one cell's runs."""
    last = {seed: lines[-1] for seed, lines in runs.items()}
    twin_norm = [m.get("train_norm_ratio", m.get("train_twin_norm_ratio")) for m in last.values()]
    agreement = [m["train_twin_agreement"] for m in last.values() if "train_twin_agreement" in m]
    return {
        "test_error": {seed: m["test_error"] for seed, m in last.items()},
        "test_synthetic_error": {seed: m["test_synthetic_error"] for seed, m in last.items()},
        "validation_error": {seed: m["validation_error"] for seed, m in last.items()},
        "minutes": float(np.median([m["wall_time_s"] / 60 for m in last.values()])) if last else float("nan"),
        "twin_norm_ratio": float(np.mean(twin_norm)) if None not in twin_norm and twin_norm else None,
        "twin_agreement": float(np.mean(agreement)) if agreement else None,
        "curves": round_means(runs),
    }


CE_FLOOR = 1e-12  # float32 cross-entropies reach exactly 0; a log axis needs a floor


def round_means(runs: dict[int, list[dict]]) -> dict[str, list[float]]:
    """Per evaluation round, the mean over seeds of test error and of the training cross-entropies (real, and
    the twins' where the arm has them)."""
    if not runs:
        return {}
    lines = list(runs.values())
    curves = {"step": [line["step"] for line in lines[0]]}
    for name in ("test_error", "train_ce_real", "train_ce_synthetic"):
        if all(name in line for seed_lines in lines for line in seed_lines):
            curves[name] = np.mean([[line[name] for line in seed_lines] for seed_lines in lines], axis=0).tolist()
    return curves


def _seeds_text(values: list[float]) -> str:
    """Mean ± std over seeds and their number, as "3.12 ± 0.20 (3)"."""
    return f"{mean_std_text(values)} ({len(values)})" if values else "not run yet"


def _settings_text(settings: sweep.Overrides) -> str:
    """The settings as "learning_rate=0.05, consistency_weight=1"."""
    return ", ".join(f"{name}={value:g}" for name, value in sweep.named(settings).items())


def summarise(dataset: str, plan: LabelPlan, root: str, out: str, entry: sweep.EntryPoint) -> Report:
    """The ``Report`` named ``dataset``; draws the figures and archives the runs' records under ``out``. Stops, writing
    nothing, unless ``root`` holds a finished run."""
    grid = plan.to_sweep()
    sweep.check_reportable(root, grid.epochs)
    tuning = sweep.read_tuning(grid, root)
    chosen = {cell_key(n, arm): tuning.settings(cell_key(n, arm)) for n in plan.labels for arm in plan.arms(n)}
    cells = {k: cell_numbers(sweep.finished_runs(root, grid, k, s)) for k, s in chosen.items() if s is not None}
    lost = {k: sweep.diverged_runs(root, grid, k, s) for k, s in chosen.items() if s is not None}
    arms = [*plan.supervised, *plan.semi]
    lines = [
        f"## {dataset}: final test error %, {grid.common['train.steps']} steps (mean ± std (seeds))",
        "",
        "| labels | " + " | ".join(arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    for n in plan.labels:
        row = [_cell_text(cells, lost, cell_key(n, a)) if a in plan.arms(n) else "" for a in arms]
        lines.append(f"| {n:,} | " + " | ".join(row) + " |")
    paired_caption = (
        f"Paired difference to {BASELINE} on the same seeds (label subsets), points of test error; effect beyond "
        "2 SE, p from the paired t-test:"
    )
    lines += ["", *sweep.diverged_lines(lost)]
    lines += [paired_caption, ""]
    lines += ["| labels | arm | seeds | difference (± SE) | verdict |", "|---|---|---|---|---|"]
    comparisons = {}
    for n, arm in _labelled_arms(plan):
        baseline = cells.get(cell_key(n, BASELINE))
        if arm == BASELINE or cell_key(n, arm) not in cells or baseline is None:
            continue
        errors = cells[cell_key(n, arm)]["test_error"]
        mean, se, k = paired_difference(errors, baseline["test_error"])
        p, judged = paired_p(errors, baseline["test_error"]), verdict(mean, se, without_se="one seed")
        comparisons[cell_key(n, arm)] = {"mean": mean, "se": se, "seeds": k, "verdict": judged, "p": p}
        if k:
            lines.append(f"| {n:,} | {arm} | {k} | {difference_text(mean, se)} | {judged}{p_text(p, floor=0.01)} |")
    caption = (
        "Per cell: synthetic test error %, training minutes per run (median; evaluations and start-up not counted), "
        "twin/input norm and twin agreement (last evaluation round, mean over seeds):"
    )
    lines += ["", caption, ""]
    lines += [
        "| labels | arm | settings | synthetic test error % | training min/run | twin norm ratio | twin agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, arm in _labelled_arms(plan):
        if cell_key(n, arm) not in cells:
            continue
        numbers = cells[cell_key(n, arm)]
        norm, agree = numbers["twin_norm_ratio"], numbers["twin_agreement"]
        lines.append(
            f"| {n:,} | {arm} | {_settings_text(chosen[cell_key(n, arm)])} | "
            f"{_seeds_text(list(numbers['test_synthetic_error'].values()))} | "
            f"{numbers['minutes']:.1f} | {'' if norm is None else f'{norm:.2f}'} | "
            f"{'' if agree is None else f'{agree:.3f}'} |"
        )
    lines += ["", *tuning_rows(plan, tuning.trials), "", *probe_rows(plan, grid, root, tuning, entry)]
    lines += ["Commands (add `--seed=<seed>`):", ""]
    for n, name in [*_labelled_arms(plan), *((probe.num_labels, name) for name, probe in plan.probes.items())]:
        settings = tuning.settings(cell_key(n, name))
        if settings is not None:
            command = [entry.module, *entry.flags(grid.overrides(cell_key(n, name), settings))]
            lines.append(f"- {n:,} labels, `{name}`: `python -m {' '.join(command)}`")
    _figure(dataset, plan, cells, out)
    _round_figures(dataset, plan, cells, out)
    sweep.copy_finished_records(root, os.path.join(out, dataset), grid.epochs, replace=True)
    numbers = {
        "chosen": {k: sweep.named(s) for k, s in chosen.items()},
        "cells": cells,
        "paired_differences": comparisons,
    }
    return Report(dataset, numbers, "\n".join(lines) + "\n")


def _labelled_arms(plan: LabelPlan) -> list[tuple[int, str]]:
    """(label count, arm) of every arm that runs, label counts first, supervised arms before the others."""
    return [(n, arm) for n in plan.labels for arm in plan.arms(n)]


def _cell_text(cells: dict, lost: dict, cell: str) -> str:
    """A final cell in the table: mean ± std (seeds), "diverged" when every run that ended did, or "tuning"."""
    if cell not in cells:
        return "tuning"
    errors = list(cells[cell]["test_error"].values())
    return "diverged" if not errors and lost.get(cell) else _seeds_text(errors)


def tuning_rows(plan: LabelPlan, trials: dict) -> list[str]:
    """The seed-0 validation errors each arm's settings were chosen from, in the order they were tried."""
    rows = ["Validation error % (seed 0) of every candidate setting, one axis at a time; the lowest was kept:", ""]
    rows += ["| labels | arm | candidates |", "|---|---|---|"]
    for n, arm in _labelled_arms(plan):
        tuned = {axis.path for axis in plan.arms(n)[arm].axes}
        parts = [
            _settings_text({path: v for path, v in settings.items() if path in tuned}) + f": {pct(error)}"
            for settings, error in trials.get(cell_key(n, arm), [])
        ]
        rows.append(f"| {n:,} | {arm} | {'; '.join(parts) or 'waiting for the arms it inherits from'} |")
    return rows


def probe_rows(
    plan: LabelPlan, grid: sweep.Sweep, root: str, tuning: sweep.Tuning, entry: sweep.EntryPoint
) -> list[str]:
    """Validation table of the probes (first seed) beside the run of their base arm they vary."""
    if not plan.probes:
        return []
    rows = ["Probes (seed 0, at the base arm's chosen settings; judged on validation):", ""]
    rows += [
        "| labels | probe | flags added or changed | validation error % (base arm's) | twin norm ratio |",
        "|---|---|---|---|---|",
    ]
    for name, probe in plan.probes.items():
        n, settings = probe.num_labels, tuning.settings(cell_key(probe.num_labels, name))
        changed = " ".join(entry.flags({**probe.overrides, **probe.pinned}))
        if settings is None:
            rows.append(f"| {n:,} | {name} | {changed} | base not tuned yet | |")
            continue
        seed = grid.cells[cell_key(n, name)].seeds[0]
        workdir = sweep.run_dir(root, cell_key(n, name), settings, seed)
        error = sweep.outcome(workdir, grid.epochs)
        base_dir = sweep.run_dir(root, cell_key(n, probe.base), tuning.settings(cell_key(n, probe.base)), seed)
        base = sweep.outcome(base_dir, grid.epochs)
        norm = cell_numbers({seed: read_metrics(workdir)})["twin_norm_ratio"] if error not in (None, math.inf) else None
        norm_text = "" if norm is None else f"{norm:.2f}"
        rows.append(f"| {n:,} | {name} | {changed} | {pct(error)} ({pct(base)}) | {norm_text} |")
    return [*rows, ""]


def _figure(dataset: str, plan: LabelPlan, cells: dict, out: str) -> None:
    """Test error against the number of labels, one line per arm (mean over seeds, shaded ± 1 std)."""
    series = {}
    for arm in [*plan.supervised, *plan.semi]:
        found = [cells.get(cell_key(n, arm)) for n in plan.labels]
        points = [(n, list(c["test_error"].values())) for n, c in zip(plan.labels, found) if c and c["test_error"]]
        if points:
            x = [n for n, _ in points]
            y = [100 * float(np.mean(e)) for _, e in points]
            spread = [100 * float(np.std(e, ddof=1)) if len(e) > 1 else 0.0 for _, e in points]
            series[arm] = (x, y, spread)
    if series:
        _draw(
            series,
            out,
            f"{dataset}_error_vs_labels",
            xlabel="labelled training images",
            ylabel="test error %",
            title=f"{dataset}: test error against labels (mean over seeds, shaded +- 1 std)",
            xscale="log",
        )


def _draw(series: dict, out: str, name: str, **labels) -> None:
    """``plots.learning_curves`` of ``series`` into ``out/figures/<name>.png``."""
    plots.learning_curves(series, os.path.join(out, "figures", f"{name}.png"), **labels)


def _round_figures(dataset: str, plan: LabelPlan, cells: dict, out: str) -> None:
    """Per label count, every round's test error of each arm, and the supervised arms' training cross-entropy
    on real images and on twins (log scale): where the twins stop giving a gradient (means over seeds)."""
    for n in plan.labels:
        curves = {a: cells.get(cell_key(n, a), {}).get("curves") for a in plan.arms(n)}
        curves = {arm: c for arm, c in curves.items() if c}
        if not curves:
            continue
        errors = {arm: (c["step"], [100 * e for e in c["test_error"]]) for arm, c in curves.items()}
        _draw(
            errors,
            out,
            f"{dataset}_labels{n}_test_error",
            xlabel="step",
            ylabel="test error %",
            title=f"{dataset}, {n:,} labels: test error per round (mean over seeds)",
        )
        entropies = {}
        for arm in plan.supervised:
            for kind, name in (("real", "train_ce_real"), ("synthetic", "train_ce_synthetic")):
                if name in curves.get(arm, {}):
                    entropies[f"{arm} {kind}"] = (curves[arm]["step"], np.maximum(curves[arm][name], CE_FLOOR))
        if not entropies:
            continue
        _draw(
            entropies,
            out,
            f"{dataset}_labels{n}_cross_entropy",
            xlabel="step",
            ylabel="training cross-entropy",
            title=f"{dataset}, {n:,} labels: real (solid) and twin (dashed) cross-entropy\n(floored at {CE_FLOOR:g})",
            yscale="log",
        )
