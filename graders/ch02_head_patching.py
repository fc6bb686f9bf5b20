"""Chapter 2's exercises: patching attention heads.

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`. References and known mistakes: solutions/ch02_head_patching.py and
solutions/mistakes/ch02_head_patching.py.
"""

from __future__ import annotations

import random
from typing import Callable

import torch

from circuitlab.prompts import CORRUPTIONS, short_case
from circuitlab_graders import kit
from circuitlab_graders.declare import Cache, Case, Exercise, Hook, Loop, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close, shaped

CHAPTER = "02_head_patching"


# ---------------------------------------------------------------- patch_head_output

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


PATCH_HEAD_OUTPUT = Exercise(
    name="patch_head_output",
    chapter=CHAPTER,
    section="Patching one head",
    hint=("activations is [batch, position, head, ...]: overwrite activations[:, pos, head] (or "
          "activations[:, :, head] when pos is None) with the same slice of corrupt_cache[hook.name], then "
          "return activations."),
    cases=_patch_cases,
    compare=kit.COPIED,
    properties=_patch_properties,
)


# ---------------------------------------------------------------- head_patching_sweep

def _sweep_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    """gelu-2l: the tutorial's surname corruption and a short pair; gpt2-small (144
    heads): one short pair, so a head × position sweep stays a few forward passes."""
    pairs = kit.pairs_for(gm, rng, lambda: [CORRUPTIONS["surname"], short_case(gm.model, rng)])
    return [Case(f"{pair.label}: {pair.clean_prompt!r}", kit.pair_args(pair)) for pair in pairs]


# On gpt2-small (kit.SLOW_MODEL) a learner's head sweep is the slowest call of a public check:
# there the form is read from the identical run's answer (the two properties share one call)
# and the sign flip is checked on gelu-2l only, so the public check stays within 10 s (a
# second and third sweep there took it to 11.3-11.8 s on a 2-core AMD EPYC).


def _sweep_properties(shape_of: Callable[[int, int, int], tuple]) -> Callable[[GradingModel], list[Property]]:
    """What any head sweep must satisfy, checked without a reference answer."""

    def properties(gm: GradingModel) -> list[Property]:
        model = gm.model
        pair = kit.SHORT_PAIR  # 4 tokens with BOS: quick on any model
        args = kit.pair_args(pair)
        shape = shape_of(model.cfg.n_layers, model.cfg.n_heads, model.to_tokens(pair.clean_prompt).shape[1])
        form = kit.tensor_of(shape)
        baseline = torch.full(shape, pair.logit_diff(model, pair.clean_prompt))
        fast_model = gm.key != kit.SLOW_MODEL
        properties = [
            kit.has_form(f"shape {list(shape)}, finite floats", args if fast_model else kit.identical_run(args), form),
            kit.equals("patching from an identical run changes nothing", (kit.identical_run(args),), form, baseline,
                       "with corrupt_prompt = clean_prompt every entry must be the clean logit diff", atol=1e-3),
        ]
        if fast_model:
            properties.append(kit.sign_flip(args, kit.swapped_answers(args), form, "sweep with answers swapped",
                                            label="swapping the two answers flips the sign", atol=1e-3))
        return properties

    return properties


HEAD_PATCHING_SWEEP = Exercise(
    name="head_patching_sweep",
    chapter=CHAPTER,
    loop=Loop(lambda model, call: model.cfg.n_layers * model.cfg.n_heads + 1),  # a pass per head, one to cache
    section="The head sweep",
    hint=("Cache the corrupt run once; for each layer and head, run the clean prompt with a hook on "
          "blocks.{layer}.attn.hook_z that copies that head's slice (every position) from the corrupt cache, "
          "and store logit(clean_answer) - logit(corrupt_answer) at the final position in result[layer, head]."),
    reference="circuitlab.sweeps.one_pair:head_patching_sweep",
    cases=_sweep_cases,
    compare=kit.FORWARD,
    properties=_sweep_properties(lambda n_layers, n_heads, n_pos: (n_layers, n_heads)),
)


# ---------------------------------------------------------------- head_by_position_sweep

HEAD_BY_POSITION_SWEEP = Exercise(
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
    compare=kit.FORWARD,
    properties=_sweep_properties(lambda n_layers, n_heads, n_pos: (n_layers * n_heads, n_pos)),
)


EXERCISES = [PATCH_HEAD_OUTPUT, HEAD_PATCHING_SWEEP, HEAD_BY_POSITION_SWEEP]
