"""Chapter 0's exercises: logits, the unembedding bias, the logit difference."""

from __future__ import annotations

import random
from typing import Any, Optional

import torch

from circuitlab.prompts import CLEAN_PROMPT, random_case
from graders.compare import close_tensor, same_value, scalar_shape
from graders.declare import MODEL, Case, Exercise, Mistake, Property
from graders.models import GradingModel
from graders.properties import close, scalar, single_token

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
        Property("returns one float number", (ab,), lambda x: scalar(x[0])),
        Property("positive when the correct token's logit is larger", (ab,), lambda x: scalar(x[0]) or (
            None if x[0].item() > 0 else f"got {x[0].item():.3g}, but the correct token is ahead, so the difference "
            "must be positive")),
        Property("swapping the tokens flips the sign", (ab, {**ab, "correct_token": b, "wrong_token": a}),
                 related("logit_diff(b, a) should be -logit_diff(a, b)", lambda x: -x)),
        Property("the same token twice gives 0", ({**ab, "wrong_token": a},),
                 lambda x: scalar(x[0]) or close(x[0], torch.tensor(0.0), "logit_diff(a, a)")),
        Property("linear in the logits", (ab, {**ab, "logits": doubled}),
                 related("doubling the final logits of item 0 should double the result", lambda x: 2 * x)),
        Property("only the final position of item 0 matters", (ab, {**ab, "logits": other}),
                 related("changing other positions or batch items changed the result", lambda x: x)),
    ]


EXERCISES = [
    Exercise(
        name="next_token_prediction",
        chapter=CHAPTER,
        section="Logits and the next word",
        hint=("model(prompt) gives logits of shape [batch, position, vocab]; take the final position of batch "
              "item 0, its argmax, and decode it with model.to_string."),
        cases=_prediction_cases,
        compare=same_value,
        properties=_prediction_properties,
        mistakes=(
            Mistake("read the prediction at the first position",
                    "The next-token prediction sits at the last position: logits[0, -1].",
                    lambda model, prompt: model.to_string(model(prompt)[0, 0].argmax())),
            Mistake("took the least likely token (argmin)",
                    "The prediction is the token with the largest logit: use argmax.",
                    lambda model, prompt: model.to_string(model(prompt)[0, -1].argmin())),
            Mistake("stripped the leading space from the token",
                    "Keep the token exactly as decoded: ' Turing' and 'Turing' are different tokens.",
                    lambda model, prompt: model.to_string(model(prompt)[0, -1].argmax()).strip()),
            Mistake("returned the token id, not the token string", "Decode the id with model.to_string(...).",
                    lambda model, prompt: int(model(prompt)[0, -1].argmax())),
        ),
    ),
    Exercise(
        name="top_tokens_by_unembed_bias",
        chapter=CHAPTER,
        section="Parameters",
        hint=("model.b_U has one entry per vocabulary token; .topk(k) gives the largest k in order, and each "
              "index decodes with model.to_string."),
        cases=_bias_cases,
        compare=same_value,
        properties=_bias_properties,
        mistakes=(
            Mistake("returned the tokens with the smallest bias", "Use topk (largest first), not the bottom of the ranking.",
                    lambda model, k: [model.to_string(t) for t in model.b_U.topk(k, largest=False).indices]),
            Mistake("returned token ids, not token strings", "Decode each id with model.to_string(...).",
                    lambda model, k: [int(t) for t in model.b_U.topk(k).indices]),
            Mistake("ranked tokens by the absolute value of the bias",
                    "A large negative bias suppresses a token; rank by the signed value.",
                    lambda model, k: [model.to_string(t) for t in model.b_U.abs().topk(k).indices]),
            Mistake("returned the top tokens smallest-first", "Order the list from the largest bias down.",
                    lambda model, k: [model.to_string(t) for t in model.b_U.topk(k).indices.flip(0)]),
        ),
    ),
    Exercise(
        name="logit_diff",
        chapter=CHAPTER,
        section="The task, and the logit difference",
        hint=("logits[0, -1] is the final position of the first prompt; index it with each token id and "
              "subtract (correct minus wrong)."),
        cases=_logit_diff_cases,
        compare=scalar_shape(close_tensor(atol=1e-4, rtol=1e-4)),
        properties=_logit_diff_properties,
        mistakes=(
            Mistake("subtracted the wrong way round (wrong − correct)",
                    "The logit difference is logit(correct) − logit(wrong).",
                    lambda logits, correct_token, wrong_token: logits[0, -1, wrong_token] - logits[0, -1, correct_token]),
            Mistake("used the first position instead of the final one", "The next-token prediction is at logits[0, -1].",
                    lambda logits, correct_token, wrong_token: logits[0, 0, correct_token] - logits[0, 0, wrong_token]),
            Mistake("used the last batch item instead of item 0", "Index batch item 0: logits[0, -1].",
                    lambda logits, correct_token, wrong_token: logits[-1, -1, correct_token] - logits[-1, -1, wrong_token]),
            Mistake("compared probabilities instead of logits", "Subtract the raw logits; a softmax squashes the difference.",
                    lambda logits, correct_token, wrong_token: logits[0, -1].softmax(-1)[correct_token]
                    - logits[0, -1].softmax(-1)[wrong_token]),
            Mistake("returned a 1-element tensor instead of a 0-dim one",
                    "Index with plain integers (logits[0, -1, token]) so the result is a single number.",
                    lambda logits, correct_token, wrong_token: logits[0, -1, [correct_token]] - logits[0, -1, [wrong_token]]),
        ),
    ),
]
