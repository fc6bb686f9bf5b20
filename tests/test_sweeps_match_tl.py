"""The course's reference sweeps agree with transformer_lens.patching, which runs one
forward pass per patched cell."""

from __future__ import annotations

import torch
from transformer_lens import patching

from circuitlab.prompts import CORRUPTIONS
from circuitlab_solutions.ch01_residual_patching import residual_patching_sweep
from circuitlab_solutions.ch02_head_patching import head_by_position_sweep, head_patching_sweep


def tl_inputs(model, case):
    """TL's "corrupted tokens + clean cache" arguments, used the other way round: the
    corrupt cache is patched into runs on the clean tokens. Returns them with the metric."""
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    return model.to_tokens(case.clean_prompt), corrupt_cache, metric


def test_residual_sweep_equals_get_act_patch_resid_pre(gelu_twin):
    model, case = gelu_twin, CORRUPTIONS["first_name"]
    clean_tokens, corrupt_cache, metric = tl_inputs(model, case)
    expected = patching.get_act_patch_resid_pre(model, clean_tokens, corrupt_cache, metric)
    ours = residual_patching_sweep(model, **case.as_args())
    assert ours.shape == (model.cfg.n_layers + 1, clean_tokens.shape[1])
    assert expected.shape == (model.cfg.n_layers, clean_tokens.shape[1])
    torch.testing.assert_close(ours[:-1].cpu(), expected.cpu(), atol=1e-4, rtol=1e-4)
    # The sweep is not trivially constant: patching position 4 at the input changes the answer.
    assert (ours[0] - metric(model(clean_tokens))).abs().max() > 1e-3


def test_head_by_position_sweep_equals_get_act_patch_attn_head_out_by_pos(gelu_twin):
    model, case = gelu_twin, CORRUPTIONS["first_name"]
    clean_tokens, corrupt_cache, metric = tl_inputs(model, case)
    expected = patching.get_act_patch_attn_head_out_by_pos(model, clean_tokens, corrupt_cache, metric)
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, clean_tokens.shape[1]
    assert expected.shape == (n_layers, n_pos, n_heads)
    expected = expected.permute(0, 2, 1).reshape(n_layers * n_heads, n_pos)

    ours = head_by_position_sweep(model, **case.as_args())
    assert ours.shape == (n_layers * n_heads, n_pos)
    torch.testing.assert_close(ours.cpu(), expected.cpu(), atol=1e-4, rtol=1e-4)
    # Not trivially constant: some cell moves the logit difference.
    assert (ours - metric(model(clean_tokens))).abs().max() > 1e-3


def test_head_sweep_is_the_by_position_sweep_patched_everywhere(gelu_twin):
    """Patching a head at every position at once: spot-check two heads against a plain hook."""
    model, case = gelu_twin, CORRUPTIONS["surname"]
    clean_tokens, corrupt_cache, metric = tl_inputs(model, case)
    ours = head_patching_sweep(model, **case.as_args())
    assert ours.shape == (model.cfg.n_layers, model.cfg.n_heads)
    for layer, head in [(0, 3), (model.cfg.n_layers - 1, model.cfg.n_heads - 1)]:
        name = f"blocks.{layer}.attn.hook_z"

        def patch(z, hook):
            z[:, :, head] = corrupt_cache[name][:, :, head]
            return z

        patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(name, patch)])
        assert abs(ours[layer, head].item() - metric(patched).item()) < 1e-4
