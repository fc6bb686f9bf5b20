"""Chapter 2 reference solutions: patching attention heads.

Every sweep patches `blocks.L.attn.hook_z` ([batch, pos, head, d_head]): it exists on
every bridge, including real gelu-2l's native one, which has no per-head `hook_result`.
A head's output is its z times its own W_O slice, so patching z patches that output.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint


def patch_head_output(
    activations: Tensor, hook: HookPoint, head: int, corrupt_cache, pos: Optional[int] = None
) -> Tensor:
    """Overwrite head `head` with the corrupt run's value at the same hook point.

    `activations` is [batch, position, head, ...] (`hook_z` or `hook_result`). With
    `pos` None every position of that head is patched, otherwise only `pos`.
    """
    source = corrupt_cache[hook.name]
    if pos is None:
        activations[:, :, head] = source[:, :, head]
    else:
        activations[:, pos, head] = source[:, pos, head]
    return activations


def head_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    """Logit difference after patching each head's output at every position.

    Returns [n_layers, n_heads]: entry [layer, head] is logit(clean_answer) -
    logit(corrupt_answer) at the final position of the clean run with that head's
    `hook_z` taken from the corrupt run.

    One forward pass per layer: the batch holds one copy of the clean prompt per
    head, and copy h is patched at head h only.
    """
    clean_tokens = model.to_tokens(clean_prompt)
    corrupt_tokens = model.to_tokens(corrupt_prompt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    n_heads = model.cfg.n_heads
    good = model.to_single_token(clean_answer)
    bad = model.to_single_token(corrupt_answer)
    # mask[copy, 0, head, 0] is True where copy == head: copy h takes head h from the corrupt run.
    mask = torch.eye(n_heads, dtype=torch.bool, device=clean_tokens.device)[:, None, :, None]
    batch = clean_tokens.expand(n_heads, -1)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt_tokens)
        result = torch.zeros(model.cfg.n_layers, n_heads, device=clean_tokens.device)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_z"

            def patch_one_head_per_copy(activations: Tensor, hook: HookPoint, name: str = name) -> Tensor:
                return torch.where(mask, corrupt_cache[name], activations)

            logits = model.run_with_hooks(batch, fwd_hooks=[(name, patch_one_head_per_copy)])[:, -1]
            result[layer] = logits[:, good] - logits[:, bad]
    return result


def head_by_position_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    """Logit difference after patching each head's output at each position.

    Returns [n_layers * n_heads, n_pos]: row layer * n_heads + head, column pos is
    logit(clean_answer) - logit(corrupt_answer) at the final position of the clean
    run with that head's `hook_z` at that position taken from the corrupt run.

    One forward pass per layer: the batch holds n_heads * n_pos copies of the clean
    prompt, and copy head * n_pos + pos is patched at (pos, head) only.
    """
    clean_tokens = model.to_tokens(clean_prompt)
    corrupt_tokens = model.to_tokens(corrupt_prompt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, clean_tokens.shape[1]
    good = model.to_single_token(clean_answer)
    bad = model.to_single_token(corrupt_answer)
    device = clean_tokens.device
    # mask[copy_head, copy_pos, pos, head] is True where pos == copy_pos and head == copy_head;
    # flattened, copy number copy_head * n_pos + copy_pos patches exactly one (pos, head).
    same_pos = torch.eye(n_pos, dtype=torch.bool, device=device)[None, :, :, None]
    same_head = torch.eye(n_heads, dtype=torch.bool, device=device)[:, None, None, :]
    mask = (same_pos & same_head).reshape(n_heads * n_pos, n_pos, n_heads, 1)
    batch = clean_tokens.expand(n_heads * n_pos, -1)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt_tokens)
        result = torch.zeros(n_layers, n_heads, n_pos, device=device)
        for layer in range(n_layers):
            name = f"blocks.{layer}.attn.hook_z"

            def patch_one_cell_per_copy(activations: Tensor, hook: HookPoint, name: str = name) -> Tensor:
                return torch.where(mask, corrupt_cache[name], activations)

            logits = model.run_with_hooks(batch, fwd_hooks=[(name, patch_one_cell_per_copy)])[:, -1]
            result[layer] = (logits[:, good] - logits[:, bad]).reshape(n_heads, n_pos)
    return result.reshape(n_layers * n_heads, n_pos)
