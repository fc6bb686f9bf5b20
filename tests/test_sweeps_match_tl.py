"""The course's reference sweeps agree with transformer_lens.patching, one forward per cell."""

from __future__ import annotations

import torch
from transformer_lens import patching

from circuitlab.prompts import CORRUPTIONS
from solutions.ch01_residual_patching import residual_patching_sweep


def test_residual_sweep_equals_get_act_patch_resid_pre(gelu_twin):
    model = gelu_twin
    case = CORRUPTIONS["first_name"]
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    clean_tokens = model.to_tokens(case.clean_prompt)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    # TL's "corrupted tokens + clean cache" signature, used the other way round: the
    # corrupt cache is patched into a run on the clean tokens.
    expected = patching.get_act_patch_resid_pre(model, clean_tokens, corrupt_cache, metric)
    ours = residual_patching_sweep(model, **case.as_args())
    assert ours.shape == (model.cfg.n_layers + 1, clean_tokens.shape[1])
    assert expected.shape == (model.cfg.n_layers, clean_tokens.shape[1])
    torch.testing.assert_close(ours[:-1].cpu(), expected.cpu(), atol=1e-4, rtol=1e-4)
    # The sweep is not trivially constant: patching position 4 at the input changes the answer.
    assert (ours[0] - metric(model(clean_tokens))).abs().max() > 1e-3
