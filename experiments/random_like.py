"""How random-like are a net's weights: per-layer entry, dependence and spectrum tests (paper section 4).

    python -m experiments.random_like --run=runs/mnist --out=runs/random_like
    python -m experiments.random_like --weights=alexnet.pth --out=runs/random_like_alexnet

``--run`` (repeatable) takes this project's run directories and compares each
layer at initialisation (step 0) with the last checkpoint. ``--weights``
(repeatable) takes a weight file: ``.npz``, ``.safetensors`` (needs
``pip install safetensors``) or a PyTorch state dict ``.pt``/``.pth``/``.bin``
(needs torch), e.g. torchvision's AlexNet weights, to repeat the paper's test
in one command. Every array with at least two dimensions whose matrix has both
sides >= 3 is a layer. PyTorch stores dense weights as (out, in) and convs as
(out, in, kh, kw); they are turned into this project's (in, out) and
(kh, kw, in, out) first (``--layout``; auto: PyTorch for .pt/.pth/.bin and
.safetensors, this project's for .npz).

Each matrix shape is calibrated once on ``--calibration`` Gaussian matrices
(cached under ``<out>/calibration``). Prints and writes ``<out>/random_like.md``
(a per-layer table and one verdict line per layer with its thresholds) and
``<out>/figures/<net>.png`` (standardised entries against the fitted Gaussian
and Laplace; normalised singular values against the Marchenko-Pastur or
quarter-circle law).

Wall time on 2 CPU cores shared with a training run, with
``OPENBLAS_NUM_THREADS=1``: four MNIST runs (784x1024, 1024x1024, 1024x10)
1.5 minutes, most of it calibration; the three MTCNN nets of facenet-pytorch
30 s. With OpenBLAS's default threads fighting the training run for the cores,
one MNIST run took 5.5 minutes. Expected: He-normal initial weights come out
random-like (a Gaussian layer fails some test by chance about one time in
eight, by a hair); trained layers keep near-Gaussian entries but gain
correlated rows and columns and outlier singular values, more so at higher
learning rates; the pre-trained MTCNN layers fail every family of tests.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from absl import flags
from scipy import stats as scipy_stats

from experiments import cli
from rev_nets import plots, spectra, train

_RUN = flags.DEFINE_multi_string("run", [], "A run directory (config.json, checkpoints/); repeatable.")
_WEIGHTS = flags.DEFINE_multi_string(
    "weights", [], "A weight file: .npz, .safetensors, or a PyTorch state dict (.pt, .pth, .bin); repeatable."
)
_LAYOUT = flags.DEFINE_enum(
    "layout", "auto", ["auto", "jax", "torch"], "Weight layout of --weights files: (in, out) or PyTorch's (out, in)."
)
_OUT = cli.shared_flag(
    flags.DEFINE_string, "out", "runs/random_like", "Where random_like.md, figures/ and calibration/ are written."
)
_CALIBRATION = flags.DEFINE_integer(
    "calibration", 50, "Gaussian matrices per shape that set the thresholds.", lower_bound=50
)
_SEED = cli.shared_flag(flags.DEFINE_integer, "seed", 0, "Seed of the Gaussian calibration and of the permutations.")

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
MIN_SIDE = 3  # Smaller matrices have no row or column correlations to speak of.


class Snapshot(NamedTuple):
    """One set of a net's weights: a label ("step 0", a file name) and its layers in this project's layout."""

    label: str
    weights: dict[str, np.ndarray]


class Net(NamedTuple):
    name: str
    snapshots: tuple[Snapshot, ...]  # e.g. (initial, trained)


class Row(NamedTuple):
    net: str
    layer: str
    snapshot: str
    original_shape: tuple[int, ...]
    assessment: spectra.Assessment


# ---------------------------------------------------------------- reading --


def from_torch_layout(w: np.ndarray) -> np.ndarray:
    """PyTorch's (out, in, *kernel) as this project's (*kernel, in, out): dense (out, in) -> (in, out), OIHW -> HWIO."""
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def file_layout(path: str, layout: str) -> str:
    """``layout``, or for "auto" the usual one of the file type: PyTorch's for state dicts and safetensors."""
    if layout != "auto":
        return layout
    return "jax" if path.endswith(".npz") else "torch"


def _flatten(tree, prefix: str = "") -> dict:
    """Nested dicts (e.g. a checkpoint holding a state dict) as one dict with dotted keys."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _load_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise cli.UsageError(f"reading {path} needs PyTorch: pip install torch (the CPU build is enough).") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = {k: v for k, v in _flatten(state).items() if isinstance(v, torch.Tensor)}
    return {k: v.detach().float().numpy() for k, v in tensors.items()}


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise cli.UsageError(f"reading {path} needs the safetensors package: pip install safetensors.") from None
    return load_file(path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


def read_weights(path: str, layout: str = "auto") -> dict[str, np.ndarray]:
    """The arrays of at least two dimensions in a weight file, in this project's layout, by their names in the file."""
    if not os.path.isfile(path):
        raise cli.UsageError(f"weight file {path} does not exist; pass an existing .npz, .safetensors or .pt file.")
    if path.endswith(".npz"):
        loader = _load_npz
    elif path.endswith(".safetensors"):
        loader = _load_safetensors
    elif path.endswith(TORCH_SUFFIXES):
        loader = _load_torch
    else:
        raise cli.UsageError(f"{path} is not a supported weight file; use .npz, .safetensors, .pt, .pth or .bin.")
    try:
        arrays = loader(path)
    except cli.UsageError:
        raise
    except Exception as error:  # noqa: BLE001 -- Any reader's error on a corrupt file becomes one sentence.
        raise cli.UsageError(f"could not read {path} ({type(error).__name__}: {error}).") from None
    convert = from_torch_layout if file_layout(path, layout) == "torch" else np.asarray
    return {name: convert(np.asarray(a)) for name, a in arrays.items() if np.ndim(a) >= 2}


def run_weights(params) -> dict[str, np.ndarray]:
    """A net's weights by layer name: h1, h2, ... for the hidden layers, then head."""
    named = {f"h{i + 1}": layer["w"] for i, layer in enumerate(params["hidden"])}
    return {name: np.asarray(w) for name, w in (named | {"head": params["head"]["w"]}).items()}


def read_run(workdir: str) -> tuple[Snapshot, ...]:
    """The initial (step 0) and last checkpointed weights of a run directory (one snapshot if they are the same)."""
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise cli.UsageError(
            f"{workdir} is not a run directory (no config.json); pass the --workdir of a training run."
        )
    states = train.saved_states(workdir)
    return tuple(Snapshot(f"step {step}", run_weights(state["params"])) for step, state in states.items())


# --------------------------------------------------------------- analysis --


def cached_calibration(shape: tuple[int, int], count: int, seed: int, folder: str) -> spectra.Stats:
    """``spectra.calibrate``, kept in ``folder`` as one .npz per shape, count, seed and statistics version."""
    n, m = shape
    path = os.path.join(folder, f"gaussian_{n}x{m}_count{count}_seed{seed}_v{spectra.CALIBRATION_VERSION}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return spectra.Stats(**{name: f[name] for name in spectra.Stats._fields})
    print(f"calibrating {n}x{m} on {count} Gaussian matrices", flush=True)
    calibration = spectra.calibrate(shape, count, seed)
    os.makedirs(folder, exist_ok=True)
    np.savez(path + ".tmp.npz", **calibration._asdict())
    os.replace(path + ".tmp.npz", path)
    return calibration


def analyse(nets: list[Net], count: int, seed: int, cache: str) -> tuple[list[Row], list[str]]:
    """Every layer of every snapshot judged against its shape's calibration; also the names of layers skipped."""
    rows, skipped = [], []
    for net in nets:
        for snapshot in net.snapshots:
            for layer, w in snapshot.weights.items():
                shape = spectra.as_matrix(w).shape
                if min(shape) < MIN_SIDE:
                    skipped.append(f"{net.name}/{layer} {tuple(w.shape)}")
                    continue
                calibration = cached_calibration(shape, count, seed, cache)
                assessment = spectra.assess(w, calibration, seed)
                rows.append(Row(net.name, layer, snapshot.label, tuple(w.shape), assessment))
    return rows, sorted(set(skipped))


# ----------------------------------------------------------------- output --


def _matrix_label(original: tuple[int, ...], shape: tuple[int, int]) -> str:
    label = "x".join(map(str, shape))
    return label if len(original) == 2 else f"{'x'.join(map(str, original))} as {label}"


def table(rows: list[Row]) -> str:
    """Markdown: one line per layer and snapshot; values beyond the Gaussian 99th percentile in bold."""
    columns = ["skewness", "excess_kurtosis", "ks_gauss", "ks_laplace", "row_corr", "col_corr", "ks_law", "max_sv"]
    header = (
        "| net | layer | weights | matrix | mean | std | skew | ex. kurt | KS Gauss | KS Laplace | row corr | col corr "
        "| KS law | max sv | outliers | random-like |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        a = row.assessment
        cells = []
        for name in columns:
            value = getattr(a.stats, name)
            text = f"{value:.4f}" if name in ("row_corr", "col_corr") else f"{value:.3g}"  # ratios near 1
            cells.append(f"**{text}**" if name in a.failed else text)
        lines.append(
            f"| {row.net} | {row.layer} | {row.snapshot} | {_matrix_label(row.original_shape, a.shape)} "
            f"| {a.stats.mean:.2g} | {a.stats.std:.3g} | {' | '.join(cells)} | {a.outliers} "
            f"| {'yes' if a.random_like else 'no'} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    return [spectra.verdict(f"{row.net}/{row.layer} {row.snapshot}", row.assessment) for row in rows]


def figure_panels(net: Net, rows: list[Row]) -> dict[str, list[plots.DensityPanel]]:
    """Per layer: standardised entries of each snapshot against N(0, 1) and the last one's Laplace fit, and
    normalised singular values against their law."""
    by_layer: dict[str, list[tuple[str, np.ndarray, spectra.Assessment]]] = {}
    for snapshot in net.snapshots:
        for row in rows:
            if row.net == net.name and row.snapshot == snapshot.label:
                by_layer.setdefault(row.layer, []).append((snapshot.label, snapshot.weights[row.layer], row.assessment))
    panels = {}
    for layer, items in by_layer.items():
        entries, singular = {}, {}
        for label, w, a in items:
            entries[label] = (np.ravel(w) - a.stats.mean) / a.stats.std
            singular[label] = spectra.normalised_singular_values(spectra.as_matrix(w))
        loc, scale = spectra.laplace_fit(entries[items[-1][0]])
        z = np.linspace(min(e.min() for e in entries.values()), max(e.max() for e in entries.values()), 400)
        a = items[-1][2]
        ratio = spectra.aspect_ratio(a.shape)
        lo, hi = spectra.law_edges(ratio)
        x = np.linspace(lo, hi, 400)
        law = "quarter circle" if ratio == 1 else f"Marchenko-Pastur, ratio {ratio:.3g}"
        panels[f"{layer} {'x'.join(map(str, a.shape))}"] = [
            plots.DensityPanel(
                entries,
                {
                    "Gaussian fit": (z, scipy_stats.norm.pdf(z)),
                    "Laplace fit": (z, scipy_stats.laplace.pdf(z, loc, scale)),
                },
                {},
                "entry, standardised by the fitted Gaussian",
                log=True,
            ),
            plots.DensityPanel(
                singular,
                {law: (x, spectra.law_density(x, ratio))},
                {"bulk edge": hi, f"Gaussian 99% max ({a.count})": a.limits.max_sv},
                "singular value / sqrt(max side * mean square)",
            ),
        ]
    return panels


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def main(argv: list[str]) -> None:
    del argv
    if not _RUN.value and not _WEIGHTS.value:
        raise cli.UsageError("nothing to analyse; pass --run=<run directory> or --weights=<file>, or both.")
    runs = [os.path.expanduser(p) for p in _RUN.value]
    files = [os.path.expanduser(p) for p in _WEIGHTS.value]
    out = os.path.expanduser(_OUT.value)
    sources = [(os.path.basename(os.path.normpath(p)), p, True) for p in runs]
    sources += [(os.path.splitext(os.path.basename(p))[0], p, False) for p in files]
    nets = []
    for name, (_, path, is_run) in zip(_unique_names([s[0] for s in sources]), sources):
        snapshots = read_run(path) if is_run else (Snapshot(os.path.basename(path), read_weights(path, _LAYOUT.value)),)
        nets.append(Net(name, snapshots))
    rows, skipped = analyse(nets, _CALIBRATION.value, _SEED.value, os.path.join(out, "calibration"))
    if not rows:
        raise cli.UsageError(f"no weight matrix with both sides >= {MIN_SIDE} found in the given runs and files.")
    report = [table(rows), "", *verdicts(rows)]
    if skipped:
        report += ["", f"Skipped (a side below {MIN_SIDE}): {', '.join(skipped)}"]
    text = "\n".join(report) + "\n"
    print(text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "random_like.md"), "w") as f:
        f.write(text)
    for net in nets:
        path = os.path.join(out, "figures", f"{net.name}.png")
        title = f"{net.name}: {' vs '.join(s.label for s in net.snapshots)}"
        print(f"wrote {plots.density_grid(figure_panels(net, rows), path, title=title)}")


if __name__ == "__main__":
    cli.run(main)
