"""A small difference heatmap (learner − reference) for sweep feedback, as an embedded PNG."""

from __future__ import annotations

import base64
import io

import torch


def difference_png(diff: torch.Tensor, title: str) -> str:
    """Base64 PNG of a 2-D difference, red where the learner is higher, blue where lower."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    values = diff.detach().float().cpu().numpy()
    span = float(abs(values).max()) or 1.0
    fig = Figure(figsize=(4.2, 2.4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    ax.set_xlabel("column (e.g. position)", fontsize=8)
    ax.set_ylabel("row (e.g. layer)", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax).ax.tick_params(labelsize=7)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return base64.b64encode(out.getvalue()).decode("ascii")
