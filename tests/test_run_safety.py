"""Runs that go wrong stay readable and resumable: a blow-up is caught before its state is saved and marks the run,
metrics are strict JSON, a diverged run resumes only with another grad_clip or learning_rate, and a damaged
checkpoint is skipped for the newest intact one."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rev_nets import data, nets, shadow, train
from rev_nets.analysis import random_like
from rev_nets.errors import InputError
from rev_nets.train import guard, internals, rundir

NET = nets.mnist_mlp(width=16)
BASE = train.TrainConfig(epochs=3, batch_size=16, log_every=2, shadow=shadow.ShadowConfig(layer=2))
# The warm-up ramps the rate to 10 over 2 epochs: epoch 1 trains, epoch 2 blows up. Without momentum, clipping the
# gradients bounds each step, so grad_clip alone lets the run go on.
EXPLODING = dataclasses.replace(BASE, epochs=4, learning_rate=10.0, warmup_epochs=2.0, momentum=0.0)


def _splits():
    rng = np.random.default_rng(0)
    make = lambda n: data.DeviceSplit(
        jnp.asarray(rng.standard_normal((n, 28, 28, 1)), jnp.float32), jnp.asarray(rng.integers(0, 10, n), jnp.int32)
    )
    return make(96), {"test": make(37)}  # 6 steps an epoch


def _fit(config, workdir):
    train_split, evals = _splits()
    return train.fit(NET, config, train_split, evals, str(workdir), figures=False)


def _strict(constant):
    raise ValueError(f"{constant} is not JSON")


def _learning_metrics(history):
    return [{k: v for k, v in line.items() if not k.endswith("_s") and k != "images_per_s"} for line in history]


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    """A run that blew up in epoch 2, and the error it stopped with."""
    workdir = tmp_path_factory.mktemp("diverged") / "run"
    with pytest.raises(train.DivergedError) as stopped:
        _fit(EXPLODING, workdir)
    return workdir, stopped.value


@pytest.fixture
def diverged(diverged_run, tmp_path):
    """A copy of the diverged run to change."""
    shutil.copytree(diverged_run[0], tmp_path / "run")
    return tmp_path / "run"


def test_a_blow_up_marks_the_run_and_keeps_only_sane_checkpoints(diverged_run):
    workdir, error = diverged_run
    mark = json.loads((workdir / rundir.DIVERGED).read_text())
    assert mark == error.record and mark["epoch"] == 2 and mark["last_sane_step"] == 6 < mark["step"]
    assert "times its" in mark["cause"]  # caught while the loss or the norm was still finite
    assert str(error).startswith(f"by step {mark['step']} (epoch 2) {mark['cause']}; {workdir} keeps its last sane")
    assert "grad_clip" in str(error) and "lower learning_rate" in str(error) and "new run directory" in str(error)
    assert internals.checkpoint_manager(str(workdir)).all_steps() == [0, 6]
    run = train.load_run(str(workdir), diverged_ok=True)
    for step in run.steps:
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(run.params(step)))
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line, parse_constant=_strict)["epoch"] for line in lines] == [1]


def test_the_run_reader_refuses_a_diverged_run_in_one_sentence(diverged_run, tmp_path):
    workdir, _ = diverged_run
    with pytest.raises(InputError, match=r"diverged at step \d+ \(epoch 2\).*not a trained net") as refused:
        train.load_run(str(workdir))
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match="not a trained net"):
        random_like.run_snapshots(str(workdir))
    empty = tmp_path / "grid_marked"
    shutil.copytree(workdir, empty)
    (empty / rundir.DIVERGED).write_text("")  # a grid's mark, as archived
    with pytest.raises(InputError, match=r"holds a run that diverged, not a trained net"):
        train.load_run(str(empty))


def test_non_finite_metrics_are_written_as_null_and_read_back_as_nan(tmp_path):
    rundir.append_metrics(str(tmp_path), {"epoch": 1, "step": 2, "train_loss": math.nan, "test_error": math.inf})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=_strict) == {"epoch": 1, "step": 2, "train_loss": None, "test_error": None}
    [read] = train.read_metrics(str(tmp_path))
    assert math.isnan(read["train_loss"]) and math.isnan(read["test_error"]) and read["step"] == 2


def test_a_diverged_run_resumes_only_with_another_clip_or_rate(diverged):
    with pytest.raises(train.TrainingError, match="the same settings would diverge again; set grad_clip"):
        _fit(EXPLODING, diverged)
    with pytest.raises(train.TrainingError, match="different settings"):
        _fit(dataclasses.replace(EXPLODING, warmup_epochs=3.0), diverged)
    assert (diverged / rundir.DIVERGED).exists()


def test_a_diverged_run_resumes_with_clipping_from_its_last_sane_step_and_records_the_restart(diverged, capsys):
    mark = json.loads((diverged / rundir.DIVERGED).read_text())
    _, history = _fit(dataclasses.replace(EXPLODING, grad_clip=0.05), diverged)
    assert f"resumed {diverged} at step 6 (epoch 1)" in capsys.readouterr().out
    assert [line["epoch"] for line in history] == [1, 2, 3, 4] and np.isfinite(history[-1]["train_loss"])
    config = json.loads((diverged / "config.json").read_text())
    assert config["train"]["grad_clip"] == 0.05
    assert config["restarts"] == [{"step": 6, "changed": {"grad_clip": [0.0, 0.05]}, "diverged": mark}]
    assert not (diverged / rundir.DIVERGED).exists()
    assert train.load_run(str(diverged)).steps == (0, 18, 24)


def test_a_run_that_diverged_after_saves_within_an_epoch_restarts_at_its_end_with_clipping(tmp_path, capsys):
    train_split, evals = _splits()
    fit = lambda config, **saves: train.fit(NET, config, train_split, evals, str(tmp_path), figures=False, **saves)
    with pytest.raises(train.DivergedError):
        fit(EXPLODING, save_every_minutes=1e-9)  # Saved between every two steps while sane.
    # The saves of the epoch that blew up are dropped: from them, clipping did not save the run.
    assert json.loads((tmp_path / rundir.DIVERGED).read_text())["last_sane_step"] == 6
    assert internals.checkpoint_manager(str(tmp_path)).all_steps() == [0, 6]
    _, history = fit(dataclasses.replace(EXPLODING, grad_clip=0.05), save_every_minutes=1e-9)
    assert f"resumed {tmp_path} at step 6 (epoch 1)" in capsys.readouterr().out
    assert [line["epoch"] for line in history] == [1, 2, 3, 4] and np.isfinite(history[-1]["train_loss"])


def test_a_mark_left_by_a_kill_after_its_restart_was_recorded_is_stale(diverged):
    mark = json.loads((diverged / rundir.DIVERGED).read_text())
    config = json.loads((diverged / "config.json").read_text())
    restart = {"step": 6, "changed": {"learning_rate": [10.0, 1.0]}, "diverged": mark}
    rundir.write_record(str(diverged / "config.json"), config | {"restarts": [restart]})
    assert rundir.diverged(str(diverged)) is None
    assert train.load_run(str(diverged)).steps == (0, 6)


def test_the_guard_takes_the_first_check_as_the_early_level():
    watch = guard.Guard()
    assert watch.cause(4.0, 10.0) is None and watch.level == guard.Level(4.0, 10.0)
    assert watch.cause(399.0, 99.0) is None
    assert "training loss rose to 401" in watch.cause(401.0, 10.0)
    assert "global norm grew to 101" in watch.cause(1.0, 101.0)
    assert "loss became NaN" in watch.cause(math.nan, 10.0)
    assert "params became NaN" in guard.Guard().cause(4.0, math.inf)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 3-epoch run (checkpoints 0, 12, 18) and its metric lines."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    _, history = _fit(BASE, workdir)
    return workdir, history


def _largest_data_file(checkpoint: Path) -> Path:
    return max((p for p in checkpoint.rglob("*") if p.parent.name == "d"), key=lambda p: p.stat().st_size)


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    start = len(raw) // 4
    raw[start : start + 4096] = bytes(b ^ 0xFF for b in raw[start : start + 4096])
    path.write_bytes(bytes(raw))


DAMAGE = {
    "manifest removed": lambda c: (c / "default" / "manifest.ocdbt").unlink(),
    "data file removed": lambda c: _largest_data_file(c).unlink(),
    "4 KB flipped": lambda c: _flip(_largest_data_file(c)),
    # Restores without an error, to other values: only the checksum recorded at save time tells.
    "another step's files": lambda c: (shutil.rmtree(c), shutil.copytree(c.parent / "12", c)),
}


@pytest.fixture(params=DAMAGE, ids=list(DAMAGE))
def damaged(request, finished_run, tmp_path):
    """A copy of the finished run whose latest checkpoint (18) is damaged."""
    shutil.copytree(finished_run[0], tmp_path / "run")
    DAMAGE[request.param](tmp_path / "run" / "checkpoints" / "18")
    return tmp_path / "run"


def test_a_reader_falls_back_to_the_newest_intact_checkpoint_in_one_line(damaged, capsys):
    run = train.load_run(str(damaged))
    intact = run.params(12)
    chex.assert_trees_all_equal(run.params(), intact)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"read {damaged} at step 12, its newest intact checkpoint: step 18 ")
    with pytest.raises(
        InputError, match=r"no intact checkpoint of step 18 \(step 18.*\); read another of \[0, 12, 18\]"
    ):
        run.params(18)


def test_a_resume_falls_back_to_the_newest_intact_checkpoint_and_ends_as_an_uninterrupted_run(
    damaged, finished_run, capsys
):
    _, history = _fit(BASE, damaged)
    resumed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resumed")]
    assert len(resumed) == 1 and resumed[0].startswith(f"resumed {damaged} at step 12 (epoch 2), its newest intact")
    assert "step 18" in resumed[0]
    assert _learning_metrics(history) == _learning_metrics(finished_run[1])
    assert train.load_run(str(damaged)).steps == (0, 12, 18)


def test_with_no_intact_checkpoint_the_reader_and_the_resume_stop_in_one_sentence(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    for checkpoint in (workdir / "checkpoints").iterdir():
        (checkpoint / "default" / "manifest.ocdbt").unlink()
    with pytest.raises(InputError, match=r"no intact checkpoint \(step 18 does not restore.*step 0 does not.*new run"):
        train.load_run(str(workdir)).params()
    with pytest.raises(train.TrainingError, match="no checkpoint in .* restores intact .*; start a new run directory"):
        _fit(BASE, workdir)
