"""What keeps a run's saved state sane: a blow-up caught at each check of the loop, and each checkpoint's checksum.

The loop reads its on-device metrics only at each log interval; there the
guard also reads the params' global norm and compares both with the run's
early level (its first step's loss and the norm after it): a non-finite
value, a mean loss over ``LOSS_FACTOR`` times the first step's, or a norm
over ``NORM_FACTOR`` times the early one is a blow-up (BUILD_NOTES,
"Divergence guard", has the measurements behind both factors). Each
checkpoint's checksum (``digest``: a hash of every leaf's bytes, by path) is
recorded beside it, so a resume or a reader can skip a checkpoint that does
not restore, holds a non-finite value, or differs from what was saved.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

LOSS_FACTOR = 100.0  # a check's mean loss above this times the first step's loss is a blow-up
NORM_FACTOR = 10.0  # the params' global norm above this times its early value is a blow-up


@dataclasses.dataclass(frozen=True)
class Level:
    """A run's early level: the loss of its first step and the params' global norm after it."""

    loss: float
    norm: float


@dataclasses.dataclass
class Guard:
    """The loop's host-side watch: ``level`` is the run's early level, taken at the first check when not given."""

    level: Level | None = None

    def cause(self, loss: float, norm: float) -> str | None:
        """Why the state at a check has blown up (``loss``: the mean loss so far, ``norm``: the params' global
        norm), or None while it is sane."""
        if not math.isfinite(loss):
            return "the training loss became NaN or infinite"
        if not math.isfinite(norm):
            return "the parameters became NaN or infinite"
        if self.level is None:
            self.level = Level(loss, norm)
        if loss > LOSS_FACTOR * self.level.loss:
            return f"the training loss rose to {loss:.3g}, over {LOSS_FACTOR:g} times its first step's {self.level.loss:.3g}"
        if norm > NORM_FACTOR * self.level.norm:
            return f"the parameters' global norm grew to {norm:.3g}, over {NORM_FACTOR:g} times its early {self.level.norm:.3g}"
        return None


def digest(tree: Any) -> dict[str, str]:
    """Path ("params/hidden/0/w") -> a hash of the leaf's dtype, shape and bytes, for every leaf of ``tree``; the
    paths read alike for a ``TrainState`` and the nested dicts and lists a checkpoint restores to without one."""
    host = jax.device_get(tree)
    return {_path_text(path): _leaf_hash(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(host)}


def problem(tree: Any, recorded: Mapping[str, str] | None) -> str | None:
    """What is wrong with a restored ``tree``, as a predicate ("holds NaN or infinite values in params/head/w";
    also a checksum that differs from the ``recorded`` one, when there is one), or None."""
    host = jax.device_get(tree)
    for path, leaf in jax.tree_util.tree_leaves_with_path(host):
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact) and not np.isfinite(leaf).all():
            return f"holds NaN or infinite values in {_path_text(path)}"
    if recorded is None:
        return None
    found = digest(host)
    if not found.keys() <= recorded.keys():
        return f"holds {min(found.keys() - recorded.keys())}, which was not saved"
    changed = [path for path, value in found.items() if recorded[path] != value]
    return f"differs from its checksum at save time in {min(changed)}" if changed else None


def newest_intact(
    steps: Iterable[int], restore: Callable[[int], Any], check: Callable[[int, Any], str | None]
) -> tuple[int | None, Any, list[str]]:
    """The newest of ``steps`` that ``restore(step)`` reads and ``check(step, restored)`` passes: its step and the
    restored tree (None, None when none does), and why each newer one was skipped."""
    skipped = []
    for step in sorted(steps, reverse=True):
        try:
            restored = restore(step)
        except Exception as error:  # noqa: BLE001 -- orbax and tensorstore raise many kinds for a damaged folder.
            skipped.append(f"step {step} does not restore ({type(error).__name__})")
            _collect_abandoned_reads()
            continue
        reason = check(step, restored)
        if reason is None:
            return step, restored, skipped
        skipped.append(f"step {step} {reason}")
    return None, None, skipped


def _collect_abandoned_reads() -> None:
    """Collects the reads a failed restore left behind now, without printing: orbax abandons the other arrays'
    read coroutines when one fails, and Python would print each one's exception (tens of lines) when it frees it."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _path_text(path: tuple) -> str:
    """A key path as text: dict keys, attribute names and sequence indices joined by "/"."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))) for entry in path)


def _leaf_hash(leaf: Any) -> str:
    array = np.ascontiguousarray(leaf)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.blake2b(header + array.tobytes(), digest_size=8).hexdigest()
