"""The few-label grid: supervised SHADOW and consistency on unlabelled images, with few labels, run resumably.

A plan names, per dataset, the shared flags (a fixed number of steps for
every arm), the label counts, the seeds and the arms. Each arm is fixed
flags plus tuned settings (``Axis``): on seed 0 the driver tunes one axis at
a time on the validation split, lowest final validation error wins, the
earlier axes at their chosen values and the later at their start values
(coordinate descent). An arm may first take settings another arm chose at
the same label count (the consistency arms take the backprop arm's learning
rate). Then the other seeds run at the chosen settings; each seed is its own
label subset (``--seed`` draws it), shared by every arm.

Run order: the supervised arms (tuning, then seeds), then the semi-supervised
arms' tuning on seed 0, then their other seeds, then the probes: one-seed
variants of an arm at its chosen settings (source layer, twin norm), read
on validation to find out why an arm does or does not help. Runs are
subprocesses of the dataset's entry point, one at a time; a finished run is
skipped and an interrupted one resumes from its last checkpoint
(``grid.run_resuming``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from rev_nets.analysis.grid import DIVERGED, finished, restore, run_resuming
from rev_nets.train.rundir import read_metrics

ABBREVIATIONS = {"learning_rate": "lr", "consistency_weight": "w", "consistency_sigma": "sigma"}


@dataclasses.dataclass(frozen=True)
class Axis:
    """A setting tuned on validation: its flag name, the candidate values, and its value before it is tuned."""

    flag: str
    candidates: tuple[float, ...]
    start: float | None = None


@dataclasses.dataclass(frozen=True)
class Arm:
    """A cell of the grid: fixed flags, tuned axes, and the arms whose chosen settings it takes first."""

    flags: tuple[str, ...]
    axes: tuple[Axis, ...] = ()
    inherits: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Probe:
    """A one-seed variant of an arm at its chosen settings, judged on validation: ``flags`` are added to the
    arm's (replacing a flag of the same name), and ``overrides`` (flag, value) replace chosen settings, e.g.
    a weight beyond the tuning grid's edge."""

    num_labels: int
    base: str
    flags: tuple[str, ...] = ()
    overrides: tuple[tuple[str, float], ...] = ()

    def settings(self, chosen: dict[str, float]) -> dict[str, float]:
        """The probe's settings: its base arm's chosen ones with the overrides."""
        return chosen | dict(self.overrides)

    def describe(self) -> str:
        return " ".join([*self.flags, *(f"--{flag}={value:g}" for flag, value in self.overrides)])


@dataclasses.dataclass(frozen=True)
class LabelPlan:
    """A dataset's few-label grid.

    ``supervised`` arms run at every count of ``labels``; ``semi`` arms at
    ``semi_labels``, on ``semi_seeds`` (their first seed tunes them);
    ``probes`` (name -> ``Probe``) run last, on the base arm's first seed.
    """

    common: tuple[str, ...]
    labels: tuple[int, ...]
    seeds: tuple[int, ...]
    supervised: dict[str, Arm]
    semi_labels: tuple[int, ...]
    semi: dict[str, Arm]
    semi_seeds: tuple[int, ...]
    probes: dict[str, Probe] = dataclasses.field(default_factory=dict)

    def arms(self, num_labels: int) -> dict[str, Arm]:
        """The arms run at ``num_labels``, supervised first."""
        return self.supervised | (self.semi if num_labels in self.semi_labels else {})

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        return self.semi_seeds if arm in self.semi else self.seeds

    def probe_arm(self, name: str) -> Arm:
        """The probe's base arm with the probe's flags in place of its own of the same name (nothing left to tune)."""
        probe = self.probes[name]
        replaced = {flag.split("=")[0] for flag in probe.flags}
        kept = tuple(
            flag for flag in self.arms(probe.num_labels)[probe.base].flags if flag.split("=")[0] not in replaced
        )
        return Arm(kept + probe.flags)


def _plan(common, learning_rates, labels, semi_labels, semi_seeds, gaussian: bool, probes) -> LabelPlan:
    lr = Axis("learning_rate", learning_rates)
    weight = Axis("consistency_weight", (1.0, 10.0, 100.0), start=10.0)
    supervised = {
        "backprop": Arm(("--shadow_layer=0",), (lr,)),
        "shadow": Arm(("--shadow_layer=3",), (lr,)),
        "noise_twin": Arm(("--shadow_layer=3", "--noise_twin"), (lr,)),
    }
    semi = {
        "consistency_shadow": Arm(("--shadow_layer=0", "--consistency=shadow"), (weight,), ("backprop",)),
        "consistency_noise": Arm(("--shadow_layer=0", "--consistency=noise"), (weight,), ("backprop",)),
    }
    if gaussian:
        # Standardised units: MNIST pixels have std 0.31 on [0, 1], so 1.0 is the Ladder network's input noise of 0.3.
        sigma = Axis("consistency_sigma", (0.25, 0.5, 1.0), start=0.5)
        semi["consistency_gaussian"] = Arm(
            ("--shadow_layer=0", "--consistency=gaussian"), (weight, sigma), ("backprop",)
        )
    return LabelPlan(
        common=common,
        labels=labels,
        seeds=(0, 1, 2),
        supervised=supervised,
        semi_labels=semi_labels,
        semi=semi,
        semi_seeds=semi_seeds,
        probes=probes,
    )


# Fixed step budgets: 15 and 12 full-data epochs of 128 with the entry points' 5,000 validation images (the plans
# hold out 1,000, so on MNIST this is about 14 epochs of the 59,000 others).
STEPS = {"mnist": 6435, "cifar10": 4212}
PLANS = {
    "mnist": _plan(
        ("--epochs=15", f"--steps={STEPS['mnist']}", "--batch_size=128", "--warmup_epochs=1", "--num_validation=1000"),
        learning_rates=(0.02, 0.05, 0.1),
        labels=(100, 1000, 10000),
        semi_labels=(100, 1000),
        semi_seeds=(0, 1, 2),
        gaussian=True,
        probes={  # At 100 labels SHADOW's twins from h3 grow to ~2.2x the input's norm; 0.77**3 brings them to ~1.
            "probe_shadow_h1": Probe(100, "shadow", ("--shadow_layer=1",)),
            "probe_shadow_alpha0.77": Probe(100, "shadow", ("--alpha_scale=0.77",)),
            "probe_consistency_h1": Probe(100, "consistency_shadow", ("--consistency_layer=1",)),
            "probe_consistency_h2": Probe(100, "consistency_shadow", ("--consistency_layer=2",)),
            "probe_consistency_alpha0.77": Probe(100, "consistency_shadow", ("--alpha_scale=0.77",)),
            # Tuning chose the grid's smallest weight (10 and 100 diverge or hurt) and the largest sigma: one step
            # past each edge.
            "probe_consistency_w0.3": Probe(100, "consistency_shadow", overrides=(("consistency_weight", 0.3),)),
            "probe_consistency_noise_w0.3": Probe(100, "consistency_noise", overrides=(("consistency_weight", 0.3),)),
            "probe_consistency_gaussian_sigma2": Probe(
                100, "consistency_gaussian", overrides=(("consistency_sigma", 2.0),)
            ),
        },
    ),
    "cifar10": _plan(
        (
            "--epochs=12",
            f"--steps={STEPS['cifar10']}",
            "--batch_size=128",
            "--warmup_epochs=1",
            "--num_validation=1000",
            "--channels=32,64,128",
        ),
        learning_rates=(0.02, 0.05),
        labels=(1000, 4000),
        semi_labels=(4000,),
        semi_seeds=(0, 1, 2),  # seed 0 runs first (with the tuning); seeds 1 and 2 last, as the budget allows
        gaussian=False,
        probes={  # At 4,000 labels (seed 0) SHADOW's twins end at 0.55x the input's norm (1.2**3 brings them to ~1),
            # the consistency twins at 1.69x (weight 1; 0.84**3 brings them to ~1).
            "probe_shadow_h1": Probe(4000, "shadow", ("--shadow_layer=1",)),
            "probe_shadow_alpha1.2": Probe(4000, "shadow", ("--alpha_scale=1.2",)),
            "probe_consistency_h1": Probe(4000, "consistency_shadow", ("--consistency_layer=1",)),
            "probe_consistency_alpha0.84": Probe(4000, "consistency_shadow", ("--alpha_scale=0.84",)),
            # Weight 1 beats 10 and 100 on validation (47.70, 49.40, 50.90): one step past the grid's edge.
            "probe_consistency_w0.3": Probe(4000, "consistency_shadow", overrides=(("consistency_weight", 0.3),)),
        },
    ),
}


def epochs_of(plan: LabelPlan) -> int:
    return int(next(f for f in plan.common if f.startswith("--epochs=")).split("=")[1])


def run_name(arm: str, settings: dict[str, float], seed: int) -> str:
    """``<arm>_lr0.05_w10_seed0``: the arm, its settings in a fixed order, the seed."""
    tags = [f"{ABBREVIATIONS[flag]}{settings[flag]:g}" for flag in ABBREVIATIONS if flag in settings]
    return "_".join([arm, *tags, f"seed{seed}"])


def run_dir(root: str, num_labels: int, arm: str, settings: dict[str, float], seed: int) -> str:
    return os.path.join(root, f"labels{num_labels}", run_name(arm, settings, seed))


def command(dataset: str, plan: LabelPlan, arm: Arm, num_labels: int, settings: dict[str, float]) -> list[str]:
    """The entry point's flags for one run of ``arm`` (seed, workdir and data folder added by the caller)."""
    tuned = [f"--{flag}={value:g}" for flag, value in settings.items()]
    return [f"experiments.{dataset}", *plan.common, f"--num_labels={num_labels}", *arm.flags, *tuned]


def outcome(workdir: str, epochs: int) -> float | None:
    """The run's final validation error (inf if it diverged), or None while it is not finished."""
    if not finished(workdir, epochs):
        return None
    if os.path.exists(os.path.join(workdir, DIVERGED)):
        return float("inf")
    return read_metrics(workdir)[-1]["validation_error"]


@dataclasses.dataclass
class Driver:
    """Runs (or, with ``dry_run``, lists) a plan's runs under ``root`` in order.

    ``choices`` holds the tuned settings per (label count, arm) as they are
    found (None where a dry run met unfinished runs); ``trials`` the seed-0
    runs each choice was made from, as (settings, validation error or None).
    """

    dataset: str
    plan: LabelPlan
    root: str
    data_dir: str | None = None
    retries: int = 2
    dry_run: bool = False
    choices: dict[tuple[int, str], dict[str, float] | None] = dataclasses.field(default_factory=dict)
    trials: dict[tuple[int, str], list[tuple[dict[str, float], float | None]]] = dataclasses.field(default_factory=dict)

    def run(self, num_labels: int, name: str, settings: dict[str, float], seed: int) -> float | None:
        """Runs, resumes or skips one run of the arm or probe ``name``; returns its ``outcome``."""
        workdir = run_dir(self.root, num_labels, name, settings, seed)
        epochs = epochs_of(self.plan)
        if finished(workdir, epochs):
            print(f"done      {workdir}", flush=True)
            return outcome(workdir, epochs)
        arm = self.plan.probe_arm(name) if name in self.plan.probes else self.plan.arms(num_labels)[name]
        flags = command(self.dataset, self.plan, arm, num_labels, settings)
        flags += [f"--seed={seed}", f"--workdir={workdir}", *([f"--data_dir={self.data_dir}"] if self.data_dir else [])]
        print(f"{'would run' if self.dry_run else 'running'} {' '.join(flags)}", flush=True)
        if self.dry_run:
            return None
        if run_resuming([sys.executable, "-m", *flags], workdir, self.retries) == "diverged":
            open(os.path.join(workdir, DIVERGED), "w").close()
            print(f"diverged  {workdir}", flush=True)
        return outcome(workdir, epochs)

    def tune(self, num_labels: int, arm_name: str) -> dict[str, float] | None:
        """The arm's settings chosen on seed 0's validation error, one axis at a time (None until all have run)."""
        if (num_labels, arm_name) in self.choices:
            return self.choices[(num_labels, arm_name)]
        self.choices[(num_labels, arm_name)] = settings = self._tune(num_labels, arm_name)
        return settings

    def _tune(self, num_labels: int, arm_name: str) -> dict[str, float] | None:
        arm = self.plan.arms(num_labels)[arm_name]
        settings: dict[str, float] = {}
        for parent in arm.inherits:
            inherited = self.tune(num_labels, parent)
            if inherited is None:
                return None
            settings |= inherited
        settings |= {axis.flag: axis.start for axis in arm.axes if axis.start is not None}
        seed = self.plan.seeds_of(arm_name)[0]
        for axis in arm.axes:
            errors = {}
            for value in axis.candidates:
                trial = settings | {axis.flag: value}
                errors[value] = self.run(num_labels, arm_name, trial, seed)
                recorded = self.trials.setdefault((num_labels, arm_name), [])
                if all(trial != earlier for earlier, _ in recorded):  # An axis's start was the last axis's choice.
                    recorded.append((trial, errors[value]))
            if None in errors.values():
                return None
            settings[axis.flag] = min(errors, key=errors.get)  # Ties: the first candidate.
        return settings

    def seeds(self, num_labels: int, arm_name: str) -> None:
        """Every seed of the arm at its chosen settings (after tuning it, if that is still to do)."""
        settings = self.tune(num_labels, arm_name)
        if settings is not None:
            for seed in self.plan.seeds_of(arm_name):  # The first seed ran already if a setting was tuned.
                self.run(num_labels, arm_name, settings, seed)

    def run_all(self) -> None:
        """The whole plan in its run order, then ``chosen_settings.json`` under ``root``."""
        for n in self.plan.labels:
            for arm in self.plan.supervised:
                self.seeds(n, arm)
        for n in self.plan.semi_labels:
            for arm in self.plan.semi:
                self.tune(n, arm)
        for n in self.plan.semi_labels:
            for arm in self.plan.semi:
                self.seeds(n, arm)
        for name, probe in self.plan.probes.items():
            settings = self.tune(probe.num_labels, probe.base)
            if settings is not None:
                self.run(probe.num_labels, name, probe.settings(settings), self.plan.seeds_of(probe.base)[0])
        if not self.dry_run:
            write_choices(self.root, self.choices)
            print(f"few-label grid complete: {self.root}", flush=True)


def write_choices(root: str, choices: dict[tuple[int, str], dict[str, float] | None]) -> None:
    os.makedirs(root, exist_ok=True)
    table = {f"labels{n}/{arm}": settings for (n, arm), settings in sorted(choices.items()) if settings is not None}
    with open(os.path.join(root, "chosen_settings.json"), "w") as f:
        json.dump(table, f, indent=2)


def run_grid(
    dataset: str,
    root: str,
    data_dir: str | None = None,
    *,
    retries: int = 2,
    dry_run: bool = False,
    restore_from: str | None = None,
):
    """Runs the dataset's few-label grid into ``root/<dataset>_labels``; returns the driver (its ``choices``).

    ``restore_from``: a report's folder (``experiments.report --few_labels --workdir``); the finished runs archived
    under its ``<dataset>/`` are restored first, and so skipped.
    """
    driver = Driver(dataset, PLANS[dataset], os.path.join(root, f"{dataset}_labels"), data_dir, retries, dry_run)
    if restore_from:
        restore(os.path.join(restore_from, dataset), driver.root, epochs_of(driver.plan))
    driver.run_all()
    return driver
