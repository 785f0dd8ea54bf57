"""The verdict at practical scale: its plan's shape and the sweep it makes (airbench-like net, hours per run).

A lean plan, cheapest runs first. On the validation split (seed 0):
backprop's learning rate is chosen among a few; SHADOW takes that rate,
chooses its source layer, then tries its own rates, factors of backprop's
(coordinate descent, one axis at a time); the twin-statistics variants run
once at SHADOW's choice.
The final runs then train on every training image (``final`` overrides,
e.g. no validation split) at the chosen settings: backprop and SHADOW for
every seed, the matched-energy noise twin (placebo) at SHADOW's settings for
fewer; backprop's variants (a part of the net left out) and SHADOW with the
same change, one seed each.

The report gives the choices (every validation error they were made from),
then per final arm: test error with test-time augmentation and without
(mean ± std over seeds), the paired difference to backprop of the same seed
(a SHADOW variant: to the backprop variant with its change; mean ± SE of the
per-seed differences; "effect" only beyond 2 SE), the synthetic test error
and whether it tracks the real one, the share of steps the gradient clip
acted on, and training and evaluation minutes; then the variants beside
SHADOW on validation, and every row's command.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from rev_nets import plots
from rev_nets.analysis import sweep
from rev_nets.analysis.full_label_grid import add_mean_curves, tracking
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
from rev_nets.errors import InputError

LEARNING_RATE = "train.learning_rate"
SHADOW_LAYER = "train.shadow.layer"


@dataclasses.dataclass(frozen=True)
class ScalePlan:
    """Shared overrides (the tuning runs' validation split among them), what the final runs change, the
    candidates of backprop's rate and of SHADOW's source layer, SHADOW's rates as factors of backprop's chosen
    one (1 first: its source layer is chosen at that rate), the seeds of the final runs, the one-seed variants
    of SHADOW judged on validation (name -> overrides), one-seed final runs of backprop's variants (a part
    of the net or recipe left out: what it is worth), and one-seed final runs of SHADOW with a backprop
    variant's change (name -> that variant's name), each paired with that variant."""

    common: sweep.Overrides
    final: sweep.Overrides
    learning_rates: tuple[float, ...]
    shadow_layers: tuple[int, ...]
    shadow_rate_factors: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    placebo_seeds: tuple[int, ...] = (0,)
    variants: Mapping[str, sweep.Overrides] = dataclasses.field(default_factory=dict)
    backprop_variants: Mapping[str, sweep.Overrides] = dataclasses.field(default_factory=dict)
    shadow_final_variants: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.shadow_final_variants.values()) - set(self.backprop_variants))
        if unknown:
            raise InputError(
                f"shadow_final_variants name {unknown}, which are not backprop_variants "
                f"({sorted(self.backprop_variants)}); each pairs SHADOW with one of those."
            )

    def baselines(self) -> dict[str, str]:
        """Each final arm's paired baseline: backprop's final runs, or for a SHADOW variant its backprop variant."""
        arms = [*FINALS, *self.backprop_variants, *self.shadow_final_variants]
        return {key: self.shadow_final_variants.get(key, BASELINE) for key in arms if key != BASELINE}

    def to_sweep(self) -> sweep.Sweep:
        """Tune backprop, run its finals and its variants, tune SHADOW, run its finals, the placebo, SHADOW's
        validation variants, then its final variants."""
        backprop, shadow = {SHADOW_LAYER: 0}, {}
        shadow_axes = (
            sweep.Axis(SHADOW_LAYER, self.shadow_layers),
            sweep.Axis(LEARNING_RATE, self.shadow_rate_factors, relative=True),
        )
        cells = {
            "backprop": sweep.Cell(backprop, (sweep.Axis(LEARNING_RATE, self.learning_rates),)),
            "backprop_final": sweep.Cell({**backprop, **self.final}, inherits=("backprop",), seeds=self.seeds),
            "shadow": sweep.Cell(shadow, shadow_axes, inherits=("backprop",)),
            "shadow_final": sweep.Cell(dict(self.final), inherits=("shadow",), seeds=self.seeds),
            "noise_twin_final": sweep.Cell(
                {"train.shadow.noise_twin": True, **self.final}, inherits=("shadow",), seeds=self.placebo_seeds
            ),
        }
        cells |= {name: sweep.Cell(dict(o), inherits=("shadow",)) for name, o in self.variants.items()}
        cells |= {
            name: sweep.Cell({**backprop, **self.final, **o}, inherits=("backprop",), seeds=self.seeds[:1])
            for name, o in self.backprop_variants.items()
        }
        cells |= {
            name: sweep.Cell({**self.final, **self.backprop_variants[base]}, inherits=("shadow",), seeds=self.seeds[:1])
            for name, base in self.shadow_final_variants.items()
        }
        order = [("tune", "backprop"), ("run", "backprop_final"), *(("run", name) for name in self.backprop_variants)]
        order += [("tune", "shadow"), ("run", "shadow_final")]
        order += [("run", "noise_twin_final"), *(("run", name) for name in self.variants)]
        order += [("run", name) for name in self.shadow_final_variants]
        return sweep.Sweep(self.common, cells, tuple(order))


FINALS = {"backprop_final": "backprop", "shadow_final": "SHADOW", "noise_twin_final": "noise twin (placebo)"}
BASELINE = "backprop_final"
SHADOW, PLACEBO = "shadow_final", "noise_twin_final"


def _final_error(line: dict) -> float:
    """The run's headline test error: with test-time augmentation where the run judged it, else without."""
    return line.get("test_tta_error", line["test_error"])


def summarise(dataset: str, plan: ScalePlan, root: str, out: str, entry: sweep.EntryPoint) -> Report:
    """The ``Report`` named ``dataset``; draws the learning curves and archives the runs' records under ``out``.
    Stops, writing nothing, unless ``root`` holds a finished run."""
    grid = plan.to_sweep()
    sweep.check_reportable(root, grid.epochs)
    tuning = sweep.read_tuning(grid, root)
    chosen = {key: tuning.settings(key) for key in grid.cells}
    arms = FINALS | {name: name for name in (*plan.backprop_variants, *plan.shadow_final_variants)}
    baselines = plan.baselines()
    runs = {key: sweep.finished_runs(root, grid, key, chosen[key]) for key in arms if chosen[key] is not None}
    lost = {key: sweep.diverged_runs(root, grid, key, chosen[key]) for key in arms if chosen[key] is not None}
    finals = {key: {seed: _final_error(lines[-1]) for seed, lines in by_seed.items()} for key, by_seed in runs.items()}

    rows = [
        (
            "| arm | settings | seeds | test error % (test-time aug.) | without | vs its backprop, paired (± SE) | "
            "synthetic test error % | synthetic - real gap | corr. of epoch-to-epoch changes | steps clipped % | "
            "training min | evaluation min |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    versus = {}
    for key, name in arms.items():
        by_seed = runs.get(key)
        seeds = _seeds_text(len(by_seed or ()), len(lost.get(key, ())))
        if not by_seed:
            outcome = "diverged" if lost.get(key) else "not run yet"
            rows.append(f"| {name} | {_settings_text(chosen[key])} | {seeds} | {outcome} | | | | | | | | |")
            continue
        last = [lines[-1] for lines in by_seed.values()]
        difference = ""
        baseline = baselines.get(key)
        if baseline and finals.get(baseline):
            versus[key] = _compared(finals, key, baseline)
            against = "" if baseline == BASELINE else f" vs {baseline}"
            difference = _compared_text(versus[key], against)
        gap, corr = tracking(by_seed)
        rows.append(
            f"| {name} | {_settings_text(chosen[key])} | {seeds} | {mean_std_text(list(finals[key].values()))} | "
            f"{mean_std_text([m['test_error'] for m in last])} | {difference} | "
            f"{mean_std_text([m['test_synthetic_error'] for m in last])} | {100 * gap:+.2f} | {corr:.2f} | "
            f"{_clipped_text(by_seed)} | {_minutes(by_seed, 'epoch_time_s'):.0f} | {_minutes(by_seed, 'evaluation_time_s'):.0f} |"
        )

    placebo = _compared(finals, PLACEBO, SHADOW) if finals.get(PLACEBO) and finals.get(SHADOW) else None
    search = ["| cell | settings | validation error % (seed 0) | with test-time aug. |", "|---|---|---|---|"]
    for key in ("backprop", "shadow", *plan.variants):
        tried = list(tuning.trials.get(key, []))
        if key in plan.variants and chosen[key] is not None:
            tried.append((chosen[key], sweep.outcome(sweep.run_dir(root, key, chosen[key], 0), grid.epochs)))
        search += [
            f"| {key} | {_settings_text(settings)} | {_outcome_text(error)} | {_validation_tta_text(root, key, settings)} |"
            for settings, error in tried
        ]

    commands = sweep.commands(grid, entry, chosen)
    figures = _curves(dataset, {key: runs[key] for key in FINALS if key in runs}, out)
    sweep.copy_finished_records(root, os.path.join(out, dataset), grid.epochs, replace=True)
    markdown = [
        f"## {dataset}: final runs on every training image, {grid.epochs} epochs, seeds {list(plan.seeds)}",
        "",
        *rows,
        "",
        *sweep.diverged_lines(lost),
        _placebo_text(placebo),
        "",
        (
            "Synthetic test error: the twins of each epoch's evaluation (from group 3 for backprop's arms, from the "
            "source layer for SHADOW's and the placebo's), judged with BatchNorm's running averages (the real "
            "images'); `experiments.reversibility --run=<final run>` also judges them with their own batch "
            "statistics, as SHADOW's training forward does. Steps clipped: the share of training steps whose "
            "gradient norm the clip (`grad_clip`) scaled down, mean over seeds."
        ),
        "",
        *(
            f"![{dataset}: the final arms' test error (solid) and synthetic test error (dashed) by {x}, mean over "
            f"seeds](figures/{name})"
            for name, x in figures
        ),
        "",
        "Choices on the validation split (seed 0; lowest final validation error, one setting at a time):",
        "",
        *search,
        "",
        "Commands:",
        "",
        *commands,
    ]
    numbers = {
        "chosen": {key: sweep.named(settings) for key, settings in chosen.items()},
        "test_error": {key: {str(seed): e for seed, e in by_seed.items()} for key, by_seed in finals.items()},
        "versus_backprop": versus,
        "placebo_versus_shadow": placebo,
        "diverged": {
            key: {str(seed): how for seed, how in by_seed.items()} for key, by_seed in lost.items() if by_seed
        },
        "validation": {key: [[sweep.named(s), e] for s, e in trials] for key, trials in tuning.trials.items()},
    }
    return Report(dataset, numbers, "\n".join(markdown) + "\n")


def _placebo_text(placebo: dict | None) -> str:
    """The line under the table: the placebo's final test error against SHADOW's, paired over seeds."""
    if placebo is None:
        return "The placebo against SHADOW: not both run yet."
    if not placebo["seeds"]:
        return "The placebo against SHADOW: no seed in common yet."
    return (
        f"The placebo against SHADOW, paired: {_compared_text(placebo, '')} (positive: the noise twin of the same "
        "energy has the higher error)."
    )


def _compared(finals: dict[str, dict[int, float]], key: str, baseline: str) -> dict:
    """Arm ``key``'s final test error against ``baseline``'s, paired over the seeds both have: mean ± SE of the
    differences, its verdict ("effect" beyond 2 SE) and the paired t-test's p."""
    mean, se, n = paired_difference(finals[key], finals[baseline])
    p = paired_p(finals[key], finals[baseline])
    return {
        "baseline": baseline,
        "mean": mean,
        "se": se,
        "seeds": n,
        "verdict": verdict(mean, se, without_se="one seed"),
        "p": p,
    }


def _compared_text(compared: dict, against: str) -> str:
    """ "+0.40 ± 0.10 over 3 (no effect, p 0.1)": a comparison as the table writes it."""
    return f"{difference_text(compared['mean'], compared['se'])} over {compared['seeds']}{against} ({compared['verdict']}{p_text(compared['p'])})"


def _seeds_text(finished: int, diverged: int) -> str:
    """An arm's seeds in the table: the finished ones, and those that diverged beside them ("2 (+1 diverged)")."""
    return f"{finished} (+{diverged} diverged)" if diverged else str(finished)


def _clipped_text(by_seed: dict[int, list[dict]]) -> str:
    """The share of an arm's training steps that the gradient clip scaled down, mean over seeds and epochs (every
    epoch has as many steps); empty for runs that did not record it."""
    shares = [m["train_clipped"] for lines in by_seed.values() for m in lines if "train_clipped" in m]
    return f"{100 * np.mean(shares):.1f}" if shares else ""


def _minutes(by_seed: dict[int, list[dict]], field: str) -> float:
    """The median over seeds of a run's summed ``field`` (seconds per epoch), in minutes."""
    return float(np.median([sum(m.get(field, np.nan) for m in lines) / 60 for lines in by_seed.values()]))


def _outcome_text(error: float | None) -> str:
    """A validation run's final error in a table: a percentage, "diverged", or "not run yet" while unfinished."""
    return "not run yet" if error is None else "diverged" if error == float("inf") else pct(error)


def _validation_tta_text(root: str, key: str, settings: sweep.Overrides) -> str:
    """A validation run's last validation error with test-time augmentation (judged at its last step only), or
    nothing while it runs or where it judged none."""
    lines = sweep.read_metrics(sweep.run_dir(root, key, settings, 0))
    error = lines[-1].get("validation_tta_error") if lines else None
    return "" if error is None else pct(error)


def _settings_text(settings: sweep.Overrides | None) -> str:
    if settings is None:
        return "not chosen yet"
    return ", ".join(f"{sweep.setting_name(path)} {value:g}" for path, value in settings.items())


def _curves(dataset: str, runs: dict[str, dict[int, list[dict]]], out: str) -> list[tuple[str, str]]:
    """Mean test error of each final arm, real (solid) and synthetic (dashed), by epoch and by training
    minutes (what SHADOW's extra passes cost in time); returns each drawn figure's file name and x axis."""
    by_epoch, by_minute = {}, {}
    for key, by_seed in runs.items():
        add_mean_curves(by_epoch, by_minute, FINALS[key], list(by_seed.values()))
    if not by_epoch:
        return []
    title = f"{dataset}: test error, mean over seeds (shaded: +- 1 std)"
    drawn = [(f"{dataset}_curves.png", "epoch"), (f"{dataset}_curves_wall.png", "training minutes")]
    for series, (name, xlabel) in zip((by_epoch, by_minute), drawn):
        plots.learning_curves(
            series,
            os.path.join(out, "figures", name),
            xlabel=xlabel,
            ylabel="test error %, no test-time aug.",
            title=title,
        )
    return drawn
