"""Chapter 3's exercises: attention patterns from q, k and v, and scores that name heads."""

from __future__ import annotations

import math
import random

import torch

from circuitlab.prompts import CLEAN_PROMPT, random_case
from graders.compare import close_float, close_tensor
from graders.declare import Cache, Case, Exercise, Mistake, Property, answer_module
from graders.models import GradingModel
from graders.properties import close

CHAPTER = "03_attention_patterns"
ref = answer_module("solutions.ch03_attention_patterns")  # some known mistakes are one score mistaken for another


def repeated_tokens(model, rng: random.Random, length: int = 8) -> torch.Tensor:
    """BOS, then `length` random tokens, then the same tokens again: every token in the
    second half has an earlier copy, and the token after that copy is known."""
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    body = torch.randint(1000, 20000, (length,), generator=gen)
    bos = model.to_tokens("")[0, :1].cpu()
    return torch.cat([bos, body, body]).unsqueeze(0).to(model.cfg.device)


def _prompts(rng: random.Random) -> list[tuple[str, str]]:
    return [("clean prompt", CLEAN_PROMPT), ("fresh prompt", random_case(rng).corrupt_prompt)]


def _n_pos(gm: GradingModel, text: str) -> int:
    return gm.model.to_tokens(text).shape[1]


def _score_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    n_layers, n_heads = gm.model.cfg.n_layers, gm.model.cfg.n_heads
    out = [Case("tutorial: clean prompt, layer 0, head 1, Hart -> Alex",
                {"cache": Cache(CLEAN_PROMPT), "layer": 0, "head": 1, "q_pos": 5, "k_pos": 4})]
    for label, text in _prompts(rng):
        n_pos = _n_pos(gm, text)
        for _ in range(2):
            q = rng.randint(2, n_pos - 1)
            k = rng.randrange(q)
            layer, head = rng.randrange(n_layers), rng.randrange(n_heads)
            out.append(Case(f"{label}: layer {layer}, head {head}, q {q}, k {k}",
                            {"cache": Cache(text), "layer": layer, "head": head, "q_pos": q, "k_pos": k}))
    return out


def _row_cases(gm: GradingModel, rng: random.Random, pos_name: str = "q_pos") -> list[Case]:
    """(layer, head, position) triples; positions start at 1 so masking the current token
    still leaves a key to attend to."""
    out = []
    for label, text in _prompts(rng):
        n_pos = _n_pos(gm, text)
        for pos in (rng.randint(1, n_pos // 2), rng.randint(n_pos // 2, n_pos - 2)):
            layer, head = rng.randrange(gm.model.cfg.n_layers), rng.randrange(gm.model.cfg.n_heads)
            out.append(Case(f"{label}: layer {layer}, head {head}, position {pos}",
                            {"cache": Cache(text), "layer": layer, "head": head, pos_name: pos}))
    return out


def _pattern_cases(gm: GradingModel, rng: random.Random, with_tokens: bool) -> list[Case]:
    """Real patterns on a repeated random sequence and on the clean prompt, and a random
    causal pattern over tokens from a five-token vocabulary (so tokens repeat irregularly)."""
    model = gm.model
    repeated = repeated_tokens(model, rng)
    clean = model.to_tokens(CLEAN_PROMPT)
    sources = []
    with torch.no_grad():
        for label, tokens, layer in (("repeated random tokens, layer 0", repeated, 0),
                                     (f"clean prompt, layer {model.cfg.n_layers - 1}", clean, model.cfg.n_layers - 1)):
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
            sources.append((label, cache[f"blocks.{layer}.attn.hook_pattern"][0], tokens[0]))
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    n_pos = rng.randint(9, 14)
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()
    logits = torch.randn(model.cfg.n_heads, n_pos, n_pos, generator=gen) * 2
    pattern = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    sources.append(("random pattern, small vocabulary", pattern, torch.randint(0, 5, (n_pos,), generator=gen)))
    return [Case(label, {"pattern": p, "tokens": t} if with_tokens else {"pattern": p}) for label, p, t in sources]


# --- public properties: what the chapter text says each function equals ----------------

def _clean_cache(gm: GradingModel):
    with torch.no_grad():
        return gm.model.run_with_cache(CLEAN_PROMPT)[1]


def _score_properties(gm: GradingModel) -> list[Property]:
    layer, head = gm.model.cfg.n_layers - 1, 1
    scores = _clean_cache(gm)[f"blocks.{layer}.attn.hook_attn_scores"][0, head]

    def equals(answer, q_pos, k_pos):
        if type(answer) in (int, float) or (type(answer) is torch.Tensor and answer.numel() == 1):
            if abs(float(answer) - scores[q_pos, k_pos].item()) < 1e-3:
                return None
        return (f"got {answer!r:.40}; the score must equal "
                f"cache['blocks.{layer}.attn.hook_attn_scores'][0, head, q, k]")

    return [Property(f"({q}, {k}) equals hook_attn_scores, as the chapter says",
                     ({"cache": Cache(CLEAN_PROMPT), "layer": layer, "head": head, "q_pos": q, "k_pos": k},),
                     lambda a, q=q, k=k: equals(a[0], q, k))
            for q, k in ((5, 4), (11, 5))]


def _row_properties(gm: GradingModel) -> list[Property]:
    row = _clean_cache(gm)["blocks.0.attn.hook_pattern"][0, 0, 6]
    call = ({"cache": Cache(CLEAN_PROMPT), "layer": 0, "head": 0, "q_pos": 6},)
    return [Property("equals the hook_pattern row, as the chapter says", call,
                     lambda a: close(a[0], row, "the pattern row"))]


def _z_properties(gm: GradingModel) -> list[Property]:
    layer = gm.model.cfg.n_layers - 1
    z = _clean_cache(gm)[f"blocks.{layer}.attn.hook_z"][0, 7, 0]
    call = ({"cache": Cache(CLEAN_PROMPT), "layer": layer, "head": 0, "pos": 7},)
    return [Property("equals hook_z, as the chapter says", call, lambda a: close(a[0], z, "z"))]


def _hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """Two hand-made heads on the sequence a b c a b c: head 0 attends to the previous
    token, head 1 to the token after the earlier copy of the current one (where it exists)."""
    tokens = torch.tensor([7, 8, 9, 7, 8, 9])
    n = len(tokens)
    pattern = torch.zeros(2, n, n)
    pattern[:, 0, 0] = 1
    for dst in range(1, n):
        pattern[0, dst, dst - 1] = 1
        pattern[1, dst, dst - 2 if dst >= 3 else dst] = 1  # dst - 3 is the copy; dst - 2 follows it
    return pattern, tokens


def _head_scores(index: slice, label: str, what: str):
    def holds(answers):
        got = answers[0]
        got = got[index] if type(got) is torch.Tensor and got.dim() == 1 else got
        return close(got, torch.ones(1), f"score of {what}")

    return holds


def _previous_properties(gm: GradingModel) -> list[Property]:
    pattern, _ = _hand_made()
    return [Property("a pure previous-token head scores 1", ({"pattern": pattern},),
                     _head_scores(slice(0, 1), "previous", "head 0"))]


def _duplicate_properties(gm: GradingModel) -> list[Property]:
    pattern, tokens = _hand_made()
    copies = pattern.clone()
    for dst in range(3, 6):
        copies[1, dst] = 0
        copies[1, dst, dst - 3] = 1  # attend to the earlier copy of the same token
    return [Property("a head attending to earlier copies scores 1", ({"pattern": copies, "tokens": tokens},),
                     _head_scores(slice(1, 2), "duplicate", "head 1"))]


def _induction_properties(gm: GradingModel) -> list[Property]:
    pattern, tokens = _hand_made()
    return [Property("a perfect induction head scores 1", ({"pattern": pattern, "tokens": tokens},),
                     _head_scores(slice(1, 2), "induction", "head 1"))]


# --- known mistakes ------------------------------------------------------------------

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


EXERCISES = [
    Exercise(
        name="attention_score",
        chapter=CHAPTER,
        section="From q and k to a score",
        hint=("Take q = cache['blocks.{layer}.attn.hook_q'][0, q_pos, head] and k = ...hook_k[0, k_pos, head]; the "
              "score is q @ k / sqrt(d_head), returned as a float."),
        cases=_score_cases,
        compare=close_float(),
        properties=_score_properties,
        mistakes_inline=(
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
    ),
    Exercise(
        name="attention_pattern_row",
        chapter=CHAPTER,
        section="From scores to a pattern",
        hint=("Take the scores of query q_pos against every key position, set the keys after q_pos to -inf (causal "
              "mask), then softmax over the key axis."),
        cases=_row_cases,
        compare=close_tensor(atol=1e-5, rtol=1e-4),
        properties=_row_properties,
        mistakes_inline=(
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
    ),
    Exercise(
        name="head_z",
        chapter=CHAPTER,
        section="From a pattern to z",
        hint=("z at pos is the pattern row of that query (hook_pattern[0, head, pos]) times the value vectors of "
              "every position (hook_v[0, :, head])."),
        cases=lambda gm, rng: _row_cases(gm, rng, pos_name="pos"),
        compare=close_tensor(atol=1e-5, rtol=1e-4),
        properties=_z_properties,
        mistakes_inline=(
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
    ),
    Exercise(
        name="previous_token_score",
        chapter=CHAPTER,
        section="Scores that name a head",
        hint='For each head, average pattern[head, dst, dst - 1] over dst = 1 .. n_pos - 1 (the diagonal just below the main one).',
        cases=lambda gm, rng: _pattern_cases(gm, rng, with_tokens=False),
        compare=close_tensor(atol=1e-5, rtol=1e-4),
        properties=_previous_properties,
        mistakes_inline=(
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
    ),
    Exercise(
        name="duplicate_token_score",
        chapter=CHAPTER,
        section="Scores that name a head",
        hint='For each destination with an earlier copy of its own token, sum the attention to those earlier copies; average over those destinations only.',
        cases=lambda gm, rng: _pattern_cases(gm, rng, with_tokens=True),
        compare=close_tensor(atol=1e-5, rtol=1e-4),
        properties=_duplicate_properties,
        mistakes_inline=(
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
    ),
    Exercise(
        name="induction_score",
        chapter=CHAPTER,
        section="Scores that name a head",
        hint='For each destination whose token appeared earlier, sum the attention to the positions right after those earlier copies; average over those destinations only.',
        cases=lambda gm, rng: _pattern_cases(gm, rng, with_tokens=True),
        compare=close_tensor(atol=1e-5, rtol=1e-4),
        properties=_induction_properties,
        mistakes_inline=(
            Mistake("scored the earlier copy itself (that is the duplicate-token score)",
                    "An induction head attends to the token right after the earlier copy: src = copy + 1.",
                    lambda pattern, tokens: ref.duplicate_token_score(pattern, tokens)),
            Mistake("scored the token before each earlier copy (off by one)",
                    "The target is the token after the copy: src = copy + 1, not copy - 1.",
                    lambda pattern, tokens: _score_with(_shifted(tokens, -1), pattern)),
            Mistake("averaged over every position, not only those with an earlier copy",
                    "Average only over the query positions that have a target.",
                    lambda pattern, tokens: _score_with(_shifted(tokens, 1), pattern, every_row=True)),
        ),
    ),
]
