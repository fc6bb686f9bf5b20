"""Checks for chapter 0: logits, the unembedding bias, the logit difference."""

from __future__ import annotations

import random

import torch

from circuitlab.prompts import CLEAN_PROMPT, random_case
from graders.compare import close_tensor, same_value
from graders.engine import Case, Exercise, Mistake
from graders.models import GradingModel
from solutions import ch00_setup as ref

CHAPTER = "00_setup"


def _prompts(rng: random.Random) -> list[str]:
    fresh = [random_case(rng).clean_prompt for _ in range(2)]
    # Cut one prompt short so the "final position" is not always the same index.
    words = fresh[1].split(" ")
    fresh[1] = " ".join(words[: rng.randint(3, len(words) - 1)])
    return ["Famous computer scientist Alan", CLEAN_PROMPT, *fresh]


def _prediction_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(repr(p), lambda p=p: {"model": gm.model, "prompt": p}) for p in _prompts(rng)]


def _bias_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(f"k={k}", lambda k=k: {"model": gm.model, "k": k}) for k in (5, rng.randint(2, 12))]


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
            cases.append(
                Case(
                    f"{name}, tokens {good} vs {bad}",
                    lambda s=source, g=good, b=bad: {"logits": s.clone(), "correct_token": g, "wrong_token": b},
                )
            )
    return cases


def _shape_0d(compare):
    def check(got, expected):
        if isinstance(got, torch.Tensor) and got.dim() != 0 and expected.dim() == 0:
            return f"returned shape {tuple(got.shape)}; a 0-dim tensor (one number) is expected"
        return compare(got, expected)

    return check


EXERCISES = [
    Exercise(
        name="next_token_prediction",
        hint=(
            "model(prompt) gives logits of shape [batch, position, vocab]; take the final position of batch "
            "item 0, its argmax, and decode it with model.to_string."
        ),
        chapter=CHAPTER,
        section="'Logits and the next word'",
        reference=ref.next_token_prediction,
        cases=_prediction_cases,
        compare=same_value,
        mistakes=(
            Mistake(
                "read the prediction at the first position",
                "The next-token prediction sits at the last position: logits[0, -1].",
                lambda model, prompt: model.to_string(model(prompt)[0, 0].argmax()),
            ),
            Mistake(
                "took the least likely token (argmin)",
                "The prediction is the token with the largest logit: use argmax.",
                lambda model, prompt: model.to_string(model(prompt)[0, -1].argmin()),
            ),
            Mistake(
                "stripped the leading space from the token",
                "Keep the token exactly as decoded: ' Turing' and 'Turing' are different tokens.",
                lambda model, prompt: model.to_string(model(prompt)[0, -1].argmax()).strip(),
            ),
            Mistake(
                "returned the token id, not the token string",
                "Decode the id with model.to_string(...).",
                lambda model, prompt: int(model(prompt)[0, -1].argmax()),
            ),
        ),
    ),
    Exercise(
        name="top_tokens_by_unembed_bias",
        hint=(
            "model.b_U has one entry per vocabulary token; .topk(k) gives the largest k in order, and each "
            "index decodes with model.to_string."
        ),
        chapter=CHAPTER,
        section="'Parameters'",
        reference=ref.top_tokens_by_unembed_bias,
        cases=_bias_cases,
        compare=same_value,
        mistakes=(
            Mistake(
                "returned the tokens with the smallest bias",
                "Use topk (largest first), not the bottom of the ranking.",
                lambda model, k: [model.to_string(t) for t in model.b_U.topk(k, largest=False).indices],
            ),
            Mistake(
                "returned token ids, not token strings",
                "Decode each id with model.to_string(...).",
                lambda model, k: [int(t) for t in model.b_U.topk(k).indices],
            ),
            Mistake(
                "ranked tokens by the absolute value of the bias",
                "A large negative bias suppresses a token; rank by the signed value.",
                lambda model, k: [model.to_string(t) for t in model.b_U.abs().topk(k).indices],
            ),
            Mistake(
                "returned the top tokens smallest-first",
                "Order the list from the largest bias down.",
                lambda model, k: [model.to_string(t) for t in model.b_U.topk(k).indices.flip(0)],
            ),
        ),
    ),
    Exercise(
        name="logit_diff",
        hint=(
            "logits[0, -1] is the final position of the first prompt; index it with each token id and "
            "subtract (correct minus wrong)."
        ),
        chapter=CHAPTER,
        section="'The logit difference'",
        reference=ref.logit_diff,
        cases=_logit_diff_cases,
        compare=_shape_0d(close_tensor(atol=1e-4, rtol=1e-4)),
        mistakes=(
            Mistake(
                "subtracted the wrong way round (wrong − correct)",
                "The logit difference is logit(correct) − logit(wrong).",
                lambda logits, correct_token, wrong_token: logits[0, -1, wrong_token] - logits[0, -1, correct_token],
            ),
            Mistake(
                "used the first position instead of the final one",
                "The next-token prediction is at logits[0, -1].",
                lambda logits, correct_token, wrong_token: logits[0, 0, correct_token] - logits[0, 0, wrong_token],
            ),
            Mistake(
                "used the last batch item instead of item 0",
                "Index batch item 0: logits[0, -1].",
                lambda logits, correct_token, wrong_token: logits[-1, -1, correct_token] - logits[-1, -1, wrong_token],
            ),
            Mistake(
                "compared probabilities instead of logits",
                "Subtract the raw logits; a softmax squashes the difference.",
                lambda logits, correct_token, wrong_token: logits[0, -1].softmax(-1)[correct_token]
                - logits[0, -1].softmax(-1)[wrong_token],
            ),
            Mistake(
                "returned a 1-element tensor instead of a 0-dim one",
                "Index with plain integers (logits[0, -1, token]) so the result is a single number.",
                lambda logits, correct_token, wrong_token: logits[0, -1, [correct_token]] - logits[0, -1, [wrong_token]],
            ),
        ),
    ),
]
