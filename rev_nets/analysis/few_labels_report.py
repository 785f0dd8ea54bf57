"""The few-label grid's statistics: each arm against backprop on the same label subsets, as tables and a figure.

Per label count and arm, at the arm's chosen settings: final test error
(mean ± std over seeds), the paired difference to backprop of the same
seed (same label subset; mean ± standard error of the per-seed differences,
"effect" only beyond 2 SE), synthetic test error, training minutes per run, and the
twin's norm and agreement (why an arm does or does not help). Also the
validation errors the settings were chosen from, and every row's command.
``summarise`` returns the numbers and the markdown, draws test error
against the number of labels, and copies every finished run's
``config.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os

import numpy as np
from scipy import stats

from rev_nets import plots
from rev_nets.analysis.few_labels import DIVERGED, Driver, LabelPlan, command, epochs_of, outcome, run_dir
from rev_nets.analysis.grid import copy_finished_records, finished
from rev_nets.train.rundir import read_metrics

BASELINE = "backprop"


def tuned(dataset: str, plan: LabelPlan, root: str) -> Driver:
    """A dry-run driver that has tuned every arm: its ``choices`` (None while an arm's tuning is unfinished) and
    the ``trials`` they were made from."""
    driver = Driver(dataset, plan, root, dry_run=True)
    with contextlib.redirect_stdout(io.StringIO()):  # A dry run lists what it would run: not wanted here.
        for n in plan.labels:
            for arm in plan.arms(n):
                driver.tune(n, arm)
    return driver


def finished_runs(plan: LabelPlan, root: str, num_labels: int, arm: str, settings) -> dict[int, list[dict]]:
    """Seed -> metric lines of the arm's finished, not diverged runs at ``settings``."""
    runs = {}
    for seed in plan.seeds_of(arm):
        workdir = run_dir(root, num_labels, arm, settings, seed)
        if finished(workdir, epochs_of(plan)) and not os.path.exists(os.path.join(workdir, DIVERGED)):
            runs[seed] = read_metrics(workdir)
    return runs


def paired_difference(errors: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of ``errors[s] - baseline[s]`` over the seeds both have (SE nan below 2)."""
    diffs = [errors[s] - baseline[s] for s in sorted(set(errors) & set(baseline))]
    if not diffs:
        return float("nan"), float("nan"), 0
    se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(np.mean(diffs)), se, len(diffs)


def paired_p(errors: dict[int, float], baseline: dict[int, float]) -> float:
    """Two-sided p-value of the paired t-test of ``errors`` against ``baseline`` on their common seeds (nan below
    2 seeds or without spread): with 3 seeds 2 SE is about p = 0.18, so the p-value says how lenient "effect" is."""
    diffs = [errors[s] - baseline[s] for s in sorted(set(errors) & set(baseline))]
    if len(diffs) < 2 or np.std(diffs) == 0:
        return float("nan")
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def verdict(mean: float, se: float) -> str:
    if math.isnan(se):
        return "one seed"
    return "effect" if abs(mean) > 2 * se else "no effect"


def pct(x: float | None) -> str:
    if x is None:
        return "-"
    return "n/a" if math.isnan(x) else ("diverged" if math.isinf(x) else f"{100 * x:.2f}")


def mean_std(values: list[float]) -> str:
    if not values:
        return "not run yet"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{pct(float(np.mean(values)))} ± {pct(std)} ({len(values)})"


def _cell_text(cells: dict, num_labels: int, arm: str) -> str:
    if (num_labels, arm) not in cells:
        return "tuning"
    return mean_std(list(cells[(num_labels, arm)]["test_error"].values()))


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
    for key in ("test_error", "train_ce_real", "train_ce_synthetic"):
        if all(key in line for seed_lines in lines for line in seed_lines):
            curves[key] = np.mean([[line[key] for line in seed_lines] for seed_lines in lines], axis=0).tolist()
    return curves


def summarise(dataset: str, plan: LabelPlan, root: str, out: str) -> tuple[dict, str]:
    """The report's numbers and markdown; writes the figure and copies the runs' files under ``out``."""
    driver = tuned(dataset, plan, root)
    chosen = {(n, arm): driver.choices[(n, arm)] for n in plan.labels for arm in plan.arms(n)}
    cells = {}
    for (n, arm), settings in chosen.items():
        if settings is not None:
            cells[(n, arm)] = cell_numbers(finished_runs(plan, root, n, arm, settings))
    arms = list(plan.supervised) + list(plan.semi)
    lines = [
        f"## {dataset}: final test error %, {_steps(plan)} steps (mean ± std (seeds))",
        "",
        "| labels | " + " | ".join(arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    for n in plan.labels:
        row = [_cell_text(cells, n, a) if a in plan.arms(n) else "" for a in arms]
        lines.append(f"| {n:,} | " + " | ".join(row) + " |")
    paired_caption = (
        f"Paired difference to {BASELINE} on the same seeds (label subsets), points of test error; effect beyond "
        "2 SE, p from the paired t-test:"
    )
    lines += ["", paired_caption, ""]
    lines += ["| labels | arm | seeds | difference (± SE) | verdict |", "|---|---|---|---|---|"]
    comparisons = {}
    for (n, arm), numbers in cells.items():
        if arm == BASELINE or (n, BASELINE) not in cells:
            continue
        mean, se, k = paired_difference(numbers["test_error"], cells[(n, BASELINE)]["test_error"])
        p = paired_p(numbers["test_error"], cells[(n, BASELINE)]["test_error"])
        comparisons[f"labels{n}/{arm}"] = {"mean": mean, "se": se, "seeds": k, "verdict": verdict(mean, se), "p": p}
        if k:
            p_text = "" if math.isnan(p) else ("; p<0.01" if p < 0.01 else f"; p={p:.2f}")
            lines.append(f"| {n:,} | {arm} | {k} | {100 * mean:+.2f} ± {pct(se)} | {verdict(mean, se)}{p_text} |")
    caption = (
        "Per cell: synthetic test error %, training minutes per run (median; evaluations and start-up not counted), "
        "twin/input norm and twin agreement (last evaluation round, mean over seeds):"
    )
    lines += ["", caption, ""]
    lines += [
        "| labels | arm | settings | synthetic test error % | training min/run | twin norm ratio | twin agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for (n, arm), numbers in cells.items():
        settings = ", ".join(f"{k}={v:g}" for k, v in chosen[(n, arm)].items())
        norm, agree = numbers["twin_norm_ratio"], numbers["twin_agreement"]
        lines.append(
            f"| {n:,} | {arm} | {settings} | {mean_std(list(numbers['test_synthetic_error'].values()))} | "
            f"{numbers['minutes']:.1f} | {'' if norm is None else f'{norm:.2f}'} | "
            f"{'' if agree is None else f'{agree:.3f}'} |"
        )
    lines += ["", *tuning_rows(plan, driver.trials), "", *probe_rows(plan, root, chosen)]
    lines += ["Commands (add `--seed=<seed>`):", ""]
    for (n, arm), settings in chosen.items():
        if settings is not None:
            flags = command(dataset, plan, plan.arms(n)[arm], n, settings)
            lines.append(f"- {n:,} labels, `{arm}`: `python -m {' '.join(flags)}`")
    for name, probe in plan.probes.items():
        settings = chosen.get((probe.num_labels, probe.base))
        if settings is not None:
            flags = command(dataset, plan, plan.probe_arm(name), probe.num_labels, probe.settings(settings))
            lines.append(f"- {probe.num_labels:,} labels, `{name}`: `python -m {' '.join(flags)}`")
    _figure(dataset, plan, cells, out)
    _round_figures(dataset, plan, cells, out)
    copy_finished_records(root, os.path.join(out, dataset), epochs_of(plan), replace=True)
    numbers = {
        "chosen": {f"labels{n}/{arm}": s for (n, arm), s in chosen.items()},
        "cells": {f"labels{n}/{arm}": c for (n, arm), c in cells.items()},
        "paired_differences": comparisons,
    }
    return numbers, "\n".join(lines) + "\n"


def tuning_rows(plan: LabelPlan, trials) -> list[str]:
    """The seed-0 validation errors each arm's settings were chosen from, in the order the driver ran them."""
    rows = ["Validation error % (seed 0) of every candidate setting, one axis at a time; the lowest was kept:", ""]
    rows += ["| labels | arm | candidates |", "|---|---|---|"]
    for n in plan.labels:
        for arm_name, arm in plan.arms(n).items():
            tuned_flags = {axis.flag for axis in arm.axes}
            parts = [
                ", ".join(f"{k}={v:g}" for k, v in settings.items() if k in tuned_flags) + f": {pct(error)}"
                for settings, error in trials.get((n, arm_name), [])
            ]
            rows.append(f"| {n:,} | {arm_name} | {'; '.join(parts) or 'waiting for the arms it inherits from'} |")
    return rows


def probe_rows(plan: LabelPlan, root: str, chosen) -> list[str]:
    """Validation table of the probes (first seed) beside the run of their base arm they vary."""
    if not plan.probes:
        return []
    rows = ["Probes (seed 0, at the base arm's chosen settings; judged on validation):", ""]
    rows += [
        "| labels | probe | flags added or changed | validation error % (base arm's) | twin norm ratio |",
        "|---|---|---|---|---|",
    ]
    for name, probe in plan.probes.items():
        settings = chosen.get((probe.num_labels, probe.base))
        seed = plan.seeds_of(probe.base)[0]
        if settings is None:
            rows.append(f"| {probe.num_labels:,} | {name} | {probe.describe()} | base not tuned yet | |")
            continue
        workdir = run_dir(root, probe.num_labels, name, probe.settings(settings), seed)
        error = outcome(workdir, epochs_of(plan))
        base = outcome(run_dir(root, probe.num_labels, probe.base, settings, seed), epochs_of(plan))
        norm = cell_numbers({seed: read_metrics(workdir)})["twin_norm_ratio"] if error not in (None, math.inf) else None
        rows.append(
            f"| {probe.num_labels:,} | {name} | {probe.describe()} | {pct(error)} ({pct(base)}) | "
            f"{'' if norm is None else f'{norm:.2f}'} |"
        )
    return [*rows, ""]


def _steps(plan: LabelPlan) -> int:
    return int(next(f for f in plan.common if f.startswith("--steps=")).split("=")[1])


def _figure(dataset: str, plan: LabelPlan, cells: dict, out: str) -> None:
    """Test error against the number of labels, one line per arm (mean over seeds, shaded ± 1 std)."""
    series = {}
    for arm in list(plan.supervised) + list(plan.semi):
        points = [(n, list(cells[(n, arm)]["test_error"].values())) for n in plan.labels if cells.get((n, arm))]
        points = [(n, errors) for n, errors in points if errors]
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
        curves = {arm: cells[(n, arm)]["curves"] for arm in plan.arms(n) if cells.get((n, arm), {}).get("curves")}
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
            for kind, key in (("real", "train_ce_real"), ("synthetic", "train_ce_synthetic")):
                if key in curves.get(arm, {}):
                    entropies[f"{arm} {kind}"] = (curves[arm]["step"], np.maximum(curves[arm][key], CE_FLOOR))
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
