"""SHADOW's first steps on few labels, one line per step: what grows when a short run blows up.

    python -m benchmarks.early_steps --num_labels=100 --steps=60 --seed=0 --grad_clip=0
    python -m benchmarks.early_steps --num_labels=100 --steps=60 --seed=0 --grad_clip=5

Trains the MNIST entry point's MLP with its optimizer and schedule (SHADOW
from h3, labelled batches drawn with replacement) and prints, per step:
the learning rate; the real and synthetic cross-entropy and the norms of
their gradients, taken apart; the twin/real input norm ratio; the mean
absolute logit of real inputs and of twins; each weight matrix's spectral
spike (largest singular value over the root-mean-square one); and the
parameters' global norm. BUILD_NOTES ("SHADOW's early blow-up") reads the
cause from these lines.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from experiments.configs import mnist
from rev_nets import data, models, shadow
from rev_nets.train.internals import learning_rate_schedule, make_optimizer

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/datasets", "Folder with the MNIST files.")
_LABELS = flags.DEFINE_integer("num_labels", 100, "Labelled training images.")
_STEPS = flags.DEFINE_integer("steps", 60, "Steps of the run (its 15 epochs and 1-epoch warm-up scale with it).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights, the labelled subset and the batches.")
_CLIP = flags.DEFINE_float("grad_clip", 0.0, "Global-norm clipping (0 = off).")
_PRINT = flags.DEFINE_integer("print_steps", 20, "Steps printed one by one; then every 5th.")


def spikes(params) -> jax.Array:
    """Largest over root-mean-square singular value of each weight matrix, input side first."""
    matrices = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 2]
    values = [jnp.linalg.svd(w, compute_uv=False) for w in matrices]
    return jnp.stack([s[0] / jnp.sqrt(jnp.mean(s**2)) for s in values])


def make_step(model, config, tx, images, labels):
    """One SGD step of the SHADOW loss, with its two terms' gradients measured apart (the update is their mean)."""
    num, batch = labels.shape[0], min(config.batch_size, labels.shape[0])

    def cross_entropy(params, x, y):
        return shadow.cross_entropy(model.forward(params, x)[0], y)

    @jax.jit
    def step(params, opt_state, key):
        rows = jax.random.randint(jax.random.fold_in(key, 0), (batch,), 0, num)
        x, y = images[rows], labels[rows]
        twins = shadow.twins(model, params, x, config.shadow, jax.random.fold_in(key, 1))
        ce_real, g_real = jax.value_and_grad(cross_entropy)(params, x, y)
        ce_twin, g_twin = jax.value_and_grad(cross_entropy)(params, twins, y)
        grads = jax.tree.map(lambda a, b: (a + config.shadow.weight * b) / (1 + config.shadow.weight), g_real, g_twin)
        updates, opt_state = tx.update(grads, opt_state, params)
        line = {
            "ce_real": ce_real,
            "ce_twin": ce_twin,
            "grad_real": optax.tree.norm(g_real),
            "grad_twin": optax.tree.norm(g_twin),
            "twin_real_norm": jnp.linalg.norm(twins) / jnp.linalg.norm(x),
            "logit_real": jnp.abs(model.forward(params, x)[0]).mean(),
            "logit_twin": jnp.abs(model.forward(params, twins)[0]).mean(),
            "spikes": spikes(params),
            "param_norm": optax.tree.norm(params),
        }
        return optax.apply_updates(params, updates), opt_state, line

    return step


def main(argv) -> None:
    del argv
    record = mnist.get_config()
    config = dataclasses.replace(
        record.train, num_labels=_LABELS.value, steps=_STEPS.value, seed=_SEED.value, grad_clip=_CLIP.value
    )
    model = models.build_model(record.model)
    splits, (mean, std) = data.experiment_splits(record.dataset, record.num_validation, _DATA_DIR.value)
    train = splits["train"]
    rows = data.label_subset(train.labels, config.num_labels, len(train.class_names), config.seed)
    images, labels = data.standardize(train.images[rows], mean, std), jnp.asarray(train.labels[rows], jnp.int32)
    per_epoch = config.steps // config.epochs
    tx, schedule = make_optimizer(config, per_epoch), learning_rate_schedule(config, per_epoch)
    params = model.init(jax.random.key(config.seed))
    opt_state, step = tx.init(params), make_step(model, config, tx, images, labels)
    key = jax.random.key(config.seed + 1)
    for i in range(config.steps):
        params, opt_state, line = step(params, opt_state, jax.random.fold_in(key, i))
        line = jax.device_get(line)
        if i < _PRINT.value or i % 5 == 0 or i == config.steps - 1:
            print(
                f"step {i:3d} lr {float(schedule(i)):.4f} CE real/twin {line['ce_real']:.2f}/{line['ce_twin']:.2f} "
                f"grad real/twin {line['grad_real']:.1f}/{line['grad_twin']:.1f} "
                f"twin/real norm {line['twin_real_norm']:.2f} "
                f"|logit| real/twin {line['logit_real']:.2f}/{line['logit_twin']:.2f} "
                f"spikes {' '.join(f'{s:.1f}' for s in line['spikes'])} |params| {line['param_norm']:.0f}",
                flush=True,
            )
        if not jnp.isfinite(line["ce_twin"]):
            print(f"step {i}: the twins' cross-entropy is no longer finite.")
            break


if __name__ == "__main__":
    app.run(main)
