"""Figures: image grids, learning curves, spectra. Arrays in, PNG files out.

matplotlib is imported inside each function with the non-interactive Agg
backend, so importing this module costs nothing and works without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def display_range(images: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Maps each NHWC image to [0, 1] by its own percentiles, for viewing.

    Synthetic images live on a different scale than real ones (and real ones
    are standardised), so each image is stretched on its own.
    """
    images = np.asarray(images, np.float32)
    flat = images.reshape(images.shape[0], -1)
    lo = np.percentile(flat, low, axis=1).reshape(-1, 1, 1, 1)
    hi = np.percentile(flat, high, axis=1).reshape(-1, 1, 1, 1)
    return np.clip((images - lo) / np.maximum(hi - lo, 1e-8), 0.0, 1.0)


def image_grid(rows: Mapping[str, np.ndarray], path: str, title: str | None = None) -> str:
    """Saves one labelled row per entry of ``rows`` (NHWC batches of equal size)."""
    plt = pyplot()
    names = list(rows)
    columns = max(len(rows[n]) for n in names)
    fig, axes = plt.subplots(len(names), columns, figsize=(columns * 0.9, len(names) * 1.0 + 0.4), squeeze=False)
    for r, name in enumerate(names):
        shown = display_range(rows[name])
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(shown):
                image = shown[c]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def learning_curves(
    series: Mapping[str, tuple[Sequence[float], ...]],
    path: str,
    xlabel: str = "epoch",
    ylabel: str = "test error",
    title: str | None = None,
    xscale: str = "linear",
    yscale: str = "linear",
) -> str:
    """One line per ``name -> (x, y)`` or ``(x, y, spread)``, shaded over ``y +- spread``; ``xscale`` and
    ``yscale`` are matplotlib's ("log" for label counts, or for losses that fall by orders of magnitude).

    Names containing 'synthetic' are dashed; a name's real and synthetic
    curves ("<arm> real", "<arm> synthetic") share one colour.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colours: dict[str, str] = {}
    for name, (x, y, *spread) in series.items():
        arm = name.removesuffix(" real").removesuffix(" synthetic")
        colour = colours.setdefault(arm, f"C{len(colours)}")
        ax.plot(x, y, "--" if "synthetic" in name else "-", marker=".", color=colour, label=name)
        if spread:
            y, band = np.asarray(y), np.asarray(spread[0])
            ax.fill_between(x, y - band, y + band, color=colour, alpha=0.15, linewidth=0)
    ax.set_xscale(xscale)
    ax.set_yscale(yscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def save(fig, path: str) -> str:
    """Writes ``fig`` to ``path`` (creating its folder), closes it, returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


class DensityPanel(NamedTuple):
    """One panel of ``density_grid``: samples as density histograms, reference curves ``(x, y)`` and vertical lines."""

    samples: Mapping[str, np.ndarray]
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]]
    lines: Mapping[str, float]
    xlabel: str
    log: bool = False


def density_grid(rows: Mapping[str, Sequence[DensityPanel]], path: str, title: str | None = None) -> str:
    """One row of panels per name (e.g. per layer): each sample set's histogram with the curves and lines on top."""
    plt = pyplot()
    names = list(rows)
    columns = max(len(rows[n]) for n in names)
    fig, axes = plt.subplots(len(names), columns, figsize=(4.4 * columns, 2.5 * len(names) + 0.5), squeeze=False)
    for r, name in enumerate(names):
        for c, panel in enumerate(rows[name]):
            ax = axes[r][c]
            lo = min(float(np.min(s)) for s in panel.samples.values())
            hi = max(float(np.max(s)) for s in panel.samples.values())
            bins = np.linspace(lo, hi + 1e-9 * max(abs(hi), 1.0), 81)
            for label, sample in panel.samples.items():
                ax.hist(np.ravel(sample), bins=bins, density=True, histtype="step", lw=1.2, label=label)
            for label, (x, y) in panel.curves.items():
                ax.plot(x, y, "--", lw=1, label=label)
            for (label, x), color in zip(panel.lines.items(), ("k", "tab:red", "tab:purple")):
                ax.axvline(x, ls=":", lw=1, color=color, label=label)
            if panel.log:  # Down to one sample per bin: curves far below it would squash the histogram.
                ax.set_yscale("log")
                ax.set_ylim(bottom=0.5 / (max(np.size(s) for s in panel.samples.values()) * (bins[1] - bins[0])))
            ax.set_xlabel(panel.xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        axes[r][0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()) if title else None)
    return save(fig, path)
