"""Chapter 5's exercises: attribution patching.

The engine runs every call (reference, learner, known mistake) with autograd off, as
the chapter's notebook does, so each of them switches it on itself, inside the call
(`with torch.enable_grad():`); the guard undoes and names any gradient state a call
leaves behind (.grad on the weights, requires_grad, the global grad mode). Every known
mistake is computed by one function, `estimate`, with one knob turned.
"""

from __future__ import annotations

import random
from typing import Callable

import torch
from torch import Tensor

from circuitlab.plotting import residual_labels
from circuitlab.prompts import CORRUPTIONS, PatchingCase, random_case, short_case
from graders.kit import SHORT_PAIR
from graders.compare import close_tensor
from graders.declare import MODEL, Case, Exercise, Mistake, Property, answer_module
from graders.models import GradingModel
from graders.properties import close, shaped

ref = answer_module("solutions.ch05_attribution_patching")  # the references, for mistakes built from them

CHAPTER = "05_attribution_patching"


def attribution_pairs(gm: GradingModel, rng: random.Random) -> list[PatchingCase]:
    """gelu-2l: the tutorial's surname corruption and two fresh pairs of equal length;
    gpt2-small: one short pair (a check's repeat time is mostly gpt2-small's forward and
    backward passes)."""
    if gm.key == "gpt2-small":
        return [short_case(gm.model, rng)]
    pairs = [CORRUPTIONS["surname"]]
    while len(pairs) < 3:
        case = random_case(rng)
        if gm.model.to_tokens(case.clean_prompt).shape == gm.model.to_tokens(case.corrupt_prompt).shape:
            pairs.append(case)
    return pairs


def _cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [
        Case(f"{pair.label}: {pair.clean_prompt!r}", {"model": MODEL, **pair.as_args()})
        for pair in attribution_pairs(gm, rng)
    ]


# --- every known mistake: the estimate with one knob turned ---------------------------

def hook_names(model, kind: str) -> list[str]:
    if kind == "resid":
        return residual_labels(model.cfg.n_layers)
    return [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]


def _run_with_gradients(model, tokens: Tensor, names: list[str], good: int, bad: int, pos: int):
    """(logit difference at `pos`, activations, their gradients) of one run."""
    saved: dict[str, Tensor] = {}

    def save(activations, hook, name):
        if not activations.requires_grad:  # frozen weights: make it a leaf, as the references do
            activations = activations.detach().requires_grad_(True)
        saved[name] = activations
        return activations

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(n, lambda a, hook, n=n: save(a, hook, n)) for n in names])
        diff = logits[0, pos, good] - logits[0, pos, bad]
        grads = torch.autograd.grad(diff, [saved[n] for n in names])
    return diff.detach(), [saved[n].detach()[0] for n in names], [g[0] for g in grads]


def estimate(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str, *, kind: str,
    grad_on: str = "clean", direction: int = 1, pos: int = -1, add_baseline: bool = True,
    sum_features: bool = True, demo_direction: bool = False,
) -> Tensor:
    """An attribution estimate in the layout of `kind` ("resid", "heads", "head_by_position").

    The right answer is the default. The knobs: `grad_on="corrupt"` differentiates the
    corrupt run; `direction=-1` multiplies (clean − corrupt); `pos` reads the metric
    elsewhere; `add_baseline=False` returns the change only; `sum_features=False` keeps
    the d_model / d_head axis; `demo_direction` estimates patching the clean run into
    the corrupt one (corrupt logit difference + (clean − corrupt) · corrupt gradient).
    """
    names = hook_names(model, kind)
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    clean, corrupt = model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt)
    if demo_direction:
        clean, corrupt = corrupt, clean
    diff, clean_acts, clean_grads = _run_with_gradients(model, clean, names, good, bad, pos)
    _, corrupt_acts, corrupt_grads = _run_with_gradients(model, corrupt, names, good, bad, pos)
    grads = clean_grads if grad_on == "clean" else corrupt_grads
    products = [direction * (c - a) * g for a, c, g in zip(clean_acts, corrupt_acts, grads)]
    if kind == "resid":  # [pos, d_model] per row
        rows = [p.sum(-1) if sum_features else p for p in products]
        out = torch.stack(rows)
    elif kind == "heads":  # [pos, head, d_head] per layer
        rows = [p.sum(0).sum(-1) if sum_features else p.sum(0) for p in products]
        out = torch.stack(rows)
    else:
        rows = [(p.sum(-1) if sum_features else p).transpose(0, 1) for p in products]
        out = torch.cat(rows)
    return out + diff if add_baseline else out


def _knob(kind: str, **knobs) -> Callable:
    def wrong(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        return estimate(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, kind=kind, **knobs)

    return wrong


def _reshaped(reference: str, how: Callable[[Tensor, object], Tensor]) -> Callable:
    """The reference named `reference`, its answer rearranged by `how` (looked up at call
    time: declarations load without solutions/)."""

    def wrong(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        answer = getattr(ref, reference)(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
        return how(answer, model)

    return wrong


def _resid_pre_rows(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    # Row i + 1 from blocks.i.hook_resid_pre, which is row i of the right estimate.
    rows = ref.attribution_patching_resid(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    return rows[[0] + list(range(model.cfg.n_layers))]


def _common_mistakes(kind: str, axis: str) -> tuple[Mistake, ...]:
    """The mistakes every attribution exercise can make."""
    return (
        Mistake("multiplied the gradient by (clean − corrupt)",
                "The patch replaces the clean activation by the corrupt one: the change is (a_corrupt − a_clean).",
                _knob(kind, direction=-1)),
        Mistake("took the gradient on the corrupt run",
                "Differentiate the clean run's logit difference: the clean run is the one being patched.",
                _knob(kind, grad_on="corrupt")),
        Mistake("estimated patching the clean run into the corrupt run (the TransformerLens demo's direction)",
                "This course patches the corrupt run into the clean one: start from the clean logit difference and "
                "use the clean run's gradient with (a_corrupt − a_clean).",
                _knob(kind, demo_direction=True)),
        Mistake("read the logit difference at the second-to-last position",
                "The answer is predicted at the final position: logits[0, -1].", _knob(kind, pos=-2)),
        Mistake(f"did not sum over {axis}",
                f"The first-order change is a dot product: sum (a_corrupt − a_clean) * gradient over {axis}.",
                _knob(kind, sum_features=False)),
        Mistake("returned only the estimated change",
                "Add the clean logit difference: each entry is the estimated patched logit difference.",
                _knob(kind, add_baseline=False)),
    )


# --- public properties -------------------------------------------------------------------

def _attribution_properties(shape_of: Callable[[int, int, int], tuple], extra=None):
    """What any attribution estimate must satisfy, checked without a reference answer;
    `extra(gm, pair, baseline, shape)` adds an exercise's own properties."""

    def properties(gm: GradingModel) -> list[Property]:
        model = gm.model
        pair = SHORT_PAIR  # 4 tokens with BOS: quick on any model
        shape = shape_of(model.cfg.n_layers, model.cfg.n_heads, model.to_tokens(pair.clean_prompt).shape[1])
        baseline = pair.logit_diff(model, pair.clean_prompt)
        args = {"model": MODEL, **pair.as_args()}
        same = {**args, "corrupt_prompt": pair.clean_prompt}
        swapped = {**args, "clean_answer": pair.corrupt_answer, "corrupt_answer": pair.clean_answer}
        props = [
            Property(f"shape {list(shape)}, finite floats", (args,), lambda a: shaped(a[0], shape)),
            Property("an identical corrupt run estimates no change", (same,), lambda a: shaped(a[0], shape) or close(
                a[0], torch.full(shape, baseline),
                "with corrupt_prompt = clean_prompt every entry must be the clean logit diff", atol=1e-3)),
            Property("swapping the two answers flips the sign", (args, swapped), lambda a: shaped(a[0], shape)
                     or shaped(a[1], shape) or close(a[1], -a[0], "estimate with answers swapped", atol=1e-3)),
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
    args = ({"model": MODEL, **pair.as_args()},)
    # Where the tokens agree the embeddings do too, so row 0 changes only where they differ;
    # after the last block only the final position reaches the logits.
    return [
        Property("row 0 changes only where the prompts' tokens differ", args, lambda a: shaped(a[0], shape) or close(
            a[0][0].cpu()[same_token], torch.full((int(same_token.sum()),), baseline),
            "row 0 at positions where clean and corrupt tokens agree", atol=1e-3)),
        Property("last row: positions before the final one estimate no change", args, lambda a: shaped(
            a[0], shape) or close(a[0][-1, :-1], torch.full((n_pos - 1,), baseline), "entries [-1, :-1]", atol=1e-3)),
    ]


def _head_by_position_extra(gm: GradingModel, pair: PatchingCase, baseline: float, shape: tuple) -> list[Property]:
    first = int(_changed(gm, pair).nonzero()[0])
    args = ({"model": MODEL, **pair.as_args()},)
    # Attention is causal: before the first changed token, z is the same in both runs.
    return [Property(f"no change before the first differing token (position {first})", args, lambda a: shaped(
        a[0], shape) or close(a[0][:, :first], torch.full((shape[0], first), baseline), f"columns 0 to {first - 1}",
                              atol=1e-3))]


COMPARE = close_tensor(atol=1e-3, rtol=1e-3)

EXERCISES = [
    Exercise(
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
        compare=COMPARE,
        properties=_attribution_properties(lambda n_layers, n_heads, n_pos: (n_layers + 1, n_pos), _resid_extra),
        mistakes_inline=_common_mistakes("resid", "d_model") + (
            Mistake("used hook_resid_pre for every row",
                    "Row 0 is blocks.0.hook_resid_pre; row i + 1 is blocks.i.hook_resid_post.", _resid_pre_rows),
            Mistake("returned the result as [position, layer]",
                    "Rows are the n_layers + 1 hook points, columns are positions.",
                    _reshaped("attribution_patching_resid", lambda r, m: r.T)),
        ),
    ),
    Exercise(
        name="attribution_patching_heads",
        hint=(
            "As for the residual stream, with the hooks on blocks.{layer}.attn.hook_z ([batch, pos, head, d_head]): "
            "((corrupt − clean) * grad)[0] summed over positions (axis 0) and d_head (the last axis) gives one "
            "number per head; stack the layers into [n_layers, n_heads] and add the clean logit difference."
        ),
        chapter=CHAPTER,
        section="The estimate for every head",
        cases=_cases,
        compare=COMPARE,
        properties=_attribution_properties(lambda n_layers, n_heads, n_pos: (n_layers, n_heads)),
        mistakes_inline=_common_mistakes("heads", "d_head") + (
            Mistake("returned the result as [head, layer]", "Rows are layers, columns are heads: [n_layers, n_heads].",
                    _reshaped("attribution_patching_heads", lambda r, m: r.T)),
        ),
    ),
    Exercise(
        name="attribution_patching_head_by_position",
        hint=(
            "Like the per-head estimate without the sum over positions: ((corrupt − clean) * grad)[0].sum(-1) is "
            "[pos, head] for one layer; transpose it to [head, pos] and concatenate the layers, so that row "
            "layer * n_heads + head holds that head."
        ),
        chapter=CHAPTER,
        section="The estimate for every head at every position",
        cases=_cases,
        compare=COMPARE,
        properties=_attribution_properties(lambda n_layers, n_heads, n_pos: (n_layers * n_heads, n_pos),
                                           _head_by_position_extra),
        mistakes_inline=_common_mistakes("head_by_position", "d_head") + (
            Mistake("ordered the rows head * n_layers + layer",
                    "Row layer * n_heads + head: all heads of layer 0 first, then layer 1, ...",
                    _reshaped("attribution_patching_head_by_position", lambda r, m: r.reshape(
                        m.cfg.n_layers, m.cfg.n_heads, -1).transpose(0, 1).reshape(r.shape))),
            Mistake("returned the result as [position, layer·head]",
                    "Rows are layer·head (n_layers * n_heads of them), columns are positions.",
                    _reshaped("attribution_patching_head_by_position", lambda r, m: r.T)),
        ),
    ),
]
