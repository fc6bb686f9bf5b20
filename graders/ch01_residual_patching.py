"""Chapter 1's exercises: patching the residual stream."""

from __future__ import annotations

import random

import torch

from circuitlab.plotting import residual_labels
from circuitlab.prompts import CORRUPTIONS, PatchingCase, random_case, short_case
from graders.compare import close_tensor
from graders.declare import MODEL, Cache, Case, Exercise, Hook, Loop, Mistake, Property, answer_module
from graders.models import GradingModel
from graders.properties import close, shaped

CHAPTER = "01_residual_patching"
fast = answer_module("circuitlab.sweeps.one_pair")  # the graders' exact sweeps (answer code)
SHORT_PAIR = PatchingCase("short surname pair", "Alex Hart Alex", "Alex Carroll Alex", " Hart", " Carroll")


def patching_cases(gm: GradingModel, rng: random.Random, n_random: int = 1) -> list[PatchingCase]:
    """The tutorial's surname corruption plus seeded fresh prompt pairs that tokenize
    to equal lengths on this model."""
    cases = [CORRUPTIONS["surname"]]
    while len(cases) < 1 + n_random:
        case = random_case(rng)
        if gm.model.to_tokens(case.clean_prompt).shape == gm.model.to_tokens(case.corrupt_prompt).shape:
            cases.append(case)
    return cases


def _patch_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    model = gm.model
    out = []
    for pair in patching_cases(gm, rng, n_random=2):
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
    call = ({"activations": clean, "hook": Hook(name), "pos": pos, "corrupt_cache": {cached_as: corrupt}},)
    others = [p for p in range(shape[1]) if p != pos]
    return [
        Property("returns the activations' shape", call, lambda a: shaped(a[0], shape)),
        Property("other positions unchanged", call, lambda a: shaped(a[0], shape) or close(
            a[0][:, others], clean[:, others], "a position other than pos changed")),
        Property("position pos comes from the corrupt cache at this hook point", call, lambda a: shaped(a[0], shape)
                 or close(a[0][:, pos], corrupt[:, pos], "position pos does not hold corrupt_cache[hook.name] there")),
    ]


def _sweep_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    if gm.key == "gpt2-small":
        # One short fresh pair there: the learner's own sweep on gpt2-small (13 layers of
        # batched forwards) is what a check's time is made of.
        pairs = [short_case(gm.model, rng)]
    else:
        pairs = patching_cases(gm, rng, n_random=2)
    return [Case(pair.label, {"model": MODEL, **pair.as_args()}) for pair in pairs]


def _sweep_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    case = SHORT_PAIR  # any pair shows it; a short one keeps a learner's sweep quick on gpt2-small
    n_pos = model.to_tokens(case.clean_prompt).shape[1]
    shape = (model.cfg.n_layers + 1, n_pos)
    clean, corrupt = case.logit_diff(model, case.clean_prompt), case.logit_diff(model, case.corrupt_prompt)
    call = ({"model": MODEL, **case.as_args()},)
    # After the last block only the final position feeds the prediction.
    return [
        Property("shape [n_layers + 1, n_pos], finite floats", call, lambda a: shaped(a[0], shape)),
        Property("last row, final position = the corrupt run", call, lambda a: shaped(a[0], shape) or close(
            a[0][-1, -1], torch.tensor(corrupt), "entry [-1, -1]", atol=1e-3)),
        Property("last row, other positions = the clean run", call, lambda a: shaped(a[0], shape) or close(
            a[0][-1, :-1], torch.full((n_pos - 1,), clean), "entries [-1, :-1]", atol=1e-3)),
    ]


def _patched_all(activations, hook, pos, corrupt_cache):
    activations[:] = corrupt_cache[hook.name]
    return activations


def _patched_next(activations, hook, pos, corrupt_cache):
    activations[:, pos + 1] = corrupt_cache[hook.name][:, pos + 1]
    return activations


def _patched_previous(activations, hook, pos, corrupt_cache):
    activations[:, pos - 1] = corrupt_cache[hook.name][:, pos - 1]
    return activations


def _fixed_hook(activations, hook, pos, corrupt_cache):
    activations[:, pos] = corrupt_cache["blocks.0.hook_resid_pre"][:, pos]
    return activations


def _reversed(activations, hook, pos, corrupt_cache):
    return activations  # the learner copied clean into corrupt, leaving the run untouched


# The sweep's known mistakes, each computed exactly on the fast path (the reference's
# numbers too), so a failing check does not pay for slow sweeps.
def _swapped_runs(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    return fast.residual_patching_sweep(model, corrupt_prompt, clean_prompt, clean_answer, corrupt_answer)


def _second_to_last_logits(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    # Logits at position -2 are those of the prompt without its last token, and a
    # patch at the last position cannot reach them.
    clean, corrupt = model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt)
    if clean.shape != corrupt.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    run, corrupt_cache = fast.prepare(model, clean[:, :-1], corrupt[:, :-1], clean_answer, corrupt_answer)
    rows = fast.residual_rows(run, corrupt_cache)
    return torch.cat([rows, run.baseline.expand(len(rows), 1)], dim=1)


def _resid_pre_rows(model, **args):
    # Row i + 1 patched blocks.i.hook_resid_pre, which is row i of the right sweep.
    rows = fast.residual_patching_sweep(model, **args)
    return rows[[0] + list(range(model.cfg.n_layers))]


def _whole_stream(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    run, corrupt = fast.prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    names = residual_labels(model.cfg.n_layers)
    rows = [run.patch_resid(row, corrupt[name][0][None]) for row, name in enumerate(names)]
    return torch.cat(rows)[:, None].expand(len(names), run.n_pos).clone()


EXERCISES = [
    Exercise(
        name="patch_residual_stream",
        chapter=CHAPTER,
        section="One patch by hand",
        hint=(
            "activations is [batch, position, d_model]; corrupt_cache[hook.name] has the same shape. Copy one"
            " position (axis 1) across, then return activations."
        ),
        cases=_patch_cases,
        compare=close_tensor(atol=1e-5, rtol=0),
        properties=_patch_properties,
        mistakes=(
            Mistake("patched every position", "Overwrite only activations[:, pos, :].", _patched_all),
            Mistake("patched position pos + 1", "Index the position axis (axis 1) with pos itself.", _patched_next),
            Mistake("patched position pos - 1", "Index the position axis (axis 1) with pos itself.", _patched_previous),
            Mistake(
                "read the corrupt cache at a fixed hook point",
                "Read corrupt_cache[hook.name]: the same hook point the activations come from.",
                _fixed_hook,
            ),
            Mistake(
                "left the activations unchanged (the patch went the wrong way or nowhere)",
                "Write the corrupt value into `activations` and return them.",
                _reversed,
            ),
        ),
    ),
    Exercise(
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
        compare=close_tensor(atol=1e-3, rtol=1e-3),
        properties=_sweep_properties,
        mistakes=(
            Mistake(
                "subtracted the wrong way round",
                "Each entry is logit(clean_answer) − logit(corrupt_answer).",
                lambda **args: -fast.residual_patching_sweep(**args),
            ),
            Mistake(
                "patched the clean run into the corrupt run",
                "Cache the corrupt prompt and run the clean prompt with its activations patched in.",
                _swapped_runs,
            ),
            Mistake(
                "read the logits at the second-to-last position",
                "The answer is predicted at the final position: logits[0, -1].",
                _second_to_last_logits,
            ),
            Mistake(
                "used hook_resid_pre for every row",
                "Row 0 is blocks.0.hook_resid_pre; row i + 1 is blocks.i.hook_resid_post.",
                _resid_pre_rows,
            ),
            Mistake(
                "patched the whole residual stream instead of one position",
                "Overwrite only activations[:, pos, :].",
                _whole_stream,
            ),
            Mistake(
                "returned the result as [position, layer]",
                "Rows are layers (n_layers + 1 of them), columns are positions.",
                lambda **args: fast.residual_patching_sweep(**args).T,
            ),
        ),
    ),
]
