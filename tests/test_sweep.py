"""The sweep driver on a stand-in entry point: run order, tuning on validation, skipping, resuming, divergence; and
the flags a run's overrides become."""

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from experiments import cli, configs, settings
from experiments.configs import cifar10
from rev_nets.analysis import sweep
from rev_nets.analysis.sweep import Axis, Cell, Sweep
from rev_nets.errors import EXIT_STOPPED, Stopped

ROOT = Path(__file__).resolve().parents[1]

LR = "train.learning_rate"

# A stand-in for a dataset's entry point: validation error |lr - 0.1| + seed / 100, one metrics line per epoch;
# lr 1 diverges (exit code 3), as a non-finite loss does.
FAKE_ENTRY_POINT = textwrap.dedent(
    """
    import json, os, sys
    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    lr, seed = float(flags["learning_rate"]), int(flags["seed"])
    if lr >= 1:
        if os.environ.get("FAKE_MARK"):  # A run that marks itself, as train.fit does.
            os.makedirs(flags["workdir"], exist_ok=True)
            with open(os.path.join(flags["workdir"], "DIVERGED"), "w") as f:
                f.write(os.environ["FAKE_MARK"])
        sys.exit(3)
    os.makedirs(flags["workdir"], exist_ok=True)
    with open(os.path.join(flags["workdir"], "metrics.jsonl"), "w") as f:
        for epoch in range(1, int(flags["epochs"]) + 1):
            f.write(json.dumps({"epoch": epoch, "validation_error": abs(lr - 0.1) + seed / 100}) + "\\n")
    """
)

SWEEP = Sweep(
    common={"train.epochs": 2},
    cells={
        "base": Cell({"train.shadow.layer": 0}, (Axis(LR, (0.05, 0.1, 1.0)),), seeds=(0, 1)),
        "variant": Cell({"train.shadow.layer": 2}, inherits=("base",), seeds=(0, 1)),
        "probe": Cell({"train.shadow.layer": 1}, inherits=("base",), pinned={LR: 0.02}),
    },
    order=(("tune", "base"), ("run", "base"), ("run", "variant"), ("run", "probe")),
)

command_line = functools.partial(cli.command_line, (*settings.TRAINING, *cifar10.ROWS))


@pytest.fixture
def entry(tmp_path, monkeypatch):
    (tmp_path / "fake_entry.py").write_text(FAKE_ENTRY_POINT)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return sweep.EntryPoint("fake_entry", command_line, lambda workdir: [f"--workdir={workdir}"])


def _listed(out: str, root: str) -> list[tuple[str, str]]:
    """(state, run) per line the driver printed about a run."""
    lines = [line for line in out.splitlines() if line.startswith(("running ", "done ", "diverged ", "would run "))]
    return [(line.split()[0], os.path.relpath(line.split("--workdir=")[-1].split()[-1], root)) for line in lines]


def test_the_driver_tunes_then_runs_the_seeds_then_the_cells_that_inherit(tmp_path, entry, capsys):
    root = str(tmp_path / "grid")
    driver = sweep.run_sweep(SWEEP, root, entry)
    listed = _listed(capsys.readouterr().out, root)
    assert listed == [
        ("running", "base_lr0.05_seed0"),
        ("running", "base_lr0.1_seed0"),
        ("running", "base_lr1_seed0"),
        ("diverged", "base_lr1_seed0"),
        ("running", "base_lr0.1_seed1"),  # seed 0 at the chosen rate ran in tuning: not listed again
        ("running", "variant_lr0.1_seed0"),
        ("running", "variant_lr0.1_seed1"),
        ("running", "probe_lr0.02_seed0"),  # the pinned rate replaces the inherited one and names the run
    ]
    assert Path(root, "base_lr1_seed0", sweep.DIVERGED).read_text() == ""  # the run wrote none: the grid's mark
    assert driver.tuning.trials["base"] == [({LR: 0.05}, 0.05), ({LR: 0.1}, 0.0), ({LR: 1.0}, float("inf"))]
    chosen = json.loads(Path(root, "chosen_settings.json").read_text())
    assert chosen == {"base": {LR: 0.1}, "variant": {LR: 0.1}, "probe": {LR: 0.02}}


def test_the_grid_keeps_the_mark_a_diverged_run_wrote_and_counts_it_as_diverged(tmp_path, entry, monkeypatch):
    mark = {"step": 8, "epoch": 2, "cause": "the training loss rose to 500", "last_sane_step": 4}
    monkeypatch.setenv("FAKE_MARK", json.dumps(mark))
    root = str(tmp_path / "grid")
    driver = sweep.run_sweep(SWEEP, root, entry)
    assert json.loads(Path(root, "base_lr1_seed0", sweep.DIVERGED).read_text()) == mark
    assert driver.tuning.trials["base"][-1] == ({LR: 1.0}, float("inf"))


def test_a_finished_run_is_skipped_and_an_unfinished_one_runs_again(tmp_path, entry, capsys):
    root = str(tmp_path / "grid")
    sweep.run_sweep(SWEEP, root, entry)
    unfinished = Path(root, "variant_lr0.1_seed1", "metrics.jsonl")
    unfinished.write_text(json.dumps({"epoch": 1, "validation_error": 0.5}) + "\n")  # stopped after epoch 1
    capsys.readouterr()
    sweep.run_sweep(SWEEP, root, entry)
    out = capsys.readouterr().out
    assert [state for state, _ in _listed(out, root)].count("done") == 6
    assert [run for state, run in _listed(out, root) if state == "running"] == ["variant_lr0.1_seed1"]
    assert out.splitlines()[-1] == f"grid complete: {root}"


def test_each_run_is_archived_as_it_finishes_so_a_lost_machine_costs_only_the_run_in_flight(tmp_path, entry, capsys):
    root, archive = tmp_path / "grid", tmp_path / "results" / "fake"
    three_archived = lambda: archive.is_dir() and len(os.listdir(archive)) >= 3 and signal.SIGTERM
    with pytest.raises(Stopped):
        sweep.run_sweep(SWEEP, str(root), entry, archive=str(archive), stop=three_archived)
    assert sorted(os.listdir(archive)) == ["base_lr0.05_seed0", "base_lr0.1_seed0", "base_lr1_seed0"]
    for run in os.listdir(archive):  # the records, not the log
        assert sorted(os.listdir(archive / run)) == sorted(set(os.listdir(root / run)) & set(sweep.RECORDS))
        for name in os.listdir(archive / run):
            assert (archive / run / name).read_bytes() == (root / run / name).read_bytes()

    capsys.readouterr()
    fresh = tmp_path / "new_machine"  # the old machine's grid folder is gone; the committed archive is not
    sweep.run_sweep(SWEEP, str(fresh), entry, archive=str(archive))
    listed = _listed(capsys.readouterr().out, str(fresh))
    assert [run for state, run in listed if state == "done"] == [
        "base_lr0.05_seed0",
        "base_lr0.1_seed0",
        "base_lr1_seed0",
    ]
    assert [state for state, _ in listed].count("running") == 4  # the other 4 of the sweep's 7
    assert sorted(os.listdir(archive)) == sorted(name for name in os.listdir(fresh) if name != "chosen_settings.json")


def test_a_dry_run_lists_what_would_run_and_claims_nothing(tmp_path, entry, capsys):
    root = str(tmp_path / "grid")
    driver = sweep.run_sweep(SWEEP, root, entry, dry_run=True, archive=str(tmp_path / "archive"))
    out = capsys.readouterr().out
    assert [run for _, run in _listed(out, root)] == ["base_lr0.05_seed0", "base_lr0.1_seed0", "base_lr1_seed0"]
    first = "would run fake_entry --epochs=2 --shadow_layer=0 --learning_rate=0.05 --seed=0 --workdir="
    assert out.splitlines()[0] == first + os.path.join(root, "base_lr0.05_seed0")
    assert driver.tuning.choices == {"base": None, "variant": None, "probe": None} and not os.path.exists(root)
    assert not os.path.exists(tmp_path / "archive")


def test_a_stop_before_a_run_starts_none(tmp_path, entry, capsys):
    root = str(tmp_path / "grid")
    with pytest.raises(Stopped, match=r"^stopped by SIGTERM before run .*base_lr0\.05_seed0$"):
        sweep.run_sweep(SWEEP, root, entry, stop=lambda: signal.SIGTERM)
    assert "running" not in capsys.readouterr().out and not os.path.exists(root)


# A run that waits for SIGTERM or SIGINT the first time, notes which came, and exits as a saved stop does; the
# second time it finishes. The grid around it is one cell, one run, driven as experiments.grid drives one.
STOPPABLE_RUN = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from rev_nets.errors import EXIT_STOPPED
    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    workdir = flags["workdir"]
    received = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda number, frame: received.append(signal.Signals(number).name))
    os.makedirs(workdir, exist_ok=True)
    if not os.path.exists(os.path.join(workdir, "started")):
        open(os.path.join(workdir, "started"), "w").close()
        while not received:
            time.sleep(0.01)
        open(os.path.join(workdir, "received"), "w").write(" ".join(received))
        sys.exit(EXIT_STOPPED)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"epoch": 1, "validation_error": 0.1}) + "\\n")
    """
)
GRID_OF_ONE = textwrap.dedent(
    """
    import sys
    from experiments import cli
    from rev_nets.analysis import sweep
    grid = sweep.Sweep({"train.epochs": 1}, {"c": sweep.Cell({})}, (("run", "c"),))
    entry = sweep.EntryPoint("stoppable_run", lambda overrides: [], lambda workdir: [f"--workdir={workdir}"])
    cli.run(lambda argv: sweep.run_sweep(grid, sys.argv[1], entry, stop=cli.stop_on_signals()))
    """
)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_grid_forwards_a_signal_to_its_run_and_stops_until_started_again(tmp_path, signal_number):
    (tmp_path / "stoppable_run.py").write_text(STOPPABLE_RUN)
    env = os.environ | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", GRID_OF_ONE, str(tmp_path / "grid")]
    grid = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "grid" / "c_seed0"
    deadline = time.monotonic() + 120
    while not (run / "started").exists() and time.monotonic() < deadline and grid.poll() is None:
        time.sleep(0.01)
    grid.send_signal(signal_number)  # To the grid alone, as a scheduler or `kill <pid>` sends it.
    _, err = grid.communicate(timeout=120)
    assert grid.returncode == EXIT_STOPPED, err[-3000:]
    name = signal.Signals(signal_number).name
    assert err.strip() == f"stopped by {name} during run {run}; saved; run the same command to resume"
    assert (run / "received").read_text() == name
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == f"grid complete: {tmp_path / 'grid'}"


def test_tuning_is_coordinate_descent_from_the_start_values():
    weight = Axis("train.consistency.weight", (1.0, 10.0), start=10.0)
    sigma = Axis("train.consistency.sigma", (0.1, 0.3), start=0.3)
    grid = Sweep({"train.epochs": 1}, {"c": Cell({}, (weight, sigma))}, (("tune", "c"),))
    error = {(1.0, 0.3): 0.2, (10.0, 0.3): 0.3, (1.0, 0.1): 0.1}
    tried = []

    def evaluate(key, settings, seed):
        tried.append(dict(settings))
        return error[(settings["train.consistency.weight"], settings["train.consistency.sigma"])]

    tuning = sweep.Tuning(grid, evaluate)
    assert tuning.settings("c") == {"train.consistency.weight": 1.0, "train.consistency.sigma": 0.1}
    as_pairs = [(t["train.consistency.weight"], t["train.consistency.sigma"]) for t in tried]
    assert as_pairs == [(1.0, 0.3), (10.0, 0.3), (1.0, 0.1), (1.0, 0.3)]  # sigma tried at the chosen weight
    assert len(tuning.trials["c"]) == 3  # the start of sigma's axis is the weight's choice: recorded once


def test_a_relative_axis_scales_whatever_value_was_chosen_before_it():
    later = Axis(LR, (1.0, 1 / 1.5), relative=True)
    cells = {"a": Cell({}, (Axis(LR, (1.0, 2.0)),)), "b": Cell({}, (later,), inherits=("a",))}
    grid = Sweep({"train.epochs": 1}, cells, (("tune", "a"), ("tune", "b")))
    error = {1.0: 0.3, 2.0: 0.2, 1.333: 0.1}
    tuning = sweep.Tuning(grid, lambda key, settings, seed: error[settings[LR]])
    assert tuning.settings("b") == {LR: 1.333}
    assert [trial[LR] for trial, _ in tuning.trials["b"]] == [2.0, 1.333]  # a's choice, then one step lower
    alone = Sweep({"train.epochs": 1}, {"c": Cell({}, (later,))}, (("tune", "c"),))
    with pytest.raises(ValueError, match=f"the relative axis of {LR} has no value to scale"):
        sweep.Tuning(alone, lambda key, settings, seed: 0.1).settings("c")


def test_ties_pick_the_first_candidate_and_an_unfinished_one_leaves_the_choice_open():
    grid = Sweep({"train.epochs": 1}, {"c": Cell({}, (Axis(LR, (0.1, 0.2, 0.3)),))}, (("run", "c"),))
    tie = sweep.Tuning(grid, lambda key, settings, seed: 0.5)
    assert tie.settings("c") == {LR: 0.1}
    pending = sweep.Tuning(grid, lambda key, settings, seed: None if settings[LR] == 0.3 else 0.5)
    assert pending.settings("c") is None and len(pending.trials["c"]) == 3


def test_a_sweep_refuses_a_plan_it_cannot_run():
    with pytest.raises(ValueError, match="need train.epochs"):
        Sweep({}, {}, ())
    with pytest.raises(ValueError, match=r"not \(\"tune\" or \"run\", a cell's key\)"):
        Sweep({"train.epochs": 1}, {"c": Cell({})}, (("run", "d"),))


def test_run_names_abbreviate_the_tuned_settings_in_a_fixed_order():
    settings = {"train.consistency.sigma": 0.5, "train.consistency.weight": 10.0, LR: 0.05, "train.dropout": 0.3}
    assert sweep.run_name("labels100/consistency_gaussian", settings, 2) == (
        "labels100/consistency_gaussian_lr0.05_w10_sigma0.5_seed2"
    )
    assert sweep.named(settings) == {"consistency_sigma": 0.5, "consistency_weight": 10.0, "learning_rate": 0.05,
                                     "dropout": 0.3}  # fmt: skip


def test_the_scale_plan_tunes_backprop_then_shadows_layer_and_rate_and_trains_its_finals_on_every_image():
    from experiments.configs import grid_plans

    grid = grid_plans.PLANS["cifar10_airbench"].to_sweep()
    # Validation error by (source layer, rate): backprop is best at 2.25; SHADOW's rates follow (2.25, then one
    # step either way: 3.375 and 1.5), and from h2 it is best at 1.5.
    error = {(0, 1.5): 0.08, (0, 1.0): 0.07, (0, 2.25): 0.06, (3, 2.25): 0.075, (2, 2.25): 0.072, (2, 3.375): 0.073,
             (2, 1.5): 0.071}  # fmt: skip
    layer = lambda key, settings: settings.get("train.shadow.layer", grid.overrides(key, {}).get("train.shadow.layer"))
    tuning = sweep.Tuning(grid, lambda key, settings, seed: error[(layer(key, settings), settings[LR])])
    assert tuning.settings("backprop") == {LR: 2.25}
    assert tuning.settings("shadow") == {LR: 1.5, "train.shadow.layer": 2}
    final = grid.overrides("shadow_final", tuning.settings("shadow_final"), 1)
    assert final["num_validation"] == 0 and final["train.shadow.layer"] == 2 and final[LR] == 1.5
    placebo = grid.overrides("noise_twin_final", tuning.settings("noise_twin_final"), 0)
    assert placebo["train.shadow.noise_twin"] and placebo["num_validation"] == 0
    assert grid.overrides("backprop_final", tuning.settings("backprop_final"), 2)["train.shadow.layer"] == 0
    assert sweep.run_name("shadow_final", tuning.settings("shadow_final"), 1) == "shadow_final_h2_lr1.5_seed1"
    assert grid.order[:5] == (("tune", "backprop"), ("run", "backprop_final"), ("run", "backprop_final_no_whitening"),
                              ("run", "backprop_final_gelu"), ("tune", "shadow"))  # fmt: skip
    no_whitening = tuning.settings("backprop_final_no_whitening")
    assert grid.overrides("backprop_final_no_whitening", no_whitening, 0)["model.arguments.whiten"] is False
    gelu = grid.overrides("backprop_final_gelu", tuning.settings("backprop_final_gelu"), 0)
    assert gelu["model.arguments"]["activation"] == "gelu" and gelu[LR] == 2.25 and gelu["num_validation"] == 0
    assert "--plain_vjp=erfc,mul" in configs.entry_point("cifar10_airbench").argv(gelu, "/grid/run")
    # SHADOW without the whitening filter: SHADOW's choice, the backprop variant's change, one seed, run last.
    assert grid.order[-1] == ("run", "shadow_final_no_whitening")
    assert grid.cells["shadow_final_no_whitening"].seeds == (0,)
    shadow_plain = grid.overrides("shadow_final_no_whitening", tuning.settings("shadow_final_no_whitening"), 0)
    assert shadow_plain["model.arguments.whiten"] is False and shadow_plain["num_validation"] == 0
    assert shadow_plain["train.shadow.layer"] == 2 and shadow_plain[LR] == 1.5
    entry = configs.entry_point("cifar10_airbench")
    (listed,) = sweep.commands(grid, entry, {"backprop_final_gelu": {LR: 1.0}})
    argv = shlex.split(listed.partition(": `python -m ")[2].rstrip("`"))  # The JSON argument survives a shell.
    assert argv == [entry.module, *entry.flags(grid.overrides("backprop_final_gelu", {LR: 1.0}, "<seed>"))]


def test_a_finished_run_without_a_validation_split_has_no_validation_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_error": 0.1}) + "\n")
    assert sweep.outcome(str(tmp_path), 1) != sweep.outcome(str(tmp_path), 1)  # NaN: finished, nothing to tune on
    assert sweep.outcome(str(tmp_path), 2) is None


def test_overrides_become_the_entry_points_flags_in_their_order():
    overrides = {
        "train.epochs": 12,
        "model.arguments.channels": (32, 64, 128),
        "train.shadow.noise_twin": True,
        "train.consistency.kind": "shadow",
        "train.consistency.weight": 10.0,
        "train.shadow.generator.alpha_scale": 1.15,
        "train.seed": "<seed>",
    }
    assert command_line(overrides) == [
        "--epochs=12",
        "--channels=32,64,128",
        "--noise_twin",
        "--consistency=shadow",
        "--consistency_weight=10",
        "--alpha_scale=1.15",
        "--seed=<seed>",
    ]
    with pytest.raises(ValueError, match=r"^train.nosuch has no flag on this entry point; add a row to .*settings\.$"):
        command_line({"train.nosuch": "adam"})


def test_the_entry_point_places_a_run_after_its_flags():
    argv = configs.entry_point("mnist", "/data").argv({"train.seed": 1}, "/grid/run")
    assert argv == ["experiments.mnist", "--seed=1", "--workdir=/grid/run", "--data_dir=/data"]
    assert configs.entry_point("mnist").placement("/grid/run") == ["--workdir=/grid/run"]
