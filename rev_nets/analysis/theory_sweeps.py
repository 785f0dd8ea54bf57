"""The theory's sweeps: how well the feedforward net recovers random-net samples, against n, k, rho and depth.

``sweep_report`` simulates every point of a sweep (``rev_nets.theory``'s
model, ``weight_draws x hidden_draws`` trials each) and returns the numbers:
per point and layer the recovery errors, the paper's section 1 table beside
the measured one, and the slopes fitted in ``k / (rho n)``, as the ``Report``
"theory" (``theory.json``, ``theory.md``), and draws two figures into the
output folder. Expected: the
one-layer numbers within ~5% of the paper's table; relative squared error
``~ 2 (1 + c^2) k / (rho n)`` with the bias (slope 1), ``m / (rho n)`` without.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from rev_nets import plots, theory
from rev_nets.analysis.report_files import Report
from rev_nets.errors import InputError

SWEEPS = ("default", "large")
C_TABLE = 2.0  # The bias of the paper's section 1: b = -2 ||h|| sqrt(2 / (rho n)).

# The paper's section 1, m = 1000, k = 10: (n, rho) -> (linear, relu, thresholded at c = 2).
PAPER_TABLE = {
    (1000, 1.0): (2.01, 1.01, 0.117),
    (4000, 1.0): (0.499, 0.252, 0.029),
    (16000, 1.0): (0.125, 0.063, 0.0070),
    (48000, 1.0): (0.042, 0.021, 0.0024),
    (4000, 0.5): (1.01, 0.52, 0.058),
}


@dataclasses.dataclass(frozen=True)
class Point:
    """One setting: widths ``n_0 .. n_L``, top-layer sparsity ``k``, sampling keep-probability ``rho``."""

    sweep: str
    widths: tuple[int, ...]
    k: int
    rho: float = 1.0


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Points, each simulated with ``weight_draws x hidden_draws`` trials."""

    points: tuple[Point, ...]
    weight_draws: int
    hidden_draws: int


def _one_layer(sweep: str, ns, m: int, ks, rhos) -> list[Point]:
    return [Point(sweep, (n, m), k, rho) for n in ns for k in ks for rho in rhos]


def _depths(top: int, ratio: int, k: int) -> list[Point]:
    """Depth 1-3 nets sharing the top layer, each layer down ``ratio`` times wider."""
    return [Point("depth", tuple(top * ratio ** (d - i) for i in range(d + 1)), k) for d in (1, 2, 3)]


def default_sweep() -> Sweep:
    """~2.1 G weight entries drawn in all (peak memory ~1.2 GB): about 1.5 minutes on the 2-core CPU."""
    points = (
        _one_layer("paper_table", (1000, 4000, 16000, 48000), 1000, (10,), (1.0,))
        + _one_layer("rho", (4000,), 1000, (10,), (0.1, 0.25, 0.5))
        + _one_layer("theorem_condition", (1000, 2000, 4000, 8000), 1000, (100,), (1.0,))
        + _one_layer("k", (8000,), 1000, (5, 10, 20, 50, 200), (1.0,))
        + _depths(250, 4, 10)
    )
    return Sweep(tuple(points), weight_draws=10, hidden_draws=10)


def large_sweep() -> Sweep:
    """More sizes, a wider theorem-condition sweep (k = 300) and deeper stacks, 30 weight draws each.

    ~26 G weight entries: ~10-15 minutes on the 2-core CPU at the default sweep's ~20 ns per entry
    (an estimate); peak memory ~6.5 GB, for the 32000 x 8000 layer.
    """
    points = (
        _one_layer("paper_table", (1000, 2000, 4000, 8000, 16000, 32000, 48000), 1000, (10,), (1.0,))
        + _one_layer("rho", (4000, 16000), 1000, (10,), (0.1, 0.25, 0.5))
        + _one_layer("theorem_condition", (500, 1000, 2000, 4000, 8000), 1000, (100,), (1.0,))
        + _one_layer("theorem_condition", (1000, 4000, 16000, 48000), 3000, (300,), (1.0,))
        + _one_layer("k", (16000,), 1000, (5, 10, 20, 50, 100, 200, 500), (1.0,))
        + _depths(250, 4, 10)
        + _depths(500, 4, 20)
    )
    return Sweep(tuple(points), weight_draws=30, hidden_draws=10)


# ------------------------------------------------------------- summaries --


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean over all trials; standard error from the spread of the weight draws' means.

    Trials sharing a weight draw are correlated, so the draws (first axis) are the independent units.
    """
    draw_means = values.reshape(values.shape[0], -1).mean(1)
    se = draw_means.std(ddof=1) / np.sqrt(len(draw_means)) if len(draw_means) > 1 else float("nan")
    return float(values.mean()), float(se)


def summarize(point: Point, trials: theory.Trials, cs: np.ndarray) -> list[dict]:
    """Per layer: sparsity, every estimator's error (mean, s.e.), best bias, exact zeros, theory's prediction."""
    trials = jax.tree.map(np.asarray, trials)
    at, no_bias = (int(np.argmin(np.abs(cs - c))) for c in (C_TABLE, 0.0))
    rows = []
    for i, (n, m) in enumerate(zip(point.widths[:-1], point.widths[1:])):
        k = float(trials.nonzeros[..., i].mean())
        by_c = trials.threshold[..., i].mean((0, 1))
        best = int(np.argmin(by_c))
        exact = trials.zeros_recovered[..., i].mean((0, 1))
        exact_c = [float(c) for c, rate in zip(cs, exact) if rate >= 0.95]
        rows.append(
            {
                "layer": i + 1,
                "n": n,
                "m": m,
                "k": k,
                "k_over_rho_n": float(theory.theorem_rate(k, n, point.rho)),
                "inside_condition": bool(k < point.rho * n < k**2),
                "linear": _mean_se(trials.linear[..., i]),
                "relu": _mean_se(trials.relu[..., i]),
                "threshold": _mean_se(trials.threshold[:, :, at, i]),
                "threshold_input_norm": _mean_se(trials.threshold_input_norm[:, :, at, i]),
                "predicted_threshold": float(trials.predicted[:, :, at, i].mean()),
                "predicted_relu": float(trials.predicted[:, :, no_bias, i].mean()),
                "predicted_linear": float(theory.predicted_error(k, m, n, point.rho, recovery_relu=False)),
                "zeros_recovered_at_c": float(exact[at]),
                "c_for_95pct_exact_zeros": exact_c[0] if exact_c else None,
                "best_c": float(cs[best]),
                "best_c_error": _mean_se(trials.threshold[:, :, best, i]),
                "oracle_error": float(trials.threshold[..., i].min(2).mean()),
                "error_by_c": [float(e) for e in by_c],
            }
        )
    return rows


def paper_comparison(results: list[dict]) -> list[dict]:
    """The one-layer points of the paper's table beside its numbers, with measured / paper ratios."""
    rows = []
    for result in results:
        n, m = result["widths"][0], result["widths"][-1]
        key = (n, result["rho"])
        if len(result["widths"]) != 2 or m != 1000 or result["k"] != 10 or key not in PAPER_TABLE:
            continue
        layer = result["layers"][0]
        measured = [layer[name][0] for name in ("linear", "relu", "threshold")]
        rows.append(
            {"n": n, "rho": result["rho"], "measured": measured, "paper": list(PAPER_TABLE[key])}
            | {"ratio": [a / b for a, b in zip(measured, PAPER_TABLE[key])]}
        )
    return rows


def fitted_slopes(results: list[dict]) -> dict[str, float]:
    """Least-squares slope of log(error at c = 2) against log(k / (rho n)) within each one-layer sweep."""
    slopes = {}
    for sweep in ("paper_table", "rho", "theorem_condition", "k"):
        layers = [r["layers"][0] for r in results if r["sweep"] == sweep and len(r["widths"]) == 2]
        if len(layers) >= 2:
            x = np.log([layer["k_over_rho_n"] for layer in layers])
            y = np.log([layer["threshold"][0] for layer in layers])
            slopes[sweep] = float(np.polyfit(x, y, 1)[0])
    return slopes


# ---------------------------------------------------------------- output --


def _fmt(value: tuple[float, float] | float, digits: int = 3) -> str:
    if isinstance(value, (tuple, list)):
        mean, se = value
        return f"{mean:.{digits}g} ± {se:.1g}" if np.isfinite(se) else f"{mean:.{digits}g}"
    return f"{value:.{digits}g}"


def markdown(report: dict) -> str:
    """``theory.md`` of the report's numbers: the paper's table beside ours, slopes, every point per layer, timings."""
    lines = [
        "# Recovery of random-net samples by the feedforward net",
        "",
        (
            f"`python -m experiments.theory --sweep={report['sweep']} --seed={report['seed']}`: "
            f"{report['weight_draws']} weight draws x {report['hidden_draws']} hidden/mask draws per point, "
            f"wall time {report['wall_time_s']:.0f} s on {report['machine']}."
        ),
        "",
        (
            "Relative squared error `||h_hat - h||^2 / ||h||^2`, mean ± standard error over the weight draws' means. "
            f"`threshold`: bias `-c ||h|| sqrt(2/(rho n))` with c = {C_TABLE:g} and the true norm `||h||`; "
            "`input norm`: the bias `-c ||input||` read off each layer's own input (no oracle); "
            "`predicted`: `theory.predicted_error_for` the true h at c = 2, one step from an exact layer below; "
            "`exact zeros`: fraction of trials whose every zero of h is recovered at c = 2; `c 95%`: smallest c on "
            "the grid with at least 95% such trials; `best c`: the grid's c of lowest mean error (same c at every "
            "layer)."
        ),
        "",
        "## The paper's section 1 (one layer, m = 1000, k = 10)",
        "",
        "| n | rho | linear (ours / paper) | relu (ours / paper) | threshold c=2 (ours / paper) |",
        "|---|---|---|---|---|",
    ]
    for row in report["paper_comparison"]:
        cells = [f"{a:.3g} / {b:.3g} ({a / b - 1:+.0%})" for a, b in zip(row["measured"], row["paper"])]
        lines.append(f"| {row['n']} | {row['rho']:g} | " + " | ".join(cells) + " |")
    worst = max((abs(r - 1) for row in report["paper_comparison"] for r in row["ratio"]), default=float("nan"))
    lines += ["", f"Largest deviation from the paper's table: {worst:.1%}.", "", "## Slopes", ""]
    lines.append("Fitted slope of log(threshold error) against log(k/(rho n)) per one-layer sweep (theorem: 1):")
    lines.append("")
    lines += [f"- {sweep}: {slope:.3f}" for sweep, slope in report["slopes"].items()]
    lines += [
        "",
        "## Every point",
        "",
        (
            "| sweep | widths | k | rho | layer | k_l | k_l/(rho n) | in k<rho n<k^2 | linear | relu | threshold | "
            "predicted | input norm | exact zeros | c 95% | best c | error at best c | time (s) |"
        ),
        "|" + "---|" * 18,
    ]
    for result in report["points"]:
        for layer in result["layers"]:
            c95 = layer["c_for_95pct_exact_zeros"]
            lines.append(
                f"| {result['sweep']} | {'-'.join(map(str, result['widths']))} | {result['k']} | {result['rho']:g} | "
                f"{layer['layer']} | {layer['k']:.4g} | {layer['k_over_rho_n']:.3g} | "
                f"{'yes' if layer['inside_condition'] else 'no'} | {_fmt(layer['linear'])} | {_fmt(layer['relu'])} | "
                f"{_fmt(layer['threshold'])} | {_fmt(layer['predicted_threshold'])} | "
                f"{_fmt(layer['threshold_input_norm'])} | {layer['zeros_recovered_at_c']:.2f} | "
                f"{'-' if c95 is None else f'{c95:g}'} | {layer['best_c']:g} | {_fmt(layer['best_c_error'])} | "
                f"{result['time_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def recovery_figure(points: list[dict], path: str) -> str:
    """Log-log error against k/(rho n): at c = 2 and at the best c, one marker per sweep, with the slope-1 line."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    sweeps = sorted({p["sweep"] for p in points})
    markers = dict(zip(sweeps, "osD^v<>"))
    xs = [layer["k_over_rho_n"] for p in points for layer in p["layers"]]
    line_x = np.geomspace(min(xs) / 1.5, max(xs) * 1.5, 50)
    for ax, key, title in ((axes[0], "threshold", f"bias c = {C_TABLE:g}"), (axes[1], "best_c_error", "best c")):
        for sweep in sweeps:
            for layer_index in range(3):
                rows = [
                    p["layers"][layer_index] for p in points if p["sweep"] == sweep and len(p["layers"]) > layer_index
                ]
                if rows:
                    label = sweep if sweep != "depth" else f"depth, layer {layer_index + 1}"
                    ax.loglog(
                        [r["k_over_rho_n"] for r in rows],
                        [r[key][0] for r in rows],
                        markers[sweep],
                        alpha=1.0 - 0.25 * layer_index,
                        label=label,
                    )
        constant = 2 * (1 + C_TABLE**2)
        ax.loglog(line_x, constant * line_x, "k--", lw=1, label=f"slope 1: {constant:g} k/(rho n)")
        ax.set_xlabel("k / (rho n)  (k: nonzeros of the layer, n: its fan-in)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("||h_hat - h||^2 / ||h||^2")
    axes[1].legend(fontsize=7)
    fig.suptitle("Feedforward recovery of random-net samples: error against the theorem's rate", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, path)


def error_vs_n_figure(points: list[dict], path: str) -> str:
    """The regime of the paper's table: the three estimators against n, the paper's numbers and the predictions."""
    plt = plots.pyplot()
    rows = sorted((p for p in points if p["sweep"] == "paper_table"), key=lambda p: p["widths"][0])
    if not rows:
        return ""
    ns = np.array([p["widths"][0] for p in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, predicted, label in (
        ("linear", "predicted_linear", "linear W^T x"),
        ("relu", "predicted_relu", "relu(W^T x)"),
        ("threshold", "predicted_threshold", f"relu(W^T x + b), c = {C_TABLE:g}"),
    ):
        (line,) = ax.loglog(ns, [p["layers"][0][key][0] for p in rows], "o-", label=label)
        ax.loglog(ns, [p["layers"][0][predicted] for p in rows], ":", color=line.get_color())
    paper = [(n, v) for (n, rho), values in PAPER_TABLE.items() if rho == 1.0 for v in values]
    ax.loglog(*zip(*paper), "kx", label="the paper's section 1")
    ax.set_xlabel("n (input width)")
    ax.set_ylabel("||h_hat - h||^2 / ||h||^2")
    ax.set_title("m = 1000, k = 10, rho = 1 (dotted: the theory's prediction)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save(fig, path)


# ------------------------------------------------------------------ main --


def run_sweep(sweep: Sweep, seed: int, cs=theory.DEFAULT_CS, log=print) -> list[dict]:
    """Simulates and summarises every point of ``sweep``; each point gets its own key and timing."""
    cs = np.asarray(cs, np.float32)
    results = []
    for i, point in enumerate(sweep.points):
        start = time.perf_counter()
        trials = theory.simulate(
            jax.random.fold_in(jax.random.key(seed), i),
            point.widths,
            point.k,
            point.rho,
            jnp.asarray(cs),
            weight_draws=sweep.weight_draws,
            hidden_draws=sweep.hidden_draws,
        )
        trials = jax.block_until_ready(trials)
        elapsed = time.perf_counter() - start
        result = dataclasses.asdict(point) | {"time_s": elapsed, "layers": summarize(point, trials, cs)}
        results.append(result)
        top = result["layers"][-1]
        log(
            f"[{i + 1}/{len(sweep.points)}] {point.sweep} widths={point.widths} k={point.k} rho={point.rho:g}: "
            f"top-layer error {top['threshold'][0]:.4g} at c={C_TABLE:g} ({elapsed:.1f}s)"
        )
    return results


def sweep_report(out: str, name: str = "default", seed: int = 0, log=print) -> Report:
    """Every point of the sweep ``name`` ("default" or "large") simulated and summarised, with the paper's table;
    its figures go to ``out/figures``."""
    if name not in SWEEPS:
        raise InputError(f"sweep must be one of {SWEEPS}, got {name!r}.")
    sweep = default_sweep() if name == "default" else large_sweep()
    start = time.perf_counter()
    points = run_sweep(sweep, seed, log=log)
    numbers = {
        "sweep": name,
        "seed": seed,
        "weight_draws": sweep.weight_draws,
        "hidden_draws": sweep.hidden_draws,
        "cs": list(theory.DEFAULT_CS),
        "c_table": C_TABLE,
        "wall_time_s": time.perf_counter() - start,
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, jax {jax.__version__}",
        "paper_comparison": paper_comparison(points),
        "slopes": fitted_slopes(points),
        "points": points,
    }
    return report_of(numbers, out)


def report_of(numbers: dict, out: str) -> Report:
    """The ``Report`` "theory" of a sweep's numbers; draws ``recovery_vs_k_over_rho_n.png`` and ``error_vs_n.png``
    into ``out/figures``. Apart from ``sweep_report`` so that a sweep of one's own gets the same report."""
    recovery_figure(numbers["points"], os.path.join(out, "figures", "recovery_vs_k_over_rho_n.png"))
    error_vs_n_figure(numbers["points"], os.path.join(out, "figures", "error_vs_n.png"))
    return Report("theory", numbers, markdown(numbers))
