"""Chapter 2's exercises: patching attention heads."""

from __future__ import annotations

import math
import random
from typing import Callable

import torch

from circuitlab.prompts import CORRUPTIONS, PatchingCase, short_case
from graders.ch01_residual_patching import SHORT_PAIR
from graders.compare import close_tensor
from graders.declare import MODEL, Cache, Case, Exercise, Hook, Loop, Mistake, Property, answer_module
from graders.models import GradingModel
from graders.properties import close, shaped

CHAPTER = "02_head_patching"
fast = answer_module("circuitlab.sweeps.one_pair")  # the graders' exact sweeps (answer code)


def sweep_pairs(gm: GradingModel, rng: random.Random) -> list[PatchingCase]:
    """gelu-2l: the tutorial's surname corruption and a short pair; gpt2-small (144
    heads): one short pair, so a head × position sweep stays a few forward passes."""
    if gm.key == "gpt2-small":
        return [short_case(gm.model, rng)]
    return [CORRUPTIONS["surname"], short_case(gm.model, rng)]


def _sweep_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(f"{pair.label}: {pair.clean_prompt!r}", {"model": MODEL, **pair.as_args()})
            for pair in sweep_pairs(gm, rng)]


def _patch_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    """hook_z at every position and at one position, and a hook_result-shaped case
    ([batch, pos, head, d_model], built as z @ W_O) that works on any bridge."""
    model = gm.model
    n_heads = model.cfg.n_heads
    out = []
    for i, pair in enumerate([CORRUPTIONS["surname"], short_case(model, rng), CORRUPTIONS["first_name"]]):
        with torch.no_grad():
            _, clean = model.run_with_cache(pair.clean_prompt)
            _, corrupt = model.run_with_cache(pair.corrupt_prompt)
        layer, head = rng.randrange(model.cfg.n_layers), rng.randrange(n_heads)
        n_pos = clean["blocks.0.attn.hook_z"].shape[1]
        # pos < n_heads too, so the "swapped axes" mistake indexes in range and can be named.
        pos = None if i == 0 else rng.randint(1, min(n_pos, n_heads) - 1)
        z_name = f"blocks.{layer}.attn.hook_z"
        if i < 2:
            name, hook, activations, source = z_name, Hook(z_name), clean[z_name].clone(), Cache(pair.corrupt_prompt)
        else:
            name = f"blocks.{layer}.attn.hook_result"
            w_o = model.W_O[layer].detach()
            hook, activations = Hook(name, detached=True), torch.einsum("bphd,hdm->bphm", clean[z_name], w_o)
            source = {name: torch.einsum("bphd,hdm->bphm", corrupt[z_name], w_o)}
        out.append(Case(f"{pair.label}, {name}, head {head}, pos {pos}", {
            "activations": activations, "hook": hook, "head": head, "corrupt_cache": source, "pos": pos}))
    return out


def _patch_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    n_heads = model.cfg.n_heads
    name = "blocks.0.attn.hook_z"
    generator = torch.Generator().manual_seed(2)
    shape = (2, 6, n_heads, model.cfg.d_head)
    clean, corrupt = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    head = n_heads - 1
    props = []
    for pos in (None, 3):
        expected = clean.clone()
        at = slice(None) if pos is None else pos
        expected[:, at, head] = corrupt[:, at, head]
        call = ({"activations": clean, "hook": Hook(name), "head": head, "corrupt_cache": {name: corrupt}, "pos": pos},)
        where = "every position" if pos is None else f"position {pos}"
        props.append(Property(f"pos={pos}: exactly head {head} at {where} patched", call,
                              lambda a, e=expected: shaped(a[0], shape) or close(a[0], e, "the patched slice")))
    return props


# gpt2-small's head x position sweep (576 cells on the short pair) checks the sign flip on
# gelu-2l only: a learner's third sweep there would take the public check past 10 s.
MAX_CELLS_FOR_A_THIRD_SWEEP = 500


def _sweep_properties(shape_of: Callable[[int, int, int], tuple]) -> Callable[[GradingModel], list[Property]]:
    """What any head sweep must satisfy, checked without a reference answer."""

    def properties(gm: GradingModel) -> list[Property]:
        model = gm.model
        case = SHORT_PAIR  # 4 tokens with BOS: quick on any model
        args = {"model": MODEL, **case.as_args()}
        shape = shape_of(model.cfg.n_layers, model.cfg.n_heads, model.to_tokens(case.clean_prompt).shape[1])
        baseline = torch.full(shape, case.logit_diff(model, case.clean_prompt))
        same = {**args, "corrupt_prompt": case.clean_prompt}
        swapped = {**args, "clean_answer": case.corrupt_answer, "corrupt_answer": case.clean_answer}
        properties = [
            Property(f"shape {list(shape)}, finite floats", (args,), lambda a: shaped(a[0], shape)),
            Property("patching from an identical run changes nothing", (same,), lambda a: shaped(a[0], shape) or close(
                a[0], baseline, "with corrupt_prompt = clean_prompt every entry must be the clean logit diff",
                atol=1e-3)),
        ]
        if math.prod(shape) <= MAX_CELLS_FOR_A_THIRD_SWEEP:
            properties.append(Property(
                "swapping the two answers flips the sign", (args, swapped), lambda a: shaped(a[0], shape)
                or shaped(a[1], shape) or close(a[1], -a[0], "sweep with answers swapped", atol=1e-3)))
        return properties

    return properties


def _positions(pos):
    return slice(None) if pos is None else pos


def _all_heads(activations, hook, head, corrupt_cache, pos=None):
    at = _positions(pos)
    activations[:, at] = corrupt_cache[hook.name][:, at]
    return activations


def _next_head(activations, hook, head, corrupt_cache, pos=None):
    at, wrong = _positions(pos), (head + 1) % activations.shape[2]
    activations[:, at, wrong] = corrupt_cache[hook.name][:, at, wrong]
    return activations


def _swapped_axes(activations, hook, head, corrupt_cache, pos=None):
    at = _positions(pos)
    activations[:, head, at] = corrupt_cache[hook.name][:, head, at]
    return activations


def _ignored_pos(activations, hook, head, corrupt_cache, pos=None):
    activations[:, :, head] = corrupt_cache[hook.name][:, :, head]
    return activations


def _unchanged(activations, hook, head, corrupt_cache, pos=None):
    return activations


# --- sweeps -------------------------------------------------------------------------

# The exact fast sweeps serve as the graders' reference (the readable batched ones in
# solutions/ are what learners see); mistakes derived from the reference reuse them.
def head_sweep(**args) -> torch.Tensor:
    return fast.head_patching_sweep(**args)


def head_pos_sweep(**args) -> torch.Tensor:
    return fast.head_by_position_sweep(**args)


def sweep_variant(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, copies: str, swap_runs: bool = False,
) -> torch.Tensor:
    """A head sweep with one knob turned, batched like the reference: returns
    [n_layers, n_copies], copy c patched where mask[c] says.

    copies: "head" (copy h: head h, every position), "head_final" (copy h: head h,
    final position only), "layer" (one copy: every head, every position), "position"
    (copy p: every head at position p).
    """
    source, target = (clean_prompt, corrupt_prompt) if swap_runs else (corrupt_prompt, clean_prompt)
    tokens = model.to_tokens(target)
    n_heads, n_pos, device = model.cfg.n_heads, tokens.shape[1], tokens.device
    eye_heads = torch.eye(n_heads, dtype=torch.bool, device=device)
    if copies == "head":
        mask = eye_heads[:, None, :, None].expand(n_heads, n_pos, n_heads, 1)
    elif copies == "head_final":
        mask = eye_heads[:, None, :, None] & (torch.arange(n_pos, device=device) == n_pos - 1)[None, :, None, None]
    elif copies == "layer":
        mask = torch.ones(1, n_pos, n_heads, 1, dtype=torch.bool, device=device)
    elif copies == "position":
        mask = torch.eye(n_pos, dtype=torch.bool, device=device)[:, :, None, None].expand(n_pos, n_pos, n_heads, 1)
    else:
        raise ValueError(copies)
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    _, cache = model.run_with_cache(source)
    out = torch.zeros(model.cfg.n_layers, mask.shape[0], device=device)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        hook = lambda activations, hook, name=name: torch.where(mask, cache[name], activations)  # noqa: E731
        logits = model.run_with_hooks(tokens.expand(mask.shape[0], -1), fwd_hooks=[(name, hook)])[:, -1]
        out[layer] = logits[:, good] - logits[:, bad]
    return out


def _variant(**knobs) -> Callable:
    return lambda **args: sweep_variant(**args, **knobs)


def _minus_clean(**args) -> torch.Tensor:
    case = PatchingCase("", *(args[k] for k in ("clean_prompt", "corrupt_prompt", "clean_answer", "corrupt_answer")))
    return head_sweep(**args) - case.logit_diff(args["model"], case.clean_prompt)


def _by_position(fn: Callable[[torch.Tensor, int, int, int], torch.Tensor]) -> Callable:
    """A by-position mistake computed from the shared reference reshaped to [layer, head, pos]."""

    def wrong(**args):
        model = args["model"]
        full = head_pos_sweep(**args)
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        return fn(full.reshape(n_layers, n_heads, -1), n_layers, n_heads, full.shape[1])

    return wrong


def _spread_over_positions(**args) -> torch.Tensor:
    per_head = sweep_variant(**args, copies="head")  # [layer, head]
    n_pos = args["model"].to_tokens(args["clean_prompt"]).shape[1]
    return per_head[:, :, None].expand(-1, -1, n_pos).reshape(-1, n_pos)


def _spread_over_heads(**args) -> torch.Tensor:
    per_pos = sweep_variant(**args, copies="position")  # [layer, pos]
    n_heads = args["model"].cfg.n_heads
    return per_pos[:, None, :].expand(-1, n_heads, -1).reshape(-1, per_pos.shape[1])


EXERCISES = [
    Exercise(
        name="patch_head_output",
        chapter=CHAPTER,
        section="Patching one head",
        hint=("activations is [batch, position, head, ...]: overwrite activations[:, pos, head] (or "
              "activations[:, :, head] when pos is None) with the same slice of corrupt_cache[hook.name], then "
              "return activations."),
        cases=_patch_cases,
        compare=close_tensor(atol=1e-5, rtol=0),
        properties=_patch_properties,
        mistakes=(
            Mistake("patched every head", "Index the head axis (axis 2) with `head`: activations[:, pos, head].",
                    _all_heads),
            Mistake("patched head + 1 instead of head", "Heads count from 0: use `head` itself on axis 2.",
                    _next_head),
            Mistake(
                "swapped the position and head axes",
                "hook_z and hook_result are [batch, position, head, ...]: position is axis 1, head is axis 2.",
                _swapped_axes,
            ),
            Mistake("patched every position even though `pos` was given",
                    "Patch only activations[:, pos, head] when pos is not None.", _ignored_pos),
            Mistake("left the activations unchanged",
                    "Write corrupt_cache[hook.name]'s values into `activations` and return them.", _unchanged),
        ),
    ),
    Exercise(
        name="head_patching_sweep",
        chapter=CHAPTER,
        loop=Loop(lambda model, call: model.cfg.n_layers * model.cfg.n_heads + 1),  # a pass per head, one to cache
        section="The head sweep",
        hint=("Cache the corrupt run once; for each layer and head, run the clean prompt with a hook on "
              "blocks.{layer}.attn.hook_z that copies that head's slice (every position) from the corrupt cache, "
              "and store logit(clean_answer) - logit(corrupt_answer) at the final position in result[layer, head]."),
        reference="circuitlab.sweeps.one_pair:head_patching_sweep",
        cases=_sweep_cases,
        compare=close_tensor(atol=1e-3, rtol=1e-3),
        properties=_sweep_properties(lambda n_layers, n_heads, n_pos: (n_layers, n_heads)),
        mistakes=(
            Mistake("subtracted the wrong way round", "Each entry is logit(clean_answer) − logit(corrupt_answer).",
                    lambda **args: -head_sweep(**args)),
            Mistake("returned the result as [head, layer]", "Rows are layers, columns are heads: [n_layers, n_heads].",
                    lambda **args: head_sweep(**args).T),
            Mistake("patched the clean run into the corrupt run",
                    "Cache the corrupt prompt and run the clean prompt with one head patched from it.",
                    _variant(copies="head", swap_runs=True)),
            Mistake("patched the head at the final position only",
                    "In this sweep a head is patched at every position (pos=None).", _variant(copies="head_final")),
            Mistake("patched every head of the layer at once",
                    "Patch one head per run: activations[:, :, head].",
                    lambda **args: _variant(copies="layer")(**args).expand(-1, args["model"].cfg.n_heads)),
            Mistake("subtracted the clean run's logit difference",
                    "Return the patched logit difference itself; the plot subtracts the baseline separately.",
                    _minus_clean),
        ),
    ),
    Exercise(
        name="head_by_position_sweep",
        chapter=CHAPTER,
        # A pass per (head, position), one to cache.
        loop=Loop(lambda model, call: model.cfg.n_layers * model.cfg.n_heads
                  * model.to_tokens(call["clean_prompt"]).shape[1] + 1),
        section="Heads by position",
        hint=("Like the head sweep with one more loop: for each layer, head and position, patch "
              "activations[:, pos, head] only, and store the logit difference in result[layer * n_heads + head, pos]."),
        reference="circuitlab.sweeps.one_pair:head_by_position_sweep",
        cases=_sweep_cases,
        compare=close_tensor(atol=1e-3, rtol=1e-3),
        properties=_sweep_properties(lambda n_layers, n_heads, n_pos: (n_layers * n_heads, n_pos)),
        mistakes=(
            Mistake("ordered the rows head * n_layers + layer",
                    "Row layer * n_heads + head: all heads of layer 0 first, then layer 1, ...",
                    _by_position(lambda r, L, H, P: r.transpose(0, 1).reshape(L * H, P))),
            Mistake("returned the result as [position, layer·head]",
                    "Rows are layer·head (n_layers * n_heads of them), columns are positions.",
                    _by_position(lambda r, L, H, P: r.reshape(L * H, P).T)),
            Mistake("returned [n_layers, n_heads, n_pos] without flattening layer and head",
                    "Reshape to [n_layers * n_heads, n_pos] (row = layer * n_heads + head).",
                    _by_position(lambda r, L, H, P: r)),
            Mistake("patched head + 1 instead of head",
                    "Heads count from 0: use `head` itself on axis 2 of hook_z.",
                    _by_position(lambda r, L, H, P: r.roll(-1, dims=1).reshape(L * H, P))),
            Mistake("patched the head at every position instead of one",
                    "Pass pos to the hook: overwrite activations[:, pos, head] only.", _spread_over_positions),
            Mistake("patched every head at that position",
                    "Overwrite only one head: activations[:, pos, head].", _spread_over_heads),
            Mistake("subtracted the wrong way round", "Each entry is logit(clean_answer) − logit(corrupt_answer).",
                    lambda **args: -head_pos_sweep(**args)),
        ),
    ),
]
