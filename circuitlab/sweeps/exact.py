"""TEMPORARY stand-in for the engine branch's exact sweeps (ENGINE_API.md), built on
transformer_lens.patching: same API and numbers, one forward pass per cell. Replaced by
the engine's circuitlab/sweeps/exact.py when that branch is merged."""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens import patching


class UnsupportedModelError(NotImplementedError):
    pass


def logit_diffs(model, tokens: Tensor, answers: Tensor) -> Tensor:
    with torch.no_grad():
        final = model(tokens)[:, -1]
    rows = torch.arange(tokens.shape[0])
    return final[rows, answers[:, 0]] - final[rows, answers[:, 1]]


def _sweep(fn, model, base, source, answers):
    out = []
    for i in range(base.shape[0]):
        good, bad = int(answers[i, 0]), int(answers[i, 1])
        with torch.no_grad():
            _, cache = model.run_with_cache(source[i:i + 1])
            out.append(fn(model, base[i:i + 1], cache, lambda logits: logits[0, -1, good] - logits[0, -1, bad]))
    return torch.stack(out)


def residual_sweep(model, base, source, answers, *, progress_bar=None):
    return _sweep(patching.get_act_patch_resid_pre, model, base, source, answers)


def head_sweep(model, base, source, answers, *, progress_bar=None):
    return _sweep(patching.get_act_patch_attn_head_out_all_pos, model, base, source, answers)


def head_by_position_sweep(model, base, source, answers, *, progress_bar=None):
    # TL returns [layer, pos, head]; the API is [layer, head, pos].
    return _sweep(patching.get_act_patch_attn_head_out_by_pos, model, base, source, answers).transpose(-1, -2)
