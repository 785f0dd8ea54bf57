"""The grid's statistics: SHADOW against its backprop twin, fairly summarised, as tables and figures.

For every cell at its chosen learning rate: final test error (mean ± std over
seeds), the difference to its backprop twin with its Welch standard error
("effect" only beyond 2 standard errors), early test error, and whether the
synthetic test error tracks the real one: the mean per-epoch gap (synthetic
minus real) and the correlation of their epoch-to-epoch changes (raw curves
correlate whenever both fall). ``summarise`` returns the markdown and writes
learning-curve figures and a copy of every run's ``config.json`` and
``metrics.jsonl``, so that the tables can be rebuilt from the repository alone.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import stats

from rev_nets import plots
from rev_nets.analysis.grid import (
    DIVERGED,
    Plan,
    choose_learning_rate,
    copy_finished_records,
    epochs_of,
    final_metric,
    finished,
    run_name,
)
from rev_nets.train.rundir import read_metrics

TWINS = {
    "shadow": "backprop",
    "shadow_dropout": "backprop_dropout",
    "shadow_h2": "backprop",
    "shadow_sampling": "backprop",
    "shadow_smoothing": "backprop",
    "noise_twin": "backprop",
}


def cell_runs(plan: Plan, root: str, cell: str, learning_rate: float) -> dict[int, list[dict]]:
    """Seed -> metric lines, for the finished runs of ``cell`` at ``learning_rate``."""
    runs = {}
    for seed in plan.seeds if cell in plan.main_cells else plan.ablation_seeds or plan.seeds:
        workdir = os.path.join(root, run_name(cell, learning_rate, seed))
        if finished(workdir, epochs_of(plan)) and not os.path.exists(os.path.join(workdir, DIVERGED)):
            runs[seed] = read_metrics(workdir)
    return runs


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of means and its Welch standard error (nan with fewer than 2 runs on a side)."""
    if len(a) < 2 or len(b) < 2:
        return float(np.mean(a) - np.mean(b)), float("nan")
    return float(np.mean(a) - np.mean(b)), math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))


def welch_p_text(a: list[float], b: list[float]) -> str:
    """ "; p=0.07": the two-sided Welch t-test p-value (few seeds make 2 SE a lenient bar), or "" without spread."""
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return ""
    return f"; p={stats.ttest_ind(a, b, equal_var=False).pvalue:.2f}"


def tracking(runs: dict[int, list[dict]]) -> tuple[float, float]:
    """Mean gap (synthetic - real test error) over all epochs, and the correlation of their per-epoch changes."""
    gaps, real_steps, syn_steps = [], [], []
    for lines in runs.values():
        real = np.array([m["test_error"] for m in lines])
        syn = np.array([m["test_synthetic_error"] for m in lines])
        gaps.extend(syn - real)
        real_steps.extend(np.diff(real))
        syn_steps.extend(np.diff(syn))
    varies = len(real_steps) > 2 and np.std(real_steps) > 0 and np.std(syn_steps) > 0
    correlation = float(np.corrcoef(real_steps, syn_steps)[0, 1]) if varies else float("nan")
    return float(np.mean(gaps)), correlation


def pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def command(dataset: str, plan: Plan, cell_flags, learning_rate: float) -> str:
    flags_ = " ".join([*plan.common, *cell_flags, f"--learning_rate={learning_rate:g}", "--seed=<seed>"])
    return f"python -m experiments.{dataset} {flags_}"


def summarise(dataset: str, plan: Plan, root: str, out: str) -> str:
    """The markdown report; also writes figures and copies the runs' metrics under ``out``."""
    cells = plan.main_cells | plan.ablations
    chosen = {c: choose_learning_rate(plan, root, c) for c in plan.main_cells}
    for c in plan.ablations:
        chosen[c] = chosen[plan.ablation_base]
    finals, runs_by_cell = {}, {}
    for cell, lr in chosen.items():
        if lr is None:
            continue
        runs_by_cell[cell] = cell_runs(plan, root, cell, lr)
        finals[cell] = [lines[-1]["test_error"] for lines in runs_by_cell[cell].values()]
    early_epoch = max(1, epochs_of(plan) // 5)

    rows = [
        f"| cell | lr | seeds | test error % (mean ± std) | vs backprop twin (± Welch SE) | test error % at epoch {early_epoch} (vs twin) | synthetic - real gap | corr. of epoch-to-epoch changes | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        if not runs_by_cell.get(cell):
            rows.append(f"| {cell} | {chosen.get(cell)} | 0 | not run yet | | | | | |")
            continue
        runs, errors = runs_by_cell[cell], finals[cell]
        std = float(np.std(errors, ddof=1)) if len(errors) > 1 else float("nan")
        twin = TWINS.get(cell)
        versus = ""
        if twin and finals.get(twin):
            diff, se = welch(errors, finals[twin])
            verdict = "effect" if not math.isnan(se) and abs(diff) > 2 * se else "no effect"
            versus = f"{100 * diff:+.2f} ± {pct(se)} ({verdict}{welch_p_text(errors, finals[twin])})"
        early = [lines[early_epoch - 1]["test_error"] for lines in runs.values()]
        early_versus = ""
        if twin and runs_by_cell.get(twin):
            twin_early = [lines[early_epoch - 1]["test_error"] for lines in runs_by_cell[twin].values()]
            diff, se = welch(early, twin_early)
            early_versus = f" ({100 * diff:+.2f} ± {pct(se)})"
        gap, corr = tracking(runs)
        seconds = np.median([m["epoch_time_s"] for lines in runs.values() for m in lines[1:]] or [float("nan")])
        rows.append(
            f"| {cell} | {chosen[cell]:g} | {len(errors)} | {pct(np.mean(errors))} ± {pct(std)} | {versus} | "
            f"{pct(np.mean(early))}{early_versus} | {100 * gap:+.2f} | {corr:.2f} | {seconds:.1f} |"
        )

    search = [
        "| cell | " + " | ".join(f"lr {lr:g}" for lr in plan.learning_rates) + " |",
        "|---|" + "---|" * len(plan.learning_rates),
    ]
    for cell in plan.main_cells:
        values = []
        for lr in plan.learning_rates:
            workdir = os.path.join(root, run_name(cell, lr, plan.seeds[0]))
            if os.path.exists(os.path.join(workdir, DIVERGED)):
                values.append("diverged")
            elif finished(workdir, epochs_of(plan)):
                values.append(pct(final_metric(workdir, "validation_error")))
            else:
                values.append("-")
        search.append(f"| {cell} | " + " | ".join(values) + " |")

    probes = probe_rows(plan, root, chosen.get(plan.ablation_base))
    rates = chosen | dict.fromkeys(plan.probes, chosen.get(plan.ablation_base))
    commands = [
        f"- `{cell}`: `{command(dataset, plan, flags_, rates[cell])}`"
        for cell, flags_ in (cells | plan.probes).items()
        if rates[cell]
    ]
    _figures(dataset, runs_by_cell, out)
    copy_finished_records(root, os.path.join(out, dataset), epochs_of(plan), replace=True)
    return "\n".join(
        [
            f"## {dataset}: final test error, {epochs_of(plan)} epochs, seeds {list(plan.seeds)}",
            "",
            *rows,
            "",
            "Validation error % (seed 0) per learning rate, from which each main arm's rate was chosen:",
            "",
            *search,
            "",
            *probes,
            "Commands:",
            "",
            *commands,
        ]
    )


def probe_rows(plan: Plan, root: str, shadow_lr: float | None) -> list[str]:
    """Validation table of the probes (seed 0) beside the backprop, SHADOW and ablation runs they are read against."""
    if not plan.probes or shadow_lr is None:
        return []
    reference = {"backprop": choose_learning_rate(plan, root, "backprop"), plan.ablation_base: shadow_lr}
    rows = [
        "Probes (seed 0, judged on validation; why SHADOW does or does not help):",
        "",
        "| run | validation error % | validation synthetic error % | synthetic/real input norm (last epoch) |",
        "|---|---|---|---|",
    ]
    others = [*plan.ablations, *plan.probes]
    for cell, lr in [*reference.items(), *((cell, shadow_lr) for cell in others)]:
        workdir = os.path.join(root, run_name(cell, lr or 0.0, plan.seeds[0]))
        if lr is None or not finished(workdir, epochs_of(plan)):
            rows.append(f"| {cell} | not run yet | | |")
            continue
        if os.path.exists(os.path.join(workdir, DIVERGED)):
            rows.append(f"| {cell} | diverged | | |")
            continue
        last = read_metrics(workdir)[-1]
        ratio = last.get("train_norm_ratio")
        rows.append(
            f"| {cell} | {pct(last['validation_error'])} | {pct(last['validation_synthetic_error'])} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} |"
        )
    return [*rows, ""]


def _figures(dataset: str, runs_by_cell: dict, out: str) -> None:
    """Mean test error curves (real solid, synthetic dashed) per main cell, against epochs and wall time."""
    for cells, name in ((("backprop", "shadow"), "nodropout"), (("backprop_dropout", "shadow_dropout"), "dropout")):
        series_epoch, series_wall = {}, {}
        for cell in cells:
            runs = list(runs_by_cell.get(cell, {}).values())
            if not runs:
                continue
            n = min(len(r) for r in runs)
            epochs = list(range(1, n + 1))
            wall = list(np.mean([[m["wall_time_s"] / 60 for m in r[:n]] for r in runs], axis=0))
            for kind, key in (("real", "test_error"), ("synthetic", "test_synthetic_error")):
                values = 100 * np.array([[m[key] for m in r[:n]] for r in runs])
                curve, spread = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else np.zeros(n)
                series_epoch[f"{cell} {kind}"] = (epochs, curve, spread)
                series_wall[f"{cell} {kind}"] = (wall, curve, spread)
        if series_epoch:
            title = f"{dataset}: test error, mean over seeds (shaded: +- 1 std)"
            plots.learning_curves(
                series_epoch,
                os.path.join(out, "figures", f"{dataset}_curves_{name}.png"),
                ylabel="test error %",
                title=title,
            )
            plots.learning_curves(
                series_wall,
                os.path.join(out, "figures", f"{dataset}_curves_{name}_wall.png"),
                xlabel="training minutes",
                ylabel="test error %",
                title=title,
            )
