"""Chapter 3's exercises: attention patterns from q, k and v, and scores that name heads.

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`. References and known mistakes: solutions/ch03_attention_patterns.py and
solutions/mistakes/ch03_attention_patterns.py.
"""

from __future__ import annotations

import random

import torch

from circuitlab.prompts import CLEAN_PROMPT, random_case
from circuitlab_graders import kit
from circuitlab_graders.compare import close_float
from circuitlab_graders.declare import Cache, Case, Exercise, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close

CHAPTER = "03_attention_patterns"


# ---------------------------------------------------------------- inputs every block draws from

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


def _clean_cache(gm: GradingModel):
    with torch.no_grad():
        return gm.model.run_with_cache(CLEAN_PROMPT)[1]


# ---------------------------------------------------------------- attention_score

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


ATTENTION_SCORE = Exercise(
    name="attention_score",
    chapter=CHAPTER,
    section="From q and k to a score",
    hint=("Take q = cache['blocks.{layer}.attn.hook_q'][0, q_pos, head] and k = ...hook_k[0, k_pos, head]; the "
          "score is q @ k / sqrt(d_head), returned as a float."),
    cases=_score_cases,
    compare=close_float(),
    properties=_score_properties,
)


# ---------------------------------------------------------------- attention_pattern_row

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


def _row_properties(gm: GradingModel) -> list[Property]:
    row = _clean_cache(gm)["blocks.0.attn.hook_pattern"][0, 0, 6]
    call = ({"cache": Cache(CLEAN_PROMPT), "layer": 0, "head": 0, "q_pos": 6},)
    return [Property("equals the hook_pattern row, as the chapter says", call,
                     lambda a: close(a[0], row, "the pattern row"))]


ATTENTION_PATTERN_ROW = Exercise(
    name="attention_pattern_row",
    chapter=CHAPTER,
    section="From scores to a pattern",
    hint=("Take the scores of query q_pos against every key position, set the keys after q_pos to -inf (causal "
          "mask), then softmax over the key axis."),
    cases=_row_cases,
    compare=kit.COMPUTED,
    properties=_row_properties,
)


# ---------------------------------------------------------------- head_z

def _z_properties(gm: GradingModel) -> list[Property]:
    layer = gm.model.cfg.n_layers - 1
    z = _clean_cache(gm)[f"blocks.{layer}.attn.hook_z"][0, 7, 0]
    call = ({"cache": Cache(CLEAN_PROMPT), "layer": layer, "head": 0, "pos": 7},)
    return [Property("equals hook_z, as the chapter says", call, lambda a: close(a[0], z, "z"))]


HEAD_Z = Exercise(
    name="head_z",
    chapter=CHAPTER,
    section="From a pattern to z",
    hint=("z at pos is the pattern row of that query (hook_pattern[0, head, pos]) times the value vectors of "
          "every position (hook_v[0, :, head])."),
    cases=lambda gm, rng: _row_cases(gm, rng, pos_name="pos"),
    compare=kit.COMPUTED,
    properties=_z_properties,
)


# ---------------------------------------------------------------- previous_token_score

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


PREVIOUS_TOKEN_SCORE = Exercise(
    name="previous_token_score",
    chapter=CHAPTER,
    section="Scores that name a head",
    hint='For each head, average pattern[head, dst, dst - 1] over dst = 1 .. n_pos - 1 (the diagonal just below the main one).',
    cases=lambda gm, rng: _pattern_cases(gm, rng, with_tokens=False),
    compare=kit.COMPUTED,
    properties=_previous_properties,
)


# ---------------------------------------------------------------- duplicate_token_score

def _duplicate_properties(gm: GradingModel) -> list[Property]:
    pattern, tokens = _hand_made()
    copies = pattern.clone()
    for dst in range(3, 6):
        copies[1, dst] = 0
        copies[1, dst, dst - 3] = 1  # attend to the earlier copy of the same token
    return [Property("a head attending to earlier copies scores 1", ({"pattern": copies, "tokens": tokens},),
                     _head_scores(slice(1, 2), "duplicate", "head 1"))]


DUPLICATE_TOKEN_SCORE = Exercise(
    name="duplicate_token_score",
    chapter=CHAPTER,
    section="Scores that name a head",
    hint='For each destination with an earlier copy of its own token, sum the attention to those earlier copies; average over those destinations only.',
    cases=lambda gm, rng: _pattern_cases(gm, rng, with_tokens=True),
    compare=kit.COMPUTED,
    properties=_duplicate_properties,
)


# ---------------------------------------------------------------- induction_score

def _induction_properties(gm: GradingModel) -> list[Property]:
    pattern, tokens = _hand_made()
    return [Property("a perfect induction head scores 1", ({"pattern": pattern, "tokens": tokens},),
                     _head_scores(slice(1, 2), "induction", "head 1"))]


INDUCTION_SCORE = Exercise(
    name="induction_score",
    chapter=CHAPTER,
    section="Scores that name a head",
    hint='For each destination whose token appeared earlier, sum the attention to the positions right after those earlier copies; average over those destinations only.',
    cases=lambda gm, rng: _pattern_cases(gm, rng, with_tokens=True),
    compare=kit.COMPUTED,
    properties=_induction_properties,
)


EXERCISES = [ATTENTION_SCORE, ATTENTION_PATTERN_ROW, HEAD_Z, PREVIOUS_TOKEN_SCORE, DUPLICATE_TOKEN_SCORE, INDUCTION_SCORE]
