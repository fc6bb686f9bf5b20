"""Chapter 1's exercises: patching the residual stream.

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`. References and known mistakes: solutions/ch01_residual_patching.py and
solutions/mistakes/ch01_residual_patching.py.
"""

from __future__ import annotations

import random

import torch

from circuitlab_graders import kit
from circuitlab_graders.declare import Cache, Case, Exercise, Hook, Loop, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close

CHAPTER = "01_residual_patching"


# ---------------------------------------------------------------- patch_residual_stream

def _patch_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    model = gm.model
    out = []
    for pair in kit.equal_length_pairs(gm, rng, n_random=2):
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(pair.clean_prompt)
        n_pos = clean_cache["blocks.0.hook_resid_pre"].shape[1]
        layer = rng.randrange(model.cfg.n_layers)
        name = rng.choice([f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"])
        pos = rng.randint(1, n_pos - 2)
        out.append(Case(f"{pair.label}, {name}, pos {pos}", {
            "activations": clean_cache[name].clone(), "hook": Hook(name), "pos": pos,
            "corrupt_cache": Cache(pair.corrupt_prompt)}))
    return out


def _patch_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_pre"
    cached_as = model.hook_dict[name].name  # the hook point's own name (a bridge alias), as in a real cache
    generator = torch.Generator().manual_seed(1)
    shape = (2, 6, model.cfg.d_model)
    clean, corrupt = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    pos = 3
    call = {"activations": clean, "hook": Hook(name), "pos": pos, "corrupt_cache": {cached_as: corrupt}}
    others = [p for p in range(shape[1]) if p != pos]
    form = kit.tensor_of(shape)
    return [
        kit.has_form("returns the activations' shape", call, form),
        Property("other positions unchanged", (call,), lambda a: form.problem(a[0]) or close(
            a[0][:, others], clean[:, others], "a position other than pos changed")),
        Property("position pos comes from the corrupt cache at this hook point", (call,), lambda a: form.problem(a[0])
                 or close(a[0][:, pos], corrupt[:, pos], "position pos does not hold corrupt_cache[hook.name] there")),
    ]


PATCH_RESIDUAL_STREAM = Exercise(
    name="patch_residual_stream",
    chapter=CHAPTER,
    section="One patch by hand",
    hint=(
        "activations is [batch, position, d_model]; corrupt_cache[hook.name] has the same shape. Copy one"
        " position (axis 1) across, then return activations."
    ),
    cases=_patch_cases,
    compare=kit.COPIED,
    properties=_patch_properties,
)


# ---------------------------------------------------------------- residual_patching_sweep

def _sweep_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    pairs = kit.pairs_for(gm, rng, lambda: kit.equal_length_pairs(gm, rng, n_random=2))
    return [Case(pair.label, kit.pair_args(pair)) for pair in pairs]


def _sweep_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    pair = kit.SHORT_PAIR  # any pair shows it; a short one keeps a learner's sweep quick on gpt2-small
    n_pos = model.to_tokens(pair.clean_prompt).shape[1]
    form = kit.tensor_of((model.cfg.n_layers + 1, n_pos))
    clean, corrupt = pair.logit_diff(model, pair.clean_prompt), pair.logit_diff(model, pair.corrupt_prompt)
    call = kit.pair_args(pair)
    # After the last block only the final position feeds the prediction.
    return [
        kit.has_form("shape [n_layers + 1, n_pos], finite floats", call, form),
        Property("last row, final position = the corrupt run", (call,), lambda a: form.problem(a[0]) or close(
            a[0][-1, -1], torch.tensor(corrupt), "entry [-1, -1]", atol=1e-3)),
        Property("last row, other positions = the clean run", (call,), lambda a: form.problem(a[0]) or close(
            a[0][-1, :-1], torch.full((n_pos - 1,), clean), "entries [-1, :-1]", atol=1e-3)),
    ]


RESIDUAL_PATCHING_SWEEP = Exercise(
    name="residual_patching_sweep",
    chapter=CHAPTER,
    # One pass per (layer, position) and one for the corrupt cache.
    loop=Loop(lambda model, call: (model.cfg.n_layers + 1) * model.to_tokens(call["clean_prompt"]).shape[1] + 1),
    section="The layer × position sweep",
    hint=(
        "Cache the corrupt run once; for each of the n_layers + 1 hook names and each position, run the "
        "clean prompt with a hook that copies that one position from the corrupt cache, and store the "
        "logit difference at the final position."
    ),
    # Graded against the fast engine (same numbers, a fraction of the time); the
    # readable reference in solutions/ is what learners see and also passes this check.
    reference="circuitlab.sweeps.one_pair:residual_patching_sweep",
    cases=_sweep_cases,
    compare=kit.FORWARD,
    properties=_sweep_properties,
)


EXERCISES = [PATCH_RESIDUAL_STREAM, RESIDUAL_PATCHING_SWEEP]
