"""The heatmap helper draws what a learner needs to read a patching result."""

from __future__ import annotations

import pytest
import torch

from circuitlab.plotting import head_labels, patching_heatmap, position_labels, residual_labels


def test_heatmap_has_labels_colorbar_centred_at_zero_and_title():
    values = torch.tensor([[1.0, -3.0, 0.5], [2.0, 0.0, -1.0]])
    fig = patching_heatmap(values, x_labels=position_labels(["<bos>", "Her", " name"]),
                           y_labels=residual_labels(1), title="Residual patching: other surname")
    ax, cbar_ax = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0: <bos>", "1: Her", "2:  name"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]
    assert ax.get_title() == "Residual patching: other surname"
    image = ax.images[0]
    assert image.get_cmap().name == "RdBu"
    assert image.norm.vcenter == 0.0 and image.norm.vmin == -3.0 and image.norm.vmax == 3.0
    assert cbar_ax.get_ylabel() == "logit difference"


def test_head_labels_are_layer_dot_head():
    assert head_labels(2, 3) == ["0.0", "0.1", "0.2", "1.0", "1.1", "1.2"]


def test_mismatched_labels_are_a_clear_error():
    with pytest.raises(ValueError, match="2 row labels and 2 column labels"):
        patching_heatmap(torch.zeros(3, 2), x_labels=["a", "b"], y_labels=["r0", "r1"], title="t")


def _assert_readable(fig, case, x_labels, y_labels):
    ax, cbar_ax = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == x_labels
    assert [t.get_text() for t in ax.get_yticklabels()] == y_labels
    assert case.label in ax.get_title()  # the title names the corruption
    norm = ax.images[0].norm
    assert norm.vcenter == 0.0 and norm.vmin == -norm.vmax  # white is exactly "no change"
    assert cbar_ax.get_ylabel()


@pytest.mark.parametrize("key", ["surname", "first_name", "second_name"])
def test_every_course_heatmap_is_labelled(key, gelu_twin):
    from circuitlab.plotting import head_by_position_figure, head_patching_figure, residual_patching_figure
    from circuitlab.prompts import CORRUPTIONS

    case = CORRUPTIONS[key]
    tokens = gelu_twin.to_str_tokens(case.clean_prompt)
    n_layers, n_heads, n_pos = gelu_twin.cfg.n_layers, gelu_twin.cfg.n_heads, len(tokens)
    positions = [f"{i}: {t}" for i, t in enumerate(tokens)]
    assert positions[5] == "5:  Hart" and positions[-1] == "11:  Alex"

    fig = residual_patching_figure(torch.randn(n_layers + 1, n_pos), case, tokens)
    _assert_readable(fig, case, positions, ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    fig = head_patching_figure(torch.randn(n_layers, n_heads), case)
    _assert_readable(fig, case, [str(h) for h in range(n_heads)], ["layer 0", "layer 1"])
    fig = head_by_position_figure(torch.randn(n_layers * n_heads, n_pos), case, tokens, n_heads)
    _assert_readable(fig, case, positions, [f"{layer}.{h}" for layer in range(n_layers) for h in range(n_heads)])


def test_composition_figure_is_white_at_the_baseline():
    from circuitlab.plotting import composition_figure

    scores = {kind: torch.rand(2, 3) * 0.3 for kind in ("K", "Q", "V")}
    fig = composition_figure(scores, baseline=0.09, sender_layer=0, receiver_layer=1)
    panels, cbar_ax = fig.axes[:3], fig.axes[3]
    assert [ax.get_title() for ax in panels] == ["K-composition", "Q-composition", "V-composition"]
    for ax, kind in zip(panels, scores):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1.0", "1.1", "1.2"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0.0", "0.1"]
        norm = ax.images[0].norm
        assert norm.vcenter == 0.09 and norm.vmin == 0.0 and norm.vmax >= 0.18  # white = chance, red = above
        assert [t.get_text() for t in ax.texts][0] == f"{scores[kind][0, 0].item():.2f}"
    assert "random baseline 0.090" in cbar_ax.get_ylabel()
