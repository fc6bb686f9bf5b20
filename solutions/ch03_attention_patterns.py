"""Chapter 3 reference solutions: attention patterns from q, k and v, and head scores.

Cache tensors: `hook_q`, `hook_k`, `hook_v`, `hook_z` are [batch, pos, head, d_head];
`hook_attn_scores` and `hook_pattern` are [batch, head, query (dst), key (src)].
The score functions take one prompt's pattern, [head, dst, src], and its tokens, [pos].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def attention_score(cache, layer: int, head: int, q_pos: int, k_pos: int) -> float:
    """How much query position `q_pos` wants to attend to key position `k_pos`:
    q · k / sqrt(d_head), for batch item 0. Equals hook_attn_scores[0, head, q_pos, k_pos]."""
    q = cache[f"blocks.{layer}.attn.hook_q"][0, q_pos, head]
    k = cache[f"blocks.{layer}.attn.hook_k"][0, k_pos, head]
    return float(q @ k / math.sqrt(q.shape[-1]))


def attention_pattern_row(cache, layer: int, head: int, q_pos: int) -> Tensor:
    """The attention that query `q_pos` pays to every key position: the softmax of
    its scores over keys, with keys after `q_pos` masked out. Equals
    hook_pattern[0, head, q_pos]."""
    q = cache[f"blocks.{layer}.attn.hook_q"][0, q_pos, head]  # [d_head]
    k = cache[f"blocks.{layer}.attn.hook_k"][0, :, head]  # [pos, d_head]
    scores = k @ q / math.sqrt(q.shape[-1])  # [pos]
    later = torch.arange(k.shape[0], device=k.device) > q_pos
    return scores.masked_fill(later, float("-inf")).softmax(dim=-1)


def head_z(cache, layer: int, head: int, pos: int) -> Tensor:
    """What the head reads at position `pos`: the value vectors of every position,
    weighted by that position's attention pattern row. Equals hook_z[0, pos, head]."""
    weights = cache[f"blocks.{layer}.attn.hook_pattern"][0, head, pos]  # [pos]
    v = cache[f"blocks.{layer}.attn.hook_v"][0, :, head]  # [pos, d_head]
    return weights @ v


def previous_token_score(pattern: Tensor) -> Tensor:
    """Per head, the mean attention from each position to the one just before it
    (positions 1 .. n_pos - 1). `pattern` is [head, dst, src]; returns [head]."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def duplicate_token_score(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Per head, the mean attention from a position to earlier copies of its own
    token, over the positions that have at least one earlier copy. `pattern` is
    [head, dst, src], `tokens` is [pos]; returns [head] (zeros if no token repeats)."""
    n_pos = tokens.shape[0]
    same = tokens[:, None] == tokens[None, :]  # [dst, src]
    earlier = torch.ones(n_pos, n_pos, dtype=torch.bool, device=tokens.device).tril(diagonal=-1)
    targets = same & earlier
    rows = targets.any(dim=-1)  # the query positions that have a target
    if not rows.any():
        return torch.zeros(pattern.shape[0], dtype=pattern.dtype, device=pattern.device)
    return (pattern * targets).sum(dim=-1)[:, rows].mean(dim=-1)


def induction_score(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Per head, the mean attention from a position to the tokens right after
    earlier copies of its own token, over the positions where such a token exists.
    `pattern` is [head, dst, src], `tokens` is [pos]; returns [head]."""
    n_pos = tokens.shape[0]
    same = tokens[:, None] == tokens[None, :]
    earlier = torch.ones(n_pos, n_pos, dtype=torch.bool, device=tokens.device).tril(diagonal=-1)
    copies = same & earlier  # [dst, s]: s is an earlier copy of dst's token
    targets = torch.zeros_like(copies)
    targets[:, 1:] = copies[:, :-1]  # the target is the token after the copy: src = s + 1
    rows = targets.any(dim=-1)
    if not rows.any():
        return torch.zeros(pattern.shape[0], dtype=pattern.dtype, device=pattern.device)
    return (pattern * targets).sum(dim=-1)[:, rows].mean(dim=-1)
