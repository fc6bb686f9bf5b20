"""Chapter 5's known mistakes: attribution patching.

Every mistake is one function, `estimate`, with one knob turned, or a reference's
answer rearranged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from circuitlab.plotting import residual_labels
from circuitlab_graders.declare import Mistake
from circuitlab_solutions import ch05_attribution_patching as ref


def hook_names(model, kind: str) -> list[str]:
    if kind == "resid":
        return residual_labels(model.cfg.n_layers)
    return [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]


def _run_with_gradients(model, tokens: Tensor, names: list[str], good: int, bad: int, pos: int,
                        metric: str = "diff", detach_every: bool = False):
    """(logit difference at `pos`, activations, the gradients of `metric`) of one run.
    `metric`: "diff" (the logit difference at `pos`), "answer" (the clean answer's logit
    alone) or "every_position" (the logit difference summed over all positions).
    `detach_every`: every hook returns a detached leaf, which cuts the graph there."""
    saved: dict[str, Tensor] = {}

    def save(activations, hook, name):
        if detach_every or not activations.requires_grad:  # frozen weights: make it a leaf, as the references do
            activations = activations.detach().requires_grad_(True)
        saved[name] = activations
        return activations

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(n, lambda a, hook, n=n: save(a, hook, n)) for n in names])
        diff = logits[0, pos, good] - logits[0, pos, bad]
        target = {"diff": lambda: diff, "answer": lambda: logits[0, pos, good],
                  "every_position": lambda: (logits[0, :, good] - logits[0, :, bad]).sum()}[metric]()
        grads = torch.autograd.grad(target, [saved[n] for n in names])
    return diff.detach(), [saved[n].detach()[0] for n in names], [g[0] for g in grads]


def estimate(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str, *, kind: str,
    grad_on: str = "clean", direction: int = 1, pos: int = -1, add_baseline: bool = True,
    sum_features: bool = True, demo_direction: bool = False, metric: str = "diff", change: str = "difference",
    final_position_only: bool = False, detach_every: bool = False,
) -> Tensor:
    """An attribution estimate in the layout of `kind` ("resid", "heads", "head_by_position").

    The right answer is the default. The knobs: `grad_on="corrupt"` differentiates the
    corrupt run; `direction=-1` multiplies (clean − corrupt); `pos` reads the metric
    elsewhere; `add_baseline=False` returns the change only; `sum_features=False` keeps
    the d_model / d_head axis; `demo_direction` estimates patching the clean run into
    the corrupt one (corrupt logit difference + (clean − corrupt) · corrupt gradient);
    `metric` differentiates another metric (see `_run_with_gradients`); `change="corrupt"`
    multiplies the corrupt activation itself, not its difference from the clean one;
    `final_position_only` ("heads") sums the final position only, not every position;
    `detach_every` makes every hooked activation a detached leaf, so a hook's gradient
    misses every path through the later hooks (for "resid" none is left: autograd raises).
    """
    names = hook_names(model, kind)
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    clean, corrupt = model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt)
    if demo_direction:
        clean, corrupt = corrupt, clean
    diff, clean_acts, clean_grads = _run_with_gradients(model, clean, names, good, bad, pos, metric, detach_every)
    _, corrupt_acts, corrupt_grads = _run_with_gradients(model, corrupt, names, good, bad, pos, metric, detach_every)
    grads = clean_grads if grad_on == "clean" else corrupt_grads
    products = [direction * (c if change == "corrupt" else c - a) * g
                for a, c, g in zip(clean_acts, corrupt_acts, grads)]
    if kind == "resid":  # [pos, d_model] per row
        rows = [p.sum(-1) if sum_features else p for p in products]
        out = torch.stack(rows)
    elif kind == "heads":  # [pos, head, d_head] per layer
        products = [p[-1:] if final_position_only else p for p in products]
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
        Mistake("multiplied the gradient by the corrupt activation itself, not by (a_corrupt − a_clean)",
                "The estimate is about the change a patch makes: use (a_corrupt − a_clean) · gradient.",
                _knob(kind, change="corrupt")),
        Mistake("took the gradient of the clean answer's logit alone",
                "Differentiate the metric itself: logits[0, -1, clean] − logits[0, -1, corrupt].",
                _knob(kind, metric="answer")),
        Mistake("took the gradient of the logit difference summed over every position",
                "The metric is read at the final position only: differentiate logits[0, -1, clean] − "
                "logits[0, -1, corrupt].", _knob(kind, metric="every_position")),
    )


# Every hook returning `activations.detach().requires_grad_()`: each hook starts a new graph.
# The heads' estimates lose every path through a later layer's heads (composition); the
# residual stream's earlier rows lose all of theirs, and autograd raises (graders.calls
# names that error: _EXCEPTION_ADVICE).
_DETACHED_EVERY_HOOK = (
    "detached every hooked activation (`.detach().requires_grad_()` in each hook), so no gradient flows back "
    "through a later hook",
    "Keep the activation each hook sees and return it unchanged: the bridge's weights require grad, so it is already "
    "in the graph, and the gradient at an early head must include its paths through the later layers' heads.")


MISTAKES = {
    "attribution_patching_resid": _common_mistakes("resid", "d_model") + (
        Mistake("used hook_resid_pre for every row",
                "Row 0 is blocks.0.hook_resid_pre; row i + 1 is blocks.i.hook_resid_post.", _resid_pre_rows),
        Mistake("returned the result as [position, layer]",
                "Rows are the n_layers + 1 hook points, columns are positions.",
                _reshaped("attribution_patching_resid", lambda r, m: r.T)),
    ),
    "attribution_patching_heads": _common_mistakes("heads", "d_head") + (
        Mistake("summed the final position only, not every position",
                "A head's patch changes z at every position: sum (a_corrupt − a_clean) · gradient over positions and "
                "d_head.", _knob("heads", final_position_only=True)),
        Mistake("returned the result as [head, layer]", "Rows are layers, columns are heads: [n_layers, n_heads].",
                _reshaped("attribution_patching_heads", lambda r, m: r.T)),
        Mistake(*_DETACHED_EVERY_HOOK, _knob("heads", detach_every=True)),
    ),
    "attribution_patching_head_by_position": _common_mistakes("head_by_position", "d_head") + (
        Mistake("ordered the rows head * n_layers + layer",
                "Row layer * n_heads + head: all heads of layer 0 first, then layer 1, ...",
                _reshaped("attribution_patching_head_by_position", lambda r, m: r.reshape(
                    m.cfg.n_layers, m.cfg.n_heads, -1).transpose(0, 1).reshape(r.shape))),
        Mistake("returned the result as [position, layer·head]",
                "Rows are layer·head (n_layers * n_heads of them), columns are positions.",
                _reshaped("attribution_patching_head_by_position", lambda r, m: r.T)),
        Mistake(*_DETACHED_EVERY_HOOK, _knob("head_by_position", detach_every=True)),
    ),
}
