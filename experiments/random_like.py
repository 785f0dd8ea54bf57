"""How random-like are a net's weights: per-layer entry, dependence and spectrum tests (paper section 4).

    python -m experiments.random_like --run=runs/mnist --workdir=runs/random_like
    python -m experiments.random_like --weights=alexnet.pth --workdir=runs/random_like_alexnet

``--run`` (repeatable) takes this project's run directories and compares each
layer at initialisation (step 0) with the last checkpoint. ``--weights``
(repeatable) takes a weight file: ``.npz``, ``.safetensors`` (needs
``pip install safetensors``) or a PyTorch state dict ``.pt``/``.pth``/``.bin``
(needs torch), e.g. torchvision's AlexNet weights, to repeat the paper's test
in one command, or an ONNX model ``.onnx`` (needs ``pip install '.[onnx]'``). Every array with at least two dimensions whose matrix has both
sides >= 3 is a layer. PyTorch stores dense weights as (out, in) and convs as
(out, in, kh, kw); they are turned into this project's (in, out) and
(kh, kw, in, out) first (``--layout``; auto: PyTorch for .pt/.pth/.bin and
.safetensors, this project's for .npz).

Each matrix shape is calibrated once on ``--calibration`` Gaussian matrices
(cached under ``<workdir>/calibration``). Prints and writes ``<workdir>/random_like.md``
(a per-layer table and one verdict line per layer with its thresholds), ``<workdir>/random_like.json``
(every layer's statistics, thresholds and verdict) and
``<workdir>/figures/<net>.png`` (standardised entries against the fitted Gaussian
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

from absl import flags

from experiments import cli
from rev_nets import models, weights
from rev_nets.analysis import random_like, report_files

_RUN = flags.DEFINE_multi_string("run", [], "A training run to read (config.json, checkpoints/); repeatable.")
_WEIGHTS = flags.DEFINE_multi_string(
    "weights", [], "A weight file: .npz, .safetensors, a PyTorch state dict (.pt, .pth, .bin) or .onnx; repeatable."
)
_LAYOUT = flags.DEFINE_enum(
    "layout", "auto", list(weights.LAYOUTS), "Weight layout of --weights files: (in, out) or PyTorch's (out, in)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    "runs/random_like",
    "Where to write random_like.md, random_like.json, figures/ and calibration/.",
)
_CALIBRATION = flags.DEFINE_integer(
    "calibration", 50, "Gaussian matrices per shape that set the thresholds.", lower_bound=50
)
_SEED = cli.shared_flag(
    flags.DEFINE_integer, "seed", 0, "Seed of the Gaussian calibration and of the permutations.", lower_bound=0
)
_MODEL = cli.shared_flag(
    flags.DEFINE_string,
    "model",
    None,
    "The factory (package.module:factory) of --run runs that trained a model of your own: imported only when named "
    "here (the built-in nets and rev_nets.nnx_zoo need none).",
)


def main(argv: list[str]) -> None:
    del argv
    out = cli.workdir(_WORKDIR.value)
    if _MODEL.value:  # Imported only once the runs are read: checked before.
        cli.checked("model", models.import_factory, _MODEL.value)
    report = random_like.report(
        [cli.existing(p, "run") for p in _RUN.value],
        [cli.existing(p, "weights", "file") for p in _WEIGHTS.value],
        out,
        layout=_LAYOUT.value,
        calibration=_CALIBRATION.value,
        seed=_SEED.value,
        factory=_MODEL.value,
    )
    report_files.write(report, out)
    print(report.markdown)
    print(f"wrote {out}/random_like.md, random_like.json, figures/")


if __name__ == "__main__":
    cli.run(main)
