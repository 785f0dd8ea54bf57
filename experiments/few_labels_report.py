"""Tables and a figure from the few-label grid's runs: every arm against backprop on the same label subsets.

    python -m experiments.few_labels_report --dataset=mnist --grid=~/rev_nets_grid --workdir=results/few_labels

Per label count and arm, at the settings chosen on validation: test error
(mean ± std over seeds), the paired difference to backprop of the same seed
(mean ± SE of the per-seed differences; "effect" only beyond 2 SE),
synthetic test error, minutes per run, the twin's norm and agreement, the
validation errors behind every choice, and each row's command. Writes
``<workdir>/<dataset>.md`` and ``.json``, ``figures/<dataset>_error_vs_labels.png``
and a copy of every finished run's ``config.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets.analysis import few_labels, few_labels_report, report_files

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(few_labels.PLANS))
_GRID = cli.shared_flag(
    flags.DEFINE_string, "grid", "~/rev_nets_grid", "The grid to read (the --workdir given to experiments.few_labels)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string, "workdir", "results/few_labels", "Where to write the tables, figure and copied metrics."
)


def main(argv) -> None:
    del argv
    dataset = _DATASET.value
    root = os.path.join(os.path.expanduser(_GRID.value), f"{dataset}_labels")
    numbers, markdown = few_labels_report.summarise(dataset, few_labels.PLANS[dataset], root, _WORKDIR.value)
    report_files.write_json_and_markdown(_WORKDIR.value, dataset, numbers, markdown)
    print(markdown)


if __name__ == "__main__":
    cli.run(main)
