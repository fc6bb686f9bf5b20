"""One heatmap helper for every patching result in the course."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure


def position_labels(tokens: Sequence[str]) -> list[str]:
    """x-axis labels like "5:  Hart" -- the position first, because tokens repeat."""
    return [f"{i}: {tok}" for i, tok in enumerate(tokens)]


def residual_labels(n_layers: int) -> list[str]:
    """Row labels of a residual-stream sweep: resid_pre of block 0, then each resid_post."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """Row labels "layer.head" for a [layer * n_heads + head, ...] result."""
    return [f"{layer}.{head}" for layer in range(n_layers) for head in range(n_heads)]


def patching_heatmap(
    values,
    *,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str,
    x_title: str = "position: token",
    y_title: str = "",
    colorbar_label: str = "logit difference",
) -> Figure:
    """Draw a patching result as a heatmap.

    The colormap diverges around zero (blue: the clean answer wins, red: the
    corrupt answer wins), so white always means "no preference".
    """
    data = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"patching_heatmap needs a 2-d array, got shape {data.shape}")
    if data.shape != (len(y_labels), len(x_labels)):
        raise ValueError(
            f"values have shape {data.shape} but there are {len(y_labels)} row labels "
            f"and {len(x_labels)} column labels"
        )
    limit = float(np.nanmax(np.abs(data))) or 1.0
    height = 1.2 + 0.32 * len(y_labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(x_labels), min(max(height, 3.0), 14.0)))
    image = ax.imshow(data, cmap="RdBu", norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit), aspect="auto")
    ax.set_xticks(range(len(x_labels)), labels=list(x_labels), rotation=60, ha="right")
    ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    plt.close(fig)  # the caller shows or saves it; no stray figures pile up
    return fig


# The course's three kinds of patching plot. Each takes the sweep's result, the
# PatchingCase it came from (its label names the corruption in the title) and the
# clean prompt's tokens.


def residual_patching_figure(result, case, tokens: Sequence[str]) -> Figure:
    """A residual-stream sweep: [n_layers + 1, n_pos] logit differences."""
    return patching_heatmap(
        result,
        x_labels=position_labels(tokens),
        y_labels=residual_labels(len(result) - 1),
        title=f"Residual patching: {case.label}\nlogit diff{case.clean_answer} vs{case.corrupt_answer}",
    )


def head_patching_figure(change, case) -> Figure:
    """A [n_layers, n_heads] head sweep, as patched minus clean logit difference."""
    n_layers, n_heads = change.shape
    return patching_heatmap(
        change,
        x_labels=[str(h) for h in range(n_heads)],
        y_labels=[f"layer {layer}" for layer in range(n_layers)],
        title=f"Head patching (hook_z, all positions): {case.label}\npatched minus clean logit diff",
        x_title="head",
        colorbar_label="change in logit difference",
    )


def head_by_position_figure(change, case, tokens: Sequence[str], n_heads: int) -> Figure:
    """A [n_layers * n_heads, n_pos] head-by-position sweep, as patched minus clean logit difference."""
    return patching_heatmap(
        change,
        x_labels=position_labels(tokens),
        y_labels=head_labels(len(change) // n_heads, n_heads),
        title=f"Head x position patching (hook_z): {case.label}\npatched minus clean logit diff",
        y_title="layer.head",
        colorbar_label="change in logit difference",
    )


def composition_figure(scores: dict, baseline: float, sender_layer: int, receiver_layer: int) -> Figure:
    """K-, Q- and V-composition scores ([sender head, receiver head] each) side by side,
    white at the random baseline: red above it, blue below."""
    panels = {kind: np.asarray(s.detach().cpu(), dtype=float) for kind, s in scores.items()}
    top = max(max(float(p.max()) for p in panels.values()), 2 * baseline)
    norm = TwoSlopeNorm(vcenter=baseline, vmin=0.0, vmax=top)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels) + 1.2, 4.0), squeeze=False,
                             layout="constrained")
    for i, (ax, (kind, data)) in enumerate(zip(axes[0], panels.items())):
        n_senders, n_receivers = data.shape
        image = ax.imshow(data, cmap="RdBu_r", norm=norm)
        ax.set_xticks(range(n_receivers), labels=[f"{receiver_layer}.{h}" for h in range(n_receivers)])
        ax.set_yticks(range(n_senders), labels=[f"{sender_layer}.{h}" for h in range(n_senders)])
        if n_senders * n_receivers <= 64:  # numbers stay readable up to 8 x 8
            for (row, col), value in np.ndenumerate(data):
                strong = abs(norm(value) - 0.5) > 0.3  # dark red or dark blue: white text
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if strong else "black")
        ax.set_xlabel(f"receiver (layer {receiver_layer})")
        if i == 0:
            ax.set_ylabel(f"sender (layer {sender_layer})")
        ax.set_title(f"{kind}-composition")
    fig.colorbar(image, ax=axes[0].tolist(), label=f"score (white: random baseline {baseline:.3f})")
    plt.close(fig)
    return fig
