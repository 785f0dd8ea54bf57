"""Are nets reversible? Round trips through the transposed-weight generator, layer by layer, and their spectra.

For real test inputs ``x`` and each hidden layer l: ``h_l = f(x)``, ``x_syn = G(h_l)``,
``h_syn = f(x_syn)``, where f is the net's own forward pass (its biases) and G is
``generator.twins`` (the forward's max-pooling switches, the run's alpha, no sampling). Per layer: the relative error ``||h_syn - h_l|| / ||h_l||``, the cosine,
``||h_syn|| / ||h_l||``, the one-step error (``h_l`` one layer down and back up), the measured
sparsity of ``h_l``, and the theory's predicted one-step error for that very ``h_l``
(``theory.predicted_error_for``, square-rooted: with no bias and with the best bias).

``analyse`` measures a run's initial weights (checkpoint step 0), its trained weights
(latest step), a random-weight net of the same shapes (the trained weights shuffled
within each layer: same entry distribution, no structure; data-fitted constants such as a whitening
filter are kept, and the initial and shuffled nets normalise by the test images' statistics), and,
as a positive control,
Gaussian nets of ``rev_nets.theory`` (k-sparse top layer, f = thresholded feedforward
recovery), whose one-layer direct error ``||f(x) - h||^2 / ||h||^2`` reproduces the
paper's section 1. For image inputs, also the radial power spectra of ``x_syn`` and ``x``
and their ratio per spatial-frequency band. ``analyse`` returns the ``Report`` "reversibility" (its numbers and
tables) and draws its figures into the output folder.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rev_nets import data, dispatch, generator, models, nets, plots, shadow, theory
from rev_nets import layers as L
from rev_nets.analysis.report_files import Report
from rev_nets.errors import InputError
from rev_nets.onnx_net import net_from_onnx
from rev_nets.train import load_run

DEFAULT_CONTROLS = ("4000,1000:10:2", "16000,4000,1000,250:10:0.5")

# Bias multipliers over which the theory's best predicted error is taken.
PREDICTION_CS = tuple(0.25 * i for i in range(25))
GRID_IMAGES = 8
# Spatial-frequency bands (low, high] of the synthetic-to-real power ratios, in cycles per pixel.
SPECTRUM_BANDS = {"mean colour": (-np.inf, 0.0), "low": (0.0, 1 / 8), "mid": (1 / 8, 1 / 4), "high": (1 / 4, np.inf)}


def load_test_images(
    dataset: str, num_validation: int, data_dir: str | None, num_images: int
) -> tuple[jax.Array, np.ndarray]:
    """The first test images, standardised as in training (statistics of the training portion), and labels."""
    splits, (mean, std) = data.experiment_splits(dataset, num_validation, data_dir)
    test = splits["test"]
    return data.standardize(test.images[:num_images], mean, std), np.asarray(test.labels[:num_images])


def shuffled(key: jax.Array, params: nets.Params, groups: Any = None) -> nets.Params:
    """Every array's entries permuted at random: the same entry distribution with no structure.

    With ``groups`` (the model's ``param_groups``), only what the optimizer moves: a ``fixed`` leaf (BatchNorm's
    statistics, a whitening filter fitted to the data) is the data's, not a weight, and is kept."""
    groups = "trained" if groups is None else groups
    labels = jax.tree.leaves(jax.tree.map(lambda label, part: jax.tree.map(lambda _: label, part), groups, params))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [
        leaf if label == "fixed" else jax.random.permutation(k, leaf.reshape(-1)).reshape(leaf.shape)
        for k, leaf, label in zip(keys, leaves, labels)
    ]
    return treedef.unflatten(leaves)


def with_batch_statistics(model: models.Model, params, x: jax.Array):
    """``params`` with BatchNorm's statistics those of the images ``x`` (a training forward's): for weights the
    running averages do not belong to (the initial ones, shuffled ones). Unchanged for a model without
    BatchNorm."""
    return model.with_stats(params, model.forward(params, x, key=jax.random.key(0)).stats)


# --------------------------------------------------------------- metrics --


def layer_metrics(
    h: jax.Array, h_syn: jax.Array, h_step: jax.Array, fan_in: int | None, generation_relu: bool, cs: jax.Array
) -> dict[str, jax.Array]:
    """Per-example round-trip statistics of one layer (batch-first, any per-example shape).

    ``h_syn``: ``h`` after the full round trip; ``h_step``: after one layer down and back up.
    ``predicted``: ``sqrt(theory.predicted_error_for(h))`` for each bias multiplier in ``cs``; NaN where
    ``fan_in`` is None (a layer whose fan-in the theory cannot read, e.g. a module's).
    """
    h, h_syn, h_step = (a.reshape(a.shape[0], -1) for a in (h, h_syn, h_step))
    norm, norm_syn = jnp.linalg.norm(h, axis=-1), jnp.linalg.norm(h_syn, axis=-1)
    tiny = jnp.finfo(h.dtype).tiny
    predict = lambda c: jnp.sqrt(theory.predicted_error_for(h, fan_in, 1.0, c, generation_relu=generation_relu))
    predicted = (
        jnp.full((h.shape[0], len(cs)), jnp.nan, h.dtype) if fan_in is None else jax.vmap(predict, out_axes=1)(cs)
    )
    return {
        "rel_error": jnp.linalg.norm(h_syn - h, axis=-1) / jnp.maximum(norm, tiny),
        "cosine": jnp.sum(h * h_syn, -1) / jnp.maximum(norm * norm_syn, tiny),
        "norm_ratio": norm_syn / jnp.maximum(norm, tiny),
        "one_step_error": jnp.linalg.norm(h_step - h, axis=-1) / jnp.maximum(norm, tiny),
        "density": jnp.mean(h > 0, -1),
        "nonzeros": jnp.sum(h > 0, -1),
        "predicted": predicted,
    }


def frequency_rings(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each frequency of an ``height x width`` 2-D FFT (flattened): its radius in cycles per pixel and its ring.

    Ring ``k`` holds the radii nearest ``k / max(height, width)``: ring 0 is the mean colour, ring
    ``max(height, width) / 2`` is Nyquist, and the rings beyond hold only diagonal frequencies (up to
    ``1 / sqrt(2)`` cycles per pixel). numpy, so that it is static under jit.
    """
    cycles = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]).ravel()
    return cycles, np.rint(cycles * max(height, width)).astype(np.int32)


def _fourier_power(x: jax.Array) -> jax.Array:
    """``|FFT|^2`` of each image (batch, H, W, C), channels averaged, flattened to (batch, H W)."""
    return jnp.mean(jnp.abs(jnp.fft.fft2(x, axes=(1, 2))) ** 2, axis=-1).reshape(x.shape[0], -1)


def radial_power(x: jax.Array) -> jax.Array:
    """Per image, the mean power ``|FFT|^2`` in each ring of ``frequency_rings`` (channels averaged)."""
    _, ring = frequency_rings(*x.shape[1:3])
    rings = int(ring.max()) + 1
    sums = jax.vmap(lambda p: jnp.bincount(ring, p, length=rings))(_fourier_power(x))
    return sums / np.bincount(ring, minlength=rings)


def band_power(x: jax.Array) -> jax.Array:
    """Per image, the total power ``|FFT|^2`` (channels averaged) in each band of ``SPECTRUM_BANDS``.

    The bands partition the frequencies, so the bands of an image sum to ``H W ||x||^2 / C`` (Parseval).
    """
    cycles, _ = frequency_rings(*x.shape[1:3])
    masks = np.stack([(cycles > low) & (cycles <= high) for low, high in SPECTRUM_BANDS.values()], axis=1)
    return _fourier_power(x) @ masks.astype(np.float32)


def net_round_trips(model: models.Model, params, x: jax.Array, cs: jax.Array, alpha=None) -> list[dict[str, jax.Array]]:
    """``layer_metrics`` of every source layer of ``model`` for the batch ``x`` (f: features, G: ``generator.twins``
    with ``alpha``: calibrated, or e.g. "data" for models with residual sums).

    The one-layer round trip and the theory's prediction need a ``Net``'s layers; other models give NaN there.
    For image inputs each layer's metrics also hold the radial spectra and band powers of ``x_syn`` and ``x``.
    """
    real_spectra = {"spectrum_real": radial_power(x), "band_power_real": band_power(x)} if x.ndim == 4 else None
    results = []
    for l in range(1, model.depth + 1):
        h = model.features(params, x, l)
        x_syn = generator.twins(model, params, x, l, alpha=alpha)
        h_syn = model.features(params, x_syn, l)
        if isinstance(model, nets.Net):
            h_step, fan_in = one_layer_round_trip(model, params, x, l)
        else:
            h_step, fan_in = jnp.full_like(h, jnp.nan), None
        metrics = layer_metrics(h, h_syn, h_step, fan_in, l > 1, cs)
        if real_spectra:
            metrics |= real_spectra | {"spectrum_syn": radial_power(x_syn), "band_power_syn": band_power(x_syn)}
        results.append(metrics)
    return results


def synthetic_logits(model: models.Model, params, x: jax.Array, *, config: shadow.ShadowConfig) -> dict[str, jax.Array]:
    """The logits of the images ``x`` and of their twins (``config``: the run's synthetic test generator), the
    twins judged with BatchNorm's running averages (as each epoch's evaluation does) and with their own batch's
    statistics (as SHADOW's training forward does). Empty for a model without BatchNorm.

    The running averages are the real images'; twins of another scale and mean are normalised off centre by
    them, which the two judgments tell apart. Both are evaluation forwards (no dropout): the second with the
    statistics a training forward of the twins measures."""
    if model.forward(params, x, key=jax.random.key(0)).stats is None:  # A training forward: its batch's statistics.
        return {}
    x_syn = shadow.twins(model, params, x, config, None)
    own = model.forward(params, x_syn, key=jax.random.key(0)).stats
    return {
        "real": model.forward(params, x).logits,
        "synthetic, running averages": model.forward(params, x_syn).logits,
        "synthetic, own batch statistics": model.forward(model.with_stats(params, own), x_syn).logits,
    }


def synthetic_errors(
    model: models.Model, params, x: jax.Array, y: jax.Array, *, config: shadow.ShadowConfig
) -> dict[str, jax.Array]:
    """The error rates of ``synthetic_logits`` against the labels ``y``."""
    return {
        name: jnp.mean(jnp.argmax(logits, -1) != y)
        for name, logits in synthetic_logits(model, params, x, config=config).items()
    }


def one_layer_round_trip(net: nets.Net, params: nets.Params, x: jax.Array, l: int) -> tuple[jax.Array, int]:
    """Layer ``l`` of ``x`` one layer down (the generator of that layer alone, at the real layer below) and back
    up, and the layer's fan-in. The ReLU is kept on hidden layers, not on the input, as in ``twins``."""
    spec, p = net.layers[l - 1], params["hidden"][l - 1]
    below = x if l == 1 else net.features(params, x, l - 1)
    layer = lambda u: L.apply(spec, p, u).h
    down = generator.reverse(layer, below, input_relu=l > 1)
    return layer(down), L.fan_in(spec, below.shape[1:])


def gaussian_round_trips(
    key: jax.Array, widths: tuple[int, ...], k: int, c: float, batch: int, cs: jax.Array
) -> list[dict[str, jax.Array]]:
    """``layer_metrics`` per layer of one draw of ``theory``'s Gaussian net, plus the direct recovery error.

    The "real input" is a sample of the model from a k-sparse top layer; f is the thresholded
    feedforward recovery ``theory.recover(c=c)`` and G is ``theory.sample_layers`` (no sampling).
    ``direct_error`` is ``||f(x)_l - h_l||^2 / ||h_l||^2`` against the sample's true layers.
    """
    weight_key, hidden_key = jax.random.split(key)
    weights = theory.random_weights(weight_key, widths)
    truth = theory.sample_layers(None, weights, theory.sample_hidden(hidden_key, batch, widths[-1], k), 1.0)
    estimates = theory.recover(weights, truth[0], c=c)
    results = []
    for l in range(1, len(weights) + 1):
        h = estimates[l - 1]
        x_syn = theory.sample_layers(None, weights[:l], h, 1.0)[0]
        h_syn = theory.recover(weights[:l], x_syn, c=c)[-1]
        below = theory.sample_layers(None, weights[l - 1 : l], h, 1.0)[0]
        h_step = theory.recover(weights[l - 1 : l], below, c=c)[0]
        metrics = layer_metrics(h, h_syn, h_step, widths[l - 1], True, cs)
        metrics["direct_error"] = theory.relative_squared_error(h, truth[l])
        results.append(metrics)
    return results


def summarize(name: str, per_layer: Sequence[dict[str, np.ndarray]], cs: np.ndarray, **extra) -> list[dict]:
    """Table rows: per layer, means (and standard errors) over examples of every statistic.

    With image spectra, also the mean radial spectra and the synthetic-to-real power ratio per band.
    """
    rows = []
    for l, metrics in enumerate(per_layer, start=1):
        metrics = {key: np.asarray(value, np.float64) for key, value in metrics.items()}
        se = lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        predicted = metrics["predicted"].mean(0)
        row = {"net": name, "layer": l, "examples": len(metrics["rel_error"])} | extra
        for key in ("rel_error", "cosine", "norm_ratio", "one_step_error", "density", "nonzeros"):
            row[key] = float(metrics[key].mean())
        row["rel_error_se"] = se(metrics["rel_error"])
        row["predicted_no_bias"] = float(predicted[0])
        defined = not np.isnan(predicted).all()
        row["predicted_best"] = float(predicted.min()) if defined else float("nan")
        row["predicted_best_c"] = float(cs[int(predicted.argmin())]) if defined else float("nan")
        if "c" in extra:
            row["predicted_at_c"] = float(predicted[int(np.argmin(np.abs(cs - extra["c"])))])
        if "spectrum_syn" in metrics:
            row["spectrum_syn"] = metrics["spectrum_syn"].mean(0).tolist()
            row["spectrum_real"] = metrics["spectrum_real"].mean(0).tolist()
            ratios = metrics["band_power_syn"].mean(0) / metrics["band_power_real"].mean(0)
            row["power_ratio"] = dict(zip(SPECTRUM_BANDS, ratios.tolist()))
        if "direct_error" in metrics:
            row["direct_error"] = float(metrics["direct_error"].mean())
            row["direct_error_se"] = se(metrics["direct_error"])
        rows.append(row)
    return rows


# ---------------------------------------------------------------- output --


def parse_control(spec: str) -> tuple[tuple[int, ...], int, float]:
    """``'n_0,...,n_L:k:c'`` -> (widths, k, c)."""
    try:
        widths, k, c = spec.split(":")
        widths = tuple(int(w) for w in widths.split(","))
        parsed = widths, int(k), float(c)
    except ValueError:
        raise InputError(f"control net {spec!r} is not 'n_0,...,n_L:k:c', e.g. '4000,1000:10:2'.") from None
    if len(widths) < 2 or min(widths) < 1 or not 1 <= parsed[1] <= widths[-1] or not math.isfinite(parsed[2]):
        raise InputError(
            f"control net {spec!r} needs at least two widths >= 1, 1 <= k <= the top width and a finite c."
        )
    return parsed


def markdown(report: dict) -> str:
    """``reversibility.md`` of the report's numbers: one row per net and layer."""
    lines = [
        "# Reversibility: h_l = f(x), x_syn = G(h_l), h_syn = f(x_syn)",
        "",
        (
            f"Run: `{report['run'] or '(none: control only)'}`, steps {report['steps']}; "
            f"{report['num_images']} test images; wall time {report['wall_time_s']:.0f} s."
        ),
        "",
        (
            "`rel. error`: mean of `||h_syn - h_l|| / ||h_l||` (± s.e.); `one step`: the same for h_l one layer "
            "down and back up; `theory`: `sqrt(predicted_error_for(h_l))`, the random-net prediction for that "
            "one step given the measured h_l, with no bias, with the best bias c, and (controls) with the bias "
            "f uses (`one step` and `theory` are nan for a model that is not a `Net`: both need its layers); `density`: fraction of nonzero "
            "units of h_l; `direct`: the control's `||f(x)_l - h_l||^2 / ||h_l||^2` against the true layer (the "
            "quantity of the paper's section 1). With BatchNorm, the trained net uses its running averages; the "
            "initial and the shuffled nets (weights shuffled, data-fitted constants such as a whitening filter kept) "
            "use the statistics of these test images, since the running averages are not theirs."
        ),
        "",
        (
            "| net | layer | density | nonzeros | rel. error | cosine | norm ratio | one step | theory, no bias | "
            "theory, best c (c) | theory, control's c | direct |"
        ),
        "|" + "---|" * 12,
    ]
    for r in report["rows"]:
        direct = f"{r['direct_error']:.3g} ± {r['direct_error_se']:.1g}" if "direct_error" in r else ""
        at_c = f"{r['predicted_at_c']:.3f}" if "predicted_at_c" in r else ""
        lines.append(
            f"| {r['net']} | {r['layer']} | {r['density']:.3f} | {r['nonzeros']:.0f} | "
            f"{r['rel_error']:.3f} ± {r['rel_error_se']:.1g} | {r['cosine']:.3f} | {r['norm_ratio']:.2f} | "
            f"{r['one_step_error']:.3f} | {r['predicted_no_bias']:.3f} | "
            f"{r['predicted_best']:.3f} ({r['predicted_best_c']:g}) | {at_c} | {direct} |"
        )
    return "\n".join(lines + spectrum_lines(report["rows"]) + synthetic_lines(report.get("synthetic"))) + "\n"


def synthetic_lines(synthetic: dict | None) -> list[str]:
    """The BatchNorm net's synthetic test error under each choice of statistics (``synthetic_errors``)."""
    if not synthetic:
        return []
    return [
        "",
        f"## Synthetic test error by BatchNorm statistics (trained net, twins from layer {synthetic['layer']})",
        "",
        (
            "Twins as each epoch's evaluation makes them (running averages); judged by the same net with its "
            "running averages (what `metrics.jsonl` reports) and with the twins' own batch statistics (the "
            "statistics SHADOW's training forward of twins uses; one batch of all the images here)."
        ),
        "",
        "| real | synthetic, running averages | synthetic, own batch statistics |",
        "|---|---|---|",
        (
            f"| {synthetic['real']:.2%} | {synthetic['synthetic, running averages']:.2%} | "
            f"{synthetic['synthetic, own batch statistics']:.2%} |"
        ),
    ]


def spectrum_lines(rows: list[dict]) -> list[str]:
    """The band power table: how much of the real images' power at each spatial frequency ``x_syn`` has."""
    rows = [r for r in rows if "power_ratio" in r]
    if not rows:
        return []
    describe = lambda low, high: "0" if high == 0 else f"> {low:g}" if high == np.inf else f"({low:g}, {high:g}]"
    bands = ", ".join(f"{name} {describe(low, high)}" for name, (low, high) in SPECTRUM_BANDS.items())
    lines = [
        "",
        (
            f"Power of `x_syn` over power of `x` per spatial-frequency band (cycles per pixel: {bands}); "
            "1 = the real images' spectrum."
        ),
        "",
        "| net | layer | " + " | ".join(SPECTRUM_BANDS) + " |",
        "|" + "---|" * (2 + len(SPECTRUM_BANDS)),
    ]
    for r in rows:
        lines.append(
            f"| {r['net']} | {r['layer']} | " + " | ".join(f"{v:.3g}" for v in r["power_ratio"].values()) + " |"
        )
    return lines


def spectrum_figure(rows: list[dict], nyquist: int, path: str) -> str:
    """Radial power spectra of the real images and of ``x_syn`` from each layer, one panel per net.

    Rings 1 .. ``nyquist``: ring 0 (the mean colour) has no place on a log axis, the corner rings are sparse.
    """
    plt = plots.pyplot()
    names = list(dict.fromkeys(r["net"] for r in rows if "spectrum_syn" in r))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False, sharey=True)
    rings = np.arange(1, nyquist + 1)
    for ax, name in zip(axes[0], names):
        mine = [r for r in rows if r["net"] == name]
        ax.loglog(rings, np.take(mine[0]["spectrum_real"], rings), "k-", lw=2, label="real x")
        for r in mine:
            ax.loglog(rings, np.take(r["spectrum_syn"], rings), "-", label=f"x_syn from h{r['layer']}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("spatial frequency (cycles per image)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("mean power |FFT|^2")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return plots.save(fig, path)


def reversibility_figure(rows: list[dict], path: str) -> str:
    """Relative round-trip error and cosine per layer, one line per net; dotted: the theory, no bias."""
    plt = plots.pyplot()
    fig, (ax_err, ax_cos) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["net"] for r in rows):
        mine = [r for r in rows if r["net"] == name]
        layers = [r["layer"] for r in mine]
        (line,) = ax_err.plot(layers, [r["rel_error"] for r in mine], "o-", label=name)
        ax_err.plot(layers, [r["predicted_no_bias"] for r in mine], ":", color=line.get_color())
        ax_cos.plot(layers, [r["cosine"] for r in mine], "o-", color=line.get_color(), label=name)
    ax_err.set_yscale("log")
    ax_err.set_ylabel("||h_syn - h_l|| / ||h_l||  (dotted: theory, one step, no bias)")
    ax_cos.set_ylabel("cos(h_syn, h_l)")
    for ax in (ax_err, ax_cos):
        ax.set_xticks(sorted({r["layer"] for r in rows}))
        ax.set_xlabel("layer l")
        ax.grid(alpha=0.3, which="both")
    ax_cos.legend(fontsize=7)
    fig.suptitle("Round trips h_l -> G(h_l) -> f(G(h_l))", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, path)


# ------------------------------------------------------------------ main --


def variant_rows(
    model: models.Model, variants: dict[str, Any], x: jax.Array, title: str, out: str, cs, alpha=None
) -> list:
    """Rows for each named set of ``model``'s params on the images ``x``; writes their image grids and spectra."""
    round_trips = jax.jit(functools.partial(net_round_trips, model, alpha=alpha))
    rows = []
    for name, params in variants.items():
        rows += summarize(name, round_trips(params, x, cs), np.asarray(cs))
        slug = name.split(" (")[0].replace(" ", "_")
        plots.image_grid(
            generator.twins_by_layer(model, params, x[:GRID_IMAGES], alpha=alpha),
            os.path.join(out, "figures", f"images_{slug}.png"),
            title=f"{title}: {name}, real images and G(h_l)",
        )
    if x.ndim == 4:
        spectrum_figure(rows, max(x.shape[1:3]) // 2, os.path.join(out, "figures", "spectrum.png"))
    return rows


def run_nets(
    run: str, data_dir: str | None, num_images: int, seed: int, out: str, cs, factory: str | None = None
) -> tuple[list, dict]:
    """Rows for the run's initial, trained and shuffled nets, their steps, and the trained net's
    ``synthetic_errors``; writes their image grids and spectra.

    A run of a model whose factory is not built in is read only when ``factory`` names it (``train.load_run``)."""
    opened = load_run(run, factory=factory)
    last, trained = opened.checkpoint()  # The latest intact; one sentence if the run has no checkpoint yet.
    first = opened.steps[0]
    initial = opened.params(first)
    dataset = opened.config["dataset"]
    x, y = load_test_images(dataset, opened.config.get("num_validation", 0), data_dir, num_images)
    config = opened.config["train"].synthetic_config(opened.model)
    errors = jax.jit(functools.partial(synthetic_errors, opened.model, config=config))(trained, x, y)
    synthetic = {name: float(rate) for name, rate in errors.items()} | {"layer": config.layer} if errors else {}
    own_statistics = jax.jit(functools.partial(with_batch_statistics, opened.model))
    variants = {
        f"init (step {first})": own_statistics(initial, x),
        f"trained (step {last})": trained,
        "shuffled trained": own_statistics(
            shuffled(jax.random.key(seed), trained, opened.model.param_groups(trained)), x
        ),
    }
    alpha = opened.config["train"].shadow.generator.alpha  # The run's own generator: calibrated, or fitted ("data").
    rows = variant_rows(opened.model, variants, x, dataset, out, cs, alpha)
    return rows, {"init": first, "trained": last}, synthetic


def onnx_nets(path: str, dataset: str, data_dir: str | None, num_images: int, seed: int, out: str, cs) -> list:
    """Rows for the ReLU net in the ONNX file ``path`` and its shuffled weights, on ``dataset``'s test images
    (standardised with the whole training split's channel statistics)."""
    net, params = net_from_onnx(path)
    x, _ = load_test_images(dataset, 0, data_dir, num_images)
    if tuple(x.shape[1:]) != net.input_shape:
        raise InputError(
            f"{path} takes inputs of shape {net.input_shape} but {dataset}'s images are {tuple(x.shape[1:])}; "
            "pass the dataset the net was made for."
        )
    name = os.path.splitext(os.path.basename(path))[0]
    variants = {name: params, f"shuffled {name}": shuffled(jax.random.key(seed), params)}
    return variant_rows(net, variants, x, dataset, out, cs)


def run_controls(specs: Sequence[str], trials: int, seed: int, cs) -> list[dict]:
    """Rows for each Gaussian control net: 4 weight draws of ``trials / 4`` samples each."""
    rows = []
    draws = 4
    for i, spec in enumerate(specs):
        widths, k, c = parse_control(spec)
        fn = jax.jit(functools.partial(gaussian_round_trips, widths=widths, k=k, c=c, batch=max(trials // draws, 2)))
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), i), draws)
        window = dispatch.DispatchWindow()
        per_draw = [window(fn(key, cs=cs)) for key in keys]
        merged = [jax.tree.map(lambda *a: np.concatenate(a), *layer) for layer in zip(*per_draw)]
        name = f"gaussian {'-'.join(map(str, widths))} k={k} c={c:g}"
        rows += summarize(name, merged, np.asarray(cs), widths=list(widths), k=k, c=c)
    return rows


def analyse(
    run: str | None,
    out: str,
    *,
    weights: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    num_images: int = 1000,
    controls: Sequence[str] = DEFAULT_CONTROLS,
    control_trials: int = 100,
    seed: int = 0,
    model: str | None = None,
) -> Report:
    """The report of the run directory ``run`` (read-only) or of the ONNX net ``weights`` on ``dataset``'s test
    images, and of the Gaussian controls (only those, when neither is given); its figures go to ``out/figures``.
    ``model`` names the factory of a run that trained an NNX model (``--model``)."""
    if run and weights:
        raise InputError("give a training run or an ONNX weight file, not both; run the analysis once for each.")
    if weights and not dataset:
        raise InputError(f"{weights} needs the dataset whose test images it reads; pass dataset='mnist' or 'cifar10'.")
    start = time.perf_counter()
    cs = jnp.asarray(PREDICTION_CS, jnp.float32)
    rows, steps, synthetic = [], {}, {}
    if run:
        rows, steps, synthetic = run_nets(run, data.resolve_data_dir(data_dir), num_images, seed, out, cs, model)
    elif weights:
        rows = onnx_nets(weights, dataset, data.resolve_data_dir(data_dir), num_images, seed, out, cs)
    rows += run_controls(controls, control_trials, seed, cs)
    numbers = {
        "run": run or weights,
        "steps": steps,
        "num_images": num_images if run or weights else 0,
        "wall_time_s": time.perf_counter() - start,
        "rows": rows,
        "synthetic": synthetic,
    }
    reversibility_figure(rows, os.path.join(out, "figures", "reversibility.png"))
    return Report("reversibility", numbers, markdown(numbers))
