"""The fast sweeps give transformer_lens.patching's numbers (to 1e-4), on an HF-architecture
bridge (the random twins), on a native bridge (what real gelu-2l is), and on gpt2-small's shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import patching

from solutions import fast_patching as fp
from circuitlab.prompts import CORRUPTIONS
from tests.native_twin import native_gelu_2l

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def native_twin():
    return native_gelu_2l()


def tl_setup(model, case):
    """TL's signature is "corrupted tokens + clean cache"; we use it the other way round:
    the corrupt cache is patched into runs on the clean tokens."""
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    clean_tokens = model.to_tokens(case.clean_prompt)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)
    return clean_tokens, corrupt_cache, lambda logits: logits[0, -1, good] - logits[0, -1, bad]


def resid_post_patch(model, tokens, cache, metric, index_df=None):
    return patching.generic_activation_patch(
        model, tokens, cache, metric, patching.layer_pos_patch_setter, "resid_post",
        index_axis_names=None if index_df is not None else ("layer", "pos"), index_df=index_df,
    )


@pytest.mark.parametrize("which", ["hf", "native"])
@pytest.mark.parametrize("corruption", ["surname", "first_name"])
def test_residual_sweep_equals_transformer_lens(which, corruption, gelu_twin, native_twin):
    model = gelu_twin if which == "hf" else native_twin
    case = CORRUPTIONS[corruption]
    tokens, cache, metric = tl_setup(model, case)
    ours = fp.residual_patching_sweep(model, **case.as_args())
    assert ours.shape == (model.cfg.n_layers + 1, tokens.shape[1])
    torch.testing.assert_close(ours[:-1], patching.get_act_patch_resid_pre(model, tokens, cache, metric), **TOL)
    torch.testing.assert_close(ours[1:], resid_post_patch(model, tokens, cache, metric), **TOL)
    # Not a trivially constant map: some patch moves the answer.
    assert (ours - metric(model(tokens))).abs().max() > 1e-2


@pytest.mark.parametrize("which", ["hf", "native"])
def test_head_sweeps_equal_transformer_lens(which, gelu_twin, native_twin):
    model = gelu_twin if which == "hf" else native_twin
    case = CORRUPTIONS["second_name"]
    tokens, cache, metric = tl_setup(model, case)
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, tokens.shape[1]

    heads = fp.head_patching_sweep(model, **case.as_args())
    assert heads.shape == (n_layers, n_heads)
    torch.testing.assert_close(heads, patching.get_act_patch_attn_head_out_all_pos(model, tokens, cache, metric), **TOL)

    by_pos = fp.head_by_position_sweep(model, **case.as_args())
    assert by_pos.shape == (n_layers * n_heads, n_pos)
    expected = patching.get_act_patch_attn_head_out_by_pos(model, tokens, cache, metric)  # [layer, pos, head]
    torch.testing.assert_close(by_pos, expected.permute(0, 2, 1).reshape(n_layers * n_heads, n_pos), **TOL)
    assert (by_pos - metric(model(tokens))).abs().max() > 1e-3


def test_gpt2_shape_matches_transformer_lens_on_sampled_cells(gpt2_twin):
    """A full TL sweep on gpt2-small's shape takes minutes here, so TL runs a sample of
    cells, chosen where the prompts differ (position 4 onwards), and ours runs the full sweep."""
    import pandas as pd

    model, case = gpt2_twin, CORRUPTIONS["surname"]
    tokens, cache, metric = tl_setup(model, case)
    cells = [(0, 4), (3, 4), (6, 7), (11, 4), (11, tokens.shape[1] - 1)]
    expected = resid_post_patch(model, tokens, cache, metric, pd.DataFrame(cells, columns=["layer", "pos"]))
    ours = fp.residual_patching_sweep(model, **case.as_args())
    torch.testing.assert_close(torch.stack([ours[layer + 1, pos] for layer, pos in cells]), expected, **TOL)

    heads = [(0, 0, 5), (5, 7, 10), (11, 3, tokens.shape[1] - 1)]  # (layer, head, pos)
    df = pd.DataFrame([(layer, pos, head) for layer, head, pos in heads], columns=["layer", "pos", "head"])
    expected = patching.generic_activation_patch(model, tokens, cache, metric, patching.layer_pos_head_vector_patch_setter, "z", index_df=df)
    ours = fp.head_by_position_sweep(model, **case.as_args())
    got = torch.stack([ours[layer * model.cfg.n_heads + head, pos] for layer, head, pos in heads])
    torch.testing.assert_close(got, expected, **TOL)


def test_model_the_fast_path_cannot_reproduce_is_refused(gelu_twin, monkeypatch):
    case = CORRUPTIONS["surname"]
    monkeypatch.setitem(fp._ACTIVATIONS, "gelu", F.relu)  # a forward pass that differs from the model's
    with pytest.raises(fp.UnsupportedModelError, match="does not reproduce"):
        fp.residual_patching_sweep(gelu_twin, **case.as_args())
    monkeypatch.setattr(gelu_twin.cfg, "act_fn", "solu_ln")
    with pytest.raises(fp.UnsupportedModelError, match="activation 'solu_ln'"):
        fp.head_patching_sweep(gelu_twin, **case.as_args())


def test_unequal_prompt_lengths_are_rejected(gelu_twin):
    with pytest.raises(ValueError, match="same number of tokens"):
        fp.head_patching_sweep(gelu_twin, "Alex Hart met", "Alex Hart met him", " Hart", " Carroll")
