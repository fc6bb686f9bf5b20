"""Chapter 0's exercises: logits, the unembedding bias, the logit difference.

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`. References and known mistakes: solutions/ch00_setup.py and
solutions/mistakes/ch00_setup.py.
"""

from __future__ import annotations

import random
from typing import Any, Optional

import torch

from circuitlab.prompts import CLEAN_PROMPT, random_case
from circuitlab_graders.compare import close_tensor, same_value, scalar_shape
from circuitlab_graders import kit
from circuitlab_graders.declare import MODEL, Case, Exercise, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close, scalar, single_token

CHAPTER = "00_setup"


# ---------------------------------------------------------------- next_token_prediction

def _prompts(rng: random.Random) -> list[str]:
    fresh = [random_case(rng).clean_prompt for _ in range(2)]
    # Cut one prompt short so the "final position" is not always the same index.
    words = fresh[1].split(" ")
    fresh[1] = " ".join(words[: rng.randint(3, len(words) - 1)])
    return ["Famous computer scientist Alan", CLEAN_PROMPT, *fresh]


def _prediction_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(repr(p), {"model": MODEL, "prompt": p}) for p in _prompts(rng)]


def _prediction_properties(gm: GradingModel) -> list[Property]:
    prompts = ("Famous computer scientist Alan", CLEAN_PROMPT, "The capital of France is", "1, 2, 3, 4,")
    calls = tuple({"model": MODEL, "prompt": p} for p in prompts)
    props = [Property(f"{p!r} gives one token, as a string", (call,), lambda a: single_token(gm.model, a[0]))
             for p, call in zip(prompts, calls)]
    props.append(Property("the prediction depends on the prompt", calls, lambda a: None if len(set(map(repr, a))) > 1
                          else f"all {len(a)} prompts gave {a[0]!r:.60}; is it read at the final position?"))
    props.append(Property("the same prompt twice gives the same token", (calls[0], calls[0]),
                          lambda a: same_value(a[1], a[0]) and "two calls on the same prompt disagree"))
    return props


NEXT_TOKEN_PREDICTION = Exercise(
    name="next_token_prediction",
    chapter=CHAPTER,
    section="Logits and the next word",
    hint=("model(prompt) gives logits of shape [batch, position, vocab]; take the final position of batch "
          "item 0, its argmax, and decode it with model.to_string."),
    cases=_prediction_cases,
    compare=same_value,
    properties=_prediction_properties,
)


# ---------------------------------------------------------------- top_tokens_by_unembed_bias

def _bias_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(f"k={k}", {"model": MODEL, "k": k}) for k in (5, rng.randint(2, 12))]


def _bias_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    bias = model.b_U.detach().clone()  # read before any learner code runs

    def tokens(k: int, answer: Any) -> Optional[str]:
        if type(answer) is not list or len(answer) != k:
            return f"returned {type(answer).__name__} {answer!r:.80}, expected a list of {k} strings"
        return next((p for p in (single_token(model, t) for t in answer) if p), None)

    def ordered(k: int, answer: Any) -> Optional[str]:
        if (problem := tokens(k, answer)) is not None:
            return problem
        if len(set(answer)) != k:
            return "a token appears twice"
        values = torch.stack([bias[model.to_single_token(t)] for t in answer])
        return None if bool((values[:-1] >= values[1:]).all()) else "the tokens are not ordered from the largest bias down"

    props = []
    for k in (3, 7):
        call = ({"model": MODEL, "k": k},)
        props.append(Property(f"k={k} gives a list of {k} token strings", call, lambda a, k=k: tokens(k, a[0])))
        props.append(Property(f"k={k}: distinct tokens, largest bias first", call, lambda a, k=k: ordered(k, a[0])))
    return props


TOP_TOKENS_BY_UNEMBED_BIAS = Exercise(
    name="top_tokens_by_unembed_bias",
    chapter=CHAPTER,
    section="Parameters",
    hint=("model.b_U has one entry per vocabulary token; .topk(k) gives the largest k in order, and each "
          "index decodes with model.to_string."),
    cases=_bias_cases,
    compare=same_value,
    properties=_bias_properties,
)


# ---------------------------------------------------------------- logit_diff

def _logit_diff_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    model = gm.model
    pair = random_case(rng)
    with torch.no_grad():
        # Two different prompts in one batch: only item 0 counts.
        logits = model(model.to_tokens([pair.clean_prompt, pair.corrupt_prompt]))
        short = model(model.to_tokens(" ".join(pair.clean_prompt.split(" ")[:5])))
    vocab = logits.shape[-1]
    cases = []
    for name, source in (("two-prompt batch", logits), ("short prompt", short)):
        for _ in range(2):
            good, bad = rng.sample(range(vocab), 2)
            cases.append(Case(f"{name}, tokens {good} vs {bad}", {"logits": source, "correct_token": good,
                                                                  "wrong_token": bad}))
    return cases


def _logit_diff_properties(gm: GradingModel) -> list[Property]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, gm.model.cfg.d_vocab, generator=generator)
    a, b = 11, 4000
    logits[0, -1, a], logits[0, -1, b] = 6.0, -6.0  # the correct token is far ahead
    doubled = logits.clone()
    doubled[0, -1] *= 2
    other = logits.clone()
    other[1:] = torch.randn(other[1:].shape, generator=generator)
    other[0, :-1] = torch.randn(other[0, :-1].shape, generator=generator)
    ab = {"logits": logits, "correct_token": a, "wrong_token": b}

    def related(what: str, relation):
        def holds(answers):
            return scalar(answers[0]) or scalar(answers[1]) or close(answers[1], relation(answers[0]), what)
        return holds

    return [
        kit.has_form("returns one float number", ab, kit.SCALAR),
        Property("positive when the correct token's logit is larger", (ab,), lambda x: scalar(x[0]) or (
            None if x[0].item() > 0 else f"got {x[0].item():.3g}, but the correct token is ahead, so the difference "
            "must be positive")),
        kit.sign_flip(ab, kit.swapped_answers(ab, "correct_token", "wrong_token"), kit.SCALAR,
                      "logit_diff(b, a) should be -logit_diff(a, b)", label="swapping the tokens flips the sign"),
        kit.equals("the same token twice gives 0", ({**ab, "wrong_token": a},), kit.SCALAR, torch.tensor(0.0),
                   "logit_diff(a, a)"),
        Property("linear in the logits", (ab, {**ab, "logits": doubled}),
                 related("doubling the final logits of item 0 should double the result", lambda x: 2 * x)),
        Property("only the final position of item 0 matters", (ab, {**ab, "logits": other}),
                 related("changing other positions or batch items changed the result", lambda x: x)),
    ]


LOGIT_DIFF = Exercise(
    name="logit_diff",
    chapter=CHAPTER,
    section="The task, and the logit difference",
    hint=("logits[0, -1] is the final position of the first prompt; index it with each token id and "
          "subtract (correct minus wrong)."),
    cases=_logit_diff_cases,
    compare=scalar_shape(close_tensor(atol=1e-4, rtol=1e-4)),
    properties=_logit_diff_properties,
)


EXERCISES = [NEXT_TOKEN_PREDICTION, TOP_TOKENS_BY_UNEMBED_BIAS, LOGIT_DIFF]
