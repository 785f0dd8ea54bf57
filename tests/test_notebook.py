"""The Colab quickstart runs top to bottom (on made data when no dataset is reachable)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_runs_every_cell(tmp_path, monkeypatch):
    monkeypatch.delenv("REV_NETS_DATA_DIR", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "steps: test error" in text and "layer 3" in text and "NNX CNN after" in text
    assert "with SHADOW consistency on" in text
    assert "running statistics as they were after the reverse pass: True" in text and "BatchNorm CNN after" in text
