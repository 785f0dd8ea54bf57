"""The grids' plans, by grid and dataset, and how their runs start: what experiments.grid and experiments.report share.
"""

from __future__ import annotations

import os

from experiments import cli
from experiments.configs import few_label_plans, grid_plans
from experiments.sweep_flags import command_line
from rev_nets.analysis import sweep


def plan(dataset: str, few_labels: bool):
    """The dataset's full-label plan, or its few-label plan (refusing a dataset without one)."""
    if not few_labels:
        return grid_plans.PLANS[dataset]
    if dataset not in few_label_plans.PLANS:
        raise cli.UsageError(f"--few_labels has grids for {', '.join(few_label_plans.PLANS)}, not {dataset}.")
    return few_label_plans.PLANS[dataset]


def grid_root(grid: str, dataset: str, few_labels: bool) -> str:
    """Where a grid's runs live: ``<grid>/<dataset>``, or ``<grid>/<dataset>_labels`` for few labels."""
    return os.path.join(os.path.expanduser(grid), f"{dataset}_labels" if few_labels else dataset)


def entry_point(dataset: str, data_dir: str | None = None) -> sweep.EntryPoint:
    """``python -m experiments.<dataset>`` with a run's flags, its work directory and the data folder."""

    def placement(workdir: str) -> list[str]:
        return [f"--workdir={workdir}", *([f"--data_dir={data_dir}"] if data_dir else [])]

    return sweep.EntryPoint(f"experiments.{dataset}", command_line, placement)
