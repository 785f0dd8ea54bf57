"""The one runner behind ``experiments.mnist``, ``experiments.cifar10`` and ``experiments.cifar100``.

Each entry point supplies its dataset, its net and its defaults; this module
defines the shared flags, checks them before any work, and calls
``rev_nets.train.train_and_evaluate``. ``--model=package.module:factory``
trains a Flax NNX model instead of the entry point's net.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

from absl import flags

from experiments import cli
from rev_nets import consistency, data, generator, models, nets, shadow, train
from rev_nets.errors import setting_scope


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A dataset (or how to read it from the flags), how to build its net from the flags, its default flag values."""

    dataset: str | Callable[[], str]
    build_net: Callable[[], nets.Net]
    defaults: dict

    def dataset_name(self) -> str:
        return self.dataset if isinstance(self.dataset, str) else self.dataset()


CIFAR_DEFAULTS = {
    "epochs": 12,
    "batch_size": 128,
    "learning_rate": 0.05,
    "warmup_epochs": 1.0,
    "num_validation": 5000,
    "cpu_devices": 8,
}  # CIFAR-10 and CIFAR-100 share the net, the schedule and the CPU split.

FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "shadow_layer", shadow.PAPER_LAYER, "SHADOW source layer: 0 = plain backprop, 1..depth = generate from h<layer>."
)
flags.DEFINE_float("shadow_weight", 1.0, "Loss weight w of the synthetic examples: (CE_real + w CE_syn) / (1 + w).")
flags.DEFINE_float("sampling_rho", 1.0, "Keep-probability of the sampling mask during generation (1 = off).")
flags.DEFINE_float("smooth_sigma", 0.0, "Gaussian blur of synthetic images, in pixels (0 = off).")
flags.DEFINE_string(
    "alpha",
    "calibrated",
    "Generator scale: 'calibrated' (c / (rho fan_in mean(W^2)) per linear map, refused after a residual sum), "
    "'formula' (that formula on every map), 'data' (fitted on a batch at each epoch's start, then frozen), "
    "or one number for every map.",
)
cli.shared_flag(
    flags.DEFINE_string,
    "model",
    None,
    "Train a Flax NNX model instead of the built-in net: package.module:factory, called as "
    "factory(rngs=nnx.Rngs(seed), **--model_args), e.g. rev_nets.nnx_zoo:residual_cnn.",
)
flags.DEFINE_string(
    "model_args", "{}", "Keyword arguments of --model's factory, as a JSON object: '{\"channels\": [32, 64]}'."
)
flags.DEFINE_float("alpha_scale", 1.0, "Multiplies every layer's alpha; synthetic inputs scale by alpha_scale**layer.")
flags.DEFINE_float(
    "shadow_start_epoch",
    0.0,
    "Epochs of plain backprop before the synthetic examples enter the loss (0 = from the start).",
)
flags.DEFINE_boolean("noise_twin", False, "Placebo: real input + Gaussian noise of the synthetic input's energy.")
flags.DEFINE_integer(
    "num_labels",
    0,
    "Few-label training: keep this many training labels, balanced per class and drawn with --seed from the "
    "images outside the validation split; the others become the unlabelled set. 0 = every label.",
)
flags.DEFINE_integer(
    "steps",
    0,
    "Length of a few-label run in steps, evaluated and checkpointed every steps/epochs steps "
    "(0 = as many steps as --epochs full-data epochs).",
)
flags.DEFINE_string(
    "consistency",
    "none",
    f"Unlabelled term (needs --num_labels), one of {'|'.join(consistency.KINDS)}: the squared difference of the "
    "softmax on an unlabelled image and on its twin from h<consistency_layer> (shadow), a matched-energy noise "
    "twin (noise), or x + N(0, consistency_sigma^2) (gaussian).",
)
flags.DEFINE_integer("consistency_layer", shadow.PAPER_LAYER, "Source layer of the consistency twin (shadow, noise).")
flags.DEFINE_float(
    "consistency_weight", 10.0, "Weight of the consistency term, reached after a ramp-up over the first 30% of steps."
)
flags.DEFINE_float("consistency_sigma", 0.3, "Noise std of --consistency=gaussian, in standardised pixel units.")
flags.DEFINE_float("dropout", 0.0, "Dropout rate on every hidden layer during training.")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Real examples per step (SHADOW adds as many synthetic ones).")
flags.DEFINE_float("learning_rate", 0.05, "Peak learning rate.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "SGD with momentum 0.9, or Adam.")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule after warm-up.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear learning-rate warm-up, in epochs.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled L2 weight decay.")
flags.DEFINE_float("grad_clip", 0.0, "Clip gradients to this global norm (0 = off).")
cli.shared_flag(flags.DEFINE_integer, "seed", 0, "Seed of the initial weights, the batch order, dropout and sampling.")
flags.DEFINE_integer(
    "cpu_devices",
    1,
    "On a CPU host, split it into this many JAX devices and shard each batch over them: XLA runs each "
    "device's convolutions on its own thread, so this is how a CNN uses every core. Ignored on GPU/TPU.",
)
flags.DEFINE_integer(
    "num_validation",
    5000,
    "Training examples held out as the validation split (for tuning); 0 trains on all of them.",
    lower_bound=0,
)
cli.shared_flag(
    flags.DEFINE_string,
    "data_dir",
    None,
    f"Folder with the original dataset files; else ${data.DATA_DIR_ENV}; else TFDS.",
)
cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    None,
    "Run directory (config.json, metrics.jsonl, checkpoints/, figures/); resumed if it exists.",
)


def train_config() -> train.TrainConfig:
    """The TrainConfig the flags describe."""
    with setting_scope("shadow.generator"):  # Checked as it is made: a bad value names its path, as in check.
        options = generator.GeneratorConfig(
            rho=FLAGS.sampling_rho,
            alpha=parse_alpha(FLAGS.alpha),
            alpha_scale=FLAGS.alpha_scale,
            smooth_sigma=FLAGS.smooth_sigma,
        )
    return train.TrainConfig(
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        optimizer=FLAGS.optimizer,
        schedule=FLAGS.schedule,
        warmup_epochs=FLAGS.warmup_epochs,
        weight_decay=FLAGS.weight_decay,
        grad_clip=FLAGS.grad_clip,
        dropout=FLAGS.dropout,
        seed=FLAGS.seed,
        num_labels=FLAGS.num_labels,
        steps=FLAGS.steps,
        consistency=consistency.ConsistencyConfig(
            kind=FLAGS.consistency,
            layer=FLAGS.consistency_layer,
            weight=FLAGS.consistency_weight,
            sigma=FLAGS.consistency_sigma,
        ),
        shadow=shadow.ShadowConfig(
            layer=FLAGS.shadow_layer,
            weight=FLAGS.shadow_weight,
            noise_twin=FLAGS.noise_twin,
            start_epoch=FLAGS.shadow_start_epoch,
            generator=options,
        ),
    )


def parse_alpha(text: str) -> float | str | None:
    """``--alpha``: None for 'calibrated' (or 0, as older commands wrote it), 'formula', 'data', or a number."""
    if text in ("calibrated", "0", "0.0"):
        return None
    if text in ("formula", "data"):
        return text
    try:
        return float(text)
    except ValueError:
        raise cli.UsageError(f"--alpha must be 'calibrated', 'formula', 'data' or a number, got {text!r}.") from None


def build_model(experiment: Experiment) -> models.Model:
    """The entry point's net, or the NNX model that ``--model`` and ``--model_args`` name."""
    if not FLAGS.model:
        if FLAGS.model_args != "{}":
            raise cli.UsageError("--model_args are the arguments of --model's factory; give --model too.")
        return experiment.build_net()
    try:
        arguments = json.loads(FLAGS.model_args)
    except json.JSONDecodeError as error:
        raise cli.UsageError(f"--model_args must be a JSON object, got {FLAGS.model_args!r} ({error}).") from None
    if not isinstance(arguments, dict):
        raise cli.UsageError(f"--model_args must be a JSON object, got {FLAGS.model_args!r}.")
    return models.nnx_model(FLAGS.model, **arguments)


def default_workdir(dataset: str, config: train.TrainConfig) -> str:
    s = config.shadow
    arm = f"shadow_h{s.layer}" if s.enabled else "backprop"
    if config.consistency.enabled:
        arm += f"_consistency_{config.consistency.kind}"
    if config.num_labels:
        arm = f"labels{config.num_labels}_{arm}"
    if FLAGS.model:
        arm = f"{FLAGS.model.rpartition(':')[2]}_{arm}"
    return os.path.join(os.path.expanduser("~"), "rev_nets_runs", dataset, f"{arm}_seed{config.seed}")


def main(experiment: Experiment) -> None:
    """Checks every flag, then trains (or resumes) one run."""
    try:
        train.use_cpu_devices(FLAGS.cpu_devices)  # Before anything starts a JAX backend.
        net = build_model(experiment)
        config = train_config()
        config.check(net)
    except ValueError as error:
        raise cli.UsageError(cli.flag_message(error)) from None
    dataset = experiment.dataset_name()
    workdir = FLAGS.workdir or default_workdir(dataset, config)
    print(f"{dataset}: {train.arm_name(config)}, {models.param_count(net):,} params -> {workdir}", flush=True)
    train.train_and_evaluate(
        net, config, dataset, workdir, num_validation=FLAGS.num_validation, data_dir=FLAGS.data_dir
    )


def run(experiment: Experiment) -> None:
    """Entry point: the experiment's defaults become the flags' defaults, then ``main``."""
    for name, value in experiment.defaults.items():
        FLAGS.set_default(name, value)
    cli.run(lambda argv: main(experiment))
