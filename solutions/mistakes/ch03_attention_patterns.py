"""Chapter 3's known mistakes: attention patterns from q, k and v, and scores that name heads.

Some are one score mistaken for another: they call that score's reference.
"""

from __future__ import annotations

import math

import torch

from circuitlab_graders.declare import Mistake
from circuitlab_solutions import ch03_attention_patterns as ref


def _qk(cache, layer, head, q_pos, k_pos):
    return cache[f"blocks.{layer}.attn.hook_q"][0, q_pos, head], cache[f"blocks.{layer}.attn.hook_k"][0, k_pos, head]


def _scores_row(cache, layer, head, q_pos, scale=True):
    q = cache[f"blocks.{layer}.attn.hook_q"][0, q_pos, head]
    k = cache[f"blocks.{layer}.attn.hook_k"][0, :, head]
    return k @ q / (math.sqrt(q.shape[-1]) if scale else 1.0)


def _later(n_pos: int, q_pos: int, include_self: bool = False) -> torch.Tensor:
    positions = torch.arange(n_pos)  # moved to the scores' device by _masked_softmax
    return positions >= q_pos if include_self else positions > q_pos


def _row_wrong_axis(cache, layer, head, q_pos):
    q = cache[f"blocks.{layer}.attn.hook_q"][0, :, head]
    k = cache[f"blocks.{layer}.attn.hook_k"][0, :, head]
    scores = q @ k.T / math.sqrt(q.shape[-1])  # [query, key]
    n = scores.shape[0]
    masked = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril().to(scores.device), float("-inf"))
    return masked.softmax(dim=0)[q_pos]  # normalised over queries: the wrong axis


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(mask.to(scores.device), float("-inf")).softmax(-1)


def _copies(tokens: torch.Tensor, include_self: bool = False) -> torch.Tensor:
    """copies[dst, src]: src holds dst's token and src < dst (src <= dst with include_self)."""
    n = tokens.shape[0]
    before = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(0 if include_self else -1)
    return (tokens[:, None] == tokens[None, :]) & before


def _shifted(tokens: torch.Tensor, shift: int) -> torch.Tensor:
    """Earlier copies moved `shift` keys to the right (negative: to the left); copies
    moved past either edge are dropped."""
    copies = _copies(tokens)
    out = torch.zeros_like(copies)
    if shift > 0:
        out[:, shift:] = copies[:, :-shift]
    else:
        out[:, :shift] = copies[:, -shift:]
    return out


def _score_with(targets: torch.Tensor, pattern: torch.Tensor, every_row: bool = False) -> torch.Tensor:
    rows = torch.ones_like(targets[:, 0]) if every_row else targets.any(-1)
    if not rows.any():
        return torch.zeros(pattern.shape[0], device=pattern.device)
    return (pattern * targets).sum(-1)[:, rows].mean(-1)


MISTAKES = {
    "attention_score": (
        Mistake("left out the division by √d_head", "Divide q · k by math.sqrt(d_head) (d_head = q.shape[-1]).",
                lambda cache, layer, head, q_pos, k_pos: float(torch.dot(*_qk(cache, layer, head, q_pos, k_pos)))),
        Mistake("divided by d_head instead of √d_head", "The scale is math.sqrt(d_head), not d_head.",
                lambda cache, layer, head, q_pos, k_pos: float(
                    torch.dot(*_qk(cache, layer, head, q_pos, k_pos)) / cache[f"blocks.{layer}.attn.hook_q"].shape[-1])),
        Mistake("swapped the query and key positions",
                "The query comes from q_pos (hook_q) and the key from k_pos (hook_k).",
                lambda cache, layer, head, q_pos, k_pos: ref.attention_score(cache, layer, head, k_pos, q_pos)),
        Mistake("returned the attention probability (after the softmax)",
                "The score is before the softmax: q · k / √d_head, as in hook_attn_scores.",
                lambda cache, layer, head, q_pos, k_pos: float(
                    cache[f"blocks.{layer}.attn.hook_pattern"][0, head, q_pos, k_pos])),
    ),
    "attention_pattern_row": (
        Mistake("left out the causal mask", "Set the scores of keys after q_pos to -inf before the softmax.",
                lambda cache, layer, head, q_pos: _scores_row(cache, layer, head, q_pos).softmax(-1)),
        Mistake("left out the division by √d_head", "Divide the scores by math.sqrt(d_head) before the softmax.",
                lambda cache, layer, head, q_pos: _masked_softmax(
                    _scores_row(cache, layer, head, q_pos, scale=False),
                    _later(cache[f"blocks.{layer}.attn.hook_k"].shape[1], q_pos))),
        Mistake("took the softmax over the wrong axis (over queries)",
                "Normalise each query's row over the keys: softmax(dim=-1) of that row.", _row_wrong_axis),
        Mistake("masked the current token too (off by one in the causal mask)",
                "A query may attend to itself: mask only keys with position > q_pos.",
                lambda cache, layer, head, q_pos: _masked_softmax(
                    _scores_row(cache, layer, head, q_pos),
                    _later(cache[f"blocks.{layer}.attn.hook_k"].shape[1], q_pos, include_self=True))),
        Mistake("returned the raw scores (no mask, no softmax)",
                "The pattern is the softmax of the masked scores; its entries sum to 1.",
                lambda cache, layer, head, q_pos: _scores_row(cache, layer, head, q_pos)),
    ),
    "head_z": (
        Mistake("weighted by the pattern column (attention paid to pos) instead of the row",
                "Use hook_pattern[0, head, pos, :]: what position pos attends to.",
                lambda cache, layer, head, pos: cache[f"blocks.{layer}.attn.hook_pattern"][0, head, :, pos]
                @ cache[f"blocks.{layer}.attn.hook_v"][0, :, head]),
        Mistake("weighted the keys instead of the values", "z mixes the value vectors: hook_v, not hook_k.",
                lambda cache, layer, head, pos: cache[f"blocks.{layer}.attn.hook_pattern"][0, head, pos]
                @ cache[f"blocks.{layer}.attn.hook_k"][0, :, head]),
        Mistake("averaged the values uniformly", "Weight each value by the attention pattern row.",
                lambda cache, layer, head, pos: cache[f"blocks.{layer}.attn.hook_v"][0, : pos + 1, head].mean(0)),
        Mistake("returned the value vector at pos itself", "z is a weighted sum over all positions up to pos.",
                lambda cache, layer, head, pos: cache[f"blocks.{layer}.attn.hook_v"][0, pos, head]),
    ),
    "previous_token_score": (
        Mistake("measured attention to the current token (the main diagonal)",
                "The previous token of dst is src = dst - 1: pattern.diagonal(offset=-1, dim1=-2, dim2=-1).",
                lambda pattern: pattern.diagonal(0, -2, -1).mean(-1)),
        Mistake("measured attention to the next token (the diagonal above the main one)",
                "src = dst - 1 lies below the main diagonal: offset=-1, not +1.",
                lambda pattern: pattern.diagonal(1, -2, -1).mean(-1)),
        Mistake("divided by n_pos instead of the n_pos - 1 positions that have a previous token",
                "Average over positions 1 .. n_pos - 1 only (take the mean of the diagonal).",
                lambda pattern: pattern.diagonal(-1, -2, -1).sum(-1) / pattern.shape[-1]),
        Mistake("averaged over heads instead of returning one score per head",
                "Return a tensor of shape [n_heads]: average over positions only.",
                lambda pattern: pattern.diagonal(-1, -2, -1).mean()),
    ),
    "duplicate_token_score": (
        Mistake("counted the current token as its own earlier copy",
                "Only strictly earlier positions count: src < dst.",
                lambda pattern, tokens: _score_with(_copies(tokens, include_self=True), pattern)),
        Mistake("averaged over every position, not only those with an earlier copy",
                "Average only over the query positions whose token appeared before.",
                lambda pattern, tokens: _score_with(_copies(tokens), pattern, every_row=True)),
        Mistake("scored the token after each earlier copy (that is the induction score)",
                "A duplicate-token head attends to the earlier copy itself.",
                lambda pattern, tokens: ref.induction_score(pattern, tokens)),
    ),
    "induction_score": (
        Mistake("scored the earlier copy itself (that is the duplicate-token score)",
                "An induction head attends to the token right after the earlier copy: src = copy + 1.",
                lambda pattern, tokens: ref.duplicate_token_score(pattern, tokens)),
        Mistake("scored the token before each earlier copy (off by one)",
                "The target is the token after the copy: src = copy + 1, not copy - 1.",
                lambda pattern, tokens: _score_with(_shifted(tokens, -1), pattern)),
        Mistake("averaged over every position, not only those with an earlier copy",
                "Average only over the query positions that have a target.",
                lambda pattern, tokens: _score_with(_shifted(tokens, 1), pattern, every_row=True)),
        Mistake("left out the target when the earlier copy is right before the query (copy at dst - 1, target = dst)",
                "The token after an earlier copy may be the query position itself: with the copy at dst - 1 the "
                "target is dst, and it counts (src may equal dst).",
                lambda pattern, tokens: _score_with(_shifted(tokens, 1).tril(-1), pattern)),
    ),
}
