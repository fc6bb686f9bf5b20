"""The exact sweeps of circuitlab.sweeps give transformer_lens.patching's numbers (to 1e-4):
on batches of prompt pairs, each row with its own answers, in both directions (noising and
denoising), on circuitlab-2l, on an HF-architecture bridge (the random twins), on a native
bridge (what real gelu-2l is) and on gpt2-small's shape; and the single-pair string
functions of chapters 1-2 give TL's numbers in their own layout."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformer_lens import patching

from circuitlab import load_model
from circuitlab import sweeps
from circuitlab.prompts import CORRUPTIONS, FIRST_NAMES, SURNAMES, TEMPLATES
from circuitlab.sweeps import exact, one_pair
from tests.native_twin import native_gelu_2l

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def native_twin():
    return native_gelu_2l()


@pytest.fixture(scope="module")
def models(gelu_twin, native_twin):
    return {"circuitlab-2l": load_model("circuitlab-2l"), "hf": gelu_twin, "native": native_twin}


def pair_batch(model, seed: int, n: int = 3, template: str = TEMPLATES[0]):
    """`n` aligned (clean, corrupt) pairs of one template, different people in each row,
    each corruption kind in turn, and each row's own answers (its surname, another).
    Returns clean tokens, corrupt tokens, answers [n, 2]."""
    rng = random.Random(seed)
    clean, corrupt, answers = [], [], []
    for i in range(n):
        first, other_first = rng.sample(FIRST_NAMES, 2)
        last, other_last = rng.sample(SURNAMES, 2)
        clean.append(template.format(first=first, last=last, again=first))
        corrupt.append(template.format(**[dict(first=first, last=other_last, again=first),
                                          dict(first=other_first, last=last, again=first),
                                          dict(first=first, last=last, again=other_first)][i % 3]))
        answers.append([model.to_single_token(f" {last}"), model.to_single_token(f" {other_last}")])
    clean_tokens, corrupt_tokens = model.to_tokens(clean), model.to_tokens(corrupt)
    assert clean_tokens.shape == corrupt_tokens.shape and clean_tokens.shape[0] == n
    answers = torch.tensor(answers)
    assert len({tuple(row) for row in answers.tolist()}) == n  # every row its own answers
    return clean_tokens, corrupt_tokens, answers


def tl_sweeps(model, base, source, answers, positions=None):
    """TL's residual, head and head × position sweeps, per row: TL patches `source`'s cache
    into runs on `base` ("corrupted tokens + clean cache"), whole batch per cell. With
    `positions`, the head × position sweep covers those positions only (every layer and head)."""
    _, cache = model.run_with_cache(source)
    rows = torch.arange(len(answers))

    def metric(logits):
        return logits[rows, -1, answers[:, 0]] - logits[rows, -1, answers[:, 1]]

    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, base.shape[1]
    positions = list(range(n_pos)) if positions is None else positions
    resid = patching.get_act_patch_resid_pre(model, base, cache, metric, reduce="none").values
    heads = patching.get_act_patch_attn_head_out_all_pos(model, base, cache, metric, reduce="none").values
    cells = pd.MultiIndex.from_product([range(n_layers), positions, range(n_heads)],
                                       names=["layer", "pos", "head"]).to_frame(index=False)
    by_pos = patching.generic_activation_patch(model, base, cache, metric, patching.layer_pos_head_vector_patch_setter,
                                               "z", index_df=cells, reduce="none").values
    assert resid.shape == (n_layers, n_pos, len(rows)) and heads.shape == (n_layers, n_heads, len(rows))
    by_pos = by_pos.reshape(n_layers, len(positions), n_heads, len(rows))
    return resid.permute(2, 0, 1), heads.permute(2, 0, 1), by_pos.permute(3, 0, 2, 1), metric(model(base))


@pytest.mark.parametrize("which, direction", [
    ("circuitlab-2l", "noising"), ("circuitlab-2l", "denoising"), ("hf", "noising"), ("native", "denoising"),
])
def test_batch_sweeps_equal_transformer_lens(which, direction, models, monkeypatch):
    model = models[which]
    clean, corrupt, answers = pair_batch(model, seed=len(which) + (direction == "denoising"))
    base, source = (clean, corrupt) if direction == "noising" else (corrupt, clean)
    positions = None
    if which == "circuitlab-2l":  # small chunks: one chunk holds parts of several rows' runs
        monkeypatch.setattr(exact, "MAX_ROWS", 40)
    else:  # TL's head × position sweep at 50k vocabulary takes minutes: before the prompts
        # differ (3), where each corruption kind does (4, 5, 11 = final), and between (8)
        positions = [3, 4, 5, 8, 11]
    first_differing = (clean != corrupt).int().argmax(1).tolist()
    assert first_differing == [5, 4, 11] and base.shape[1] == 12  # each corruption kind, one row each
    tl_resid, tl_heads, tl_by_pos, unpatched = tl_sweeps(model, base, source, answers, positions)
    n, n_layers, n_heads, n_pos = len(answers), model.cfg.n_layers, model.cfg.n_heads, base.shape[1]

    torch.testing.assert_close(sweeps.logit_diffs(model, base, answers), unpatched, **TOL)
    resid = sweeps.residual_sweep(model, base, source, answers)
    assert resid.shape == (n, n_layers, n_pos)
    torch.testing.assert_close(resid, tl_resid, **TOL)
    heads = sweeps.head_sweep(model, base, source, answers)
    assert heads.shape == (n, n_layers, n_heads)
    torch.testing.assert_close(heads, tl_heads, **TOL)
    by_pos = sweeps.head_by_position_sweep(model, base, source, answers)
    assert by_pos.shape == (n, n_layers, n_heads, n_pos)
    torch.testing.assert_close(by_pos[..., positions or slice(None)], tl_by_pos, **TOL)
    # Not trivially constant: in every row some patch moves that row's answer.
    for result in (resid, heads, by_pos):
        assert ((result - unpatched.reshape(n, *[1] * (result.ndim - 1))).abs().flatten(1).amax(1) > 1e-3).all()


def test_gpt2_shape_matches_transformer_lens_on_sampled_cells(gpt2_twin):
    """A full TL sweep on gpt2-small's shape takes minutes here, so TL runs a sample of
    cells, chosen where the prompts differ (position 4 onwards), and ours the full sweeps."""
    model = gpt2_twin
    clean, corrupt, answers = pair_batch(model, seed=11, n=2)
    _, cache = model.run_with_cache(corrupt)
    rows = torch.arange(len(answers))

    def metric(logits):
        return logits[rows, -1, answers[:, 0]] - logits[rows, -1, answers[:, 1]]

    last = clean.shape[1] - 1
    cells = [(0, 4), (3, 4), (6, 7), (11, 4), (11, last)]
    expected = patching.generic_activation_patch(
        model, clean, cache, metric, patching.layer_pos_patch_setter, "resid_pre",
        index_df=pd.DataFrame(cells, columns=["layer", "pos"]), reduce="none").values  # [cell, batch]
    ours = sweeps.residual_sweep(model, clean, corrupt, answers)
    torch.testing.assert_close(torch.stack([ours[:, layer, pos] for layer, pos in cells], 0), expected, **TOL)

    heads = [(0, 0, 5), (5, 7, 10), (11, 3, last)]  # (layer, head, pos)
    df = pd.DataFrame([(layer, pos, head) for layer, head, pos in heads], columns=["layer", "pos", "head"])
    expected = patching.generic_activation_patch(
        model, clean, cache, metric, patching.layer_pos_head_vector_patch_setter, "z", index_df=df,
        reduce="none").values
    ours = sweeps.head_by_position_sweep(model, clean, corrupt, answers)
    torch.testing.assert_close(torch.stack([ours[:, layer, head, pos] for layer, head, pos in heads], 0),
                               expected, **TOL)


# -- the single-pair string functions (chapters 1-2's references) ----------------------


def tl_setup(model, case):
    """TL's signature is "corrupted tokens + clean cache"; we use it the other way round:
    the corrupt cache is patched into runs on the clean tokens."""
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    clean_tokens = model.to_tokens(case.clean_prompt)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)
    return clean_tokens, corrupt_cache, lambda logits: logits[0, -1, good] - logits[0, -1, bad]


def test_one_pair_residual_sweep_equals_transformer_lens(models):
    """Rows 0..n_layers - 1 are resid_pre of each block, rows 1..n_layers resid_post."""
    model, case = models["circuitlab-2l"], CORRUPTIONS["surname"]
    tokens, cache, metric = tl_setup(model, case)
    ours = one_pair.residual_patching_sweep(model, **case.as_args())
    assert ours.shape == (model.cfg.n_layers + 1, tokens.shape[1])
    torch.testing.assert_close(ours[:-1], patching.get_act_patch_resid_pre(model, tokens, cache, metric), **TOL)
    resid_post = patching.generic_activation_patch(model, tokens, cache, metric, patching.layer_pos_patch_setter,
                                                    "resid_post", index_axis_names=("layer", "pos"))
    torch.testing.assert_close(ours[1:], resid_post, **TOL)
    assert (ours - metric(model(tokens))).abs().max() > 1e-2


def test_one_pair_head_sweeps_equal_transformer_lens(models):
    model, case = models["circuitlab-2l"], CORRUPTIONS["second_name"]
    tokens, cache, metric = tl_setup(model, case)
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, tokens.shape[1]

    heads = one_pair.head_patching_sweep(model, **case.as_args())
    assert heads.shape == (n_layers, n_heads)
    torch.testing.assert_close(heads, patching.get_act_patch_attn_head_out_all_pos(model, tokens, cache, metric), **TOL)

    by_pos = one_pair.head_by_position_sweep(model, **case.as_args())
    assert by_pos.shape == (n_layers * n_heads, n_pos)
    expected = patching.get_act_patch_attn_head_out_by_pos(model, tokens, cache, metric)  # [layer, pos, head]
    torch.testing.assert_close(by_pos, expected.permute(0, 2, 1).reshape(n_layers * n_heads, n_pos), **TOL)
    assert (by_pos - metric(model(tokens))).abs().max() > 1e-3


# -- what the engine refuses -----------------------------------------------------------


def test_model_the_fast_path_cannot_reproduce_is_refused(gelu_twin, monkeypatch):
    clean, corrupt, answers = pair_batch(gelu_twin, seed=0)
    monkeypatch.setitem(exact._ACTIVATIONS, "gelu", F.relu)  # a forward pass that differs from the model's
    with pytest.raises(sweeps.UnsupportedModelError, match="does not reproduce"):
        sweeps.residual_sweep(gelu_twin, clean, corrupt, answers)
    monkeypatch.setattr(gelu_twin.cfg, "act_fn", "solu_ln")
    with pytest.raises(sweeps.UnsupportedModelError, match="activation 'solu_ln'"):
        one_pair.head_patching_sweep(gelu_twin, **CORRUPTIONS["surname"].as_args())


def test_bad_input_is_rejected_with_what_to_do(gelu_twin):
    model = gelu_twin
    clean, corrupt, answers = pair_batch(model, seed=1)
    for sweep in (sweeps.residual_sweep, sweeps.head_sweep, sweeps.head_by_position_sweep):
        with pytest.raises(ValueError, match=r"same shape \[batch, pos\].*got \(3, 12\) and \(3, 11\).*group the pairs by token length"):
            sweep(model, clean, corrupt[:, :-1], answers)
        with pytest.raises(ValueError, match=r"same shape.*got \(3, 12\) and \(2, 12\)"):
            sweep(model, clean, corrupt[:2], answers)
        with pytest.raises(ValueError, match=r"answers must be \[batch, 2\].*here \[3, 2\]; got \(3,\).*to_single_token"):
            sweep(model, clean, corrupt, answers[:, 0])
        with pytest.raises(ValueError, match=r"answers must be \[batch, 2\].*got \(2, 2\)"):
            sweep(model, clean, corrupt, answers[:2])
        with pytest.raises(ValueError, match=r"answers must be \[batch, 2\].*torch.float32"):
            sweep(model, clean, corrupt, answers.float())
        with pytest.raises(ValueError, match=r"base must be a \[batch, pos\] tensor of token ids, got \(12,\).*model.to_tokens"):
            sweep(model, clean[0], corrupt[0], answers[:1])
        with pytest.raises(ValueError, match=r"source must be a \[batch, pos\] tensor of token ids, got str"):
            sweep(model, clean, "Alex Hart", answers)
    with pytest.raises(ValueError, match=r"answers must be token ids in \[0, "):
        sweeps.logit_diffs(model, clean, answers + model.cfg.d_vocab)
    run = sweeps.BaseRun(model, clean, answers)
    with pytest.raises(ValueError, match="holds 3 prompts: pass `rows`"):
        run.patch_resid(0, run.resid[0])


def test_unequal_prompt_lengths_are_rejected_for_one_pair(gelu_twin):
    with pytest.raises(ValueError, match=r"same number of tokens \(4 and 5 here\)"):
        one_pair.head_patching_sweep(gelu_twin, "Alex Hart met", "Alex Hart met him", " Hart", " Carroll")
