"""A run stopped between two steps of an epoch: what its checkpoint does not hold, saved beside it and read back.

A stop mid-epoch (``fit``'s ``stop``) saves the state as an ordinary
checkpoint and, in ``<workdir>/epochs_so_far.json`` by step, the epoch so
far: its metric sums, its training seconds and its frozen generator alphas
(``alpha="data"``), so that the resumed epoch's line equals an
uninterrupted run's. The record is written before the checkpoint, so every
mid-epoch checkpoint has one; a checkpoint at an epoch boundary (all that
runs saved before) needs none: its epoch so far is empty.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from rev_nets.train.rundir import write_record

FILE = "epochs_so_far.json"


@dataclasses.dataclass(frozen=True)
class EpochSoFar:
    """The steps of an epoch before ``step``: the accumulator's sums on the host (its ``steps`` counts them), their
    training seconds, and the epoch's frozen alphas (None unless the config fits them)."""

    step: int
    sums: dict[str, Any]
    train_time_s: float
    alpha: tuple[Any, ...] | None = None


def save(workdir: str, so_far: EpochSoFar, checkpointed: Iterable[int]) -> None:
    """Adds ``so_far`` to the workdir's record, dropping the steps not in ``checkpointed`` (deleted checkpoints)."""
    steps = set(checkpointed)
    kept = {step: record for step, record in _read(workdir).items() if int(step) in steps}
    record = {
        "sums": {name: np.asarray(value).item() for name, value in so_far.sums.items()},
        "train_time_s": so_far.train_time_s,
        "alpha": None if so_far.alpha is None else [np.asarray(a).tolist() for a in so_far.alpha],
    }
    write_record(os.path.join(workdir, FILE), kept | {str(so_far.step): record})


def load(workdir: str, step: int) -> EpochSoFar | None:
    """The epoch so far saved with the checkpoint of ``step``, or None (an epoch boundary, or an older run)."""
    record = _read(workdir).get(str(step))
    if record is None:
        return None
    alpha = None if record["alpha"] is None else tuple(record["alpha"])
    return EpochSoFar(step, record["sums"], record["train_time_s"], alpha)


def _read(workdir: str) -> dict[str, Any]:
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
