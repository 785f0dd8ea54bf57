"""The full-label grid: its plan's shape, the sweep it makes, and its report (SHADOW against its backprop twin).

A plan names the shared overrides, the learning rates, the seeds, the main
cells (backprop and SHADOW, with and without dropout), the ablations and the
probes. Each main cell's rate is chosen on seed 0's validation error (a
one-axis tuning); the other seeds run at that rate, then the ablations (each
changes one setting of the SHADOW cell and takes its rate), then the probes
(one seed, same rate, judged on validation).

The report gives, for every cell at its chosen rate: final test error (mean ±
std over seeds), the difference to its backprop twin with its Welch standard
error ("effect" only beyond 2 standard errors), early test error, and whether
the synthetic test error tracks the real one: the mean per-epoch gap
(synthetic minus real) and the correlation of their epoch-to-epoch changes
(raw curves correlate whenever both fall). ``summarise`` returns the ``Report``
(numbers and markdown), draws learning curves and archives every finished run's
records, so that the tables can be rebuilt from the repository alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from rev_nets import plots
from rev_nets.analysis import sweep
from rev_nets.analysis.report_files import Report
from rev_nets.analysis.sweep_stats import difference_text, mean_std_text, p_text, pct, verdict, welch, welch_p
from rev_nets.train.rundir import read_metrics

LEARNING_RATE = "train.learning_rate"


@dataclasses.dataclass(frozen=True)
class Plan:
    """A dataset's grid: shared overrides (``train.epochs`` among them), rates, seeds, and the cells (name ->
    overrides). ``probes`` are one-seed variants of the ``ablation_base`` cell, run last, to find out why SHADOW
    does or does not help."""

    common: sweep.Overrides
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    main_cells: Mapping[str, sweep.Overrides]
    ablations: Mapping[str, sweep.Overrides]
    ablation_base: str = "shadow"
    ablation_seeds: tuple[int, ...] | None = None  # None: the same seeds as the main cells
    probes: Mapping[str, sweep.Overrides] = dataclasses.field(default_factory=dict)

    def to_sweep(self) -> sweep.Sweep:
        """Stage 1 tunes every main cell's rate; stage 2 runs their other seeds, the ablations, the probes."""
        rate = (sweep.Axis(LEARNING_RATE, self.learning_rates),)
        base = (self.ablation_base,)
        cells = {name: sweep.Cell(o, rate, seeds=self.seeds) for name, o in self.main_cells.items()}
        seeds = self.ablation_seeds or self.seeds
        cells |= {name: sweep.Cell(o, inherits=base, seeds=seeds) for name, o in self.ablations.items()}
        cells |= {name: sweep.Cell(o, inherits=base, seeds=self.seeds[:1]) for name, o in self.probes.items()}
        order = [("tune", name) for name in self.main_cells] + [("run", name) for name in cells]
        return sweep.Sweep(self.common, cells, tuple(order))


TWINS = {
    "shadow": "backprop",
    "shadow_dropout": "backprop_dropout",
    "shadow_h2": "backprop",
    "shadow_sampling": "backprop",
    "shadow_smoothing": "backprop",
    "noise_twin": "backprop",
}


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


def summarise(dataset: str, plan: Plan, root: str, out: str, entry: sweep.EntryPoint) -> Report:
    """The ``Report`` named ``dataset``; draws the figures and archives the runs' records under ``out``. Stops, writing
    nothing, unless ``root`` holds a finished run."""
    grid = plan.to_sweep()
    sweep.check_reportable(root, grid.epochs)
    tuning = sweep.read_tuning(grid, root)
    chosen = {key: tuning.settings(key) for key in grid.cells}
    rates = {key: None if settings is None else settings[LEARNING_RATE] for key, settings in chosen.items()}
    cells = [*plan.main_cells, *plan.ablations]
    runs_by_cell = {c: sweep.finished_runs(root, grid, c, chosen[c]) for c in cells if chosen[c] is not None}
    lost = {c: sweep.diverged_runs(root, grid, c, chosen[c]) for c in cells if chosen[c] is not None}
    finals = {cell: [lines[-1]["test_error"] for lines in runs.values()] for cell, runs in runs_by_cell.items()}
    early_epoch = max(1, grid.epochs // 5)

    rows = [
        f"| cell | lr | seeds | test error % (mean ± std) | vs backprop twin (± Welch SE) | test error % at epoch {early_epoch} (vs twin) | synthetic - real gap | corr. of epoch-to-epoch changes | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    versus_twin = {}
    for cell in cells:
        if not runs_by_cell.get(cell):
            rows.append(f"| {cell} | {rates[cell]} | 0 | {'diverged' if lost.get(cell) else 'not run yet'} | | | | | |")
            continue
        runs, errors = runs_by_cell[cell], finals[cell]
        twin = TWINS.get(cell)
        versus = ""
        if twin and finals.get(twin):
            diff, se = welch(errors, finals[twin])
            p = welch_p(errors, finals[twin])
            versus_twin[cell] = {"mean": diff, "se": se, "verdict": verdict(diff, se), "p": p}
            versus = f"{difference_text(diff, se)} ({verdict(diff, se)}{p_text(p)})"
        early = [lines[early_epoch - 1]["test_error"] for lines in runs.values()]
        early_versus = ""
        if twin and runs_by_cell.get(twin):
            twin_early = [lines[early_epoch - 1]["test_error"] for lines in runs_by_cell[twin].values()]
            early_versus = f" ({difference_text(*welch(early, twin_early))})"
        gap, corr = tracking(runs)
        seconds = np.median([m["epoch_time_s"] for lines in runs.values() for m in lines[1:]] or [float("nan")])
        rows.append(
            f"| {cell} | {rates[cell]:g} | {len(errors)} | {mean_std_text(errors)} | {versus} | "
            f"{pct(np.mean(early))}{early_versus} | {100 * gap:+.2f} | {corr:.2f} | {seconds:.1f} |"
        )

    search = [
        "| cell | " + " | ".join(f"lr {lr:g}" for lr in plan.learning_rates) + " |",
        "|---|" + "---|" * len(plan.learning_rates),
    ]
    for cell in plan.main_cells:
        search.append(f"| {cell} | " + " | ".join(pct(error) for _, error in tuning.trials[cell]) + " |")

    commands = sweep.commands(grid, entry, chosen)
    _figures(dataset, runs_by_cell, out)
    sweep.copy_finished_records(root, os.path.join(out, dataset), grid.epochs, replace=True)
    markdown = [
        f"## {dataset}: final test error, {grid.epochs} epochs, seeds {list(plan.seeds)}",
        "",
        *rows,
        "",
        *sweep.diverged_lines(lost),
        "Validation error % (seed 0) per learning rate, from which each main arm's rate was chosen:",
        "",
        *search,
        "",
        *probe_rows(plan, grid, root, chosen),
        "Commands:",
        "",
        *commands,
    ]
    numbers = {
        "chosen": {key: sweep.named(settings) for key, settings in chosen.items()},
        "test_error": {cell: dict(zip(runs_by_cell[cell], errors)) for cell, errors in finals.items()},
        "versus_twin": versus_twin,
        "learning_rate_search": {c: [[s[LEARNING_RATE], e] for s, e in tuning.trials[c]] for c in plan.main_cells},
    }
    return Report(dataset, numbers, "\n".join(markdown) + "\n")


def probe_rows(plan: Plan, grid: sweep.Sweep, root: str, chosen: dict) -> list[str]:
    """Validation table of the probes (seed 0) beside the backprop, SHADOW and ablation runs they are read against."""
    if not plan.probes or chosen[plan.ablation_base] is None:
        return []
    rows = [
        "Probes (seed 0, judged on validation; why SHADOW does or does not help):",
        "",
        "| run | validation error % | validation synthetic error % | synthetic/real input norm (last epoch) |",
        "|---|---|---|---|",
    ]
    for cell in ["backprop", plan.ablation_base, *plan.ablations, *plan.probes]:
        workdir = None if chosen[cell] is None else sweep.run_dir(root, cell, chosen[cell], plan.seeds[0])
        error = None if workdir is None else sweep.outcome(workdir, grid.epochs)
        if error is None:
            rows.append(f"| {cell} | not run yet | | |")
            continue
        if error == float("inf"):
            rows.append(f"| {cell} | diverged | | |")
            continue
        last = read_metrics(workdir)[-1]
        ratio = last.get("train_norm_ratio")
        rows.append(
            f"| {cell} | {pct(last['validation_error'])} | {pct(last['validation_synthetic_error'])} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} |"
        )
    return [*rows, ""]


def add_mean_curves(by_epoch: dict, by_minute: dict, name: str, runs: list[list[dict]]) -> None:
    """Adds ``name``'s mean test error over ``runs`` (real and synthetic, in %, ± std over runs) against epochs
    to ``by_epoch`` and against training minutes to ``by_minute``; nothing without runs."""
    if not runs:
        return
    n = min(len(r) for r in runs)
    minutes = list(np.mean([[m["wall_time_s"] / 60 for m in r[:n]] for r in runs], axis=0))
    for kind, key in (("real", "test_error"), ("synthetic", "test_synthetic_error")):
        values = 100 * np.array([[m[key] for m in r[:n]] for r in runs])
        curve, spread = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else np.zeros(n)
        by_epoch[f"{name} {kind}"] = (list(range(1, n + 1)), curve, spread)
        by_minute[f"{name} {kind}"] = (minutes, curve, spread)


def _figures(dataset: str, runs_by_cell: dict, out: str) -> None:
    """Mean test error curves (real solid, synthetic dashed) per main cell, against epochs and wall time."""
    for cells, name in ((("backprop", "shadow"), "nodropout"), (("backprop_dropout", "shadow_dropout"), "dropout")):
        series_epoch, series_wall = {}, {}
        for cell in cells:
            add_mean_curves(series_epoch, series_wall, cell, list(runs_by_cell.get(cell, {}).values()))
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
