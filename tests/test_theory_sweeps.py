"""The theory's sweeps reproduce the paper's section 1 table on a small sweep, and write their report."""

import json

import numpy as np
import pytest

from rev_nets.analysis import report_files
from rev_nets.analysis import theory_sweeps as T

SMALL = T.Sweep(
    (T.Point("paper_table", (1000, 1000), 10), T.Point("paper_table", (4000, 1000), 10)), weight_draws=3, hidden_draws=4
)


@pytest.fixture(scope="module")
def points():
    return T.run_sweep(SMALL, seed=0, log=lambda line: None)


def test_small_sweep_reproduces_the_papers_table(points):
    rows = T.paper_comparison(points)
    assert [(r["n"], r["rho"]) for r in rows] == [(1000, 1.0), (4000, 1.0)]
    for row in rows:  # Linear and ReLU recovery: 12 trials each, within 15% of the paper's numbers.
        np.testing.assert_allclose(row["measured"][:2], row["paper"][:2], rtol=0.15)


def test_error_falls_as_n_grows_at_the_theorems_rate(points):
    assert 0.7 < T.fitted_slopes(points)["paper_table"] < 1.3  # Error ~ k / (rho n): slope 1 in log-log.


def test_report_holds_the_numbers_its_markdown_shows_and_draws_its_figures(points, tmp_path):
    numbers = {
        "sweep": "small",
        "seed": 0,
        "weight_draws": 3,
        "hidden_draws": 4,
        "cs": list(T.theory.DEFAULT_CS),
        "c_table": T.C_TABLE,
        "wall_time_s": 1.0,
        "machine": "test",
        "paper_comparison": T.paper_comparison(points),
        "slopes": T.fitted_slopes(points),
        "points": points,
    }
    report = T.report_of(numbers, str(tmp_path))
    assert report.name == "theory" and report.markdown == T.markdown(numbers)
    report_files.write(report, str(tmp_path))
    written = json.loads((tmp_path / "theory.json").read_text())
    assert written["slopes"] == numbers["slopes"]
    markdown = (tmp_path / "theory.md").read_text()
    assert f"- paper_table: {written['slopes']['paper_table']:.3f}" in markdown
    for row in written["paper_comparison"]:  # the JSON's measured numbers are the ones the table shows
        cells = [f"{a:.3g} / {b:.3g}" for a, b in zip(row["measured"], row["paper"])]
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row['n']} | 1 |"))
        assert all(cell in line for cell in cells), line
    for figure in ("recovery_vs_k_over_rho_n.png", "error_vs_n.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 1000


def test_unknown_sweep_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sweep must be one of"):
        T.sweep_report(str(tmp_path), "huge")
