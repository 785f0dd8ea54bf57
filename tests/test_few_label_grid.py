"""The few-label grid as a sweep: its run order, tuning one axis at a time on validation, inheritance, resume, the
archive, and its report."""

import json
import math
import os
from pathlib import Path

import conftest_data
import numpy as np
import pytest
import scipy.stats
from entry_points import run_entry_point

from experiments import configs
from experiments.configs import few_label_plans
from rev_nets.analysis import few_label_grid, sweep, sweep_stats
from rev_nets.analysis.few_label_grid import Arm, LabelPlan, Probe
from rev_nets.analysis.sweep import DIVERGED, Axis, Driver
from rev_nets.errors import UserError
from rev_nets.train import read_metrics

RATE, W, SIG = "train.learning_rate", "train.consistency.weight", "train.consistency.sigma"
LR = Axis(RATE, (0.02, 0.05))
WEIGHT = Axis(W, (1.0, 10.0), start=10.0)
SIGMA = Axis(SIG, (0.15, 0.3), start=0.3)
PLAN = LabelPlan(
    common={"train.epochs": 2, "train.steps": 4},
    labels=(20, 40),
    seeds=(0, 1),
    supervised={"backprop": Arm({"train.shadow.layer": 0}, (LR,))},
    semi_labels=(20,),
    semi={"consistency_gaussian": Arm({"train.consistency.kind": "gaussian"}, (WEIGHT, SIGMA), ("backprop",))},
    semi_seeds=(0, 1),
    probes={
        "probe_h1": Probe(40, "backprop", {"train.shadow.layer": 1}),
        "probe_lr0.3": Probe(40, "backprop", pinned={RATE: 0.3}),
    },
)


def run_dir(root, num_labels, arm, settings, seed):
    return sweep.run_dir(root, few_label_grid.cell_key(num_labels, arm), settings, seed)


def driver(plan, root, data_dir=None, dry_run=False):
    return Driver(plan.to_sweep(), root, configs.entry_point("mnist", data_dir), dry_run=dry_run)


def _finish(root, num_labels, arm, settings, seed, validation_error):
    workdir = run_dir(root, num_labels, arm, settings, seed)
    os.makedirs(workdir)
    line = {"epoch": 2, "step": 4, "validation_error": validation_error, "test_error": 0.5}
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(line) + "\n")


def test_tuning_goes_one_axis_at_a_time_from_the_inherited_rate(tmp_path, capsys):
    root = str(tmp_path)
    _finish(root, 20, "backprop", {RATE: 0.02}, 0, 0.30)
    _finish(root, 20, "backprop", {RATE: 0.05}, 0, 0.20)
    tuning = driver(PLAN, root, dry_run=True).tuning
    assert tuning.settings("labels20/backprop") == {RATE: 0.05}
    assert tuning.settings("labels20/consistency_gaussian") is None  # its weights have not run
    listed = capsys.readouterr().out
    assert "consistency_gaussian_lr0.05_w1_sigma0.3_seed0" in listed and "w10_sigma0.3_seed0" in listed
    assert "sigma0.15" not in listed  # the second axis waits for the first
    base = {RATE: 0.05, SIG: 0.3}
    _finish(root, 20, "consistency_gaussian", base | {W: 1.0}, 0, 0.10)
    _finish(root, 20, "consistency_gaussian", base | {W: 10.0}, 0, 0.15)
    tuning = driver(PLAN, root, dry_run=True).tuning
    assert tuning.settings("labels20/consistency_gaussian") is None
    assert "lr0.05_w1_sigma0.15_seed0" in capsys.readouterr().out  # sigma tuned at the chosen weight
    _finish(root, 20, "consistency_gaussian", base | {W: 1.0, SIG: 0.15}, 0, 0.12)
    tuning = driver(PLAN, root, dry_run=True).tuning
    chosen = tuning.settings("labels20/consistency_gaussian")
    assert chosen == {RATE: 0.05, W: 1.0, SIG: 0.3}
    weights = [(base | {W: w}, e) for w, e in [(1.0, 0.10), (10.0, 0.15)]]
    sigmas = [(chosen | {SIG: 0.15}, 0.12)]  # sigma=0.3 is the weight's w=1 run: listed once
    assert tuning.trials["labels20/consistency_gaussian"] == weights + sigmas
    rows = few_label_grid.tuning_rows(PLAN, tuning.trials)
    assert "| 20 | consistency_gaussian | consistency_weight=1, consistency_sigma=0.3: 10.00; " in "\n".join(rows)


def test_a_diverged_candidate_loses(tmp_path):
    root = str(tmp_path)
    _finish(root, 40, "backprop", {RATE: 0.02}, 0, 0.30)
    workdir = run_dir(root, 40, "backprop", {RATE: 0.05}, 0)
    os.makedirs(workdir)
    open(os.path.join(workdir, DIVERGED), "w").close()
    assert sweep.read_tuning(PLAN.to_sweep(), root).settings("labels40/backprop") == {RATE: 0.02}


def test_the_run_order_is_supervised_then_semi_tuning_then_semi_seeds(tmp_path, capsys):
    root = str(tmp_path)
    for n in (20, 40):
        _finish(root, n, "backprop", {RATE: 0.02}, 0, 0.3)
        _finish(root, n, "backprop", {RATE: 0.05}, 0, 0.2)
    driver(PLAN, root, dry_run=True).run_all()
    listed = [line for line in capsys.readouterr().out.splitlines() if "--workdir" in line]
    names = [os.path.relpath(line.split("--workdir=")[1].split()[0], root) for line in listed]
    assert names == [
        "labels20/backprop_lr0.05_seed1",
        "labels40/backprop_lr0.05_seed1",
        "labels20/consistency_gaussian_lr0.05_w1_sigma0.3_seed0",
        "labels20/consistency_gaussian_lr0.05_w10_sigma0.3_seed0",
        "labels40/probe_h1_lr0.05_seed0",
        "labels40/probe_lr0.3_lr0.3_seed0",
    ]
    assert "--num_labels=40 --shadow_layer=1 --learning_rate=0.05 --seed=0" in listed[-2]  # the probe's flag replaces
    assert "--num_labels=40 --shadow_layer=0 --learning_rate=0.3 --seed=0" in listed[-1]  # beyond the tuned grid


def test_the_command_of_a_run_is_the_entry_point_with_the_plans_flags():
    grid = few_label_plans.PLANS["cifar10"].to_sweep()
    overrides = grid.overrides("labels4000/consistency_shadow", {RATE: 0.05, W: 10.0}, 1)
    flags = configs.entry_point("cifar10", "/data").argv(overrides, "/grid/run")
    assert flags == [
        "experiments.cifar10",
        "--epochs=12",
        "--steps=4212",
        "--batch_size=128",
        "--warmup_epochs=1",
        "--grad_clip=0",
        "--num_validation=1000",
        "--channels=32,64,128",
        "--num_labels=4000",
        "--shadow_layer=0",
        "--consistency=shadow",
        "--learning_rate=0.05",
        "--consistency_weight=10",
        "--seed=1",
        "--workdir=/grid/run",
        "--data_dir=/data",
    ]


def test_the_driver_runs_a_tiny_grid_end_to_end_and_resumes(tmp_path):
    data_dir = tmp_path / "data"
    conftest_data.write_idx_dataset(data_dir / "mnist", n_train=120, n_test=30, seed=4)
    common = {"train.epochs": 2, "train.steps": 4, "train.batch_size": 8, "num_validation": 20}
    plan = LabelPlan(
        common=common | {"model.arguments.width": 16},
        labels=(20,),
        seeds=(0, 1),
        supervised={"backprop": Arm({"train.shadow.layer": 0}, (Axis(RATE, (0.05,)),))},
        semi_labels=(20,),
        semi={
            "consistency_shadow": Arm({"train.shadow.layer": 0, "train.consistency.kind": "shadow"}, (), ("backprop",))
        },
        semi_seeds=(0,),
    )
    root = str(tmp_path / "grid")
    sweep.run_sweep(plan.to_sweep(), root, configs.entry_point("mnist", str(data_dir)))
    runs = sorted(os.listdir(os.path.join(root, "labels20")))
    assert runs == ["backprop_lr0.05_seed0", "backprop_lr0.05_seed1", "consistency_shadow_lr0.05_seed0"]
    config = json.loads(Path(root, "labels20", runs[2], "config.json").read_text())
    assert config["train"]["consistency"]["kind"] == "shadow" and config["train"]["learning_rate"] == 0.05
    assert len(read_metrics(os.path.join(root, "labels20", runs[0]))) == 2
    chosen = json.loads(Path(root, "chosen_settings.json").read_text())
    assert chosen == {"labels20/backprop": {RATE: 0.05}, "labels20/consistency_shadow": {RATE: 0.05}}
    mtimes = {r: os.path.getmtime(os.path.join(root, "labels20", r, "metrics.jsonl")) for r in runs}
    driver(plan, root, str(data_dir)).run_all()  # finished runs are skipped
    assert mtimes == {r: os.path.getmtime(os.path.join(root, "labels20", r, "metrics.jsonl")) for r in runs}


@pytest.mark.parametrize("dataset", sorted(few_label_plans.PLANS))
def test_the_plans_match_the_protocol(dataset):
    plan = few_label_plans.PLANS[dataset]
    steps = plan.common["train.steps"]
    assert steps == {"mnist": 6435, "cifar10": 4212}[dataset] and steps % plan.common["train.epochs"] == 0
    assert plan.common["num_validation"] == 1000 and plan.seeds == (0, 1, 2)
    assert set(plan.supervised) == {"backprop", "shadow", "noise_twin"}
    assert all(arm.inherits == ("backprop",) for arm in plan.semi.values())
    assert [a.candidates for arm in plan.semi.values() for a in arm.axes if a.path == W] == [(1.0, 10.0, 100.0)] * len(
        plan.semi
    )
    for probe in plan.probes.values():  # each probe varies an arm at a label count where that arm runs
        assert probe.base in plan.arms(probe.num_labels) and (probe.overrides or probe.pinned)
        tuned = {axis.path for arm in (plan.arms(probe.num_labels)[probe.base],) for axis in arm.axes}
        assert set(probe.pinned) <= tuned | {RATE}  # pinned values replace tuned settings
        assert not set(probe.overrides) & (tuned | {RATE})  # fixed overrides never shadow a tuned setting


@pytest.mark.parametrize("folder", ["mnist", "cifar10", "few_labels/mnist", "few_labels/cifar10"])
def test_the_plans_find_every_archived_run_and_list_none_to_do(folder, capsys):
    """Run names and folders are the archive's: a dry run over it lists every archived run as done, once."""
    dataset, few_labels = folder.split("/")[-1], folder.startswith("few_labels")
    root = str(Path(__file__).resolve().parents[1] / "results" / folder)
    archived = sorted(os.path.relpath(f, root) for f, _, files in os.walk(root) if "metrics.jsonl" in files)
    grid = configs.plan(dataset, few_labels).to_sweep()
    complete = Driver(grid, root, configs.entry_point(dataset), dry_run=True).run_all()
    listed = capsys.readouterr().out.splitlines()
    assert complete and all(line.startswith("done      ") for line in listed) and len(set(listed)) == len(listed)
    assert sorted(os.path.relpath(line.split()[-1], root) for line in listed) == archived


def _finish_with(root, num_labels, arm, settings, seed, test_error, **extra):
    workdir = run_dir(root, num_labels, arm, settings, seed)
    os.makedirs(workdir)
    line = {"epoch": 2, "step": 4, "validation_error": 0.2, "test_error": test_error, "test_synthetic_error": 0.6}
    line["train_ce_real"] = 0.01
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(line | {"wall_time_s": 120.0} | extra) + "\n")
    Path(workdir, "config.json").write_text("{}")


def test_the_report_pairs_each_arm_with_backprop_of_the_same_seed(tmp_path):
    plan = LabelPlan(
        common={"train.epochs": 2, "train.steps": 4},
        labels=(20, 40),
        seeds=(0, 1, 2),
        supervised={"backprop": Arm({"train.shadow.layer": 0}, (Axis(RATE, (0.05,)),)),
                    "shadow": Arm({"train.shadow.layer": 3}, (Axis(RATE, (0.05,)),))},
        semi_labels=(),
        semi={},
        semi_seeds=(0,),
        probes={"probe_h1": Probe(20, "shadow", {"train.shadow.layer": 1})},
    )  # fmt: skip
    root, out = str(tmp_path / "grid"), str(tmp_path / "out")
    lr = {RATE: 0.05}
    backprop, shadow = [0.30, 0.20, 0.25], [0.29, 0.17, 0.21]  # differences -1, -3, -4 points: mean -2.67, SE 0.88
    for seed in range(3):
        _finish_with(root, 20, "backprop", lr, seed, backprop[seed])
        _finish_with(root, 20, "shadow", lr, seed, shadow[seed], train_norm_ratio=0.5, train_ce_synthetic=1e-3)
    _finish_with(root, 40, "backprop", lr, 0, 0.1)
    os.makedirs(run_dir(root, 40, "backprop", lr, 1))
    Path(run_dir(root, 40, "backprop", lr, 1), DIVERGED).touch()  # a grid's mark: no step, no cause
    _finish_with(root, 20, "probe_h1", lr, 0, 0.4, train_norm_ratio=0.7)
    report = few_label_grid.summarise("mnist", plan, root, out, configs.entry_point("mnist"))
    numbers, markdown = report.numbers, report.markdown
    assert report.name == "mnist"
    diff = np.array(shadow) - np.array(backprop)
    paired = numbers["paired_differences"]["labels20/shadow"]
    np.testing.assert_allclose([paired["mean"], paired["se"]], [diff.mean(), diff.std(ddof=1) / np.sqrt(3)])
    assert paired["verdict"] == "effect" and paired["seeds"] == 3  # |-2.67| > 2 x 0.88
    p = scipy.stats.ttest_rel(shadow, backprop).pvalue
    assert np.isclose(paired["p"], p) and 0.05 < p < 0.1  # beyond 2 SE, yet not p < 0.05 with 2 degrees of freedom
    assert f"| 20 | shadow | 3 | -2.67 ± 0.88 | effect; p={p:.2f} |" in markdown
    assert "| 40 | 10.00 ± n/a (1) | tuning |" in markdown  # shadow at 40 labels has not run
    assert "- `labels40/backprop` seed 1: diverged" in markdown  # left out of the mean beside it, and named
    assert numbers["cells"]["labels20/shadow"]["twin_norm_ratio"] == 0.5
    assert "| 20 | probe_h1 | --shadow_layer=1 | 20.00 (20.00) | 0.70 |" in markdown
    probe_command = (
        "`python -m experiments.mnist --epochs=2 --steps=4 --num_labels=20 --shadow_layer=1 --learning_rate=0.05`"
    )
    assert f"`probe_h1`: {probe_command}" in markdown  # the probe's --shadow_layer replaces its base arm's
    assert Path(out, "figures", "mnist_error_vs_labels.png").stat().st_size > 1000
    curves = numbers["cells"]["labels20/shadow"]["curves"]
    assert curves["step"] == [4] and np.isclose(curves["test_error"][0], np.mean(shadow))
    assert (
        curves["train_ce_synthetic"] == [1e-3]
        and "train_ce_synthetic" not in numbers["cells"]["labels20/backprop"]["curves"]
    )
    for figure in ("labels20_test_error", "labels20_cross_entropy", "labels40_test_error"):
        assert Path(out, "figures", f"mnist_{figure}.png").stat().st_size > 1000
    assert Path(out, "mnist", "labels20", "shadow_lr0.05_seed2", "metrics.jsonl").exists()
    assert "python -m experiments.mnist --epochs=2 --steps=4 --num_labels=20 --shadow_layer=3 --learning_rate=0.05" in (
        markdown
    )


def test_few_seeds_are_not_an_effect():
    mean, se, k = sweep_stats.paired_difference({0: 0.2, 1: 0.3}, {0: 0.25, 1: 0.26})
    assert k == 2 and sweep_stats.verdict(mean, se, without_se="one seed") == "no effect"
    mean, se, k = sweep_stats.paired_difference({0: 0.2, 1: 0.3}, {1: 0.25})  # one seed in common
    assert k == 1 and sweep_stats.verdict(mean, se, without_se="one seed") == "one seed"
    assert math.isnan(sweep_stats.paired_p({0: 0.2, 1: 0.3}, {0: 0.25, 1: 0.35}))  # equal differences: no test


def test_the_grid_entry_point_lists_the_few_label_runs_and_refuses_a_dataset_without_a_plan(tmp_path):
    listed = run_entry_point("grid", "--few_labels", "--dataset=cifar10", "--dry_run", f"--workdir={tmp_path}")
    assert listed.returncode == 0, listed.stderr[-2000:]
    first = listed.stdout.splitlines()[0]
    assert first.startswith("would run experiments.cifar10 --epochs=12 --steps=4212") and "--num_labels=1000" in first
    refused = run_entry_point("report", "--few_labels", "--dataset=cifar100", f"--grid={tmp_path}")
    assert (
        refused.returncode == 2
        and refused.stderr.strip() == "error: --few_labels has grids for mnist, cifar10, not cifar100."
    )


def test_a_grid_restored_from_its_reports_archive_skips_what_it_finished(tmp_path, capsys):
    plan = LabelPlan(
        common={"train.epochs": 2, "train.steps": 4},
        labels=(20,),
        seeds=(0, 1),
        supervised={"backprop": Arm({"train.shadow.layer": 0}, (Axis(RATE, (0.02, 0.05)),))},
        semi_labels=(),
        semi={},
        semi_seeds=(0,),
    )
    root, out, fresh = (str(tmp_path / name) for name in ("grid", "out", "fresh"))
    _finish_with(root, 20, "backprop", {RATE: 0.02}, 0, 0.3)
    _finish_with(root, 20, "backprop", {RATE: 0.05}, 0, 0.2)
    diverged = run_dir(root, 20, "backprop", {RATE: 0.02}, 1)  # ties pick the first rate
    os.makedirs(os.path.join(diverged, "checkpoints", "1"))
    Path(diverged, DIVERGED).touch()
    unfinished = run_dir(root, 20, "probe", {}, 0)
    os.makedirs(unfinished)
    Path(unfinished, "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 2}) + "\n")
    numbers = few_label_grid.summarise("mnist", plan, root, out, configs.entry_point("mnist")).numbers
    archive = os.path.join(out, "mnist")
    assert sorted(os.listdir(os.path.join(archive, "labels20"))) == [
        "backprop_lr0.02_seed0", "backprop_lr0.02_seed1", "backprop_lr0.05_seed0"]  # fmt: skip
    assert not os.path.exists(os.path.join(archive, "labels20", "backprop_lr0.02_seed1", "checkpoints"))

    restored = sweep.restore(archive, fresh, plan.common["train.epochs"])
    assert restored == [
        os.path.join("labels20", name) for name in sorted(os.listdir(os.path.join(archive, "labels20")))
    ]
    capsys.readouterr()
    assert driver(plan, fresh, dry_run=True).run_all()  # every run, the diverged one too, is done
    assert "would run" not in capsys.readouterr().out
    again = few_label_grid.summarise("mnist", plan, fresh, str(tmp_path / "out2"), configs.entry_point("mnist")).numbers
    assert again["cells"] == numbers["cells"] and again["paired_differences"] == numbers["paired_differences"]


def test_restoring_keeps_a_live_run_and_archiving_mirrors_one(tmp_path):
    live, archive = tmp_path / "live" / "run", tmp_path / "archive" / "run"
    for folder, error in ((live, 0.1), (archive, 0.2)):
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 2, "validation_error": error}) + "\n")
    Path(archive, DIVERGED).touch()  # a stale mark from an earlier, diverged attempt
    assert sweep.copy_finished_records(str(archive.parent), str(live.parent), 2, replace=False) == []
    assert read_metrics(str(live))[0]["validation_error"] == 0.1 and not Path(live, DIVERGED).exists()
    (live / "config.json").write_text(json.dumps({"labelled_indices": [3, 1, 2], "seed": 0}, indent=2))
    assert sweep.copy_finished_records(str(live.parent), str(archive.parent), 2, replace=True) == ["run"]
    assert read_metrics(str(archive))[0]["validation_error"] == 0.1 and not Path(archive, DIVERGED).exists()
    assert (archive / "config.json").read_text() == '{\n  "labelled_indices": [3, 1, 2],\n  "seed": 0\n}\n'
    with pytest.raises(UserError, match=r"^The archive .*nowhere does not exist: give the folder experiments.report"):
        sweep.restore(str(tmp_path / "nowhere"), str(live.parent), 2)


def test_the_grid_entry_point_restores_before_it_runs(tmp_path):
    archived = run_dir(str(tmp_path / "results" / "cifar10"), 1000, "backprop", {RATE: 0.02}, 0)
    os.makedirs(archived)
    Path(archived, "metrics.jsonl").write_text(json.dumps({"epoch": 12, "validation_error": 0.4}) + "\n")
    flags = ("grid", "--few_labels", "--dataset=cifar10", "--dry_run", f"--workdir={tmp_path / 'grid'}")
    listed = run_entry_point(*flags, f"--archive={tmp_path / 'results'}")
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.splitlines()
    assert lines[0] == f"restored  1 finished runs from {tmp_path / 'results' / 'cifar10'}"
    assert lines[1] == f"done      {tmp_path / 'grid' / 'cifar10_labels' / 'labels1000' / 'backprop_lr0.02_seed0'}"
    assert lines[2].startswith("would run") and "--learning_rate=0.05" in lines[2]
    missing = run_entry_point(*flags, f"--archive={tmp_path / 'nowhere'}")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"error: --archive {tmp_path / 'nowhere'} does not exist or is not a folder; give an existing folder."
    )
