"""Chapter 5's figures: an estimate beside the exact result, on one colour scale."""

from __future__ import annotations

import pytest
import torch

from circuitlab.estimate_plots import correlation, scatter_figure, side_by_side_figure


def test_side_by_side_shares_one_scale_centred_at_zero():
    exact = torch.tensor([[0.0, -6.0], [1.0, 0.0]])
    estimate = torch.tensor([[0.0, -2.0], [0.5, 3.0]])
    fig = side_by_side_figure(exact, estimate, x_labels=["0: a", "1: b"], y_labels=["r0", "r1"], title="t")
    left, right, cbar = fig.axes
    assert (left.get_title(), right.get_title()) == ("exact patching", "attribution estimate")
    assert left.images[0].norm is right.images[0].norm
    norm = left.images[0].norm
    assert (norm.vmin, norm.vcenter, norm.vmax) == (-6.0, 0.0, 6.0)  # the larger of the two
    assert [t.get_text() for t in left.get_yticklabels()] == ["r0", "r1"]
    assert cbar.get_ylabel() == "change in logit difference"


def test_side_by_side_refuses_mismatched_results():
    with pytest.raises(ValueError, match="one shape"):
        side_by_side_figure(torch.zeros(2, 2), torch.zeros(2, 3), x_labels=["a", "b"], y_labels=["r", "s"], title="t")
    with pytest.raises(ValueError, match="2 row labels and 1 column labels"):
        side_by_side_figure(torch.zeros(2, 2), torch.zeros(2, 2), x_labels=["a"], y_labels=["r", "s"], title="t")


def test_scatter_has_the_diagonal_and_each_correlation():
    exact, estimate = torch.tensor([0.0, -4.0, -1.0, 0.0]), torch.tensor([0.0, -2.0, -0.4, 0.1])
    r = correlation(exact, estimate)
    assert r == pytest.approx(float(torch.corrcoef(torch.stack([exact, estimate]))[0, 1]), abs=1e-6)
    fig = scatter_figure({"heads": (exact, estimate)}, "title")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"heads (r = {r:.3f})", "estimate = exact"]
