"""The theory, measured: recovery of random-net samples by the feedforward net (the paper's sections 1-2).

    python -m experiments.theory                  # default sweep: 1.5 min on a 2-core CPU, 2.6 min shared
    python -m experiments.theory --sweep=large    # 30 weight draws, more sizes: ~10-15 min there

Sweeps n (1,000 to 48,000), k, rho and depth (1-3) of ``rev_nets.theory``'s model; every point
is ``weight_draws x hidden_draws`` trials (default 10 x 10). Writes to ``--workdir`` (``rev_nets.analysis.theory_sweeps``):
``theory.md`` (the paper's section 1 table beside the measured one, fitted slopes, every point
per layer, timings), ``theory.json`` (the same numbers) and ``figures/recovery_vs_k_over_rho_n.png``
(log-log, the theorem's slope-1 line drawn in) and ``figures/error_vs_n.png``.

Expected: the one-layer numbers within ~5% of the paper's table; relative squared error
``~ 2 (1 + c^2) k / (rho n)`` with the bias (slope 1 in ``k / (rho n)``), ``m / (rho n)`` without.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets.analysis import report_files, theory_sweeps

_SWEEP = flags.DEFINE_enum("sweep", "default", list(theory_sweeps.SWEEPS), "Which sweep: default (~1.5 min) or large.")
_SEED = cli.shared_flag(
    flags.DEFINE_integer, "seed", 0, "Seed of the weight, hidden-vector and mask draws.", lower_bound=0
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    os.path.join("~", "rev_nets_runs", "theory"),
    "Where to write theory.md, theory.json and figures/.",
)


def main(argv: list[str]) -> None:
    del argv
    workdir = cli.workdir(_WORKDIR.value)  # Before the sweep's minutes of work.
    report = theory_sweeps.sweep_report(workdir, _SWEEP.value, _SEED.value)
    report_files.write(report, workdir)
    print(f"wall time {report.numbers['wall_time_s']:.0f}s; wrote {workdir}/theory.md, theory.json, figures/")


if __name__ == "__main__":
    cli.run(main)
