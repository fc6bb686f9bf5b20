"""The declaration kit: what every chapter's declarations share.

A declaration block (graders/chNN_*.py) draws its cases, states its public properties and
picks its comparison from here, so the same job is written once:

* prompt pairs per model: `SHORT_PAIR`, `pairs_for` (one short pair on the model where a
  learner's loop is slow), `equal_length_pairs`, `fresh_pair`, `pair_args`;
* the answer's form: `Form` (`NUMBER`, `SCALAR`, `tensor_of(shape)`), which a property
  checks before it compares anything;
* the common properties: `has_form`, `equals`, `sign_flip`, with the calls they need
  (`identical_run`, `swapped_answers`);
* the common comparisons: `COPIED`, `COMPUTED`, `FORWARD` (close_tensor's tolerances by
  how the answer is made) and `final_logit_diff` (the number every patch is measured by).

Nothing here is answer code: every number a property compares with is computed from the
model when the property is built, before any learner code runs, the way the chapter text
says it can be checked. References and known mistakes live in solutions/.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from circuitlab.prompts import CORRUPTIONS, PatchingCase, random_case, short_case
from circuitlab_graders.compare import close_tensor
from circuitlab_graders.declare import MODEL, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close, number, scalar, shaped

# ------------------------------------------------------------------ prompt pairs per model

# 4 tokens with BOS on every course model: a public property's sweep stays quick on gpt2-small.
SHORT_PAIR = PatchingCase("short surname pair", "Alex Hart Alex", "Alex Carroll Alex", " Hart", " Carroll")

# The model on which a learner's own loop (one forward pass per cell) is what a check's
# time is made of: its cases use short prompts.
SLOW_MODEL = "gpt2-small"


def pair_args(pair: PatchingCase) -> dict[str, Any]:
    """The arguments of a patching exercise called on `pair`."""
    return {"model": MODEL, **pair.as_args()}


def equal_length_pairs(gm: GradingModel, rng: random.Random, n_random: int) -> list[PatchingCase]:
    """The tutorial's surname corruption plus `n_random` seeded fresh pairs whose prompts
    tokenize to equal lengths on this model."""
    pairs = [CORRUPTIONS["surname"]]
    while len(pairs) < 1 + n_random:
        pair = random_case(rng)
        if gm.model.to_tokens(pair.clean_prompt).shape == gm.model.to_tokens(pair.corrupt_prompt).shape:
            pairs.append(pair)
    return pairs


def pairs_for(gm: GradingModel, rng: random.Random, others: Callable[[], list[PatchingCase]]) -> list[PatchingCase]:
    """One short fresh pair on the slow model (a sweep there is 12 layers of a learner's
    forward passes), `others()` on every other model."""
    if gm.key == SLOW_MODEL:
        return [short_case(gm.model, rng)]
    return others()


def fresh_pair(gm: GradingModel, rng: random.Random) -> PatchingCase:
    """One seeded fresh pair: a short one on the slow model, any template elsewhere."""
    return short_case(gm.model, rng) if gm.key == SLOW_MODEL else random_case(rng)


def identical_run(args: Mapping[str, Any]) -> dict[str, Any]:
    """`args` with the corrupt prompt replaced by the clean one: patching changes nothing."""
    return {**args, "corrupt_prompt": args["clean_prompt"]}


def swapped_answers(args: Mapping[str, Any], good: str = "clean_answer", bad: str = "corrupt_answer") -> dict[str, Any]:
    """`args` with the two answers exchanged: every logit difference changes sign."""
    return {**args, good: args[bad], bad: args[good]}


# ------------------------------------------------------------------ the answer's form

@dataclass(frozen=True)
class Form:
    """What shape of answer a property expects: `problem(answer)` is None when the answer
    has it, else what is wrong; `value(answer)` is then the answer as a tensor."""

    problem: Callable[[Any], Optional[str]]
    value: Callable[[Any], Tensor]

    def first_problem(self, answers: list) -> Optional[str]:
        return next((p for p in map(self.problem, answers) if p is not None), None)


NUMBER = Form(number, lambda x: torch.tensor(float(x)))  # a float, int or one-element tensor
SCALAR = Form(scalar, lambda x: x)  # a 0-dim floating-point tensor


def tensor_of(shape: tuple) -> Form:
    """A floating-point tensor of `shape` with finite entries."""
    return Form(lambda x: shaped(x, shape), lambda x: x)


# ------------------------------------------------------------------ the common properties

def has_form(label: str, call: Mapping[str, Any], form: Form) -> Property:
    """The answer to `call` has `form` (a shape, one number)."""
    return Property(label, (call,), form.first_problem)


def equals(label: str, calls: tuple, form: Form, expected: Tensor, what: str, *, atol: float = 1e-4) -> Property:
    """The answer to one call (or the answers to several, stacked) equals `expected`,
    computed from the model when the property is built."""

    def holds(answers: list) -> Optional[str]:
        if (problem := form.first_problem(answers)) is not None:
            return problem
        got = form.value(answers[0]) if len(answers) == 1 else torch.stack([form.value(a) for a in answers])
        return close(got, expected, what, atol=atol)

    return Property(label, tuple(calls), holds)


def sign_flip(call: Mapping[str, Any], swapped: Mapping[str, Any], form: Form, what: str, *,
              label: str = "swapping the answers flips the sign", atol: float = 1e-4) -> Property:
    """Exchanging the two answers (or tokens) negates the result: a logit difference."""

    def holds(answers: list) -> Optional[str]:
        if (problem := form.first_problem(answers)) is not None:
            return problem
        return close(form.value(answers[1]), -form.value(answers[0]), what, atol=atol)

    return Property(label, (call, swapped), holds)


# ------------------------------------------------------------------ the common comparisons

COPIED = close_tensor(atol=1e-5, rtol=0)  # values copied from a cache, not computed
COMPUTED = close_tensor(atol=1e-5, rtol=1e-4)  # a few float operations on the same inputs
FORWARD = close_tensor(atol=1e-3, rtol=1e-3)  # through forward passes: batching reorders float sums


def final_logit_diff(model, prompt, good: str, bad: str) -> float:
    """logit(good) − logit(bad) at the final position of an unpatched run of `prompt`."""
    return PatchingCase("", "", "", good, bad).logit_diff(model, prompt)
