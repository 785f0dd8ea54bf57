"""Sweeps as data: cells of overrides of a run's record, tuned on validation, run one at a time and resumably.

A sweep holds shared overrides (config path -> value, ``train.epochs`` among
them), its cells by key (``shadow``, ``labels100/backprop``), and the order
in which they are tuned and run. A cell's settings are chosen on its first
seed's final validation error, one axis at a time, the earlier axes at their
chosen values and the later at their start values (coordinate descent; one
axis, such as a learning rate, is a plain grid search). Then every seed runs
at the chosen settings. Each run is a subprocess of an entry point
(``EntryPoint``: the entry points own the flag names); a finished run is
skipped, an interrupted one resumes from its last checkpoint, one killed
from outside is started again up to ``retries`` times, and one that diverged
is marked ``DIVERGED`` (by the run, with its step and cause; by the sweep
where the run did not) and loses every comparison. Given a ``stop`` poll,
the driver forwards the signal it names to the running run, which saves and
exits with ``EXIT_STOPPED``, and the sweep stops (``Stopped``) until it is
started again. Given an archive folder in the repository, each run's
records are copied there the moment it finishes (``copy_finished_records``),
and a sweep started on a fresh clone restores them first (``restore``), so
a machine lost between sessions costs at most the run in flight.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from rev_nets.errors import EXIT_DIVERGED, EXIT_STOPPED, EXIT_USER_ERROR, InputError, Stopped, UserError
from rev_nets.train.rundir import DIVERGED, describe_divergence, diverged, json_text, read_metrics, write_record

Overrides = Mapping[str, Any]  # config path -> value, in the order the entry point's flags are written


@dataclasses.dataclass(frozen=True)
class Axis:
    """A setting tuned on validation: its config path, the candidate values, and its value before it is tuned.
    ``relative`` candidates are factors of the value it has before this axis (inherited, chosen by an earlier
    axis, or its ``start``; not a cell's fixed overrides), so that "that rate and one step lower" follows
    whatever rate was chosen."""

    path: str
    candidates: tuple[float, ...]
    start: float | None = None
    relative: bool = False

    def values(self, settings: Mapping[str, Any]) -> tuple[float, ...]:
        """The candidates for a cell at ``settings``: relative ones times its current value, to 4 digits."""
        if not self.relative:
            return self.candidates
        if self.path not in settings:
            raise InputError(
                f"the relative axis of {self.path} has no value to scale; inherit it from a cell that chooses it, "
                "or give absolute candidates."
            )
        return tuple(float(f"{settings[self.path] * factor:.4g}") for factor in self.candidates)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: fixed ``overrides``, and settings chosen in this order: those of the ``inherits`` cells, the
    ``axes`` tuned on the first of ``seeds``, then ``pinned`` (values that replace chosen ones, such as a weight
    one step past the tuned grid's edge). Settings with an abbreviation name the run."""

    overrides: Overrides
    axes: tuple[Axis, ...] = ()
    inherits: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    pinned: Overrides = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Shared overrides, the cells by key, and the run order: ("tune", key) tunes a cell, ("run", key) tunes it
    and runs every seed."""

    common: Overrides
    cells: Mapping[str, Cell]
    order: tuple[tuple[str, str], ...]

    def __post_init__(self):
        if "train.epochs" not in self.common:
            raise InputError("A sweep's common overrides need train.epochs: it tells a finished run from the others.")
        wrong = [step for step in self.order if step[0] not in ("tune", "run") or step[1] not in self.cells]
        if wrong:
            raise InputError(f'Sweep order steps {wrong} are not ("tune" or "run", a cell\'s key): fix the plan.')

    @property
    def epochs(self) -> int:
        return self.common["train.epochs"]

    def overrides(self, key: str, settings: Overrides, seed: int | str | None = None) -> dict[str, Any]:
        """One run's overrides, in flag order: shared, the cell's, its settings, then the seed (None: left out)."""
        seeded = {} if seed is None else {"train.seed": seed}
        return {**self.common, **self.cells[key].overrides, **settings, **seeded}


@dataclasses.dataclass(frozen=True)
class EntryPoint:
    """How a run starts: ``python -m <module>``, the flags of its overrides, then ``placement(workdir)`` (the
    flags that give its work directory and data folder)."""

    module: str
    flags: Callable[[Overrides], list[str]]
    placement: Callable[[str], list[str]]

    def argv(self, overrides: Overrides, workdir: str) -> list[str]:
        return [self.module, *self.flags(overrides), *self.placement(workdir)]


ABBREVIATIONS = {
    "train.shadow.layer": "h",
    "train.learning_rate": "lr",
    "train.consistency.weight": "w",
    "train.consistency.sigma": "sigma",
}


SEED = "<seed>"  # The seed's place in a listed command, left unquoted for the reader to fill in.


def commands(sweep: Sweep, entry: EntryPoint, chosen: Mapping[str, Overrides | None]) -> list[str]:
    """Each chosen cell's command as a markdown list item, quoted for a shell, its seed left as ``<seed>``; cells
    not chosen yet are left out."""
    return [
        f"- `{key}`: `python -m {_shell_line([entry.module, *entry.flags(sweep.overrides(key, settings, SEED))])}`"
        for key, settings in chosen.items()
        if settings is not None
    ]


def _shell_line(argv: list[str]) -> str:
    return " ".join(arg if arg.endswith(SEED) else shlex.quote(arg) for arg in argv)


def run_name(key: str, settings: Overrides, seed: int) -> str:
    """``labels100/consistency_shadow_lr0.05_w10_seed0``, ``shadow_final_h3_lr1.5_seed1``: the cell's key, its
    abbreviated settings in a fixed order, the seed."""
    tags = [f"{short}{settings[path]:g}" for path, short in ABBREVIATIONS.items() if path in settings]
    return "_".join([key, *tags, f"seed{seed}"])


def run_dir(root: str, key: str, settings: Overrides, seed: int) -> str:
    return os.path.join(root, run_name(key, settings, seed))


def setting_name(path: str) -> str:
    """A setting's name in tables: its config path without ``train.``, dots as underscores (consistency_weight)."""
    return path.removeprefix("train.").replace(".", "_")


def named(settings: Overrides | None) -> dict[str, Any] | None:
    """Settings keyed by their names in tables (None, a cell not tuned yet, stays None)."""
    return None if settings is None else {setting_name(path): value for path, value in settings.items()}


def finished(workdir: str, epochs: int) -> bool:
    """Whether ``workdir`` holds a metrics line for the last epoch, or diverged."""
    if os.path.exists(os.path.join(workdir, DIVERGED)):
        return True
    return any(m["epoch"] == epochs for m in read_metrics(workdir))


def outcome(workdir: str, epochs: int) -> float | None:
    """The run's final validation error (inf if it diverged; NaN for a run without a validation split), or None
    while it is not finished."""
    if not finished(workdir, epochs):
        return None
    if os.path.exists(os.path.join(workdir, DIVERGED)):
        return float("inf")
    return read_metrics(workdir)[-1].get("validation_error", float("nan"))


def finished_runs(root: str, sweep: Sweep, key: str, settings: Overrides) -> dict[int, list[dict]]:
    """Seed -> metric lines of the cell's finished, not diverged runs at ``settings``."""
    runs = {}
    for seed in sweep.cells[key].seeds:
        workdir = run_dir(root, key, settings, seed)
        if outcome(workdir, sweep.epochs) not in (None, float("inf")):
            runs[seed] = read_metrics(workdir)
    return runs


def diverged_runs(root: str, sweep: Sweep, key: str, settings: Overrides) -> dict[int, str]:
    """Seed -> how the cell's run at ``settings`` diverged (its step and cause where the run marked itself), for
    the seeds whose run did: the runs ``finished_runs`` leaves out."""
    runs = {}
    for seed in sweep.cells[key].seeds:
        workdir = run_dir(root, key, settings, seed)
        if outcome(workdir, sweep.epochs) == float("inf"):
            runs[seed] = describe_divergence(diverged(workdir) or {})
    return runs


def diverged_lines(lost: Mapping[str, Mapping[int, str]]) -> list[str]:
    """Markdown naming each diverged run in ``lost`` (cell -> seed -> how, from ``diverged_runs``), which a
    report's means and differences leave out (only finished runs enter them), so none is lost silently; nothing
    when none diverged."""
    found = [f"- `{key}` seed {seed}: {how}" for key, by_seed in lost.items() for seed, how in by_seed.items()]
    if not found:
        return []
    return ["Diverged runs, left out of the means and differences above:", "", *found, ""]


def check_reportable(root: str, epochs: int) -> None:
    """Stops unless the grid folder ``root`` holds a finished (or diverged) run, so that a report of a mistyped or
    empty folder writes nothing, rather than tables of "not run yet" over the ones it would replace."""
    if not os.path.isdir(root):
        raise InputError(f"the grid folder {root} does not exist; give the folder experiments.grid wrote its runs to.")
    if not any(finished(folder, epochs) for folder, _, _ in os.walk(root)):
        raise InputError(
            f"the grid folder {root} holds no finished run (none reached epoch {epochs} or diverged); report it once "
            "one has, or give the folder of the grid you meant."
        )


RECORDS = ("config.json", "metrics.jsonl", DIVERGED)  # What a finished run leaves that a report reads: a few KB.


def copy_finished_records(source: str, target: str, epochs: int, *, replace: bool) -> list[str]:
    """Copies the records of every run finished under ``source`` to the same place under ``target``; returns them.

    One mechanism both ways: a report archives a sweep's finished runs into the repository, and a sweep restores
    them from there (``replace=False``: a run finished in ``target`` is kept as it is), so that it goes on from a
    fresh clone on a new machine, skipping what it had finished.
    """
    copied = []
    for folder, subfolders, _ in os.walk(source):
        if not finished(folder, epochs):
            continue
        subfolders.clear()
        relative = os.path.relpath(folder, source)
        destination = os.path.join(target, relative)
        if not replace and finished(destination, epochs):
            continue
        os.makedirs(destination, exist_ok=True)
        for name in RECORDS:
            if os.path.exists(os.path.join(folder, name)):
                _copy_record(os.path.join(folder, name), os.path.join(destination, name))
            elif os.path.exists(os.path.join(destination, name)):
                os.remove(os.path.join(destination, name))
        copied.append(relative)
    return sorted(copied)


def _copy_record(source: str, target: str) -> None:
    """Copies one record, a ``config.json`` rewritten with its lists of plain values on one line (older runs wrote
    one line per labelled index)."""
    if os.path.basename(source) != "config.json":
        shutil.copy(source, target)
        return
    with open(source) as f:
        write_record(target, json.load(f))


def restore(archive: str, root: str, epochs: int) -> list[str]:
    """Copies the finished runs archived in ``archive`` into the sweep's ``root`` (refusing a missing archive)."""
    if not os.path.isdir(archive):
        raise InputError(
            f"The archive {archive} does not exist: give the folder experiments.report archived the runs in."
        )
    restored = copy_finished_records(archive, root, epochs, replace=False)
    print(f"restored  {len(restored)} finished runs from {archive}", flush=True)
    return restored


class SweepError(UserError):
    """A run of a sweep that refused its command, crashed, or was killed too often."""


EXTERNAL_KILLS = (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGHUP)  # subprocess's codes for death by these signals
STOP_POLL_S = 0.2  # How often a running run's driver looks at its stop poll.

Stop = Callable[[], Any]  # A poll: None (or falsy) to go on, else the reason to stop, e.g. a signal.Signals


def run_resuming(command: list[str], workdir: str, retries: int, stop: Stop | None = None) -> str:
    """Runs ``command``, output appended to ``workdir/log.txt``; a run killed from outside (SIGKILL, SIGTERM,
    SIGHUP: the OOM killer, a shutdown) is started again, resuming, up to ``retries`` times.

    Returns "done", or "diverged" for a non-finite loss (a restart would repeat it), or "stopped" for a run
    that saved and stopped on request (``EXIT_STOPPED``), or that a signal ended while ``stop`` asked for it.
    Any other failure stops the sweep at once with a sentence: a refused command would be refused again, and a
    crash of the run's own (an exception, or an abort such as XLA's) is a bug that a retry would hide.
    """
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "log.txt")
    for attempt in range(retries + 1):
        with open(log_path, "a") as log:
            code = _call(command, log, stop)
        if not code:
            return "done"
        if code == EXIT_DIVERGED:
            return "diverged"
        if code == EXIT_STOPPED or (stop and stop() and code in (*EXTERNAL_KILLS, -signal.SIGINT)):
            return "stopped"
        if code == EXIT_USER_ERROR:
            raise SweepError(f"run {workdir} refused its command (exit code {code}); its log.txt says why.")
        if code not in EXTERNAL_KILLS:
            raise SweepError(
                f"run {workdir} crashed (exit code {code}); its log.txt says why. Rerunning the grid resumes it."
            )
        if attempt < retries:
            print(f"killed    {workdir} (signal {-code}); resuming from its last checkpoint", flush=True)
    raise SweepError(f"run {workdir} was killed {retries + 1} times (signal {-code}); its log.txt says why.")


def _call(command: list[str], log, stop: Stop | None) -> int:
    """Runs ``command`` to its end and returns its exit code, forwarding ``stop``'s reason to it (``_forward``)."""
    with subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT) as run:
        try:
            if stop is not None:
                _forward(run, stop)
            return run.wait()
        except BaseException:  # As subprocess.call: an exception here (Ctrl-C without a stop poll) ends the run.
            run.kill()
            raise


def _forward(run: subprocess.Popen, stop: Stop) -> None:
    """Returns when ``run`` ends, or when ``stop`` gives a reason: that signal (SIGTERM for a reason that is no
    signal) is then sent to the run, once, so that it saves and stops."""
    while not stop():
        try:
            run.wait(timeout=STOP_POLL_S)
            return
        except subprocess.TimeoutExpired:
            continue
    reason = stop()
    run.send_signal(reason if isinstance(reason, signal.Signals) else signal.SIGTERM)


Evaluate = Callable[[str, Overrides, int], float | None]  # (key, settings, seed) -> validation error, inf, or None


@dataclasses.dataclass
class Tuning:
    """The cells' chosen settings, found on demand through ``evaluate`` (a run's final validation error, inf if
    it diverged, None while it is unfinished).

    ``choices``: key -> settings (None while a run they are chosen from is unfinished); ``trials``: key -> the
    settings and validation error of every candidate tried, in order, each once.
    """

    sweep: Sweep
    evaluate: Evaluate
    choices: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=dict)
    trials: dict[str, list[tuple[dict[str, Any], float | None]]] = dataclasses.field(default_factory=dict)

    def settings(self, key: str) -> dict[str, Any] | None:
        if key not in self.choices:
            self.choices[key] = self._choose(key)
        return self.choices[key]

    def _choose(self, key: str) -> dict[str, Any] | None:
        cell = self.sweep.cells[key]
        settings: dict[str, Any] = {}
        for parent in cell.inherits:
            inherited = self.settings(parent)
            if inherited is None:
                return None
            settings |= inherited
        settings |= {axis.path: axis.start for axis in cell.axes if axis.start is not None}
        for axis in cell.axes:
            errors = {}
            for value in axis.values(settings):
                trial = settings | {axis.path: value}
                errors[value] = self.evaluate(key, trial, cell.seeds[0])
                recorded = self.trials.setdefault(key, [])
                if all(trial != earlier for earlier, _ in recorded):  # An axis's start was the last axis's choice.
                    recorded.append((trial, errors[value]))
            if None in errors.values():
                return None
            settings[axis.path] = min(errors, key=errors.get)  # Ties: the first candidate.
        return settings | dict(cell.pinned)


def read_tuning(sweep: Sweep, root: str) -> Tuning:
    """The sweep's tuning as the runs under ``root`` show it, without running or listing anything."""
    return Tuning(sweep, lambda key, settings, seed: outcome(run_dir(root, key, settings, seed), sweep.epochs))


@dataclasses.dataclass
class Driver:
    """Runs (or, with ``dry_run``, lists) a sweep's runs under ``root`` in its order, each once; once ``stop``
    gives a reason, the running run is signalled to save and stop, and ``Stopped`` is raised. Each finished run's
    records are copied to the same place under ``archive``, if given."""

    sweep: Sweep
    root: str
    entry: EntryPoint
    retries: int = 2
    dry_run: bool = False
    stop: Stop | None = None
    archive: str | None = None

    def __post_init__(self):
        self.tuning = Tuning(self.sweep, self.run)
        self.outcomes: dict[str, float | None] = {}  # workdir -> outcome: a run met again is not listed again

    def run(self, key: str, settings: Overrides, seed: int) -> float | None:
        """Runs, resumes or skips one run of the cell ``key``; returns its ``outcome``."""
        workdir = run_dir(self.root, key, settings, seed)
        if workdir not in self.outcomes:
            self.outcomes[workdir] = self._run(workdir, self.sweep.overrides(key, settings, seed))
            self._archive(workdir)
        return self.outcomes[workdir]

    def _archive(self, workdir: str) -> None:
        """Copies a finished run's records into the archive, where they outlive this machine."""
        if self.archive and not self.dry_run and finished(workdir, self.sweep.epochs):
            target = os.path.join(self.archive, os.path.relpath(workdir, self.root))
            copy_finished_records(workdir, target, self.sweep.epochs, replace=True)
            print(f"archived  {target}", flush=True)

    def _run(self, workdir: str, overrides: Overrides) -> float | None:
        if finished(workdir, self.sweep.epochs):
            print(f"done      {workdir}", flush=True)
            return outcome(workdir, self.sweep.epochs)
        argv = self.entry.argv(overrides, workdir)
        if self._stop_reason():
            raise Stopped(self._stop_reason(), f"before run {workdir}")
        print(f"{'would run' if self.dry_run else 'running'} {' '.join(argv)}", flush=True)
        if self.dry_run:
            return None
        status = run_resuming([sys.executable, "-m", *argv], workdir, self.retries, self.stop)
        if status == "stopped":  # Signalled by the driver, or alone: either way, someone wants the machine.
            raise Stopped(self._stop_reason() or "a signal", f"during run {workdir}")
        if status == "diverged" and not os.path.exists(os.path.join(workdir, DIVERGED)):
            open(os.path.join(workdir, DIVERGED), "w").close()  # A run marks itself, with its step and cause.
            print(f"diverged  {workdir}", flush=True)
        return outcome(workdir, self.sweep.epochs)

    def _stop_reason(self) -> Any:
        return self.stop() if self.stop else None

    def seeds(self, key: str) -> None:
        """Every seed of the cell at its chosen settings (after tuning it, if that is still to do)."""
        settings = self.tuning.settings(key)
        if settings is not None:
            for seed in self.sweep.cells[key].seeds:
                self.run(key, settings, seed)

    def run_all(self) -> bool:
        """The whole sweep in its order; whether every run of it is finished."""
        for step, key in self.sweep.order:
            if step == "tune":
                self.tuning.settings(key)
            else:
                self.seeds(key)
        tuned = all(self.tuning.settings(key) is not None for key in self.sweep.cells)
        return tuned and None not in self.outcomes.values()


def run_sweep(
    sweep: Sweep,
    root: str,
    entry: EntryPoint,
    *,
    retries: int = 2,
    dry_run: bool = False,
    archive: str | None = None,
    stop: Stop | None = None,
) -> Driver:
    """Runs ``sweep`` into ``root``, first restoring the finished runs in ``archive`` (a folder it makes if new) and
    copying each run's records there as it finishes; once every run is finished, writes the chosen settings to
    ``root/chosen_settings.json`` (not in a dry run). Returns the driver. ``stop`` is ``Driver``'s: once it gives a
    reason, the running run saves and ``Stopped`` is raised.
    """
    if archive and os.path.isdir(archive):
        restore(archive, root, sweep.epochs)
    driver = Driver(sweep, root, entry, retries, dry_run, stop, archive)
    if driver.run_all():
        if not dry_run:
            write_choices(root, sweep, driver.tuning.choices)
        print(f"grid complete: {root}", flush=True)
    return driver


def write_choices(root: str, sweep: Sweep, choices: Mapping[str, Overrides | None]) -> None:
    """``root/chosen_settings.json``: each tuned cell's settings by config path, in the sweep's cell order."""
    chosen = {key: choices[key] for key in sweep.cells if choices.get(key) is not None}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "chosen_settings.json"), "w") as f:
        f.write(json_text(chosen, indent=2))
