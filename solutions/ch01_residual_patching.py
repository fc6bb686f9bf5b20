"""Chapter 1 reference solutions: patching the residual stream."""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint


def patch_residual_stream(activations: Tensor, hook: HookPoint, pos: int, corrupt_cache) -> Tensor:
    """Overwrite position `pos` of the residual stream with the corrupt run's value.

    `activations` is [batch, position, d_model] at the hook point `hook.name`;
    the corrupt cache holds the same hook point's activations from the corrupt
    prompt. Only that one position changes.
    """
    activations[:, pos, :] = corrupt_cache[hook.name][:, pos, :]
    return activations


def residual_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    """Logit difference after patching each (layer, position) of the residual stream.

    Row 0 patches `blocks.0.hook_resid_pre`, row i + 1 patches
    `blocks.i.hook_resid_post`; column p patches position p. Each entry is
    logit(clean_answer) - logit(corrupt_answer) at the final position of the
    clean run with that one activation taken from the corrupt run.

    Each row is a single forward pass: the batch holds one copy of the clean
    prompt per position, and copy p is patched at position p only.
    """
    clean_tokens = model.to_tokens(clean_prompt)
    corrupt_tokens = model.to_tokens(corrupt_prompt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    n_pos = clean_tokens.shape[1]
    hook_names = ["blocks.0.hook_resid_pre"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)
    ]
    good = model.to_single_token(clean_answer)
    bad = model.to_single_token(corrupt_answer)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt_tokens)
        batch = clean_tokens.expand(n_pos, n_pos)
        positions = torch.arange(n_pos, device=clean_tokens.device)
        result = torch.zeros(len(hook_names), n_pos, device=clean_tokens.device)
        for row, name in enumerate(hook_names):

            def patch_diagonal(activations: Tensor, hook: HookPoint, name: str = name) -> Tensor:
                activations[positions, positions] = corrupt_cache[name][0, positions]
                return activations

            logits = model.run_with_hooks(batch, fwd_hooks=[(name, patch_diagonal)])[:, -1]
            result[row] = logits[:, good] - logits[:, bad]
    return result
