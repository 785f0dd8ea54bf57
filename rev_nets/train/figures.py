"""A run's figures, redrawn each epoch: learning curves and real vs synthetic images from every layer."""

from __future__ import annotations

import os

import jax

from rev_nets import generator, plots
from rev_nets.train.config import TrainConfig


def write_figures(model, config: TrainConfig, params, evals, history, workdir: str, num_images: int = 8) -> None:
    """Learning curves (against epochs and wall time) and real vs synthetic images from every layer."""
    fig_dir = os.path.join(workdir, "figures")
    epochs = [m["epoch"] for m in history]
    wall = [m["wall_time_s"] / 60 for m in history]
    for x, name, label in (
        (epochs, "learning_curves.png", "epoch"),
        (wall, "learning_curves_wall.png", "training minutes"),
    ):
        series = {}
        for split in evals:
            series[f"{split} real"] = (x, [m[f"{split}_error"] for m in history])
            series[f"{split} synthetic"] = (x, [m[f"{split}_synthetic_error"] for m in history])
        plots.learning_curves(series, os.path.join(fig_dir, name), xlabel=label, title=arm_name(config))
    split = evals.get("test") or next(iter(evals.values()))
    options = config.synthetic_config(model).generator
    # On one device: eager ops on arrays spread over a mesh would each be an unsynced multi-device dispatch.
    local = split.images.addressable_data(0) if isinstance(split.images, jax.Array) else split.images
    images = jax.device_put(local[:num_images], jax.local_devices()[0])
    rows = generator.twins_by_layer(model, jax.device_put(params, images.sharding), images, config=options)
    plots.image_grid(rows, os.path.join(fig_dir, "synthetic_images.png"), title=arm_name(config))


def arm_name(config: TrainConfig) -> str:
    s, g = config.shadow, config.shadow.generator
    arm = "backprop" if not s.enabled else f"SHADOW h{s.layer} w={s.weight:g}"
    if s.enabled and g.rho < 1:
        arm += f" rho={g.rho:g}"
    if s.enabled and g.smooth_sigma:
        arm += f" smooth={g.smooth_sigma:g}"
    if s.enabled and g.alpha_scale != 1:
        arm += f" alpha x{g.alpha_scale:g}"
    if s.enabled and s.start_epoch:
        arm += f" from epoch {s.start_epoch:g}"
    if s.enabled and s.noise_twin:
        arm += " (noise twin)"
    if s.enabled and s.twin_statistics != "separate":
        arm += f" stats={s.twin_statistics}"
    c = config.consistency
    if c.enabled:
        twin = f"sigma={c.sigma:g}" if c.kind == "gaussian" else f"h{c.layer}"
        arm += f" + {c.kind} consistency {twin} w={c.weight:g}"
    if config.num_labels:
        arm += f", {config.num_labels:,} labels"
    return arm + (f", dropout {config.dropout:g}" if config.dropout else "")
