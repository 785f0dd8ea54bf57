"""Tables and figures from a grid's runs: SHADOW against backprop, fairly summarised.

    python -m experiments.report --dataset=mnist --grid=~/rev_nets_grid --workdir=results
    python -m experiments.report --few_labels --dataset=mnist --grid=~/rev_nets_grid --workdir=results/few_labels

Full labels: for every cell at its chosen learning rate, final test error
(mean ± std over seeds), the difference to its backprop twin with its Welch
standard error ("effect" only beyond 2 standard errors), early test error,
and whether the synthetic test error tracks the real one: the mean
per-epoch gap (synthetic minus real) and the correlation of their
epoch-to-epoch changes (raw curves correlate whenever both fall). Writes
``<workdir>/<dataset>.md``.

``--few_labels``: per label count and arm, at the settings chosen on
validation, test error (mean ± std over seeds), the paired difference to
backprop of the same seed (mean ± SE of the per-seed differences; "effect"
only beyond 2 SE), synthetic test error, training minutes per run, the twin's norm
and agreement, the validation errors behind every choice, the probes, and
each row's command. Writes ``<workdir>/<dataset>.md`` and ``.json`` and
``figures/<dataset>_error_vs_labels.png``.

Both write figures and a copy of every finished run's ``config.json`` and
``metrics.jsonl``, so that the tables can be rebuilt from the repository alone.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets.analysis import few_labels, few_labels_report, grid, grid_report, report_files

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(grid.PLANS))
_FEW_LABELS = cli.shared_flag(
    flags.DEFINE_boolean, "few_labels", False, "The few-label grid (MNIST, CIFAR-10) instead of the full-label one."
)
_GRID = cli.shared_flag(
    flags.DEFINE_string, "grid", "~/rev_nets_grid", "The grid to read (the --workdir given to experiments.grid)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string, "workdir", "results", "Where to write the table, figures and copied metrics."
)


def main(argv) -> None:
    del argv
    dataset, out = _DATASET.value, _WORKDIR.value
    if _FEW_LABELS.value:
        if dataset not in few_labels.PLANS:
            raise cli.UsageError(f"--few_labels has grids for {', '.join(few_labels.PLANS)}, not {dataset}.")
        root = os.path.join(os.path.expanduser(_GRID.value), f"{dataset}_labels")
        numbers, markdown = few_labels_report.summarise(dataset, few_labels.PLANS[dataset], root, out)
        report_files.write_json_and_markdown(out, dataset, numbers, markdown)
    else:
        root = os.path.join(os.path.expanduser(_GRID.value), dataset)
        markdown = grid_report.summarise(dataset, grid.PLANS[dataset], root, out) + "\n"
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{dataset}.md"), "w") as f:
            f.write(markdown)
    print(markdown)


if __name__ == "__main__":
    cli.run(main)
