"""Tables and figures from a grid's runs: SHADOW against backprop, fairly summarised.

    python -m experiments.report --dataset=mnist --grid=~/rev_nets_grid --workdir=results
    python -m experiments.report --few_labels --dataset=mnist --grid=~/rev_nets_grid --workdir=results/few_labels

Full labels: for every cell at its chosen learning rate, final test error
(mean ± std over seeds), the difference to its backprop twin with its Welch
standard error ("effect" only beyond 2 standard errors), early test error,
and whether the synthetic test error tracks the real one: the mean
per-epoch gap (synthetic minus real) and the correlation of their
epoch-to-epoch changes (raw curves correlate whenever both fall).

``--few_labels``: per label count and arm, at the settings chosen on
validation, test error (mean ± std over seeds), the paired difference to
backprop of the same seed (mean ± SE of the per-seed differences; "effect"
only beyond 2 SE), synthetic test error, training minutes per run, the twin's norm
and agreement, the validation errors behind every choice, the probes, and
each row's command.

``--dataset=cifar10_airbench`` (``rev_nets.analysis.scale_grid``): the choices
made on validation, then per final arm (trained on every training image) test
error with and without test-time augmentation, the paired difference to
backprop, synthetic test error and its tracking, and training and evaluation
minutes.
All write ``<workdir>/<dataset>.md`` (the tables) and ``<workdir>/<dataset>.json``
(their numbers), figures, and a copy of every finished run's ``config.json`` and
``metrics.jsonl``, so that the tables can be rebuilt from the repository alone.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, configs
from experiments.configs import grid_plans
from rev_nets.analysis import few_label_grid, full_label_grid, report_files, scale_grid

SUMMARISE = {  # Each plan's shape has its report.
    full_label_grid.Plan: full_label_grid.summarise,
    few_label_grid.LabelPlan: few_label_grid.summarise,
    scale_grid.ScalePlan: scale_grid.summarise,
}

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(grid_plans.PLANS))
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
    dataset, few_labels, out = _DATASET.value, _FEW_LABELS.value, cli.workdir(_WORKDIR.value)
    plan = configs.plan(dataset, few_labels)
    root = configs.grid_root(_GRID.value, dataset, few_labels)
    report = SUMMARISE[type(plan)](dataset, plan, root, out, configs.entry_point(dataset))
    report_files.write(report, out)
    print(report.markdown)


if __name__ == "__main__":
    cli.run(main)
