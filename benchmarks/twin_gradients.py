"""Where SHADOW's twin term pushes the airbench-like net: its gradient beside the real term's, parameter by parameter.

    python -m benchmarks.twin_gradients --data_dir=../shared/datasets
    python -m benchmarks.twin_gradients --data_dir=../shared/datasets --nowhiten
    python -m benchmarks.twin_gradients --data_dir=../shared/datasets --run=<a recipe run's directory>
    python -m benchmarks.twin_gradients --data_dir=../shared/datasets --run=<a SHADOW run> --step=0 \
        --batch_sizes=128,512,1024

At the recipe's initialisation (whitening filter fitted, seed 0), or at a
run's last checkpoint (``--run``: its net and settings), on the first
``--num_images`` CIFAR-10 training images (no augmentation), prints for each
source layer the global norms of the two cross-entropy terms' gradients
(``shadow.term_gradients``) and the parameters where the twin term's is
largest; then, with the whitening filter, how the energy of the filter's
output spreads over its 12 patch directions for the real images and for
their twins from group 3. BUILD_NOTES ("SHADOW's twin gradient on the
airbench net") reads the cause from these lines.

``--batch_sizes``: then the global norm of the gradient a training step
takes (SHADOW's loss from the run's source layer, or h3), on three random
batches of each size from the run's split, augmented as the step does:
whether the recipe's gradient clip acts depends on the batch, since the
twin term's gradient at initialisation is mostly per-image noise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from experiments import cli
from experiments.configs import cifar10_airbench
from rev_nets import data, generator, models, nnx_zoo, shadow
from rev_nets.errors import InputError
from rev_nets.train import optimizer, rundir, steps

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/datasets", "Folder with the CIFAR-10 files.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 128, "Training images in the batch.", lower_bound=2)
_WHITEN = flags.DEFINE_boolean("whiten", True, "Start the net with the frozen patch-whitening convolution.")
_RUN = flags.DEFINE_string("run", None, "A run of experiments.cifar10_airbench: its trained net instead.")
_STEP = flags.DEFINE_integer("step", None, "With --run, the checkpoint of this step (0: the run's initial net).")
_TOP = flags.DEFINE_integer("top", 5, "Parameters listed per source layer, largest twin gradient first.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", [], "Batch sizes at which to print the training step's gradient norm.")


def leaf_norms(grads) -> dict[str, float]:
    """Each parameter's gradient norm by its path."""
    return {jax.tree_util.keystr(path): float(jnp.linalg.norm(leaf)) for path, leaf in jax.tree.leaves_with_path(grads)}


def direction_shares(kernel: jax.Array, x: jax.Array) -> np.ndarray:
    """The share of the whitening filter's output energy in each of its first half of filters (the other half are
    their negatives), largest first."""
    out = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=nnx_zoo.CONV_LAYOUT)
    energy = np.asarray(jnp.sum(out[..., : kernel.shape[-1] // 2] ** 2, (0, 1, 2)))
    return np.sort(energy)[::-1] / energy.sum()


def main(argv) -> None:
    del argv
    if _STEP.value is not None and not _RUN.value:
        raise InputError("--step picks a checkpoint of a run; give the run with --run=<its directory> too.")
    run = rundir.load_run(_RUN.value) if _RUN.value else None
    num_validation = run.config["num_validation"] if run else 0
    splits, (mean, std) = data.experiment_splits("cifar10", num_validation, _DATA_DIR.value)
    train = splits["train"]
    x = data.standardize(train.images[: _NUM_IMAGES.value], mean, std)
    y = jnp.asarray(train.labels[: _NUM_IMAGES.value])
    if run:
        model, config, (step, params) = run.model, run.config["train"], run.checkpoint(_STEP.value)
        whiten = run.config["model"].keywords.get("whiten", True)
        print(f"{_RUN.value} at step {step}, {len(y)} images")
    else:
        record = cifar10_airbench.get_config()
        config, whiten = record.train, _WHITEN.value
        model = models.build_model(record.model.factory, **(record.model.keywords | {"whiten": whiten}))
        params = optimizer.create_state(model, config, 1, data.standardize(train.images, mean, std)).params
        print(f"initialisation, {record.model.keywords | {'whiten': whiten}}, {len(y)} images, seed {config.seed}")
    key = jax.random.key(config.seed)
    for layer in (3, 2):
        shadow_config = dataclasses.replace(config.shadow, layer=layer)
        g_real, g_twin = shadow.term_gradients(
            model, params, x, y, shadow_config, key, label_smoothing=config.label_smoothing
        )
        print(f"h{layer}: |g_real| {optax.tree.norm(g_real):.3f}  |g_twin| {optax.tree.norm(g_twin):.3f}")
        real, twin = leaf_norms(g_real), leaf_norms(g_twin)
        for path in sorted(twin, key=twin.get, reverse=True)[: _TOP.value]:
            print(f"    {path:55s} real {real[path]:.4f}  twin {twin[path]:.4f}  ratio {twin[path] / real[path]:.1f}")
    if whiten:
        at_batch = model.with_stats(params, model.forward(params, x, key=key).stats)
        x_syn = generator.twins(model, at_batch, x, 3)
        kernel = params["whitening"]["kernel"][...]
        for name, images in (("real", x), ("twins from h3", x_syn)):
            shares = ", ".join(f"{s:.3f}" for s in direction_shares(kernel, images))
            print(f"whitened energy by patch direction, {name}: {shares}")
    for size in map(int, _BATCH_SIZES.value):
        norms = step_gradient_norms(model, params, config, train, mean, std, size)
        print(f"training step's gradient norm, batches of {size}: " + ", ".join(f"{n:.2f}" for n in norms))


def step_gradient_norms(model, params, config, split, mean, std, size: int, batches: int = 3) -> list[float]:
    """The global norm of a training step's gradient (``shadow.loss`` at the config's source layer, or h3 for a
    backprop run) on ``batches`` random batches of ``size`` images of ``split``, augmented as the step does."""
    shadow_config = config.shadow if config.shadow.enabled else dataclasses.replace(config.shadow, layer=3)

    @jax.jit
    def norm(x, y, indices, key):
        x = data.augment(key, x, config.augment, indices=indices, seed=config.seed)
        objective = lambda p: shadow.loss(
            model, models.hold_fixed(model, p), x, y, shadow_config, key, label_smoothing=config.label_smoothing
        )[0]
        return steps.gradient_metrics(jax.grad(objective)(params), config.grad_clip)["grad_norm"]

    rng = np.random.default_rng(config.seed)
    norms = []
    for trial in range(batches):
        indices = rng.choice(len(split.labels), size, replace=False)
        x = data.standardize(split.images[indices], mean, std)
        y = jnp.asarray(split.labels[indices])
        norms.append(float(norm(x, y, jnp.asarray(indices), jax.random.key(trial))))
    return norms


if __name__ == "__main__":
    cli.run(main)
