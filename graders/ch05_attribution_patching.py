"""Chapter 5's exercises: attribution patching.

The engine runs every call (reference, learner, known mistake) with autograd off, as
the chapter's notebook does, so each of them switches it on itself, inside the call
(`with torch.enable_grad():`); the guard undoes and names any gradient state a call
leaves behind (.grad on the weights, requires_grad, the global grad mode).

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`; the three estimates share the first block's cases and properties.
References and known mistakes: solutions/ch05_attribution_patching.py and
solutions/mistakes/ch05_attribution_patching.py.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

import torch
from torch import Tensor

from circuitlab.prompts import PatchingCase
from circuitlab_graders import kit
from circuitlab_graders.declare import Case, Exercise, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close

CHAPTER = "05_attribution_patching"

# ---------------------------------------------------------------- attribution_patching_resid

def _cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    """gelu-2l: the tutorial's surname corruption and two fresh pairs of equal length;
    gpt2-small: one short pair (a check's repeat time is mostly gpt2-small's forward and
    backward passes)."""
    pairs = kit.pairs_for(gm, rng, lambda: kit.equal_length_pairs(gm, rng, n_random=2))
    return [Case(f"{pair.label}: {pair.clean_prompt!r}", kit.pair_args(pair)) for pair in pairs]


def _attribution_properties(shape_of: Callable[[int, int, int], tuple], extra=None):
    """What any attribution estimate must satisfy, checked without a reference answer;
    `extra(gm, pair, baseline, shape)` adds an exercise's own properties."""

    def properties(gm: GradingModel) -> list[Property]:
        model = gm.model
        pair = kit.SHORT_PAIR  # 4 tokens with BOS: quick on any model
        shape = shape_of(model.cfg.n_layers, model.cfg.n_heads, model.to_tokens(pair.clean_prompt).shape[1])
        baseline = pair.logit_diff(model, pair.clean_prompt)
        args = kit.pair_args(pair)
        form = kit.tensor_of(shape)
        props = [
            kit.has_form(f"shape {list(shape)}, finite floats", args, form),
            kit.equals("an identical corrupt run estimates no change", (kit.identical_run(args),), form,
                       torch.full(shape, baseline),
                       "with corrupt_prompt = clean_prompt every entry must be the clean logit diff", atol=1e-3),
            kit.sign_flip(args, kit.swapped_answers(args), form, "estimate with answers swapped",
                          label="swapping the two answers flips the sign", atol=1e-3),
        ]
        return props + (extra(gm, pair, baseline, shape) if extra else [])

    return properties


def _changed(gm: GradingModel, pair: PatchingCase) -> Tensor:
    """[n_pos] bool: where the pair's clean and corrupt tokens differ."""
    model = gm.model
    return (model.to_tokens(pair.clean_prompt)[0] != model.to_tokens(pair.corrupt_prompt)[0]).cpu()


def _resid_extra(gm: GradingModel, pair: PatchingCase, baseline: float, shape: tuple) -> list[Property]:
    same_token = ~_changed(gm, pair)
    n_pos = shape[1]
    args = (kit.pair_args(pair),)
    # Where the tokens agree the embeddings do too, so row 0 changes only where they differ;
    # after the last block only the final position reaches the logits.
    return [
        Property("row 0 changes only where the prompts' tokens differ", args, lambda a: kit.tensor_of(shape).problem(a[0]) or close(
            a[0][0].cpu()[same_token], torch.full((int(same_token.sum()),), baseline),
            "row 0 at positions where clean and corrupt tokens agree", atol=1e-3)),
        Property("last row: positions before the final one estimate no change", args, lambda a: kit.tensor_of(shape).problem(
            a[0]) or close(a[0][-1, :-1], torch.full((n_pos - 1,), baseline), "entries [-1, :-1]", atol=1e-3)),
    ]


ATTRIBUTION_PATCHING_RESID = Exercise(
    name="attribution_patching_resid",
    hint=(
        "Cache the corrupt run (no gradients). Inside `with torch.enable_grad():` run the clean prompt with "
        "forward hooks that save the n_layers + 1 residual activations, take the final-position logit "
        "difference and torch.autograd.grad it with respect to the saved activations. Each row is "
        "((corrupt − clean) * grad)[0].sum(-1), plus the clean logit difference."
    ),
    chapter=CHAPTER,
    section="The estimate for the residual stream",
    cases=_cases,
    compare=kit.FORWARD,
    properties=_attribution_properties(lambda n_layers, n_heads, n_pos: (n_layers + 1, n_pos), _resid_extra),
)


# ---------------------------------------------------------------- attribution_patching_heads

FD_EPS = 0.01  # the nudge of the finite difference: the references match it to 1e-4 on every grading model
_FIRST_ORDER: dict[tuple, float] = {}  # (model key, prompts, layer) -> its first-order change, once per session


def _first_order_change(gm: GradingModel, pair: PatchingCase, layer: int) -> float:
    """d(logit diff)/d(eps) at eps = 0 when every head of `layer` moves a fraction eps of the
    way from its clean z to its corrupt z: a central finite difference of the exact patch,
    which is what the estimates of that layer's heads add up to. Two passes: the corrupt
    run, then the clean prompt twice in one batch, nudged by +eps and -eps."""
    key = (gm.key, pair.clean_prompt, pair.corrupt_prompt, pair.clean_answer, pair.corrupt_answer, layer)
    if key not in _FIRST_ORDER:
        model = gm.model
        name = f"blocks.{layer}.attn.hook_z"
        good, bad = model.to_single_token(pair.clean_answer), model.to_single_token(pair.corrupt_answer)
        with torch.no_grad():
            _, corrupt = model.run_with_cache(pair.corrupt_prompt, names_filter=name)
            eps = torch.tensor([FD_EPS, -FD_EPS])[:, None, None, None]

            def nudge(act, hook):
                return act + eps.to(act.device, act.dtype) * (corrupt[name] - act)

            final = model.run_with_hooks(model.to_tokens([pair.clean_prompt] * 2), fwd_hooks=[(name, nudge)])[:, -1]
            diffs = final[:, good] - final[:, bad]
        _FIRST_ORDER[key] = ((diffs[0] - diffs[1]) / (2 * FD_EPS)).item()
    return _FIRST_ORDER[key]


def _layer_0_adds_up(gm: GradingModel, pair: PatchingCase, baseline: float, shape: tuple,
                     layer_0_change: Callable[[Tensor], Tensor]) -> Property:
    """Layer 0's estimates, summed (`layer_0_change` picks their changes from the answer),
    equal the first-order change of patching all of layer 0's heads. A gradient that misses
    the paths through later heads (every hook detached) breaks it on every grading model."""
    expected = _first_order_change(gm, pair, 0)

    def holds(answers: list) -> Optional[str]:
        if (problem := kit.tensor_of(shape).problem(answers[0])) is not None:
            return problem
        got = float(layer_0_change(answers[0].detach().cpu().double() - baseline).sum())
        if abs(got - expected) <= 2e-3 + 2e-2 * abs(expected):
            return None
        return (f"layer 0's estimated changes add up to {got:.4g}, but the first-order change of patching all of "
                f"layer 0's heads (a finite difference of the exact patch) is {expected:.4g}: the gradient at a "
                "layer-0 head must include its paths through the later layers' heads (a hook that returns "
                "`activations.detach().requires_grad_()` cuts them)")

    return Property("layer 0's estimates add up to the first-order change of patching all its heads",
                    (kit.pair_args(pair),), holds)


def _heads_extra(gm: GradingModel, pair: PatchingCase, baseline: float, shape: tuple) -> list[Property]:
    return [_layer_0_adds_up(gm, pair, baseline, shape, lambda change: change[0])]


ATTRIBUTION_PATCHING_HEADS = Exercise(
    name="attribution_patching_heads",
    hint=(
        "As for the residual stream, with the hooks on blocks.{layer}.attn.hook_z ([batch, pos, head, d_head]): "
        "((corrupt − clean) * grad)[0] summed over positions (axis 0) and d_head (the last axis) gives one "
        "number per head; stack the layers into [n_layers, n_heads] and add the clean logit difference."
    ),
    chapter=CHAPTER,
    section="The estimate for every head",
    cases=_cases,
    compare=kit.FORWARD,
    properties=_attribution_properties(lambda n_layers, n_heads, n_pos: (n_layers, n_heads), _heads_extra),
)


# ---------------------------------------------------------------- attribution_patching_head_by_position

def _head_by_position_extra(gm: GradingModel, pair: PatchingCase, baseline: float, shape: tuple) -> list[Property]:
    first = int(_changed(gm, pair).nonzero()[0])
    args = (kit.pair_args(pair),)
    # Attention is causal: before the first changed token, z is the same in both runs.
    n_heads = gm.model.cfg.n_heads
    return [Property(f"no change before the first differing token (position {first})", args, lambda a: kit.tensor_of(shape).problem(
        a[0]) or close(a[0][:, :first], torch.full((shape[0], first), baseline), f"columns 0 to {first - 1}",
                              atol=1e-3)),
            _layer_0_adds_up(gm, pair, baseline, shape, lambda change: change[:n_heads])]


ATTRIBUTION_PATCHING_HEAD_BY_POSITION = Exercise(
    name="attribution_patching_head_by_position",
    hint=(
        "Like the per-head estimate without the sum over positions: ((corrupt − clean) * grad)[0].sum(-1) is "
        "[pos, head] for one layer; transpose it to [head, pos] and concatenate the layers, so that row "
        "layer * n_heads + head holds that head."
    ),
    chapter=CHAPTER,
    section="The estimate for every head at every position",
    cases=_cases,
    compare=kit.FORWARD,
    properties=_attribution_properties(lambda n_layers, n_heads, n_pos: (n_layers * n_heads, n_pos),
                                       _head_by_position_extra),
)


EXERCISES = [ATTRIBUTION_PATCHING_RESID, ATTRIBUTION_PATCHING_HEADS, ATTRIBUTION_PATCHING_HEAD_BY_POSITION]
