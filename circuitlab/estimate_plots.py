"""Figures that lay an estimate beside the exact patching result it approximates."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure


def _array(values) -> np.ndarray:
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)


def correlation(exact, estimate) -> float:
    """Pearson correlation of two results, over all their cells."""
    return float(np.corrcoef(_array(exact).ravel(), _array(estimate).ravel())[0, 1])


def side_by_side_figure(
    exact, estimate, *, x_labels: Sequence[str], y_labels: Sequence[str], title: str,
    x_title: str = "position: token", y_title: str = "",
) -> Figure:
    """Two heatmaps on one colour scale: the exact result (left) and the estimate (right).

    Both are changes in the logit difference (patched minus clean), so white is "no
    change" in both and the same colour is the same number.
    """
    left, right = _array(exact), _array(estimate)
    if left.shape != right.shape or left.ndim != 2:
        raise ValueError(f"need two 2-d results of one shape, got {left.shape} and {right.shape}")
    if left.shape != (len(y_labels), len(x_labels)):
        raise ValueError(f"results have shape {left.shape} but there are {len(y_labels)} row labels "
                         f"and {len(x_labels)} column labels")
    limit = float(max(np.abs(left).max(), np.abs(right).max())) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    width = 2.0 + 2 * 0.55 * len(x_labels)
    height = min(max(1.4 + 0.3 * len(y_labels), 3.0), 14.0)
    fig, axes = plt.subplots(1, 2, figsize=(width, height), sharey=True, constrained_layout=True)
    for ax, data, name in zip(axes, (left, right), ("exact patching", "attribution estimate")):
        image = ax.imshow(data, cmap="RdBu", norm=norm, aspect="auto")
        ax.set_xticks(range(len(x_labels)), labels=list(x_labels), rotation=60, ha="right")
        ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
        ax.set_xlabel(x_title)
        ax.set_title(name)
    axes[0].set_ylabel(y_title)
    fig.suptitle(title)
    fig.colorbar(image, ax=list(axes), label="change in logit difference")
    plt.close(fig)  # the caller shows or saves it
    return fig


def scatter_figure(points: Mapping[str, tuple], title: str) -> Figure:
    """Estimate (y) against exact (x), one colour per label, with the diagonal where they
    would agree and each label's correlation in the legend."""
    fig, ax = plt.subplots(figsize=(6.0, 5.5))
    low, high = 0.0, 0.0
    for label, (exact, estimate) in points.items():
        x, y = _array(exact).ravel(), _array(estimate).ravel()
        if x.shape != y.shape:
            raise ValueError(f"{label}: exact has {x.size} cells, the estimate {y.size}")
        ax.scatter(x, y, s=18, alpha=0.7, label=f"{label} (r = {correlation(x, y):.3f})")
        low, high = min(low, x.min(), y.min()), max(high, x.max(), y.max())
    margin = 0.05 * (high - low or 1.0)
    ax.plot([low - margin, high + margin], [low - margin, high + margin], color="grey", linewidth=1,
            linestyle="--", label="estimate = exact")
    ax.axhline(0, color="lightgrey", linewidth=0.8)
    ax.axvline(0, color="lightgrey", linewidth=0.8)
    ax.set_xlabel("exact change in logit difference")
    ax.set_ylabel("estimated change in logit difference")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
