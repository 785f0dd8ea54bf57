"""One home per setting: each entry point's config is the record, its flags override fields of it, and a sweep
cell written as flags reads back as the same overrides."""

import dataclasses

import pytest
from absl import flags

from experiments import cli, runner, settings
from experiments.configs import cifar10 as cifar10_config
from experiments.configs import cifar10_airbench as airbench_config
from experiments.configs import cifar100 as cifar100_config
from experiments.configs import mnist as mnist_config
from rev_nets import errors, models, shadow, train

ENTRY_POINTS = {
    "mnist": (mnist_config.get_config, mnist_config.ROWS),
    "cifar10": (cifar10_config.get_config, cifar10_config.ROWS),
    "cifar100": (cifar100_config.get_config, cifar10_config.ROWS),
}


def parsed(rows, config, argv):
    """The overrides ``argv`` types, parsed by a fresh flag set defined from ``rows`` over ``config``."""
    values = flags.FlagValues()
    cli.define(rows, config, values)
    values(["prog", *argv])
    return cli.typed(rows, values)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_flag_names_a_field_of_the_record(name):
    get_config, own = ENTRY_POINTS[name]
    config = get_config()
    for row in (*settings.TRAINING, *own):
        train.config_field(config, row.path)  # Raises if the path is not a field.
    assert len({row.path for row in (*settings.TRAINING, *own)}) == len(settings.TRAINING) + len(own)


def test_the_library_record_is_off_and_the_experiments_set_the_papers_layer_once():
    assert train.TrainConfig().shadow.layer == 0 and not train.TrainConfig().shadow.enabled
    for get_config, _ in ENTRY_POINTS.values():
        assert get_config().train.shadow.layer == shadow.PAPER_LAYER == 3
    assert (mnist_config.get_config().train.epochs, cifar10_config.get_config().train.epochs) == (15, 12)
    assert (mnist_config.get_config().cpu_devices, cifar10_config.get_config().cpu_devices) == (1, 8)
    assert cifar100_config.get_config().model.arguments["num_classes"] == 100


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_no_typed_flag_leaves_the_record_as_it_is(name):
    get_config, own = ENTRY_POINTS[name]
    rows = (*settings.TRAINING, *own)
    assert parsed(rows, get_config(), []) == {}
    assert runner.configured(get_config(), {}) == get_config()


def test_typed_flags_override_their_fields_and_nothing_else():
    rows = (*settings.TRAINING, *cifar10_config.ROWS)
    typed = parsed(rows, cifar10_config.get_config(), ["--shadow_layer=2", "--channels=8,16", "--alpha=formula"])
    assert typed == {
        "train.shadow.layer": 2,
        "model.arguments.channels": [8, 16],
        "train.shadow.generator.alpha": "formula",
    }
    config = runner.configured(cifar10_config.get_config(), typed)
    assert config.train.shadow.layer == 2 and config.train.shadow.generator.alpha == "formula"
    assert config.model.arguments == {"channels": [8, 16], "num_classes": 10}
    assert dataclasses.replace(config.train, shadow=cifar10_config.get_config().train.shadow) == (
        cifar10_config.get_config().train
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.shadow.layer": 0, "train.dropout": 0.3, "train.learning_rate": 0.02, "train.seed": 2},
        {
            "train.shadow.noise_twin": True,
            "train.shadow.generator.alpha_scale": 1.9,
            "model.arguments.channels": [4, 4],
        },
        {
            "train.num_labels": 100,
            "train.steps": 60,
            "train.consistency.kind": "shadow",
            "train.consistency.weight": 0.3,
        },
        {"train.shadow.generator.alpha": None, "train.shadow.noise_twin": False, "num_validation": 1000},
        {"model.arguments": {"activation": "gelu", "widths": [8, 8, 8]}, "train.shadow.generator.plain_vjp": ("erfc",)},
    ],
)
def test_a_sweep_cell_as_flags_reads_back_as_the_same_overrides(overrides):
    rows = (*settings.TRAINING, *cifar10_config.ROWS)
    line = cli.command_line(rows, overrides)
    assert all(text.startswith("--") for text in line)
    assert parsed(rows, cifar10_config.get_config(), line) == overrides


def test_a_field_without_a_flag_is_named():
    with pytest.raises(errors.SettingError, match="train.nosuch has no flag"):
        cli.command_line(settings.TRAINING, {"train.nosuch": 1})


@pytest.mark.parametrize(
    "path,value,flag",
    [
        ("train.shadow.generator.rho", 1.5, "--sampling_rho"),
        ("train.shadow.generator.alpha_scale", float("nan"), "--alpha_scale"),
        ("train.shadow.generator.smooth_sigma", -1.0, "--smooth_sigma"),
        ("cpu_devices", 0, "--cpu_devices"),
        ("num_validation", -1, "--num_validation"),
    ],
)
def test_a_bad_value_is_refused_where_its_record_is_built_and_named_by_its_flag(path, value, flag):
    with pytest.raises(errors.SettingError) as caught:
        train.override(mnist_config.get_config(), {path: value})
    assert caught.value.setting == path
    text = cli.message((*settings.TRAINING, *mnist_config.ROWS), caught.value)
    assert text.startswith(f"{flag} ") and text.count(". ") == 0


def test_another_model_starts_from_its_own_arguments():
    typed = {"model.factory": "rev_nets.nnx_zoo:residual_cnn"}
    config = runner.configured(cifar10_config.get_config(), dict(typed))
    assert config.model == models.ModelConfig("rev_nets.nnx_zoo:residual_cnn", {})
    with pytest.raises(errors.SettingError, match="model.arguments.channels is an argument of rev_nets.nets:cifar_cnn"):
        runner.configured(cifar10_config.get_config(), typed | {"model.arguments.channels": [4]})


def test_bad_list_and_json_flags_are_one_sentence():
    rows = (*settings.TRAINING, *cifar10_config.ROWS)
    with pytest.raises(errors.SettingError, match="must be whole numbers"):
        parsed(rows, cifar10_config.get_config(), ["--channels=8,x"])
    with pytest.raises(errors.SettingError, match="must be a JSON object"):
        parsed(rows, cifar10_config.get_config(), ["--model_args=[1]"])
    with pytest.raises(errors.SettingError, match="'calibrated', 'formula', 'data' or a positive number"):
        parsed(rows, cifar10_config.get_config(), ["--alpha=big"])


def test_the_default_run_folder_keeps_its_name():
    config = mnist_config.get_config()
    assert runner.default_workdir(config, config).endswith("rev_nets_runs/mnist/shadow_h3_seed0")
    few = train.override(config, {"train.num_labels": 100, "train.consistency.kind": "shadow", "train.shadow.layer": 0})
    assert runner.default_workdir(few, config).endswith("mnist/labels100_backprop_consistency_shadow_seed0")
    other = train.override(config, {"model": models.ModelConfig("rev_nets.nnx_zoo:residual_cnn", {})})
    assert runner.default_workdir(other, config).endswith("mnist/residual_cnn_shadow_h3_seed0")
    # The two CIFAR-10 entry points' default runs keep apart.
    small, scale = cifar10_config.get_config(), airbench_config.get_config()
    assert runner.default_workdir(small, small).endswith("rev_nets_runs/cifar10/shadow_h3_seed0")
    assert runner.default_workdir(scale, scale).endswith("rev_nets_runs/cifar10/airbench_relu_shadow_h3_seed0")
