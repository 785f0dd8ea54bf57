"""Tables and figures from a grid's runs: SHADOW against backprop, fairly summarised.

    python -m experiments.report --dataset=mnist --grid=~/rev_nets_grid --workdir=results

For every cell at its chosen learning rate: final test error (mean ± std over
seeds), the difference to its backprop twin with its Welch standard error
("effect" only beyond 2 standard errors), early test error, and whether the
synthetic test error tracks the real one: the mean per-epoch gap (synthetic
minus real) and the correlation of their epoch-to-epoch changes (raw curves
correlate whenever both fall). Writes ``<workdir>/<dataset>.md``, learning-curve
figures, and a copy of every run's ``config.json`` and ``metrics.jsonl`` so
that the tables can be rebuilt from the repository alone.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets.analysis import grid, grid_report

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(grid.PLANS))
_GRID = cli.shared_flag(
    flags.DEFINE_string, "grid", "~/rev_nets_grid", "The grid to read (the --workdir given to experiments.grid)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string, "workdir", "results", "Where to write the table, figures and copied metrics."
)


def main(argv) -> None:
    del argv
    dataset = _DATASET.value
    root = os.path.join(os.path.expanduser(_GRID.value), dataset)
    report = grid_report.summarise(dataset, grid.PLANS[dataset], root, _WORKDIR.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, f"{dataset}.md"), "w") as f:
        f.write(report + "\n")
    print(report)


if __name__ == "__main__":
    cli.run(main)
