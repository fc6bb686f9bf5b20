"""Chapter 5's gradients through TransformerLens 4 bridges.

Hook gradients (residual hooks and `hook_z`) on both bridge kinds: HF-architecture (the
random twins, circuitlab-2l) and native (what real gelu-2l is). The references are
checked against finite differences of the exact patch, against the TransformerLens
attribution-patching demo's recipe (backward hooks, one `.backward()`, cache
formulas), and for what they must leave behind: nothing.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformer_lens import ActivationCache

import circuitlab_graders as graders
from circuitlab import load_model
from circuitlab.prompts import CORRUPTIONS, PatchingCase, random_case, short_case
from circuitlab_graders.registry import EXERCISES
from circuitlab_solutions import ch05_attribution_patching as ref
from tests.honest import readable_reference
from tests.native_twin import native_gelu_2l

RESID, HEADS, HEAD_POS = ("attribution_patching_resid", "attribution_patching_heads",
                          "attribution_patching_head_by_position")


@pytest.fixture(scope="module")
def models(gelu_twin):
    return {"hf": gelu_twin, "native": native_gelu_2l(), "circuitlab-2l": load_model("circuitlab-2l")}


def resid_names(model) -> list[str]:
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]


def z_names(model) -> list[str]:
    return [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]


def answers(model, case: PatchingCase) -> tuple[int, int]:
    return model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)


def no_param_grads(model) -> bool:
    return all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- hook gradients on both bridge kinds


@pytest.mark.parametrize("which", ["hf", "native"])
def test_backward_hooks_and_autograd_agree_on_both_bridge_kinds(which, models):
    """Backward hooks on hook points fire on both kinds, with the gradient autograd gives
    for the activation a forward hook saw."""
    model = models[which]
    case = CORRUPTIONS["surname"]
    good, bad = answers(model, case)
    names = resid_names(model) + z_names(model)
    saved, from_hooks = {}, {}
    with torch.enable_grad():
        forward = [(n, lambda act, hook, n=n: saved.setdefault(n, act)) for n in names]
        backward = [(n, lambda grad, hook, n=n: from_hooks.__setitem__(n, grad.detach().clone())) for n in names]
        logits = model.run_with_hooks(case.clean_prompt, fwd_hooks=forward, bwd_hooks=backward, reset_hooks_end=False)
        diff = logits[0, -1, good] - logits[0, -1, bad]
        grads = torch.autograd.grad(diff, [saved[n] for n in names], retain_graph=True)
        diff.backward()  # fires the backward hooks
    model.reset_hooks()
    for p in model.parameters():
        p.grad = None
    assert sorted(from_hooks) == sorted(names)
    for name, grad in zip(names, grads):
        assert grad.shape == saved[name].shape
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(from_hooks[name], grad, atol=0, rtol=0)


def test_native_bridge_has_no_hook_result_so_heads_go_through_z(models):
    with pytest.raises(NotImplementedError):
        models["native"].cfg.use_attn_result = True
    models["hf"].cfg.use_attn_result = True  # the HF kind has it (used by the demo cross-check below)
    models["hf"].cfg.use_attn_result = False


# ---------------------------------------------------------------- finite differences of the exact patch


def patched_diff(model, case: PatchingCase, name: str, where, eps: float) -> float:
    """The logit difference with activation `name` at index `where` moved a fraction `eps`
    of the way from its clean value to its corrupt value."""
    good, bad = answers(model, case)
    _, corrupt = model.run_with_cache(case.corrupt_prompt)

    def nudge(act, hook):
        act = act.clone()
        act[where] = act[where] + eps * (corrupt[name][where] - act[where])
        return act

    final = model.run_with_hooks(case.clean_prompt, fwd_hooks=[(name, nudge)])[0, -1]
    return (final[good] - final[bad]).item()


def finite_difference(model, case, name, where, eps: float = 0.02) -> float:
    """d(logit diff)/d(eps) at eps = 0, by central differences: the first-order change."""
    return (patched_diff(model, case, name, where, eps) - patched_diff(model, case, name, where, -eps)) / (2 * eps)


def cells(model, case, rng: random.Random):
    """(estimate function, hook name, activation index, index into the estimate) for a few
    cells that can change: the positions where the prompts differ, later ones, the last."""
    n_pos = model.to_tokens(case.clean_prompt).shape[1]
    changed = int((model.to_tokens(case.clean_prompt) != model.to_tokens(case.corrupt_prompt))[0].nonzero()[0])
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = []
    for pos in (changed, rng.randrange(changed, n_pos), n_pos - 1):
        row = rng.randrange(n_layers + 1)
        out.append((ref.attribution_patching_resid, resid_names(model)[row], (0, pos), (row, pos)))
        layer, head = rng.randrange(n_layers), rng.randrange(n_heads)
        out.append((ref.attribution_patching_head_by_position, f"blocks.{layer}.attn.hook_z", (0, pos, head),
                    (layer * n_heads + head, pos)))
    layer, head = rng.randrange(n_layers), rng.randrange(n_heads)
    out.append((ref.attribution_patching_heads, f"blocks.{layer}.attn.hook_z", (0, slice(None), head), (layer, head)))
    return out


@pytest.mark.parametrize("which", ["hf", "native", "circuitlab-2l"])
def test_estimates_are_the_first_order_change_of_the_exact_patch(which, models):
    model = models[which]
    rng = random.Random(f"fd/{which}")
    checked = 0
    for case in (CORRUPTIONS["surname"], CORRUPTIONS["first_name"]):
        good, bad = answers(model, case)
        final = model(case.clean_prompt)[0, -1]
        clean = (final[good] - final[bad]).item()
        for fn, name, where, index in cells(model, case, rng):
            change = fn(model, **case.as_args())[index].item() - clean
            fd = finite_difference(model, case, name, where)
            assert change == pytest.approx(fd, rel=2e-2, abs=2e-3), (fn.__name__, name, where)
            checked += abs(fd) > 1e-2
    assert checked >= 4  # not only cells where both are zero


# ---------------------------------------------------------------- the TransformerLens demo's recipe


def demo_caches(model, tokens, metric, names: list[str]):
    """The attribution-patching demo's way: forward hooks cache activations, backward hooks
    cache their gradients, one `.backward()` (which also fills the weights' .grad; cleared)."""
    cache, grad_cache = {}, {}

    def keep(store, name):
        return lambda tensor, hook: store.__setitem__(name, tensor.detach())

    try:
        with torch.enable_grad():
            for name in names:
                model.add_hook(name, keep(cache, name), "fwd")
                model.add_hook(name, keep(grad_cache, name), "bwd")
            value = metric(model(tokens))
            value.backward()
    finally:
        model.reset_hooks()
        for p in model.parameters():
            p.grad = None
    return value.item(), ActivationCache(cache, model), ActivationCache(grad_cache, model)


def demo_estimates(model, case: PatchingCase) -> dict[str, torch.Tensor]:
    """The demo's formulas, grad * (source − receiver) summed over the last axis, with its
    runs renamed: the demo patches its clean run into its corrupted run and differentiates
    the corrupted one; here the corrupt run is the source and the clean run receives."""
    good, bad = answers(model, case)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    use_result = _has_hook_result(model)  # the demo's head_out formula, where the bridge has hook_result
    head_hook = "attn.hook_result" if use_result else "attn.hook_z"
    # What accumulated_resid reads: each block's resid_pre and the last resid_post.
    names = [f"blocks.{i}.hook_resid_pre" for i in range(model.cfg.n_layers)]
    names += [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"] + [f"blocks.{i}.{head_hook}" for i in range(model.cfg.n_layers)]
    try:
        if use_result:
            model.cfg.use_attn_result = True
        value, receiver, receiver_grad = demo_caches(model, model.to_tokens(case.clean_prompt), metric, names)
        _, source = model.run_with_cache(case.corrupt_prompt)
    finally:
        if use_result:
            model.cfg.use_attn_result = False
    resid = [c.accumulated_resid(-1, incl_mid=False) for c in (receiver, source, receiver_grad)]
    resid_attr = (resid[2] * (resid[1] - resid[0]))[:, 0].sum(-1)
    if use_result:  # [layer * head, batch, pos, d_model]
        heads = [c.stack_head_results(-1) for c in (receiver, source, receiver_grad)]
        per_pos = (heads[2] * (heads[1] - heads[0]))[:, 0].sum(-1)
    else:  # [layer, batch, pos, head, d_head]
        heads = [c.stack_activation("z") for c in (receiver, source, receiver_grad)]
        per_pos = (heads[2] * (heads[1] - heads[0]))[:, 0].sum(-1).transpose(1, 2).flatten(0, 1)
    return {RESID: value + resid_attr, HEAD_POS: value + per_pos,
            HEADS: value + per_pos.sum(-1).reshape(model.cfg.n_layers, model.cfg.n_heads)}


def _has_hook_result(model) -> bool:
    try:
        model.cfg.use_attn_result = True
    except NotImplementedError:
        return False
    model.cfg.use_attn_result = False
    return True


@pytest.mark.parametrize("which", ["hf", "native", "gpt2"])
def test_reference_matches_the_demo_recipe_within_the_check_tolerance(which, models, gpt2_twin):
    """An independent implementation (the demo's) meets each check's comparison on several
    seeded cases: the tolerance is one an honest float32 implementation always meets."""
    model = gpt2_twin if which == "gpt2" else models[which]
    rng = random.Random(f"demo/{which}")
    cases = [short_case(model, rng) for _ in range(2)] if which == "gpt2" else [CORRUPTIONS["first_name"]]
    while len(cases) < 4 and which != "gpt2":
        case = random_case(rng)
        if model.to_tokens(case.clean_prompt).shape == model.to_tokens(case.corrupt_prompt).shape:
            cases.append(case)
    for case in cases:
        demo = demo_estimates(model, case)
        for name in (RESID, HEADS, HEAD_POS):
            ours = EXERCISES[name].reference_fn()(model, **case.as_args())
            assert EXERCISES[name].compare(demo[name], ours) is None, (name, case)
            assert (ours - demo[name]).abs().max() < 1e-4 * max(1.0, ours.abs().max().item())
    assert no_param_grads(model)


# ---------------------------------------------------------------- what a call leaves behind


@pytest.mark.parametrize("name", [RESID, HEADS, HEAD_POS])
@pytest.mark.parametrize("ambient", [False, True])
def test_reference_leaves_no_gradient_state(name, ambient, models):
    model = models["native"]
    flags = [p.requires_grad for p in model.parameters()]
    with torch.set_grad_enabled(ambient):
        EXERCISES[name].reference_fn()(model, **CORRUPTIONS["surname"].as_args())
        assert torch.is_grad_enabled() == ambient
    assert no_param_grads(model)
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("name", [RESID, HEADS, HEAD_POS])
def test_reference_works_with_frozen_weights(name, models):
    """With requires_grad off on every weight nothing in the forward pass needs a gradient;
    the reference then makes its saved activations the leaves."""
    model = models["hf"]
    case = CORRUPTIONS["surname"]
    expected = EXERCISES[name].reference_fn()(model, **case.as_args())
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        frozen = EXERCISES[name].reference_fn()(model, **case.as_args())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    torch.testing.assert_close(frozen, expected, atol=1e-5, rtol=1e-5)


# The guard's handling of gradient state a call leaves behind (.grad on the weights,
# requires_grad, the global grad mode) is tests/test_hostile.py's
# test_gradient_state_left_behind_is_restored_and_named.

MODES = ["full", "public"]


@pytest.mark.parametrize("name", [RESID, HEADS, HEAD_POS])
def test_honest_copies_pass_the_public_checks_without_a_note(name):
    result = graders.grade(name, readable_reference(EXERCISES[name]), mode="public")
    assert result.passed and result.mode == "public", result.feedback
    assert "Note:" not in result.feedback


# ---------------------------------------------------------------- autograd off, as in the notebook

def learner_without_enable_grad():
    """The reference's body with `with torch.enable_grad():` turned into a no-op context:
    it works only when the caller has switched autograd on."""
    import inspect

    body = inspect.getsource(ref.attribution_patching_heads).replace("torch.enable_grad()", "contextlib.nullcontext()")
    namespace = {"__name__": "learner", "torch": torch, "Tensor": torch.Tensor}
    exec(compile("import contextlib\n" + body, "<learner>", "exec"), namespace)
    return namespace["attribution_patching_heads"]


def learner_detaching_every_hook(name: str):
    """The reference's body with every hook returning a detached leaf
    (`activations.detach().requires_grad_(True)`, unconditionally)."""
    import inspect

    body = inspect.getsource(getattr(ref, name)).replace("if not activations.requires_grad:", "if True:")
    namespace = {"__name__": "learner", "torch": torch, "Tensor": torch.Tensor}
    exec(compile(body, "<learner>", "exec"), namespace)
    return namespace[name]


def test_detaching_every_hooked_activation_is_named():
    """Each detached hook starts a new graph. The residual stream's earlier rows then have
    no path to the logit difference and autograd raises: the feedback says why. The heads'
    estimates lose their paths through later heads: the declared mistake names it, and in
    public mode a finite difference of the exact patch catches it."""
    result = graders.grade(RESID, learner_detaching_every_hook(RESID), mode="full")
    assert not result.passed and result.score == 0.0
    assert "appears to not have been used in the graph" in result.feedback
    assert "a hook that returns `activations.detach().requires_grad_()` starts a new graph there" in result.feedback
    result = graders.grade(HEADS, learner_detaching_every_hook(HEADS), mode="full")
    assert not result.passed and result.score < 1.0
    assert "It looks like you detached every hooked activation" in result.feedback, result.feedback
    # Public mode: layer 0's estimates no longer add up to a finite difference of the exact patch.
    result = graders.grade(HEADS, learner_detaching_every_hook(HEADS), mode="public")
    assert not result.passed and result.score < 1.0
    failed = [case for case in result.cases if not case.passed]
    assert failed and all(c.label.startswith("layer 0's estimates add up to the first-order change") for c in failed)
    assert {c.model for c in failed} == {c.model for c in result.cases}  # on every grading model
    assert "(a hook that returns `activations.detach().requires_grad_()` cuts them)" in result.feedback


@pytest.mark.parametrize("mode", MODES)
def test_forgetting_enable_grad_fails_every_check_as_it_fails_in_the_notebook(mode):
    """The notebook runs with autograd off, and so does every call the grader makes: a
    function must switch it on itself. The crash says how."""
    fn = learner_without_enable_grad()
    with pytest.raises(RuntimeError, match="does not require grad"):
        with torch.no_grad():
            fn(load_model("circuitlab-2l"), **CORRUPTIONS["surname"].as_args())
    with torch.enable_grad():  # the caller's grad mode is not the call's: the grader switches it off
        result = graders.grade(HEADS, fn, mode=mode)
    assert not result.passed and result.score == 0.0
    assert "does not require grad" in result.feedback
    assert "switch it on inside your function, around the forward pass and the gradient, with " \
           "`with torch.enable_grad():`" in result.feedback
