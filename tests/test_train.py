"""The fit loop: determinism, resume, NaN guard, config guard, evaluation."""

import functools
import itertools
import json
import signal
from pathlib import Path

import chex
import conftest_data
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rev_nets import consistency, data, models, nets, shadow, train
from rev_nets.errors import InputError, SettingError, Stopped
from rev_nets.generator import GeneratorConfig
from rev_nets.train import internals
from rev_nets.train import steps as train_steps

ROOT = Path(__file__).resolve().parents[1]
NET = nets.mnist_mlp(width=16)


def _splits(n_train=96, n_eval=37, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda n: data.DeviceSplit(
        jnp.asarray(rng.standard_normal((n, 28, 28, 1)), jnp.float32), jnp.asarray(rng.integers(0, 10, n), jnp.int32)
    )
    return make(n_train), {"test": make(n_eval)}


def _config(**overrides):
    base = {
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 0.05,
        "log_every": 3,
        "shadow": shadow.ShadowConfig(layer=2),
    }
    return train.TrainConfig(**(base | overrides))


def _learning_metrics(history):
    return [{k: v for k, v in line.items() if not k.endswith("_s") and k != "images_per_s"} for line in history]


def test_same_seed_same_numbers(tmp_path):
    train_split, evals = _splits()
    _, full = train.fit(NET, _config(epochs=3), train_split, evals, str(tmp_path / "a"), figures=False)
    _, first = train.fit(NET, _config(epochs=3), train_split, evals, str(tmp_path / "b"), figures=False)
    assert _learning_metrics(full) == _learning_metrics(first)
    assert [m["epoch"] for m in full] == [1, 2, 3]
    assert np.isfinite(full[-1]["train_loss"]) and full[-1]["step"] == 18


def test_resume_drops_metric_lines_beyond_the_checkpoint(tmp_path):
    train_split, evals = _splits()
    workdir = str(tmp_path / "run")
    _, uninterrupted = train.fit(NET, _config(epochs=3), train_split, evals, str(tmp_path / "ref"), figures=False)
    train.fit(NET, _config(epochs=3), train_split, evals, workdir, figures=False)
    # Pretend the run died after writing epoch 3's line but before its checkpoint, mid-way through a 4th line.
    manager = internals.checkpoint_manager(workdir)
    manager.delete(manager.latest_step())
    with open(f"{workdir}/metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "st')
    _, resumed = train.fit(NET, _config(epochs=3), train_split, evals, workdir, figures=False)
    assert _learning_metrics(resumed) == _learning_metrics(uninterrupted)
    assert len(train.read_metrics(workdir)) == 3


def _stop_before(step: int, start: int, reason=signal.SIGTERM):
    """A stop poll that gives ``reason`` before the run's step ``step``, for a run that starts at step ``start``:
    the loop polls once before each step."""
    polls = itertools.count(start)
    return lambda: reason if next(polls) == step else None


# 6 steps an epoch, 18 in all: before any step, mid-epoch, before an epoch's last step, at an epoch boundary,
# before the run's last step, and two random steps; with alphas fitted per epoch, two stops mid-epoch.
STOPS = sorted({0, 3, 5, 6, 17, *np.random.default_rng(31).integers(1, 18, 2).tolist()})


@pytest.mark.parametrize(
    "overrides,stops",
    [({}, STOPS), ({"shadow": shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="data"))}, [3, 10])],
    ids=["shadow", "alphas_fitted_per_epoch"],
)
def test_a_run_stopped_at_any_step_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path, overrides, stops):
    train_split, evals = _splits()
    config = _config(epochs=3, **overrides)
    _, uninterrupted = train.fit(NET, config, train_split, evals, str(tmp_path / "ref"), figures=False)
    workdir, start = str(tmp_path / "run"), 0
    for step in stops:
        with pytest.raises(Stopped, match=f"^stopped by SIGTERM at step {step}$"):
            train.fit(NET, config, train_split, evals, workdir, figures=False, stop=_stop_before(step, start))
        assert internals.checkpoint_manager(workdir).latest_step() == step
        start = step
    _, resumed = train.fit(NET, config, train_split, evals, workdir, figures=False)
    assert _learning_metrics(resumed) == _learning_metrics(uninterrupted)
    assert _learning_metrics(train.read_metrics(workdir)) == _learning_metrics(uninterrupted)
    code = json.loads((tmp_path / "run" / "config.json").read_text())["code"]
    assert [resume["step"] for resume in code["resumes"]] == stops
    assert all(resume["commit"] == code["commit"] and resume["time"].endswith("+00:00") for resume in code["resumes"])


class _Killed(Exception):
    """A process killed without warning: nothing after it runs, so no save of its own."""


def _kill_before(step: int):
    polls = itertools.count()

    def poll():
        if next(polls) == step:
            raise _Killed

    return poll


@pytest.mark.parametrize(
    "overrides",
    [{}, {"shadow": shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="data"))}],
    ids=["shadow", "alphas_fitted_per_epoch"],
)
def test_a_run_killed_without_warning_resumes_from_its_last_save_within_the_epoch(tmp_path, overrides):
    train_split, evals = _splits()
    config = _config(epochs=3, **overrides)
    _, uninterrupted = train.fit(NET, config, train_split, evals, str(tmp_path / "ref"), figures=False)
    workdir = str(tmp_path / "run")
    # Saves between every two steps; killed before step 9, the fourth of epoch 2's six.
    with pytest.raises(_Killed):
        train.fit(
            NET, config, train_split, evals, workdir, figures=False, stop=_kill_before(9), save_every_minutes=1e-9
        )
    # The two latest saves, the last epoch's end (kept through the saves within the next) and step 0.
    assert internals.checkpoint_manager(workdir).all_steps() == [0, 6, 7, 8]
    assert len(train.read_metrics(workdir)) == 1
    _, resumed = train.fit(NET, config, train_split, evals, workdir, figures=False)
    assert _learning_metrics(resumed) == _learning_metrics(uninterrupted)


def test_a_save_interval_of_no_time_is_refused_with_a_sentence(tmp_path):
    train_split, evals = _splits()
    for minutes in (0, -1):
        with pytest.raises(InputError, match=rf"^save_every_minutes={minutes} is not a duration; give minutes > 0"):
            train.fit(NET, _config(), train_split, evals, str(tmp_path), figures=False, save_every_minutes=minutes)


def test_fit_traces_the_train_step_once(tmp_path, monkeypatch):
    traces = []
    step = train_steps.train_step
    monkeypatch.setattr(train_steps, "train_step", lambda *args, **kwargs: traces.append(1) or step(*args, **kwargs))
    train_split, evals = _splits()
    train.fit(NET, _config(epochs=3), train_split, evals, str(tmp_path), figures=False)
    assert len(traces) == 1


def test_the_jitted_step_takes_each_row_and_key_of_the_epoch_in_turn():
    train_split, _ = _splits()
    config = _config(shadow=shadow.ShadowConfig(layer=2, generator=GeneratorConfig(rho=0.7)), dropout=0.2)
    steps = 96 // config.batch_size
    order = data.epoch_batches(jax.random.key(1), 96, config.batch_size)
    epoch_key = jax.random.key(2)
    mesh = internals.data_mesh()
    step = internals.make_train_step(NET, config, mesh, steps)
    state, acc = internals.create_state(NET, config, steps), internals.zero_metrics(config)
    for _ in range(steps):
        state, acc = step(state, acc, train_split, order, epoch_key)

    one_batch = jax.jit(functools.partial(internals.train_step, NET, config, steps_per_epoch=steps))
    expected, expected_acc = internals.create_state(NET, config, steps), internals.zero_metrics(config)
    for i in range(steps):
        expected, expected_acc = one_batch(
            expected, expected_acc, train_split, order[i], jax.random.fold_in(epoch_key, i + 1)
        )
    chex.assert_trees_all_close((state.params, acc), (expected.params, expected_acc), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="order has 5 rows but an epoch has 6 steps"):
        step(state, acc, train_split, order[:5], epoch_key)


def test_step_zero_checkpoint_is_kept(tmp_path):
    train_split, evals = _splits()
    state, _ = train.fit(NET, _config(epochs=4), train_split, evals, str(tmp_path), figures=False)
    steps = internals.checkpoint_manager(str(tmp_path)).all_steps()
    assert 0 in steps and int(state.step) in steps and len(steps) == 3
    initial = internals.checkpoint_manager(str(tmp_path)).restore(
        0, args=ocp.args.StandardRestore(internals.create_state(NET, _config(epochs=4), 6))
    )
    fresh = nets.init(jax.random.key(0), NET)
    jax.tree.map(np.testing.assert_array_equal, initial.params, fresh)


def test_a_run_saved_with_its_nets_repr_resumes_under_the_nets_factory_record(tmp_path):
    """188 archived runs name their net by repr: the same net recorded by factory is the same setting."""
    archived = ROOT / "results" / "mnist" / "backprop_lr0.05_seed0" / "config.json"
    (tmp_path / "config.json").write_text(archived.read_text())
    saved = json.loads(archived.read_text())
    today = {name: saved[name] for name in ("dataset", "num_validation")}
    today |= {"train": train.TrainConfig.from_json(saved["train"]).to_json()}
    today |= {"model": nets.mnist_mlp().record.to_json()}
    internals.check_config(str(tmp_path), today)
    assert json.loads((tmp_path / "config.json").read_text()) == saved  # The old record is kept as it is.
    other = today | {"model": nets.mnist_mlp(width=512).record.to_json()}
    with pytest.raises(
        train.TrainingError, match=r"different settings \(model: unset -> \{.*; net: \"Net\(.* -> unset\)"
    ):
        internals.check_config(str(tmp_path), other)


def test_a_run_saved_before_its_factory_took_an_argument_resumes_where_the_argument_is_its_default(tmp_path):
    """The airbench runs archived before the net's recipe became arguments hold only widths and whiten."""
    from experiments.configs import cifar10_airbench

    archived = ROOT / "results" / "cifar10_airbench" / "backprop_final_lr2.25_seed0" / "config.json"
    (tmp_path / "config.json").write_text(archived.read_text())
    saved = json.loads(archived.read_text())
    assert set(saved["model"]["arguments"]) == {"widths", "whiten"}
    today = saved | {"model": cifar10_airbench.get_config().model.to_json()}
    assert set(today["model"]["arguments"]) > {"widths", "whiten", "identity_init", "batch_norm_epsilon"}
    internals.check_config(str(tmp_path), today)
    assert json.loads((tmp_path / "config.json").read_text())["model"] == saved["model"]  # kept as it was saved
    other = json.loads(json.dumps(today))
    other["model"]["arguments"]["identity_init"] = False
    with pytest.raises(
        train.TrainingError, match=r"different settings \(model.arguments.identity_init: true -> false\)"
    ):
        internals.check_config(str(tmp_path), other)


def test_changed_settings_stop_the_resume(tmp_path):
    train_split, evals = _splits()
    train.fit(NET, _config(epochs=1), train_split, evals, str(tmp_path), figures=False)
    config = json.loads((tmp_path / "config.json").read_text())  # The net is recorded by factory and arguments.
    assert config["model"] == {"factory": "rev_nets.nets:mnist_mlp", "arguments": {"width": 16}} and "net" not in config
    with pytest.raises(train.TrainingError, match=r"different settings \(train.learning_rate: 0.05 -> 0.1\);.*new run"):
        train.fit(NET, _config(epochs=1, learning_rate=0.1), train_split, evals, str(tmp_path), figures=False)


def test_a_refused_resume_names_the_first_differing_settings_by_their_paths(tmp_path):
    record = {"dataset": "mnist", "labelled_indices": list(range(100)), "train": _config().to_json()}
    internals.check_config(str(tmp_path), record)
    other = record | {"labelled_indices": list(range(1, 101)), "train": _config(epochs=3, seed=2, num_labels=100)}
    other["train"] = other["train"].to_json()
    message = (
        r"different settings \(labelled_indices: \[0, 1, 2, .*\.\.\. -> \[1, 2, 3, .*\.\.\.; train.epochs: 2 -> 3; "
        r"train.num_labels: 0 -> 100; and 1 more\); pass the same settings"
    )
    with pytest.raises(train.TrainingError, match=message):
        internals.check_config(str(tmp_path), other)


def _made_run(tmp_path, **data_changes):
    """A one-epoch run of made MNIST idx files in ``tmp_path/run``; returns a function that resumes it on a copy of
    the files with ``data_changes`` (split -> function of its (images, labels)) applied."""
    written = conftest_data.write_idx_dataset(tmp_path / "data" / "mnist", n_train=40, n_test=20)
    model = models.ModelConfig("rev_nets.nets:mnist_mlp", {"width": 16, "depth": 3})
    config = train.RunConfig("mnist", model, train.TrainConfig(epochs=1, batch_size=10), num_validation=10)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir, data_dir=str(tmp_path / "data"), figures=False)

    def resume(folder, **changes):
        for split, (images, labels) in written.items():
            images, labels = changes.get(split, lambda *arrays: arrays)(images, labels)
            conftest_data.write_idx_split(tmp_path / folder / "mnist", split, images, labels, gz=True)
        return train.train_and_evaluate(config, workdir, data_dir=str(tmp_path / folder), figures=False)

    return workdir, resume


def test_a_resume_on_other_data_is_refused_naming_the_split_and_what_differs(tmp_path, capsys):
    workdir, resume = _made_run(tmp_path)
    saved = json.loads((Path(workdir) / "config.json").read_text())
    assert sorted(saved["data"]) == ["test", "train", "validation"] and saved["data"]["test"]["shape"] == [
        20,
        28,
        28,
        1,
    ]
    records = {name: (Path(workdir) / name).read_text() for name in ("config.json", "metrics.jsonl")}
    _, history = resume("moved")  # the same files in another folder: content, not path
    assert [m["epoch"] for m in history] == [1]
    inverted = lambda images, labels: (255 - images, labels)
    with pytest.raises(
        train.TrainingError,
        match=r"trained on other data: the pixel sample differs \(images changed\) in the test split;",
    ):
        resume("inverted", test=inverted)
    relabelled = lambda images, labels: (images, np.where(np.arange(len(labels)) == 0, (labels + 1) % 10, labels))
    with pytest.raises(
        train.TrainingError, match=r"other data: the label counts differ in the test split; resume it on"
    ):
        resume("relabelled", test=relabelled)
    assert {name: (Path(workdir) / name).read_text() for name in records} == records  # nothing written
    del saved["data"]  # a run saved before config.json held the fingerprint
    (Path(workdir) / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    resume("inverted", test=inverted)
    assert "saved without a data fingerprint; this resume cannot check its data." in capsys.readouterr().out


def test_a_batch_larger_than_the_data_stops_before_writing_anything(tmp_path):
    train_split, evals = _splits(n_train=12)
    with pytest.raises(train.TrainingError, match="batch_size=16 is larger than the 12 training examples"):
        train.fit(NET, _config(), train_split, evals, str(tmp_path / "run"), figures=False)
    assert not (tmp_path / "run" / "config.json").exists()
    train.fit(NET, _config(batch_size=4, epochs=1), train_split, evals, str(tmp_path / "run"), figures=False)


def test_backprop_on_a_one_layer_net_evaluates_synthetic_data_from_its_top(tmp_path):
    net = nets.mnist_mlp(width=16, depth=1)
    train_split, evals = _splits()
    _, history = train.fit(
        net, _config(epochs=1, shadow=shadow.ShadowConfig(layer=0)), train_split, evals, str(tmp_path)
    )
    assert 0 <= history[-1]["test_synthetic_error"] <= 1
    assert (tmp_path / "figures" / "synthetic_images.png").exists()


def test_a_setting_added_later_takes_its_default_in_an_older_run(tmp_path):
    train_split, evals = _splits()
    train.fit(NET, _config(epochs=1), train_split, evals, str(tmp_path), figures=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["train"]["shadow"]["start_epoch"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    _, history = train.fit(NET, _config(epochs=1), train_split, evals, str(tmp_path), figures=False)
    assert [m["epoch"] for m in history] == [1]
    late = _config(epochs=1, shadow=shadow.ShadowConfig(layer=2, start_epoch=0.5))
    with pytest.raises(train.TrainingError, match="different settings"):
        train.fit(NET, late, train_split, evals, str(tmp_path), figures=False)


def test_shadow_from_a_later_epoch_is_backprop_until_then(tmp_path):
    train_split, evals = _splits()
    late = _config(shadow=shadow.ShadowConfig(layer=2, start_epoch=1))
    _, backprop = train.fit(
        NET, _config(shadow=shadow.ShadowConfig(layer=0)), train_split, evals, str(tmp_path / "b"), figures=False
    )
    _, shadowed = train.fit(NET, late, train_split, evals, str(tmp_path / "s"), figures=False)
    for key in ("train_loss", "train_ce_real", "test_error"):
        np.testing.assert_allclose(shadowed[0][key], backprop[0][key], rtol=1e-6)
    assert "train_ce_synthetic" in shadowed[0]
    assert shadowed[1]["train_loss"] != pytest.approx(shadowed[1]["train_ce_real"])


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"epochs": 0}, r"^epochs must be a whole number >= 1, got 0\.$"),
        ({"epochs": 1.5}, "^epochs must be a whole number >= 1, got 1.5"),
        ({"batch_size": NAN}, "^batch_size must be a whole number >= 1, got nan"),
        ({"learning_rate": 0.0}, "^learning_rate must be positive and finite, got 0.0"),
        ({"learning_rate": NAN}, "^learning_rate must be positive and finite, got nan"),
        ({"learning_rate": INF}, "^learning_rate must be positive and finite, got inf"),
        ({"optimizer": "rmsprop"}, "^optimizer must be one of sgd, adam, got 'rmsprop'"),
        ({"dropout": 1.0}, r"^dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": NAN}, r"^dropout must be in \[0, 1\), got nan"),
        ({"grad_clip": -1.0}, r"^grad_clip must be >= 0 and finite \(0 = off\), got -1.0"),
        ({"grad_clip": INF}, r"^grad_clip must be >= 0 and finite \(0 = off\), got inf"),
        ({"weight_decay": -0.1}, r"^weight_decay must be >= 0 and finite \(0 = off\), got -0.1"),
        ({"weight_decay": NAN}, r"^weight_decay must be >= 0 and finite \(0 = off\), got nan"),
        ({"warmup_epochs": -2.0}, r"^warmup_epochs must be >= 0 and finite \(0 = off\), got -2.0"),
        ({"warmup_epochs": NAN}, r"^warmup_epochs must be >= 0 and finite"),
        ({"momentum": NAN}, r"^momentum must be >= 0 and finite"),
    ],
)
def test_bad_training_settings_name_the_setting_and_its_value(setting, message):
    with pytest.raises(SettingError, match=message) as error:
        _config(**setting).check(NET)
    assert error.value.setting == next(iter(setting))


@pytest.mark.parametrize(
    "overrides,path",
    [
        ({"shadow": shadow.ShadowConfig(layer=4)}, "shadow.layer"),
        ({"shadow": shadow.ShadowConfig(layer=2, weight=NAN)}, "shadow.weight"),
        ({"shadow": shadow.ShadowConfig(layer=2, start_epoch=NAN)}, "shadow.start_epoch"),
        ({"shadow": shadow.ShadowConfig(2, generator=GeneratorConfig(alpha=(1, 2, 3)))}, "shadow.generator.alpha"),
        ({"num_labels": 10, "consistency": consistency.ConsistencyConfig("gaussian", sigma=NAN)}, "consistency.sigma"),
        ({"num_labels": 10, "consistency": consistency.ConsistencyConfig("shadow", weight=INF)}, "consistency.weight"),
    ],
)
def test_a_nested_setting_is_named_by_its_path_in_the_train_config(overrides, path):
    with pytest.raises(SettingError) as error:
        _config(**overrides).check(NET)
    assert error.value.setting == path and str(error.value).startswith(f"{path} ")


def test_a_start_epoch_past_the_run_or_without_shadow_is_refused():
    with pytest.raises(SettingError, match="^shadow.start_epoch must be below the run's 2 epochs to leave a SHADOW"):
        _config(shadow=shadow.ShadowConfig(layer=2, start_epoch=2)).check(NET)
    with pytest.raises(SettingError, match="^shadow.start_epoch needs SHADOW on"):
        _config(shadow=shadow.ShadowConfig(layer=0, start_epoch=1)).check(NET)


def test_shadow_is_off_by_default():
    assert not train.TrainConfig().shadow.enabled
    assert train.TrainConfig().shadow == shadow.ShadowConfig(layer=0)


ARCHIVED = sorted((Path(__file__).resolve().parents[1] / "results").glob("**/config.json"))


def test_every_archived_run_config_reads_and_round_trips():
    """The results archive holds shadow records with the generator's options flat, as runs wrote them before the
    options had their own record; each reads, keeps its values, and survives to_json -> JSON -> from_json."""
    assert len(ARCHIVED) >= 188
    for path in ARCHIVED:
        saved = json.loads(path.read_text())["train"]
        config = train.TrainConfig.from_json(saved)
        options = config.shadow.generator
        for name in ("rho", "alpha", "alpha_scale", "smooth_sigma", "use_switches"):
            assert getattr(options, name) == saved["shadow"].get(name, getattr(GeneratorConfig(), name)), path
        assert config.shadow.layer == saved["shadow"]["layer"] and config.shadow.weight == saved["shadow"]["weight"]
        written = json.loads(json.dumps(config.to_json()))
        assert set(written["shadow"]) == {
            "layer",
            "weight",
            "noise_twin",
            "start_epoch",
            "generator",
            "twin_statistics",
        }
        assert train.TrainConfig.from_json(written) == config, path


def test_the_nested_and_the_flat_shadow_records_read_alike():
    options = GeneratorConfig(rho=0.5, alpha=(0.7, 1.3, 0.9), alpha_scale=1.2, smooth_sigma=0.4, use_switches=False)
    config = _config(shadow=shadow.ShadowConfig(layer=3, weight=0.3, noise_twin=True, generator=options))
    nested = json.loads(json.dumps(config.to_json()))
    flat_shadow = {k: v for k, v in nested["shadow"].items() if k != "generator"} | nested["shadow"]["generator"]
    flat = nested | {"shadow": flat_shadow}
    assert train.TrainConfig.from_json(nested) == train.TrainConfig.from_json(flat) == config
    with pytest.raises(TypeError, match="from_a_newer_version"):
        train.TrainConfig.from_json(nested | {"shadow": nested["shadow"] | {"from_a_newer_version": 1}})


def test_an_unreadable_saved_config_stops_with_a_sentence(tmp_path):
    train_split, evals = _splits()
    train.fit(NET, _config(epochs=1), train_split, evals, str(tmp_path), figures=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["train"]["shadow"]["from_a_newer_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(train.TrainingError, match="holds settings this version cannot read.*new run directory"):
        train.fit(NET, _config(epochs=1), train_split, evals, str(tmp_path), figures=False)


def test_non_finite_loss_stops_with_a_sentence_and_keeps_the_last_checkpoint(tmp_path):
    train_split, evals = _splits()
    with pytest.raises(train.DivergedError, match=r"by step 3 \(epoch 1\) the training loss became NaN or infinite"):
        train.fit(
            NET, _config(learning_rate=1e12, schedule="constant"), train_split, evals, str(tmp_path), figures=False
        )
    assert internals.checkpoint_manager(str(tmp_path)).all_steps() == [0]
    assert train.read_metrics(str(tmp_path)) == []
    mark = json.loads((tmp_path / "DIVERGED").read_text())
    assert mark == {"step": 3, "epoch": 1, "cause": "the training loss became NaN or infinite", "last_sane_step": 0}


def test_evaluate_pads_the_last_batch_correctly():
    _, evals = _splits(n_eval=37)
    params = nets.init(jax.random.key(0), NET)
    config = _config()
    eval_fn = jax.jit(lambda p, s, i, m: internals.eval_step(NET, config.synthetic_config(NET), p, s, i, m))
    result = internals.evaluate(eval_fn, params, evals["test"], batch_size=10)
    logits, _ = nets.forward(NET, params, evals["test"].images)
    x_syn = shadow.twins(NET, params, evals["test"].images, config.synthetic_config(NET), None)
    np.testing.assert_allclose(result["error"], float(shadow.error_rate(logits, evals["test"].labels)), atol=1e-6)
    syn_error = float(shadow.error_rate(nets.forward(NET, params, x_syn)[0], evals["test"].labels))
    np.testing.assert_allclose(result["synthetic_error"], syn_error, atol=1e-6)
    np.testing.assert_allclose(result["loss"], float(shadow.cross_entropy(logits, evals["test"].labels)), rtol=1e-5)


def test_eval_uses_layer_three_or_the_top_when_shadow_is_off():
    backprop = _config(shadow=shadow.ShadowConfig(layer=0))
    assert backprop.synthetic_config(NET).layer == shadow.PAPER_LAYER == 3
    assert backprop.synthetic_config(nets.mnist_mlp(width=16, depth=2)).layer == 2
    sampled = shadow.ShadowConfig(layer=2, noise_twin=True, generator=GeneratorConfig(rho=0.5, alpha_scale=1.3))
    assert _config(shadow=sampled).synthetic_config(NET) == shadow.ShadowConfig(
        layer=2, generator=GeneratorConfig(alpha_scale=1.3)
    )  # No sampling, no placebo; the other generator options kept.


def test_learning_rate_schedule_warms_up_then_decays():
    schedule = internals.learning_rate_schedule(_config(epochs=10, warmup_epochs=1.0, learning_rate=0.1), 100)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(100)), 0.1, rtol=1e-6)
    assert float(schedule(999)) < 1e-3


def test_learning_rate_schedule_without_warm_up():
    cosine = internals.learning_rate_schedule(_config(epochs=10, warmup_epochs=0.0, learning_rate=0.1), 100)
    constant = internals.learning_rate_schedule(_config(epochs=10, schedule="constant", learning_rate=0.1), 100)
    np.testing.assert_allclose([float(cosine(0)), float(cosine(500))], [0.1, 0.05], rtol=1e-6)
    np.testing.assert_allclose([float(constant(0)), float(constant(5000))], [0.1, 0.1], rtol=1e-6)


def _tensorboard_scalars(folder) -> dict[str, list[int]]:
    """Tag -> steps, read from tensorboardX event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    steps = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        blob, offset = path.read_bytes(), 0
        while offset < len(blob):
            length = int.from_bytes(blob[offset : offset + 8], "little")
            event = event_pb2.Event.FromString(blob[offset + 12 : offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_tensorboard_scalars_sit_next_to_the_metrics(tmp_path):
    pytest.importorskip("tensorboardX", reason="TensorBoard scalars are written only when tensorboardX is installed")
    train_split, evals = _splits()
    _, history = train.fit(NET, _config(epochs=2), train_split, evals, str(tmp_path), figures=False)
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["test_error"] == [m["step"] for m in history] == [6, 12]
    assert {"train_loss", "test_synthetic_error", "learning_rate"} <= set(scalars)


def test_fit_in_memory_matches_fit_in_a_run_directory(tmp_path):
    train_split, evals = _splits()
    _, on_disk = train.fit(NET, _config(epochs=3), train_split, evals, str(tmp_path), figures=False)
    state, in_memory = train.fit_in_memory(NET, _config(epochs=3), train_split, evals)
    assert _learning_metrics(in_memory) == _learning_metrics(on_disk)
    assert int(state.step) == 18 and not list(tmp_path.glob("*.tmp"))


def test_fit_in_memory_takes_host_arrays_as_they_are():
    train_split, evals = _splits()
    as_numpy = lambda s: (np.asarray(s.images), np.asarray(s.labels).astype(np.int64))
    _, from_device = train.fit_in_memory(NET, _config(), train_split, evals)
    _, from_host = train.fit_in_memory(NET, _config(), as_numpy(train_split), {"test": as_numpy(evals["test"])})
    assert _learning_metrics(from_host) == _learning_metrics(from_device)


def test_fit_in_memory_stops_after_the_given_steps_mid_epoch():
    train_split, evals = _splits()
    state, history = train.fit_in_memory(NET, _config(epochs=3), train_split, evals, steps=8)
    assert int(state.step) == 8
    assert [(line["epoch"], line["step"]) for line in history] == [(1, 6), (2, 8)]
    _, full = train.fit_in_memory(NET, _config(epochs=3), train_split, evals)
    assert _learning_metrics(history)[0] == _learning_metrics(full)[0]  # The same first epoch as a full run's.


def test_fit_in_memory_calls_back_once_per_epoch():
    train_split, _ = _splits()
    seen = []
    train.fit_in_memory(NET, _config(), train_split, on_epoch=lambda state, line, history: seen.append(line["step"]))
    assert seen == [6, 12]


@pytest.mark.parametrize(
    "steps,split,message",
    [
        (0, None, r"steps=0 is outside the run's 1\.\.12 steps"),
        (13, None, r"steps=13 is outside"),
        (None, (np.zeros((8, 28, 28, 1), np.float32), np.zeros(7, np.int32)), "one label per image"),
        (None, (np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.float32)), "integer class indices"),
        (None, (np.zeros((8, 28, 28, 1), np.float32), np.full(8, 10, np.int32)), "labels run from 10 to 10 but"),
    ],
)
def test_fit_in_memory_refuses_bad_inputs_in_one_sentence(steps, split, message):
    train_split, _ = _splits()
    with pytest.raises(ValueError, match=message):
        train.fit_in_memory(NET, _config(), split or train_split, steps=steps)


def test_fit_refuses_labels_beyond_the_models_classes_before_writing_the_run(tmp_path):
    train_split, evals = _splits()
    evals = {"test": evals["test"]._replace(labels=evals["test"].labels.at[3].set(99))}
    with pytest.raises(ValueError, match="the test labels run from 0 to 99 but the model has 10 classes"):
        train.fit(NET, _config(), train_split, evals, str(tmp_path / "run"), figures=False)
    assert not (tmp_path / "run" / "config.json").exists()  # so the same folder takes the corrected run


def test_the_clip_records_where_it_acted_and_a_clip_never_reached_changes_nothing():
    train_split, evals = _splits()
    _, unclipped = train.fit_in_memory(NET, _config(), train_split, evals)
    _, never = train.fit_in_memory(NET, _config(grad_clip=1e9), train_split, evals)
    _, always = train.fit_in_memory(NET, _config(grad_clip=1e-6), train_split, evals)
    assert "train_clipped" not in unclipped[0]
    assert [line.pop("train_clipped") for line in never] == [0.0, 0.0]
    assert _learning_metrics(never) == _learning_metrics(unclipped)
    assert [line["train_clipped"] for line in always] == [1.0, 1.0]
    # The recorded norm is the gradient's before clipping: the first step's is the same, clipped or not.
    assert all(line["train_grad_norm"] > 1e-3 for line in always)


def test_the_grad_norm_is_the_global_norm_of_the_step_gradient():
    train_split, _ = _splits()
    config = _config(epochs=1, shadow=shadow.ShadowConfig())
    params = NET.init(jax.random.key(0))
    grads = jax.grad(
        lambda p: shadow.loss(
            NET, p, train_split.images[:16], train_split.labels[:16], config.shadow, jax.random.key(1)
        )[0]
    )(params)
    expected = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    assert float(train_steps.gradient_metrics(grads, 0.0)["grad_norm"]) == pytest.approx(expected, rel=1e-6)
    assert float(train_steps.gradient_metrics(grads, expected / 2)["clipped"]) == 1.0
    assert float(train_steps.gradient_metrics(grads, expected * 2)["clipped"]) == 0.0


def test_the_arm_name_tells_the_twin_statistics_variants_apart():
    """The name a run prints at its start and titles its figures with."""
    named = lambda **s: train.arm_name(train.TrainConfig(shadow=shadow.ShadowConfig(layer=3, **s)))
    assert named() == "SHADOW h3 w=1"
    assert named(twin_statistics="joint") == "SHADOW h3 w=1 stats=joint"
    assert named(twin_statistics="twin_updated", noise_twin=True) == "SHADOW h3 w=1 (noise twin) stats=twin_updated"
    assert train.arm_name(train.TrainConfig()) == "backprop"
