"""What every analysis returns (a ``Report``) and how it is left on disk: ``<name>.json`` (the numbers) and
``<name>.md`` (the tables), side by side, each replaced whole so that no reader ever sees half a file."""

from __future__ import annotations

import os
from typing import NamedTuple

from rev_nets.errors import InputError
from rev_nets.train.rundir import json_text


class Report(NamedTuple):
    """An analysis's result: ``name`` is the stem of its files ("theory", "mnist"), ``numbers`` all its numbers
    (JSON-ready; NaN and infinities, which JSON lacks, are written as ``null``: the tables tell "n/a" from
    "diverged"), ``markdown`` its tables."""

    name: str
    numbers: dict
    markdown: str


def write(report: Report, folder: str) -> tuple[str, str]:
    """``<folder>/<name>.json`` and ``<folder>/<name>.md``, the folder made if needed; returns their paths."""
    if not report.name or os.path.basename(report.name) != report.name:
        raise InputError(f"report name {report.name!r} is not a file stem; name it without a folder, e.g. 'theory'.")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, report.name)
    return (
        _replace(f"{stem}.json", json_text(report.numbers, indent=1)),
        _replace(f"{stem}.md", report.markdown),
    )


def _replace(path: str, text: str) -> str:
    """Writes ``text`` to ``<path>.tmp``, then renames it over ``path`` (atomic on one file system)."""
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
