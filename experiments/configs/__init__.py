"""Each training entry point's settings, one record each (``get_config()``), and the grids' plans over them.

Flags and sweep cells override fields of these records; ``grid_plans`` and
``few_label_plans`` hold the sweeps as data. The helpers below are what
``experiments.grid`` and ``experiments.report`` share.
"""

from __future__ import annotations

import functools
import importlib
import os

from experiments import cli, settings
from experiments.configs import few_label_plans, grid_plans
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
    """``python -m experiments.<dataset>`` with a run's overrides as its flags, its work directory and data."""
    rows = (*settings.TRAINING, *importlib.import_module(f"experiments.configs.{dataset}").ROWS)

    def placement(workdir: str) -> list[str]:
        return [f"--workdir={workdir}", *([f"--data_dir={data_dir}"] if data_dir else [])]

    return sweep.EntryPoint(f"experiments.{dataset}", functools.partial(cli.command_line, rows), placement)
