"""What keeps a run's saved state sane: a blow-up caught at each check of the loop, and each checkpoint's checksum.

The loop reads its on-device metrics only at each log interval; there the
guard also reads the params' global norm and compares both with the run's
early level (its first step's loss and the norm after it): a non-finite
value, a mean loss over ``LOSS_FACTOR`` times the first step's, or a norm
over ``NORM_FACTOR`` times the first one is a blow-up (BUILD_NOTES,
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
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

LOSS_FACTOR = 100.0  # a check's mean loss above this times the first step's loss is a blow-up
NORM_FACTOR = 10.0  # the params' global norm above this times its value after the first step is a blow-up


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
            return "the params became NaN or infinite"
        if self.level is None:
            self.level = Level(loss, norm)
        early = self.level
        if loss > LOSS_FACTOR * early.loss:
            return f"the training loss rose to {loss:.3g}, over {LOSS_FACTOR:g} times its first step's {early.loss:.3g}"
        if norm > NORM_FACTOR * early.norm:
            return f"the params' global norm grew to {norm:.3g}, over {NORM_FACTOR:g} times its first {early.norm:.3g}"
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
    _drop_abandoned_reads()
    skipped = []
    for step in sorted(steps, reverse=True):
        try:
            restored = restore(step)
        except Exception as error:  # noqa: BLE001 -- orbax and tensorstore raise many kinds for a damaged folder.
            skipped.append(f"step {step} does not restore ({_first_words(error)})")
            gc.collect()  # Frees the reads it abandoned now, while their exceptions are dropped.
            continue
        reason = check(step, restored)
        if reason is None:
            return step, restored, skipped
        skipped.append(f"step {step} {reason}")
    return None, None, skipped


def _drop_abandoned_reads() -> None:
    """Keeps what a failed restore leaves behind from printing: orbax abandons the other arrays' reads when one
    fails, and each then ends in an exception Python prints as a traceback (a read coroutine freed unawaited; a
    read that completes after its event loop closed), tens of lines each. Other such exceptions still print."""
    if getattr(sys.unraisablehook, "drops_abandoned_reads", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _abandoned_read(unraisable):
            previous(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook


def _first_words(error: Exception) -> str:
    """The head of an error's message ("NOT_FOUND", "Encountered error while reading array index"), or its type:
    orbax's messages go on for pages."""
    head = str(error).split("\n")[0].split(":")[0].strip()[:60]
    return head or type(error).__name__


def _abandoned_read(unraisable) -> bool:
    """Whether an unraisable exception is one of an abandoned orbax read."""
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None:
        return "orbax" in code.co_filename
    closed = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
    return closed and "asyncio" in traceback.extract_tb(unraisable.exc_traceback)[-1].filename


def _path_text(path: tuple) -> str:
    """A key path as text: dict keys, attribute names and sequence indices joined by "/"."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))) for entry in path)


def _leaf_hash(leaf: Any) -> str:
    array = np.ascontiguousarray(leaf)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.blake2b(header + array.tobytes(), digest_size=8).hexdigest()
