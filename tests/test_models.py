"""Models as records and the models built from them: the built-in nets, Flax NNX modules, flax.linen modules;
training them, reading their runs back, the CLI."""

import json
from collections.abc import Sequence
from pathlib import Path

import chex
import conftest_data
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from entry_points import run_entry_point
from flax import linen, nnx

from rev_nets import consistency, data, generator, models, nets, shadow, train
from rev_nets.errors import InputError, SettingError
from rev_nets.generator import GeneratorConfig
from rev_nets.nnx_zoo import ResidualCNN
from rev_nets.train import rundir

ROOT = Path(__file__).resolve().parents[1]
ZOO = "rev_nets.nnx_zoo:residual_cnn"
ARCHIVED = ROOT / "results" / "mnist" / "backprop_lr0.05_seed0"  # a run saved with its net's repr, no checkpoints


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    conftest_data.make_data_dir(root)
    return root


def tiny_residual(*, rngs, dropout=0.0):
    return ResidualCNN((2, 3), 4, (8, 8, 3), dropout, rngs=rngs)


class Counter(nnx.Variable):
    """State that is neither a parameter nor a BatchNorm statistic: training would not know how to update it."""


class NestedCounter(nnx.Module):
    def __init__(self, *, rngs):
        self.inner = WithCounter(rngs=rngs)
        self.depth, self.input_shape, self.num_classes = 1, (8, 8, 3), 4

    def features(self, x, layer):
        return nnx.relu(x)


class WithCounter(nnx.Module):
    def __init__(self, *, rngs):
        self.calls = Counter(jnp.zeros(()))
        self.depth, self.input_shape, self.num_classes = 1, (8, 8, 3), 4

    def features(self, x, layer):
        return nnx.relu(x)


class LooseStatistics(nnx.Module):
    """Batch statistics outside an nnx.BatchNorm: their update rule (momentum) is unknown."""

    def __init__(self, *, rngs):
        self.mean = nnx.BatchStat(jnp.zeros((3,)))
        self.depth, self.input_shape, self.num_classes = 1, (8, 8, 3), 4

    def features(self, x, layer):
        return nnx.relu(x - self.mean[...])


class DroppedLogits(nnx.Module):
    """Dropout on the logits: in training each logit is 0 or twice the deterministic one."""

    def __init__(self, *, rngs, rate=0.5):
        self.dense = nnx.Linear(8 * 8 * 3, 10, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.depth, self.input_shape, self.num_classes = 1, (8, 8, 3), 10

    def features(self, x, layer):
        return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        return self.drop(self.features(x, 1))


class LinenCNN(linen.Module):
    """``conv 3x3 -> ReLU -> 2x2 max pool`` per stage, dropout, a dense head: ``nets.cifar_cnn`` in linen."""

    channels: Sequence[int] = (2, 3)
    num_classes: int = 4
    input_shape: Sequence[int] = (8, 8, 3)
    dropout: float = 0.0

    @property
    def depth(self) -> int:
        return len(self.channels)

    def setup(self):
        self.convs = [linen.Conv(c, (3, 3)) for c in self.channels]
        self.drop = linen.Dropout(self.dropout)
        self.head = linen.Dense(self.num_classes)

    def features(self, x, layer):
        h = x
        for conv in self.convs[:layer]:
            h = linen.max_pool(linen.relu(conv(h)), (2, 2), strides=(2, 2))
        return h

    def __call__(self, x, *, train=False):
        h = self.features(x, self.depth)
        return self.head(self.drop(h.reshape(h.shape[0], -1), deterministic=not train))


class LinenWithBatchStats(linen.Module):
    depth, input_shape, num_classes = 1, (8, 8, 3), 4

    def features(self, x, layer):
        return x

    @linen.compact
    def __call__(self, x):
        return linen.Dense(4)(linen.BatchNorm(use_running_average=True)(x).reshape(x.shape[0], -1))


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 3)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


def test_an_nnx_model_is_a_pure_model_whose_params_are_its_nnx_params():
    model = models.nnx_model(tiny_residual)
    params = model.init(jax.random.key(0))
    module = tiny_residual(rngs=nnx.Rngs(0))
    x, _ = _batch()
    logits, hiddens, stats = model.forward(params, x)
    np.testing.assert_allclose(logits, module(x), rtol=1e-6)
    assert hiddens is None and stats is None and model.depth == 2 and model.num_classes == 4
    np.testing.assert_allclose(model.features(params, x, 2), module.features(x, 2), rtol=1e-6)
    assert models.param_count(model) == sum(a.size for a in jax.tree.leaves(nnx.state(module, nnx.Param)))
    assert model == models.nnx_model(tiny_residual) and hash(model) == hash(models.nnx_model(tiny_residual))
    listed = models.nnx_model(ZOO, channels=[2, 2, 2])  # JSON arguments keep a model hashable
    assert hash(listed) == hash(models.nnx_model(ZOO, channels=[2, 2, 2]))


def test_shadow_on_an_nnx_model_generates_from_its_features_and_stops_gradients():
    model = models.nnx_model(tiny_residual)
    params = model.init(jax.random.key(0))
    x, y = _batch()
    config = shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="data"))
    key = jax.random.key(1)
    value, (metrics, _) = shadow.loss(model, params, x, y, config, key)
    x_syn = generator.twins(model, params, x, 2, alpha="data", key=jax.random.split(key, 3)[2])
    logits_syn = model.forward(params, x_syn).logits
    np.testing.assert_allclose(metrics["ce_synthetic"], shadow.cross_entropy(logits_syn, y), rtol=1e-5)
    grads = jax.grad(lambda p: shadow.loss(model, p, x, y, config, key)[0])(params)
    on_fixed = lambda p: (
        (shadow.cross_entropy(model.forward(p, x)[0], y) + shadow.cross_entropy(model.forward(p, x_syn)[0], y)) / 2
    )
    chex.assert_trees_all_close(grads, jax.grad(on_fixed)(params), rtol=1e-4, atol=1e-6)
    assert np.isfinite(float(value))


def test_fit_in_memory_trains_an_nnx_model_with_alphas_fitted_once_per_epoch(monkeypatch):
    model = models.nnx_model(tiny_residual)
    x, y = _batch(64)
    fitted = shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="data"))
    config = train.TrainConfig(epochs=2, batch_size=16, learning_rate=0.02, shadow=fitted)
    fits = []
    make_fit = train.steps.make_alpha_fit

    def counting(*args):
        fit = make_fit(*args)
        return lambda *a: fits.append(1) or fit(*a)

    monkeypatch.setattr(train.loop, "make_alpha_fit", counting)
    state, history = train.fit_in_memory(model, config, (x, y), {"test": (x, y)})
    assert len(history) == 2 and len(fits) == 2  # one fit per epoch, not per step
    assert all(np.isfinite(line["train_loss"]) for line in history)
    assert isinstance(state.params, nnx.State)


def test_an_nnx_models_own_dropout_masks_with_the_step_key_and_is_off_without_one():
    model = models.nnx_model(DroppedLogits)
    params = model.init(jax.random.key(0))
    x, _ = _batch(64)
    deterministic = np.asarray(model.forward(params, x)[0])
    dense = jax.tree.map(np.asarray, params["dense"])
    np.testing.assert_allclose(
        deterministic, np.maximum(x.reshape(64, -1) @ dense["kernel"] + dense["bias"], 0), rtol=1e-5, atol=1e-6
    )
    key = jax.random.key(7)
    dropped = np.asarray(model.forward(params, x, key=key)[0])
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * deterministic[kept], rtol=1e-6)  # kept logits scaled by 1/(1-rate)
    assert 0.4 < kept[deterministic > 0].mean() < 0.6
    np.testing.assert_array_equal(dropped, model.forward(params, x, key=key)[0])  # the key fixes the mask
    assert not np.array_equal(dropped, model.forward(params, x, key=jax.random.key(8))[0])
    jitted = jax.jit(lambda p, x, k: model.forward(p, x, key=k)[0])(params, x, key)
    np.testing.assert_allclose(jitted, dropped, rtol=1e-6)
    np.testing.assert_allclose(
        model.features(params, x, 1), deterministic, rtol=1e-6
    )  # the generator's map: no dropout
    assert jax.tree.structure(params) == jax.tree.structure(nnx.state(DroppedLogits(rngs=nnx.Rngs(0)), nnx.Param))


def test_an_nnx_model_with_dropout_trains_with_shadow_and_dropout_changes_the_run():
    x, y = _batch(64)
    fitted = shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="data"))
    config = train.TrainConfig(epochs=2, batch_size=16, learning_rate=0.02, shadow=fitted)
    histories = {
        rate: train.fit_in_memory(models.nnx_model(tiny_residual, dropout=rate), config, (x, y), {"test": (x, y)})[1]
        for rate in (0.0, 0.5)
    }
    assert all(np.isfinite(line["train_loss"]) for line in histories[0.5])
    assert histories[0.5][0]["train_loss"] != histories[0.0][0]["train_loss"]  # the rate reached training


def test_nnx_models_with_state_other_than_params_and_batchnorm_statistics_are_refused_by_name():
    with pytest.raises(
        ValueError,
        match=r"holds state other than nnx.Param, BatchNorm statistics, models.Constant .*\(calls: Counter\)",
    ):
        models.nnx_model(WithCounter)
    with pytest.raises(ValueError, match=r"\(inner.calls: Counter\); make it a parameter or a constant"):
        models.nnx_model(NestedCounter)
    with pytest.raises(ValueError, match="batch statistics at mean outside an nnx.BatchNorm"):
        models.nnx_model(LooseStatistics)


@pytest.mark.parametrize(
    "spec,message",
    [("rev_nets.nnx_zoo", "must be package.module:factory"), ("no_such_module:f", "cannot import"),
     ("rev_nets.nnx_zoo:missing", "has no callable")],
)  # fmt: skip
def test_bad_factory_names_are_one_sentence(spec, message):
    with pytest.raises(ValueError, match=message):
        models.nnx_model(spec)


def test_a_model_config_is_hashable_json_that_reads_back():
    record = models.ModelConfig("pkg.mod:f", {"b": (1, 2), "a": {"c": None}})
    assert record == models.ModelConfig("pkg.mod:f", {"a": {"c": None}, "b": [1, 2]})
    assert hash(record) == hash(models.ModelConfig("pkg.mod:f", {"a": {"c": None}, "b": [1, 2]}))
    assert record.to_json() == {"factory": "pkg.mod:f", "arguments": {"a": {"c": None}, "b": [1, 2]}}
    assert models.ModelConfig.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert record.keywords == {"a": {"c": None}, "b": [1, 2]}
    with pytest.raises(InputError, match="arguments must be JSON values"):
        models.ModelConfig("pkg.mod:f", {"act": jax.nn.relu})


def test_a_built_in_net_records_its_factory_and_the_record_rebuilds_it():
    net = nets.cifar_cnn((4, 8), num_classes=4, input_shape=(8, 8, 3))
    arguments = {"channels": [4, 8], "input_shape": [8, 8, 3], "num_classes": 4}
    assert net.record == models.ModelConfig("rev_nets.nets:cifar_cnn", arguments)
    rebuilt = models.build_model(net.record)
    assert rebuilt == net and rebuilt.record == net.record and hash(rebuilt) == hash(net)
    assert models.build_model("rev_nets.nets:cifar_cnn", **arguments).record == net.record
    assert "record" not in repr(net)  # The repr stays the description old config.json files hold.
    assert rundir.model_record(net) == {"model": {"factory": "rev_nets.nets:cifar_cnn", "arguments": arguments}}
    by_hand = nets.Net(net.layers, 4, (8, 8, 3))
    assert by_hand == net and by_hand.record is None
    with pytest.raises(train.TrainingError, match="has no record .* models.build"):
        rundir.model_record(by_hand)


def test_build_makes_each_kind_of_model_from_its_factory():
    assert models.build_model(tiny_residual) == models.nnx_model(tiny_residual)
    assert isinstance(models.build_model(tiny_residual), models.NnxModel)
    linen_model = models.build_model(LinenCNN, channels=[2, 3])
    assert isinstance(linen_model, models.LinenModel) and linen_model == models.linen_model(LinenCNN, channels=[2, 3])
    assert linen_model.record == models.ModelConfig("test_models:LinenCNN", {"channels": [2, 3]})

    def wrapped():  # A factory of its own that returns a built-in net: the net is recorded by this factory.
        return nets.mnist_mlp(width=4)

    assert models.build_model(wrapped).record == models.ModelConfig(models.factory_name(wrapped), {})
    with pytest.raises(InputError, match="returned a int, not a model"):
        models.build_model(lambda: 3)
    with pytest.raises(InputError, match="holds variables other than params \\(batch_stats\\)"):
        models.build_model(LinenWithBatchStats)


def test_a_linen_model_is_the_equivalent_net_forward_and_backward():
    """A linen CNN given a built-in net's weights: the same logits, and the same twins from every layer."""
    net = nets.cifar_cnn((2, 3), num_classes=4, input_shape=(8, 8, 3))
    model = models.linen_model(LinenCNN)
    net_params = net.init(jax.random.key(0))
    params = {f"convs_{i}": {"kernel": p["w"], "bias": p["b"]} for i, p in enumerate(net_params["hidden"])}
    params["head"] = {"kernel": net_params["head"]["w"], "bias": net_params["head"]["b"]}
    assert jax.tree.structure(params) == jax.tree.structure(model.init(jax.random.key(1)))
    x, _ = _batch()
    np.testing.assert_allclose(model.forward(params, x)[0], net.forward(net_params, x)[0], rtol=1e-4, atol=1e-5)
    assert model.forward(params, x)[1] is None and (model.depth, model.num_classes) == (2, 4)
    for layer in (1, 2):
        np.testing.assert_allclose(
            generator.twins(model, params, x, layer), generator.twins(net, net_params, x, layer), rtol=1e-4, atol=1e-5
        )


def test_a_linen_model_trains_with_shadow_and_drops_out_with_the_step_key():
    model = models.linen_model(LinenCNN, dropout=0.5)
    x, y = _batch(16)
    params = model.init(jax.random.key(0))
    key = jax.random.key(3)
    dropped = model.forward(params, x, key=key)[0]
    np.testing.assert_array_equal(dropped, model.forward(params, x, key=key)[0])  # the key fixes the mask
    assert not np.allclose(dropped, model.forward(params, x)[0])  # no key: deterministic, no dropout
    np.testing.assert_allclose(model.forward(params, x)[0], models.linen_model(LinenCNN).forward(params, x)[0])
    config = train.TrainConfig(epochs=1, batch_size=8, shadow=shadow.ShadowConfig(layer=2))
    state, history = train.fit_in_memory(model, config, (x, y), {"test": (x, y)}, steps=1)
    assert int(state.step) == 1 and np.isfinite(history[0]["train_loss"]) and history[0]["train_ce_synthetic"] > 0
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    assert not np.allclose(state.params["head"]["kernel"], params["head"]["kernel"])


def test_load_run_reads_an_archived_run_of_a_built_in_net():
    run = train.load_run(str(ARCHIVED))
    saved = json.loads((ARCHIVED / "config.json").read_text())
    assert run.model == nets.mnist_mlp() and run.config["net"] == saved["net"]
    assert run.config["train"] == train.TrainConfig.from_json(saved["train"]) and run.config["dataset"] == "mnist"
    assert run.metrics == rundir.read_metrics(str(ARCHIVED)) and run.metrics[-1]["epoch"] == saved["train"]["epochs"]
    assert run.steps == ()
    with pytest.raises(InputError, match="holds no checkpoints"):
        run.params()


@pytest.mark.parametrize(
    "model",
    [models.nnx_model(tiny_residual), models.linen_model(LinenCNN)],
    ids=["nnx", "linen"],
)
def test_load_run_gives_back_what_a_run_of_a_model_of_ones_own_trained(model, tmp_path):
    x, y = _batch(32)
    split = data.DeviceSplit(jnp.asarray(x), jnp.asarray(y))
    formula = shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="formula"))
    config = train.TrainConfig(epochs=2, batch_size=16, shadow=formula)
    state, history = train.fit(model, config, split, {"test": split}, str(tmp_path), figures=False)
    recorded = json.loads((tmp_path / "config.json").read_text())["model"]
    assert recorded == model.record.to_json() and model.record.factory.startswith("test_models:")
    with pytest.raises(InputError, match=f"pass factory='{model.record.factory}' to read the run"):
        train.load_run(str(tmp_path))  # Its module is not imported unless the reader names it.
    run = train.load_run(str(tmp_path), factory=model.record.factory)
    assert run.model == model and run.config["model"] == model.record and run.config["train"] == config
    assert run.steps == (0, 2, 4) and [line["step"] for line in run.metrics] == [line["step"] for line in history]
    chex.assert_trees_all_equal(run.params(0), model.init(jax.random.key(config.seed)))
    chex.assert_trees_all_equal(run.params(), jax.device_get(state.params))
    with pytest.raises(InputError, match="no checkpoint of step 3; its saved steps are \\[0, 2, 4\\]"):
        run.params(3)


def test_the_cifar10_entry_point_trains_an_nnx_model_and_reversibility_reads_it(data_dir, tmp_path):
    run = tmp_path / "run"
    flags = [f"--data_dir={data_dir}", f"--workdir={run}", "--epochs=1", "--batch_size=8", "--num_validation=10"]
    model_flags = [f"--model={ZOO}", '--model_args={"channels": [2, 2, 2], "dropout": 0.25}', "--alpha=data"]
    result = run_entry_point("cifar10", *flags, *model_flags)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"factory": ZOO, "arguments": {"channels": [2, 2, 2], "dropout": 0.25}}
    assert "net" not in config
    assert config["train"]["shadow"]["generator"]["alpha"] == "data"
    assert (run / "figures" / "synthetic_images.png").stat().st_size > 1000
    read = [
        f"--run={run}",
        f"--data_dir={data_dir}",
        "--num_images=16",
        "--control_trials=8",
        f"--workdir={tmp_path / 'rev'}",
    ]
    analysed = run_entry_point("reversibility", *read)  # A built-in factory is imported without --model.
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    rows = json.loads((tmp_path / "rev" / "reversibility.json").read_text())["rows"]
    assert {row["layer"] for row in rows if row["net"].startswith("trained")} == {1, 2, 3}


def test_a_researchers_own_resnet_with_batchnorm_trains_with_shadow_through_the_entry_point(
    data_dir, tmp_path, monkeypatch
):
    """docs/examples/resnet_bn.py, plain Flax NNX on PYTHONPATH (strided convolutions, projection shortcuts,
    BatchNorm after each, global average pooling): SHADOW from its last stage trains it through --model, and the
    run's checkpoint carries its trained running statistics beside the params."""
    examples = str(ROOT / "docs" / "examples")
    monkeypatch.setenv("PYTHONPATH", examples)
    monkeypatch.syspath_prepend(examples)
    run = tmp_path / "run"
    flags = [f"--data_dir={data_dir}", f"--workdir={run}", "--epochs=1", "--batch_size=8", "--num_validation=10"]
    model_flags = ["--model=resnet_bn:resnet", '--model_args={"widths": [4, 8, 8], "blocks": 2}', "--alpha=formula"]
    result = run_entry_point("cifar10", *flags, *model_flags, "--shadow_layer=3")
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = train.load_run(str(run), factory="resnet_bn:resnet")
    line = loaded.metrics[-1]
    assert np.isfinite([line["test_error"], line["test_synthetic_error"], line["train_ce_synthetic"]]).all()
    assert line["train_norm_ratio"] > 0  # the twins are made and trained on
    stats = [nnx.filter_state(loaded.params(step), nnx.BatchStat) for step in (0, loaded.steps[-1])]
    trained, initial = jax.tree.leaves(stats[1]), jax.tree.leaves(stats[0])
    assert len(trained) == 2 * (1 + 2 * 6 + 2)  # means and variances: the stem, 2 per block, 2 projections
    assert all(np.isfinite(t).all() for t in trained)
    assert all(not np.allclose(t, i) for t, i in zip(trained, initial))


@pytest.mark.parametrize(
    "flag,message",
    [("--alpha=big", "--alpha must be 'calibrated', 'formula', 'data' or a positive number"), ("--model_args=[1]", "--model_args must be a JSON object, got '[1]'"),
     ('--channels=8 --model=rev_nets.nnx_zoo:residual_cnn', "--channels is an argument of rev_nets.nets:cifar_cnn"),
     (f"--model={ZOO} --model_args=[1]", "must be a JSON object"),
     ("--model=rev_nets.nnx_zoo", "must be package.module:factory")],
)  # fmt: skip
def test_bad_model_flags_stop_before_any_work(flag, message, tmp_path):
    result = run_entry_point("cifar10", *flag.split(" "), f"--workdir={tmp_path}")
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "config.json").exists()


def test_calibrated_alpha_of_the_residual_model_is_refused_with_the_fix():
    model = models.nnx_model(tiny_residual)
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="residual sum.*alpha='formula'"):
        generator.twins(model, params, jnp.zeros((2, 8, 8, 3)), 1)


def test_dropout_on_an_nnx_model_is_refused_when_checked():
    formula = shadow.ShadowConfig(layer=3, generator=GeneratorConfig(alpha="formula"))
    with pytest.raises(
        SettingError, match="^dropout must be 0 for an NNX or linen model, which drops out with its own"
    ):
        train.TrainConfig(dropout=0.3, shadow=formula).check(models.nnx_model(tiny_residual))


def test_a_config_whose_generator_cannot_run_is_refused_when_checked():
    """Checked abstractly (nothing computed): backprop runs need the generator too, for their synthetic test error."""
    model = models.nnx_model(tiny_residual)
    with pytest.raises(ValueError, match="residual sum"):
        train.TrainConfig(shadow=shadow.ShadowConfig(layer=0)).check(model)
    train.TrainConfig(shadow=shadow.ShadowConfig(layer=0, generator=GeneratorConfig(alpha="data"))).check(model)


def test_an_nnx_model_trains_from_few_labels_with_shadow_consistency():
    model = models.nnx_model(tiny_residual)
    x, y = _batch(64)
    config = train.TrainConfig(
        epochs=2,
        steps=4,
        batch_size=16,
        num_labels=8,
        shadow=shadow.ShadowConfig(layer=0, generator=GeneratorConfig(alpha="formula")),
        consistency=consistency.ConsistencyConfig(kind="shadow", layer=2),
    )
    labelled = (x[:8], jnp.arange(8, dtype=jnp.int32) % 4)
    _, history = train.fit_in_memory(model, config, labelled, {"test": (x, y)}, unlabelled=x[8:])
    assert [line["step"] for line in history] == [2, 4]
    assert all(np.isfinite(line["train_consistency"]) and line["train_consistency"] > 0 for line in history)


class DropoutWithoutStream(nnx.Module):
    def __init__(self, *, rngs):
        self.linear, self.dropout = nnx.Linear(4, 3, rngs=rngs), nnx.Dropout(0.5)  # no rngs: nothing to draw from
        self.depth, self.input_shape, self.num_classes = 1, (4,), 3

    def features(self, x, layer):
        return nnx.relu(self.linear(x))

    def __call__(self, x):
        return self.dropout(self.linear(x))


def test_a_module_whose_dropout_has_no_stream_is_refused_before_training_in_one_sentence():
    model = models.nnx_model(DropoutWithoutStream)
    with pytest.raises(
        InputError, match=r"^model .*DropoutWithoutStream draws random numbers in training .*rngs=rngs\.$"
    ):
        train.TrainConfig(epochs=1).check(model)


class StreamAtCall(DropoutWithoutStream):
    def __call__(self, x, *, rngs):  # NNX's call-time idiom: streams passed in the call
        return self.dropout(self.linear(x), rngs=rngs)


def test_a_module_that_asks_for_rngs_when_called_is_refused_before_training_in_one_sentence():
    model = models.nnx_model(StreamAtCall)
    with pytest.raises(InputError, match=r"^model .*StreamAtCall asks for rngs when called .*rngs=rngs in __init__"):
        train.TrainConfig(epochs=1).check(model)
