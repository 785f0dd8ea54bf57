"""How an analysis leaves its numbers: one JSON file (all of them) and one markdown file (the tables), side by side."""

from __future__ import annotations

import json
import os


def write_json_and_markdown(folder: str, stem: str, report: dict, markdown: str) -> None:
    """``<folder>/<stem>.json`` (``report``) and ``<folder>/<stem>.md`` (``markdown``), the folder made if needed."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{stem}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(folder, f"{stem}.md"), "w") as f:
        f.write(markdown)
