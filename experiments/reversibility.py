"""Are nets reversible? Round trips through the transposed-weight generator, layer by layer.

    python -m experiments.reversibility --run=/root/rev_nets_grid/mnist/backprop_lr0.02_seed0 \\
        --data_dir=../shared/datasets

    python -m experiments.reversibility --weights=net.onnx --dataset=cifar10 --data_dir=../shared/datasets

Measures the run's initial, trained and shuffled-trained nets (or the ONNX net and its shuffled
weights: a chain of Conv/Gemm/MatMul layers with ReLUs and pooling, ``rev_nets.onnx_net``) and the
Gaussian control nets (what is measured: ``rev_nets.analysis.reversibility``). Without ``--run``
or ``--weights`` only the control runs. The run directory is opened read-only.

Writes ``reversibility.md``, ``reversibility.json``, ``figures/reversibility.png``,
``figures/spectrum.png`` and ``figures/images_<net>.png`` (x beside x_syn from every layer)
to ``--workdir``. With 1000 images on a 2-core CPU: 16 s for the MNIST MLP,
89 s for the CIFAR-10 CNN (221 s for a SHADOW-trained one, with a training
run beside it).
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets import data, models
from rev_nets.analysis import report_files, reversibility

_RUN = flags.DEFINE_string(
    "run", None, "The training run to read (config.json, checkpoints/); empty: only the control."
)
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "An ONNX file of a plain ReLU net to measure instead of a run (needs --dataset); pip install onnx."
)
_DATASET = cli.shared_flag(
    flags.DEFINE_string,
    "dataset",
    None,
    "With --weights: the dataset whose test images the net reads (mnist, cifar10).",
)
_DATA_DIR = cli.shared_flag(
    flags.DEFINE_string,
    "data_dir",
    None,
    f"Folder with the original dataset files; else ${data.DATA_DIR_ENV}; else TFDS.",
)
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 1000, "Test images to measure on (the grids show the first 8).", lower_bound=1
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    None,
    "Where to write; default ~/rev_nets_runs/reversibility/<run name> (or 'control').",
)
_CONTROL = flags.DEFINE_multi_string(
    "control",
    list(reversibility.DEFAULT_CONTROLS),
    "Gaussian control nets as 'n_0,...,n_L:k:c' (widths, top-layer sparsity, bias multiplier); repeat the flag.",
)
_CONTROL_TRIALS = flags.DEFINE_integer(
    "control_trials", 100, "Samples per control net (4 weight draws).", lower_bound=1
)
_SEED = cli.shared_flag(
    flags.DEFINE_integer, "seed", 0, "Seed of the shuffled net and of the control's draws.", lower_bound=0
)
_MODEL = cli.shared_flag(
    flags.DEFINE_string,
    "model",
    None,
    "The factory (package.module:factory) of a run that trained a model of your own: imported only when named here "
    "(the built-in nets and rev_nets.nnx_zoo need none).",
)


def main(argv: list[str]) -> None:
    del argv
    run = _RUN.value
    source = run or _WEIGHTS.value
    name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0] if source else "control"
    out = cli.workdir(
        os.path.join("~", "rev_nets_runs", "reversibility", name) if _WORKDIR.value is None else _WORKDIR.value
    )
    if _MODEL.value:  # Imported only once the run is read: checked before.
        cli.checked("model", models.import_factory, _MODEL.value)
    if _DATASET.value and _DATASET.value not in data.DATASETS:
        raise cli.UsageError(f"--dataset must be one of {', '.join(data.DATASETS)}, got {_DATASET.value!r}.")
    for spec in _CONTROL.value:  # The controls run last: checked before the run's nets are measured.
        cli.checked("control", reversibility.parse_control, spec)
    report = reversibility.analyse(
        run and cli.existing(run, "run"),
        out,
        weights=_WEIGHTS.value and cli.existing(_WEIGHTS.value, "weights", "file"),
        dataset=_DATASET.value,
        data_dir=_DATA_DIR.value and cli.existing(_DATA_DIR.value, "data_dir"),
        num_images=_NUM_IMAGES.value,
        controls=_CONTROL.value,
        control_trials=_CONTROL_TRIALS.value,
        seed=_SEED.value,
        model=_MODEL.value,
    )
    report_files.write(report, out)
    print(report.markdown)
    print(f"wrote {out}/reversibility.md, reversibility.json, figures/")


if __name__ == "__main__":
    cli.run(main)
