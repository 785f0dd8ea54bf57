"""The reports' writer, the full-label grid's report on made run directories and on the archived grids, the shared
statistics, and how a sweep treats a run that fails."""

import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from experiments import configs
from rev_nets.analysis import few_label_grid, full_label_grid, report_files, scale_grid, sweep, sweep_stats
from rev_nets.analysis.full_label_grid import Plan
from rev_nets.analysis.scale_grid import ScalePlan
from rev_nets.errors import EXIT_DIVERGED, EXIT_STOPPED, EXIT_USER_ERROR, InputError, UserError
from rev_nets.train.rundir import DIVERGED

REPO = Path(__file__).resolve().parents[1]
LR = "train.learning_rate"


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def test_write_leaves_the_numbers_and_the_markdown_side_by_side_and_no_temporary_file(tmp_path):
    folder = tmp_path / "made" / "here"
    old = report_files.Report("demo", {"error": 0.5}, "# old\n")
    report_files.write(old, str(folder))
    report = report_files.Report("demo", {"error": 0.25, "missing": float("nan"), "diverged": float("inf")}, "# new\n")
    paths = report_files.write(report, str(folder))
    assert paths == (str(folder / "demo.json"), str(folder / "demo.md"))
    assert sorted(p.name for p in folder.iterdir()) == ["demo.json", "demo.md"]
    numbers = json.loads((folder / "demo.json").read_text(), parse_constant=_refuse)  # strict JSON
    assert numbers == {"error": 0.25, "missing": None, "diverged": None}
    assert (folder / "demo.md").read_text() == "# new\n"


def test_a_write_that_fails_keeps_the_old_files_and_leaves_no_temporary_file(tmp_path):
    report_files.write(report_files.Report("demo", {"error": 0.5}, "# old\n"), str(tmp_path))
    with pytest.raises(TypeError):
        report_files.write(report_files.Report("demo", {"error": object()}, "# new\n"), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md"]
    assert json.loads((tmp_path / "demo.json").read_text()) == {"error": 0.5}
    assert (tmp_path / "demo.md").read_text() == "# old\n"


@pytest.mark.parametrize("name", ["", "out/theory", "../theory"])
def test_a_report_name_that_is_no_file_stem_is_refused(name, tmp_path):
    with pytest.raises(ValueError, match="is not a file stem; name it without a folder"):
        report_files.write(report_files.Report(name, {}, ""), str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_welch_standard_error_matches_scipy():
    a, b = [1.50, 1.62, 1.58], [1.70, 1.66, 1.81, 1.75]
    diff, se = sweep_stats.welch(a, b)
    t = stats.ttest_ind(a, b, equal_var=False).statistic
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert diff / se == pytest.approx(t)
    assert math.isnan(sweep_stats.welch([1.0], b)[1])
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert sweep_stats.p_text(sweep_stats.welch_p(a, b)) == f"; p={p:.2f}"
    assert sweep_stats.p_text(sweep_stats.welch_p([1.0, 1.0], [2.0, 2.0])) == ""  # no spread: no test


def test_the_reports_formats_agree_where_both_write_and_keep_their_own_rules_apart():
    assert [sweep_stats.pct(x) for x in (0.01567, float("nan"), float("inf"), None)] == ["1.57", "n/a", "diverged", "-"]
    assert sweep_stats.difference_text(-0.0267, 0.0088) == "-2.67 ± 0.88"
    assert sweep_stats.mean_std_text([0.01, 0.03]) == f"2.00 ± {100 * np.std([0.01, 0.03], ddof=1):.2f}"
    assert sweep_stats.mean_std_text([0.01]) == "1.00 ± n/a"
    # Full labels: one seed on a side is "no effect" and p is written as is; few labels: "one seed", p below 0.01.
    assert sweep_stats.verdict(0.05, float("nan")) == "no effect"
    assert sweep_stats.verdict(0.05, float("nan"), without_se="one seed") == "one seed"
    assert sweep_stats.verdict(0.05, 0.02) == "effect" and sweep_stats.verdict(0.05, 0.03) == "no effect"
    assert sweep_stats.p_text(0.004) == "; p=0.00" and sweep_stats.p_text(0.004, floor=0.01) == "; p<0.01"
    assert sweep_stats.p_text(0.18, floor=0.01) == "; p=0.18"


def test_tracking_correlates_changes_not_levels():
    epochs = np.arange(1, 9)
    real = 1.0 / epochs
    wiggle = np.array([0, 1, -1, 1, -1, 1, -1, 1]) * 0.01
    lines = lambda syn: [{"test_error": r, "test_synthetic_error": s} for r, s in zip(real, syn)]
    gap, corr = full_label_grid.tracking({0: lines(real + 0.05)})
    assert gap == pytest.approx(0.05) and corr == pytest.approx(1.0)
    _, corr_wiggle = full_label_grid.tracking({0: lines(real[::-1] * 0 + 0.5 + wiggle)})
    assert abs(corr_wiggle) < 0.5  # a flat, wiggling curve does not track a falling one


def _write_run(root, name, epochs, val, test, syn=None, tta=None, val_tta=None):
    """A finished run's records; ``val`` None: no validation split; ``tta``, ``val_tta``: its last line's test and
    validation error with test-time augmentation."""
    run = root / name
    run.mkdir(parents=True)
    validation = lambda: {} if val is None else {"validation_error": val, "validation_synthetic_error": syn or val}
    lines = [
        validation()
        | {
            "epoch": e,
            "step": 10 * e,
            "test_error": test + 0.01 * (epochs - e),
            "test_synthetic_error": (syn or test) + 0.01 * (epochs - e),
            "epoch_time_s": 1.0,
            "evaluation_time_s": 0.5,
            "wall_time_s": float(e),
        }
        | ({"test_tta_error": tta} if tta is not None and e == epochs else {})
        | ({"validation_tta_error": val_tta} if val_tta is not None and e == epochs else {})
        for e in range(1, epochs + 1)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (run / "config.json").write_text("{}")


def _run_name(cell, lr, seed):
    return sweep.run_name(cell, {LR: lr}, seed)


def _mark_diverged(root, name):
    (root / name).mkdir()
    mark = {"step": 13, "epoch": 2, "cause": "the loss is nan", "last_sane_step": 10}
    (root / name / DIVERGED).write_text(json.dumps(mark))


def test_the_full_label_report_names_diverged_final_runs_and_a_cell_whose_every_run_diverged(tmp_path):
    plan = Plan(
        common={"train.epochs": 3},
        learning_rates=(0.01,),
        seeds=(0, 1),
        main_cells={"backprop": {"train.shadow.layer": 0}, "shadow": {"train.shadow.layer": 3}},
        ablations={},
        probes={},
    )
    _write_run(tmp_path, _run_name("backprop", 0.01, 0), 3, 0.05, 0.020)
    for name in (_run_name("backprop", 0.01, 1), _run_name("shadow", 0.01, 0), _run_name("shadow", 0.01, 1)):
        _mark_diverged(tmp_path, name)
    report = full_label_grid.summarise(
        "mnist", plan, str(tmp_path), str(tmp_path / "out"), configs.entry_point("mnist")
    )
    assert "| backprop | 0.01 | 1 | 2.00 ± n/a |" in report.markdown
    assert "| shadow | 0.01 | 0 | diverged |" in report.markdown
    for cell, seed in (("backprop", 1), ("shadow", 0), ("shadow", 1)):
        assert f"- `{cell}` seed {seed}: diverged at step 13 (epoch 2): the loss is nan" in report.markdown


def test_learning_rate_choice_and_report_table(tmp_path):
    plan = Plan(
        common={"train.epochs": 3},
        learning_rates=(0.01, 0.1),
        seeds=(0, 1),
        main_cells={"backprop": {"train.shadow.layer": 0}, "shadow": {"train.shadow.layer": 3}},
        ablations={},
        probes={"probe_weight3": {"train.shadow.weight": 3.0}, "probe_h1": {"train.shadow.layer": 1}},
    )
    for lr, val in ((0.01, 0.05), (0.1, 0.04)):
        _write_run(tmp_path, _run_name("backprop", lr, 0), 3, val, 0.020)
    (tmp_path / _run_name("shadow", 0.1, 0)).mkdir()
    (tmp_path / _run_name("shadow", 0.1, 0) / sweep.DIVERGED).touch()
    _write_run(tmp_path, _run_name("shadow", 0.01, 0), 3, 0.06, 0.030)
    _write_run(tmp_path, _run_name("backprop", 0.1, 1), 3, 0.04, 0.022)
    _write_run(tmp_path, _run_name("shadow", 0.01, 1), 3, 0.06, 0.034)
    _write_run(tmp_path, _run_name("probe_weight3", 0.01, 0), 3, 0.07, 0.030, syn=0.08)
    tuning = sweep.read_tuning(plan.to_sweep(), str(tmp_path))
    assert tuning.settings("backprop") == {LR: 0.1}
    assert tuning.settings("shadow") == {LR: 0.01}  # the diverged rate loses
    assert tuning.settings("probe_h1") == {LR: 0.01}  # a probe takes the SHADOW cell's rate
    report = full_label_grid.summarise("mnist", plan, str(tmp_path), str(tmp_path / "out"),
                                       configs.entry_point("mnist"))  # fmt: skip
    assert report.name == "mnist"
    numbers, text = report.numbers, report.markdown
    shadow_row = next(line for line in text.splitlines() if line.startswith("| shadow |"))
    assert "3.20 ± 0.28" in shadow_row and "+1.10" in shadow_row
    assert "| shadow | 6.00 | diverged |" in text  # the rate search, seed 0
    probe_row = next(line for line in text.splitlines() if line.startswith("| probe_weight3 |"))
    assert "| 7.00 | 8.00 |" in probe_row  # seed 0, at the SHADOW cell's rate, read on validation
    assert "| probe_h1 | not run yet |" in text
    assert "`python -m experiments.mnist --epochs=3 --shadow_layer=1 --learning_rate=0.01 --seed=<seed>`" in text
    assert (tmp_path / "out" / "mnist" / _run_name("shadow", 0.01, 1) / "metrics.jsonl").exists()
    assert numbers["chosen"]["shadow"] == {"learning_rate": 0.01}
    assert numbers["test_error"]["shadow"] == {0: 0.030, 1: 0.034}
    assert numbers["versus_twin"]["shadow"]["mean"] == pytest.approx(0.032 - 0.021)
    assert numbers["learning_rate_search"]["shadow"] == [[0.01, 0.06], [0.1, float("inf")]]


def test_a_shadow_final_variant_names_a_backprop_variant_or_the_plan_is_refused_in_one_sentence():
    with pytest.raises(InputError, match=r"\['backprop_gelu'\], which are not backprop_variants"):
        ScalePlan({}, {}, (1.0,), (3,), (1.0,), shadow_final_variants={"shadow_gelu": "backprop_gelu"})


def test_the_scale_report_links_no_figure_before_a_final_run_has_finished(tmp_path):
    plan = ScalePlan({"train.epochs": 2, "num_validation": 5000}, {"num_validation": 0}, (1.0,), (3,), (1.0,))
    _write_run(tmp_path, "backprop_lr1_seed0", 2, 0.07, 0.08)  # Tuning only: the final arms have no runs.
    report = scale_grid.summarise(
        "cifar10_airbench", plan, str(tmp_path), str(tmp_path / "out"), configs.entry_point("cifar10_airbench")
    )
    assert "| backprop | learning_rate 1 | 7.00 |" in report.markdown
    assert "](figures/" not in report.markdown and not (tmp_path / "out" / "figures").exists()


def test_the_scale_report_pairs_each_final_arm_with_backprop_of_the_same_seed(tmp_path):
    plan = ScalePlan(
        common={"train.epochs": 2, "num_validation": 5000},
        final={"num_validation": 0},
        learning_rates=(1.0, 2.0),
        shadow_layers=(3, 2),
        shadow_rate_factors=(1.0,),
        seeds=(0, 1),
        variants={"shadow_joint": {"train.shadow.twin_statistics": "joint"}},
        backprop_variants={"backprop_no_whitening": {"model.arguments.whiten": False}},
        shadow_final_variants={"shadow_no_whitening": "backprop_no_whitening"},
    )
    write = lambda name, val, test, tta: _write_run(tmp_path, name, 2, val, test, tta=tta)
    _write_run(tmp_path, "backprop_lr1_seed0", 2, 0.07, 0.08, val_tta=0.065)
    write("backprop_lr2_seed0", 0.09, 0.10, None)
    write("shadow_h3_lr1_seed0", 0.075, 0.08, None)
    write("shadow_h2_lr1_seed0", 0.08, 0.08, None)
    for seed, (backprop, shadow) in enumerate(((0.070, 0.075), (0.066, 0.072))):
        write(f"backprop_final_lr1_seed{seed}", None, backprop + 0.004, backprop)
        write(f"shadow_final_h3_lr1_seed{seed}", None, shadow + 0.004, shadow)
    write("backprop_no_whitening_lr1_seed0", None, 0.084, 0.080)
    write("shadow_no_whitening_h3_lr1_seed0", None, 0.094, 0.090)
    for name in (
        f"{arm}_final{h}_lr1_seed{seed}" for arm, h in (("backprop", ""), ("shadow", "_h3")) for seed in (0, 1)
    ):
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        clipped = [0.5 if name == "shadow_final_h3_lr1_seed0" and m["epoch"] == 1 else 0.0 for m in lines]
        lines = [m | {"train_clipped": c} for m, c in zip(lines, clipped)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    report = scale_grid.summarise(
        "cifar10_airbench", plan, str(tmp_path), str(tmp_path / "out"), configs.entry_point("cifar10_airbench")
    )
    row = lambda arm: next(line for line in report.markdown.splitlines() if line.startswith(f"| {arm} | learning"))
    assert "| 6.80 ± 0.28 | 7.20 ± 0.28 |" in row("backprop")  # with and without test-time augmentation
    assert "+0.55 ± 0.05 over 2 (effect" in row("SHADOW")  # paired: +0.5 and +0.6 points
    assert "| 0 | not run yet |" in row("noise twin (placebo)")
    assert "+1.00 ± n/a over 1 (one seed)" in row("backprop_no_whitening")
    # Paired with backprop without the filter, not with backprop: +1.0 points against +2.0.
    assert "+1.00 ± n/a over 1 vs backprop_no_whitening (one seed)" in row("shadow_no_whitening")
    assert report.numbers["versus_backprop"]["shadow_no_whitening"]["baseline"] == "backprop_no_whitening"
    clipped_column = lambda arm: row(arm).split(" | ")[-3]
    assert (clipped_column("SHADOW"), clipped_column("backprop")) == ("12.5", "0.0")  # half of 1 of 4 epochs
    assert clipped_column("backprop_no_whitening") == ""  # the run did not record it
    assert report.numbers["chosen"]["shadow_final"] == {"shadow_layer": 3, "learning_rate": 1.0}
    assert "| shadow_joint | learning_rate 1, shadow_layer 3 | not run yet |  |" in report.markdown
    assert "| backprop | learning_rate 1 | 7.00 | 6.50 |" in report.markdown  # the choice's error, then with views
    assert "| backprop | learning_rate 2 | 9.00 |  |" in report.markdown
    assert "--num_validation=0 --learning_rate=1 --shadow_layer=3 --seed=<seed>`" in report.markdown
    assert all((tmp_path / "out" / "figures" / f"cifar10_airbench_curves{x}.png").exists() for x in ("", "_wall"))
    assert "](figures/cifar10_airbench_curves_wall.png)" in report.markdown
    assert "The placebo against SHADOW: not both run yet." in report.markdown
    write("noise_twin_final_h3_lr1_seed0", None, 0.083, 0.079)  # SHADOW's seed 0: 0.075 with test-time aug.
    report = scale_grid.summarise(
        "cifar10_airbench", plan, str(tmp_path), str(tmp_path / "out"), configs.entry_point("cifar10_airbench")
    )
    assert "The placebo against SHADOW, paired: +0.40 ± n/a over 1 (one seed)" in report.markdown
    assert report.numbers["placebo_versus_shadow"]["mean"] == pytest.approx(0.004)


def test_the_scale_report_names_each_diverged_final_run_beside_the_means_it_leaves_out(tmp_path):
    plan = ScalePlan(
        {"train.epochs": 2, "num_validation": 5000}, {"num_validation": 0}, (1.0,), (3,), (1.0,), seeds=(0, 1)
    )
    _write_run(tmp_path, "backprop_lr1_seed0", 2, 0.07, 0.08)
    _write_run(tmp_path, "shadow_h3_lr1_seed0", 2, 0.075, 0.08)
    for seed in (0, 1):
        _write_run(tmp_path, f"backprop_final_lr1_seed{seed}", 2, None, 0.07, tta=0.06)
    _write_run(tmp_path, "shadow_final_h3_lr1_seed0", 2, None, 0.08, tta=0.07)
    for name in ("shadow_final_h3_lr1_seed1", "noise_twin_final_h3_lr1_seed0"):  # blown up in epoch 2
        _mark_diverged(tmp_path, name)
    report = scale_grid.summarise(
        "cifar10_airbench", plan, str(tmp_path), str(tmp_path / "out"), configs.entry_point("cifar10_airbench")
    )
    row = lambda arm: next(line for line in report.markdown.splitlines() if line.startswith(f"| {arm} | learning"))
    assert "| 1 (+1 diverged) | 7.00 ± n/a |" in row("SHADOW")  # seed 0 alone, and the paired difference over 1
    assert "+1.00 ± n/a over 1 (one seed)" in row("SHADOW")
    assert "| 0 (+1 diverged) | diverged |" in row("noise twin (placebo)")
    assert "- `shadow_final` seed 1: diverged at step 13 (epoch 2): the loss is nan" in report.markdown
    assert "- `noise_twin_final` seed 0: diverged at step 13 (epoch 2): the loss is nan" in report.markdown
    assert report.numbers["diverged"] == {
        "shadow_final": {"1": "diverged at step 13 (epoch 2): the loss is nan"},
        "noise_twin_final": {"0": "diverged at step 13 (epoch 2): the loss is nan"},
    }


ARCHIVED = [("mnist", False), ("cifar10", False), ("mnist", True), ("cifar10", True)]


@pytest.mark.parametrize("dataset,few_labels", ARCHIVED, ids=[f"{d}{'_few' if f else ''}" for d, f in ARCHIVED])
def test_the_reports_rebuild_the_committed_tables_from_the_archived_runs(dataset, few_labels, tmp_path):
    folder = REPO / "results" / ("few_labels" if few_labels else "")
    summarise = few_label_grid.summarise if few_labels else full_label_grid.summarise
    plan = configs.plan(dataset, few_labels)
    report = summarise(dataset, plan, str(folder / dataset), str(tmp_path), configs.entry_point(dataset))
    assert report.name == dataset
    report_files.write(report, str(tmp_path))
    markdown = (tmp_path / f"{dataset}.md").read_text()
    numbers = json.loads((tmp_path / f"{dataset}.json").read_text())
    committed = (folder / f"{dataset}.md").read_text()
    if few_labels:
        assert markdown == committed
        assert numbers == json.loads((folder / f"{dataset}.json").read_text())
        shown = [(k, d) for k, d in numbers["paired_differences"].items() if d["seeds"]]
        for key, difference in shown[:2]:  # the JSON's paired differences are the ones the table shows
            labels, arm = key.removeprefix("labels").split("/")
            row = f"| {int(labels):,} | {arm} | {difference['seeds']} | "
            assert f"{row}{sweep_stats.difference_text(difference['mean'], difference['se'])} |" in markdown
    else:  # The committed pages predate the commands' "<seed>" placeholder; everything above them is the same.
        assert markdown.split("Commands:")[0] == committed.split("Commands (S = seed):")[0]
        for cell in ("backprop", "shadow"):  # the JSON's test errors are the ones the table shows
            errors = list(numbers["test_error"][cell].values())
            row = next(line for line in markdown.splitlines() if line.startswith(f"| {cell} |"))
            assert f"| {len(errors)} | {sweep_stats.mean_std_text(errors)} |" in row


def _unfinished_run(root):
    """A run of the full-label grid's first cell that stopped after epoch 1 of 3."""
    _write_run(root, _run_name("backprop", 0.1, 0), 1, 0.05, 0.02)


GRIDS = {
    "full": (full_label_grid.summarise, Plan({"train.epochs": 3}, (0.1,), (0,), {"backprop": {}}, {})),
    "few": (
        few_label_grid.summarise,
        few_label_grid.LabelPlan(
            {"train.epochs": 3, "train.steps": 6}, (20,), (0,), {"backprop": few_label_grid.Arm({})}, (), {}, (0,)
        ),
    ),
}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("folder", ["missing", "empty", "unfinished"])
def test_a_report_of_a_grid_without_a_finished_run_stops_and_writes_nothing(grid, folder, tmp_path):
    summarise, plan = GRIDS[grid]
    root, out = tmp_path / "grid", tmp_path / "out"
    if folder != "missing":
        root.mkdir()
    if folder == "unfinished":
        _unfinished_run(root / "labels20" if grid == "few" else root)
    message = "does not exist" if folder == "missing" else r"holds no finished run \(none reached epoch 3 or diverged\)"
    with pytest.raises(UserError, match=rf"^the grid folder {re.escape(str(root))} {message}; [^;]*\.$"):
        summarise("mnist", plan, str(root), str(out), configs.entry_point("mnist"))
    assert not out.exists()


def test_the_report_entry_point_refuses_a_mistyped_grid_in_one_line_and_keeps_the_committed_table(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "mnist.md").write_text("# committed\n")
    command = [sys.executable, "-m", "experiments.report", f"--grid={tmp_path / 'typo'}", f"--workdir={out}"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    assert result.stderr.strip() == f"error: the grid folder {tmp_path / 'typo' / 'mnist'} does not exist; give the " \
        "folder experiments.grid wrote its runs to."  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["mnist.md"] and (out / "mnist.md").read_text() == "# committed\n"


def _flaky_command(tmp_path, crashes: int, exit_code: int = 1, signal_number: int | None = None):
    """A command that fails its first ``crashes`` times (``exit_code``, or death by ``signal_number``), then succeeds."""
    fail = f"os.kill(os.getpid(), {signal_number})" if signal_number else f"sys.exit({exit_code})"
    script = (
        "import os, pathlib, sys\n"
        f"count = pathlib.Path({str(tmp_path / 'count')!r})\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        f"print('attempt', n, flush=True)\nif n < {crashes}:\n    {fail}\n"
    )
    return [sys.executable, "-c", script]


def test_a_run_killed_from_outside_is_started_again_until_it_finishes(tmp_path):
    workdir = str(tmp_path / "run")
    command = _flaky_command(tmp_path, crashes=2, signal_number=signal.SIGKILL)
    assert sweep.run_resuming(command, workdir, retries=2) == "done"
    assert (tmp_path / "run" / "log.txt").read_text().count("attempt") == 3


def test_a_run_killed_more_often_than_the_retries_stops_the_grid_with_a_sentence(tmp_path):
    command = _flaky_command(tmp_path, crashes=5, signal_number=signal.SIGTERM)
    with pytest.raises(sweep.SweepError, match=r"was killed 2 times \(signal 15\); its log.txt says why"):
        sweep.run_resuming(command, str(tmp_path / "run"), retries=1)
    assert (tmp_path / "count").read_text() == "2"


@pytest.mark.parametrize("exit_code,signal_number", [(1, None), (None, signal.SIGABRT)], ids=["exception", "abort"])
def test_a_run_that_crashes_by_itself_stops_the_grid_without_a_retry(tmp_path, exit_code, signal_number):
    command = _flaky_command(tmp_path, crashes=5, exit_code=exit_code, signal_number=signal_number)
    with pytest.raises(sweep.SweepError, match=r"crashed \(exit code -?\d+\); its log.txt says why"):
        sweep.run_resuming(command, str(tmp_path / "run"), retries=2)
    assert (tmp_path / "count").read_text() == "1"


def test_a_refused_command_stops_the_grid_without_a_retry(tmp_path):
    command = _flaky_command(tmp_path, crashes=5, exit_code=EXIT_USER_ERROR)
    with pytest.raises(sweep.SweepError, match=r"refused its command \(exit code 2\); its log.txt says why"):
        sweep.run_resuming(command, str(tmp_path / "run"), retries=2)
    assert (tmp_path / "count").read_text() == "1"


def test_a_diverged_run_is_not_started_again(tmp_path):
    command = _flaky_command(tmp_path, crashes=5, exit_code=EXIT_DIVERGED)
    assert sweep.run_resuming(command, str(tmp_path / "run"), retries=2) == "diverged"
    assert (tmp_path / "count").read_text() == "1"


def test_a_run_that_saved_and_stopped_is_not_started_again(tmp_path):
    command = _flaky_command(tmp_path, crashes=5, exit_code=EXIT_STOPPED)
    assert sweep.run_resuming(command, str(tmp_path / "run"), retries=2) == "stopped"
    assert (tmp_path / "count").read_text() == "1"


@pytest.mark.parametrize(
    "error,code", [("train.DivergedError", EXIT_DIVERGED), ("train.TrainingError", EXIT_USER_ERROR)]
)
def test_entry_points_exit_with_a_code_that_tells_divergence_from_a_user_error(error, code):
    script = f"from experiments import cli\nfrom rev_nets import train\ndef main(argv):\n    raise {error}('why.')\ncli.run(main)\n"
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == code and result.stderr.strip().endswith("error: why."), result.stderr[-2000:]
