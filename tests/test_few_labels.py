"""Few-label training: the labelled subset, batches drawn with replacement, and the consistency loss on the rest."""

import dataclasses
import json
import re
import types

import chex
import conftest_data
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from entry_points import run_entry_point
from flax import nnx

from rev_nets import consistency, data, models, nets, shadow, train
from rev_nets.errors import SettingError
from rev_nets.generator import GeneratorConfig
from rev_nets.train import internals, rundir

NAN = float("nan")

NET = nets.mnist_mlp(width=12, depth=3)
PARAMS = NET.init(jax.random.key(0))
U = jax.random.normal(jax.random.key(1), (6, 28, 28, 1))


def _numbered_dataset(n: int, seed: int = 0) -> data.Dataset:
    """Images whose first two pixels spell their index, and balanced shuffled labels."""
    images = np.zeros((n, 28, 28, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    labels = np.random.default_rng(seed).permutation(np.arange(n) % 10).astype(np.int32)
    return data.Dataset(images, labels, tuple(map(str, range(10))))


def _ids(ds_images: np.ndarray) -> set[int]:
    return set((ds_images[:, 0, 0, 0].astype(int) * 256 + ds_images[:, 0, 1, 0]).tolist())


def test_label_subset_is_balanced_seeded_and_disjoint_from_validation():
    full = _numbered_dataset(600)
    portion, validation = data.split_validation(full, 100, seed=data.VALIDATION_SEED)
    indices = data.label_subset(portion.labels, 50, 10, seed=3)
    labelled, unlabelled = data.split_labels(portion, indices)
    assert np.bincount(labelled.labels, minlength=10).tolist() == [5] * 10
    assert _ids(labelled.images).isdisjoint(_ids(validation.images))
    assert _ids(labelled.images) | _ids(unlabelled) == _ids(portion.images)
    assert len(_ids(labelled.images) & _ids(unlabelled)) == 0 and len(unlabelled) == 450
    np.testing.assert_array_equal(indices, data.label_subset(portion.labels, 50, 10, seed=3))
    assert not np.array_equal(indices, data.label_subset(portion.labels, 50, 10, seed=4))
    # Larger subsets of one seed need not contain the smaller ones, but every draw stays inside the portion.
    assert indices.max() < len(portion.labels) and np.all(np.diff(indices) > 0)


@pytest.mark.parametrize(
    "num_labels,message",
    [(15, "must be a positive multiple of the 10 classes"), (0, "positive multiple"), (700, "give at most 600")],
)
def test_label_subset_refuses_impossible_counts(num_labels, message):
    labels = np.arange(600) % 10
    with pytest.raises(data.DataError, match=message):
        data.label_subset(labels, num_labels, 10, seed=0)


def test_sampled_batches_draw_with_replacement_inside_the_pool():
    rows = np.asarray(data.sampled_batches(jax.random.key(0), 7, num_batches=50, batch_size=20))
    assert rows.shape == (50, 20) and rows.min() == 0 and rows.max() == 6
    assert any(len(set(row)) < len(row) for row in rows)  # 20 draws from 7: repeats


def _numpy_forward(params, x):
    h = np.asarray(x).reshape(len(x), -1)
    for p in params["hidden"]:
        h = np.maximum(h @ np.asarray(p["w"]) + np.asarray(p["b"]), 0)
    return h @ np.asarray(params["head"]["w"]) + np.asarray(params["head"]["b"])


def _numpy_hidden(params, x, layer):
    h = np.asarray(x).reshape(len(x), -1)
    for p in params["hidden"][:layer]:
        h = np.maximum(h @ np.asarray(p["w"]) + np.asarray(p["b"]), 0)
    return h


def _numpy_twin(params, x, layer):
    """The MLP run backwards from h_layer with the calibrated alpha c / (fan_in mean(W^2)), c = 2 under a ReLU."""
    t = _numpy_hidden(params, x, layer)
    for i in range(layer, 0, -1):
        w = np.asarray(params["hidden"][i - 1]["w"], np.float64)
        relu = i > 1
        t = (2.0 if relu else 1.0) / (w.shape[0] * np.mean(w**2)) * t @ w.T
        t = np.maximum(t, 0) if relu else t
    return t.reshape(np.shape(x))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("layer", [1, 3])
def test_shadow_consistency_loss_matches_numpy(layer):
    config = consistency.ConsistencyConfig(kind="shadow", layer=layer)
    value, metrics = consistency.loss(NET, PARAMS, U, config, GeneratorConfig(), jax.random.key(2))
    twin = _numpy_twin(PARAMS, U, layer)
    generated = consistency.twins(NET, PARAMS, U, config, GeneratorConfig(), None)
    np.testing.assert_allclose(generated, twin, rtol=2e-4, atol=2e-5)
    p, q = _softmax(_numpy_forward(PARAMS, U)), _softmax(_numpy_forward(PARAMS, twin))
    np.testing.assert_allclose(value, np.mean((q - p) ** 2), rtol=2e-4)
    np.testing.assert_allclose(metrics["twin_agreement"], np.mean(q.argmax(-1) == p.argmax(-1)))
    np.testing.assert_allclose(metrics["twin_norm_ratio"], np.linalg.norm(twin) / np.linalg.norm(U), rtol=2e-4)


def test_gaussian_and_noise_twins():
    key = jax.random.key(5)
    gaussian = consistency.ConsistencyConfig(kind="gaussian", sigma=0.7)
    twin = consistency.twins(NET, PARAMS, U, gaussian, GeneratorConfig(), key)
    np.testing.assert_allclose(twin, U + 0.7 * jax.random.normal(key, U.shape), rtol=1e-6)
    noise = consistency.twins(NET, PARAMS, U, dataclasses.replace(gaussian, kind="noise"), GeneratorConfig(), key)
    generated = _numpy_twin(PARAMS, U, 3)
    energy = lambda d: np.linalg.norm(np.asarray(d).reshape(len(U), -1), axis=1)
    np.testing.assert_allclose(energy(noise - U), energy(generated - U), rtol=1e-4)  # matched energy, per example
    assert np.abs(np.asarray(noise) - generated).max() > 0.1  # ...but not the generated twin


def test_no_gradient_flows_through_the_twin_or_the_target():
    config = consistency.ConsistencyConfig(kind="shadow", layer=2)
    key = jax.random.key(3)
    grads = jax.grad(lambda p: consistency.loss(NET, p, U, config, GeneratorConfig(), key)[0])(PARAMS)
    twin = consistency.twins(NET, PARAMS, U, config, GeneratorConfig(), key)
    target = jax.nn.softmax(NET.forward(PARAMS, U)[0])

    def constant_twin_and_target(p):
        return jnp.mean((jax.nn.softmax(NET.forward(p, twin)[0]) - target) ** 2)

    def through_the_target(p):
        return jnp.mean((jax.nn.softmax(NET.forward(p, twin)[0]) - jax.nn.softmax(NET.forward(p, U)[0])) ** 2)

    chex.assert_trees_all_close(grads, jax.grad(constant_twin_and_target)(PARAMS), rtol=1e-5, atol=1e-8)
    leaks = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), grads, jax.grad(through_the_target)(PARAMS))
    assert max(jax.tree.leaves(leaks)) > 1e-6  # the stop matters: without it the gradient differs


def test_weight_ramps_up_over_the_first_30_percent():
    config = consistency.ConsistencyConfig(kind="shadow", weight=10.0)
    at = lambda step: float(consistency.weight_at(config, jnp.asarray(step), 1000))
    np.testing.assert_allclose([at(0), at(150), at(300), at(999)], 10 * np.exp([-5, -5 / 4, 0, 0]), rtol=1e-6)
    assert float(consistency.weight_at(dataclasses.replace(config, rampup=0.0), jnp.asarray(0), 1000)) == 10.0


def _few_label_config(**overrides):
    base = {
        "epochs": 3,
        "steps": 12,
        "batch_size": 16,
        "num_labels": 10,
        "log_every": 2,
        "shadow": shadow.ShadowConfig(layer=0),
        "consistency": consistency.ConsistencyConfig(kind="shadow", layer=2, weight=5.0),
    }
    return train.TrainConfig(**(base | overrides))


def _few_label_data(seed=0):
    rng = np.random.default_rng(seed)
    images = lambda n: jnp.asarray(rng.standard_normal((n, 28, 28, 1)), jnp.float32)
    labelled = (images(10), jnp.arange(10, dtype=jnp.int32))
    return labelled, images(40), {"test": (images(20), jnp.asarray(rng.integers(0, 10, 20), jnp.int32))}


def test_few_label_fit_runs_its_steps_and_resumes_to_the_same_numbers():
    labelled, unlabelled, evals = _few_label_data()
    config = _few_label_config()
    state, history = train.fit_in_memory(NET, config, labelled, evals, unlabelled=unlabelled)
    assert [line["step"] for line in history] == [4, 8, 12]  # steps / epochs per evaluation
    assert history[-1]["images_per_s"] > 0 and 0 < history[-1]["train_twin_agreement"] <= 1
    half, _ = train.fit_in_memory(NET, config, labelled, evals, unlabelled=unlabelled, steps=4)
    resumed, _ = train.fit_in_memory(NET, config, labelled, evals, unlabelled=unlabelled, state=half)
    chex.assert_trees_all_close(resumed.params, state.params)


def test_without_consistency_the_unlabelled_images_are_unused():
    labelled, unlabelled, evals = _few_label_data()
    config = _few_label_config(consistency=consistency.ConsistencyConfig())
    without, _ = train.fit_in_memory(NET, config, labelled, evals, unlabelled=unlabelled)
    alone, _ = train.fit_in_memory(NET, config, labelled, evals, unlabelled=unlabelled[:5])
    chex.assert_trees_all_close(without.params, alone.params)  # without consistency the unlabelled images are unused
    with_term, _ = train.fit_in_memory(NET, _few_label_config(), labelled, evals, unlabelled=unlabelled)
    assert not np.allclose(with_term.params["head"]["w"], without.params["head"]["w"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"num_labels": 15}, "num_labels must be a multiple of the 10 classes"),
        ({"steps": 13}, "steps must be a multiple of epochs=3"),
        ({"num_labels": 0}, "steps sets the length of a few-label run"),
        ({"consistency": consistency.ConsistencyConfig(kind="shadow", weight=-1.0)}, "consistency.weight must be >= 0"),
        ({"consistency": consistency.ConsistencyConfig(kind="shadow", weight=NAN)}, "consistency.weight must be >= 0"),
        ({"consistency": consistency.ConsistencyConfig(kind="gaussian", sigma=NAN)}, "consistency.sigma must be >= 0"),
        ({"consistency": consistency.ConsistencyConfig(kind="shadow", rampup=NAN)}, r"consistency.rampup must be"),
        ({"consistency": consistency.ConsistencyConfig(kind="mixup")}, "consistency.kind must be one of none, shadow"),
        ({"consistency": consistency.ConsistencyConfig(kind="noise", layer=4)}, "consistency.layer must be 1..3"),
        ({"steps": 0, "num_labels": 0}, "consistency.kind needs unlabelled images"),
    ],
)
def test_bad_few_label_settings_are_one_sentence(overrides, message):
    with pytest.raises(SettingError, match=f"^{message}"):
        _few_label_config(**overrides).check(NET)


def test_the_loop_refuses_a_train_split_of_another_size_or_no_unlabelled_images():
    labelled, unlabelled, evals = _few_label_data()
    with pytest.raises(train.TrainingError, match="num_labels=20 but the training split holds 10"):
        train.fit_in_memory(NET, _few_label_config(num_labels=20), labelled, evals, unlabelled=unlabelled)
    with pytest.raises(train.TrainingError, match="needs unlabelled images, and none were given"):
        train.fit_in_memory(NET, _few_label_config(), labelled, evals)


def test_every_batch_of_a_few_label_run_must_split_over_the_devices():
    eight = types.SimpleNamespace(size=8)
    config = _few_label_config(num_labels=100, batch_size=128)  # labelled 100 per step, unlabelled 128
    with pytest.raises(train.TrainingError, match=r"the labelled batch min\(batch_size, num_labels\)=100 must be a"):
        internals.steps_per_epoch(config, 100, eight, 500)
    unlabelled = _few_label_config(num_labels=40, batch_size=100)  # labelled 40 (splits), unlabelled 100 (does not)
    with pytest.raises(train.TrainingError, match="batch_size=100 must be a multiple of the 8 devices"):
        internals.steps_per_epoch(unlabelled, 40, eight, 500)
    supervised = _few_label_config(num_labels=200, batch_size=300, consistency=consistency.ConsistencyConfig())
    assert internals.steps_per_epoch(supervised, 200, eight, 500) == 4  # no unlabelled batch: only the labelled 200
    assert internals.steps_per_epoch(_few_label_config(num_labels=200, batch_size=128), 200, eight, 500) == 4


def test_a_consistency_generator_that_cannot_run_is_refused_when_checked():
    """The unlabelled twins' source layer is traced abstractly before any work, not only SHADOW's."""

    class TanhFirst(nnx.Module):  # layer 1 ends in tanh, which the generator refuses; layer 2 is plain ReLU
        def __init__(self, *, rngs):
            self.first, self.second = nnx.Linear(4, 6, rngs=rngs), nnx.Linear(4, 6, rngs=rngs)
            self.head = nnx.Linear(6, 2, rngs=rngs)
            self.depth, self.input_shape, self.num_classes = 2, (4,), 2

        def features(self, x, layer):
            return jnp.tanh(self.first(x)) if layer == 1 else nnx.relu(self.second(x))

        def __call__(self, x):
            return self.head(self.features(x, 2))

    model = models.nnx_model(TanhFirst)
    formula = shadow.ShadowConfig(layer=0, generator=GeneratorConfig(alpha="formula"))
    config = _few_label_config(num_labels=2, shadow=formula)
    config.check(model)  # from layer 2, as SHADOW's synthetic test data
    with pytest.raises(ValueError, match="tanh"):
        dataclasses.replace(config, consistency=consistency.ConsistencyConfig(kind="noise", layer=1)).check(model)


def test_config_json_records_the_code_and_a_check_by_other_code_changes_nothing(tmp_path):
    code = rundir.code_version()
    assert set(code) == {"commit", "dirty"}
    assert code["commit"] is None or len(code["commit"]) == 40
    record = {"train": train.TrainConfig().to_json(), "code": {"commit": "a" * 40, "dirty": False}}
    rundir.check_config(str(tmp_path), record)
    rundir.check_config(str(tmp_path), record | {"code": {"commit": "b" * 40, "dirty": True}})
    rundir.check_config(str(tmp_path), record | {"code": {"commit": "b" * 40, "dirty": True}})
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["code"] == {"commit": "a" * 40, "dirty": False}  # fit notes a resume once it has restored its step
    before = (tmp_path / "config.json").read_text()
    other = {"train": train.TrainConfig(num_labels=10).to_json(), "code": {"commit": "c" * 40, "dirty": False}}
    with pytest.raises(train.TrainingError, match="different settings"):
        rundir.check_config(str(tmp_path), other)
    assert (tmp_path / "config.json").read_text() == before  # a refused resume is not recorded


def test_saved_records_are_indented_json_with_lists_of_plain_values_on_one_line(tmp_path):
    path = tmp_path / "record.json"
    no_plain_lists = {"b": {"a": 1.5, "s": "x [1, 2]", "none": None, "empty": {}}, "a": [{"k": True}], "e": []}
    no_plain_lists["numbered"] = {2: {"x": -0.0}, 10: -1e300}  # keys written as json.dumps writes them
    rundir.write_record(str(path), no_plain_lists)
    assert path.read_text() == json.dumps(no_plain_lists, indent=2, sort_keys=True) + "\n"
    record = no_plain_lists | {"labelled_indices": list(range(4000)), "channels": (32, 64), "nested": [[1, 2], [3]]}
    rundir.write_record(str(path), record)
    text = path.read_text()
    assert json.loads(text) == json.loads(json.dumps(record))
    assert '  "labelled_indices": [0, 1, 2, 3,' in text and "    [1, 2],\n    [3]\n" in text
    assert len(text.splitlines()) == 26


def test_train_config_round_trips_through_json():
    config = _few_label_config()
    assert train.TrainConfig.from_json(config.to_json()) == config
    old = config.to_json()
    del old["consistency"], old["num_labels"], old["steps"]  # A run saved before few-label training existed.
    assert train.TrainConfig.from_json(old).consistency == consistency.ConsistencyConfig()


@pytest.fixture(scope="module")
def few_label_data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("few_label_data")
    conftest_data.write_idx_dataset(root / "mnist", n_train=120, n_test=30, seed=4)
    files, _ = conftest_data.cifar10_files(n_per_batch=20, seed=5)
    conftest_data.write_folder(root / "cifar-10-batches-py", files)
    return root


TINY = {
    "mnist": ["--width=16", "--num_validation=20"],
    "cifar10": ["--channels=4,4,4", "--num_validation=20"],
}


@pytest.mark.parametrize(
    "module,flags",
    [
        ("mnist", ["--shadow_layer=0", "--consistency=shadow", "--consistency_layer=2", "--consistency_weight=3"]),
        ("mnist", ["--shadow_layer=3", "--consistency=noise"]),
        ("mnist", ["--shadow_layer=0", "--consistency=gaussian", "--consistency_sigma=0.5"]),
        ("cifar10", ["--shadow_layer=3", "--consistency=shadow"]),
    ],
)
def test_few_label_flags_run_one_short_run(module, flags, few_label_data_dir, tmp_path):
    common = [f"--data_dir={few_label_data_dir}", f"--workdir={tmp_path}", "--batch_size=8", "--epochs=2"]
    result = run_entry_point(module, *common, "--num_labels=20", "--steps=6", *flags, *TINY[module])
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "config.json").read_text()
    config = json.loads(text)
    indices = config["labelled_indices"]
    assert f'  "labelled_indices": {json.dumps(indices)},\n' in text  # one line, not one per index
    assert len(indices) == 20 and config["train"]["num_labels"] == 20 and config["num_validation"] == 20
    assert config["train"]["consistency"]["kind"] == flags[1].split("=")[1]
    for flag in flags[2:]:
        name, value = flag[2:].split("=")
        assert config["train"]["consistency"][name.removeprefix("consistency_")] == float(value)
    assert config["code"]["commit"] is None or len(config["code"]["commit"]) == 40
    lines = train.read_metrics(str(tmp_path))
    assert [line["step"] for line in lines] == [3, 6] and 0 <= lines[-1]["train_consistency"] < 1


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--num_labels=15"], "multiple of the 10 classes"),
        (["--num_labels=990"], r"needs 99 labelled images of class \d, but .* hold \d+; give at most \d+"),
        (["--num_labels=20", "--consistency=shadow", "--consistency_weight=-1"], "consistency_weight must be >= 0"),
        (["--num_labels=20", "--consistency=mixup"], "consistency must be one of none, shadow, noise, gaussian"),
        (["--consistency=shadow"], "--consistency needs unlabelled images: give num_labels"),
    ],
)
def test_bad_few_label_flags_stop_with_one_sentence_before_any_work(flags, message, few_label_data_dir, tmp_path):
    workdir = tmp_path / "run"
    flags = [f"--data_dir={few_label_data_dir}", f"--workdir={workdir}", *flags, *TINY["mnist"]]
    result = run_entry_point("mnist", *flags)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not workdir.exists()
