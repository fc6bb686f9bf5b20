"""Public checks: what `check(fn)` runs where the reference solutions are absent, as in
the student release of the nbgrader course.

They test types, shapes and behaviour the chapter text states (antisymmetry, which
positions may change, what the last row of a sweep must equal), never against a
reference answer, and they import nothing from `solutions`. The full check, with
hidden cases, runs when the instructor autogrades.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch

from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS
from graders.engine import LearnerError, NotImplementedYet, Result, call_learner
from graders.models import GradingModel, grading_models

# A property check yields (what was checked, None if it holds else the problem).
Property = Iterator[tuple[str, Optional[str]]]
Run = Callable[..., Any]  # calls the learner's function with keyword arguments

FULL_CHECK_NOTE = "The autograder runs the full check, with hidden cases, when you submit."


def _single_token(model, text: Any) -> Optional[str]:
    if not isinstance(text, str):
        return f"returned {type(text).__name__}, expected a str"
    try:
        model.to_single_token(text)
    except Exception:
        return f"{text!r} is not exactly one token of the model's vocabulary"
    return None


def _scalar(value: Any) -> Optional[str]:
    if not isinstance(value, torch.Tensor):
        return f"returned {type(value).__name__}, expected a torch.Tensor"
    if value.dim() != 0:
        return f"returned shape {tuple(value.shape)}; a 0-dim tensor (one number) is expected"
    if not torch.is_floating_point(value):
        return f"returned dtype {value.dtype}, expected a floating-point tensor"
    return None


def _close(a: Any, b: torch.Tensor, what: str, atol: float = 1e-4) -> Optional[str]:
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        return f"{what}: returned {getattr(a, 'shape', type(a).__name__)}, expected shape {tuple(b.shape)}"
    if torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4):
        return None
    return f"{what}: got {a.float().flatten()[:4].tolist()} where {b.float().flatten()[:4].tolist()} is required"


def next_token_prediction(run: Run, gm: GradingModel) -> Property:
    model = gm.model
    prompts = ("Famous computer scientist Alan", CLEAN_PROMPT, "The capital of France is", "1, 2, 3, 4,")
    answers = []
    for prompt in prompts:
        got = run(model=model, prompt=prompt)
        answers.append(got)
        yield f"{prompt!r} gives one token, as a string", _single_token(model, got)
    yield "the prediction depends on the prompt", None if len(set(map(repr, answers))) > 1 else (
        f"all {len(prompts)} prompts gave {answers[0]!r}; is it read at the final position?")
    yield "the same prompt twice gives the same token", None if run(model=model, prompt=prompts[0]) == answers[0] else (
        "two calls on the same prompt disagree")


def top_tokens_by_unembed_bias(run: Run, gm: GradingModel) -> Property:
    model = gm.model
    for k in (3, 7):
        got = run(model=model, k=k)
        if not isinstance(got, list) or len(got) != k:
            yield f"k={k} gives a list of {k}", f"returned {type(got).__name__} {got!r:.80}, expected a list of {k} strings"
            continue
        problems = [p for p in (_single_token(model, t) for t in got) if p]
        yield f"k={k}: every entry is one token string", problems[0] if problems else None
        if problems:
            continue
        yield f"k={k}: no token twice", None if len(set(got)) == k else "a token appears twice"
        bias = torch.stack([model.b_U[model.to_single_token(t)] for t in got])
        yield f"k={k}: largest bias first", None if bool((bias[:-1] >= bias[1:]).all()) else (
            "the tokens are not ordered from the largest bias down")


def logit_diff(run: Run, gm: GradingModel) -> Property:
    generator = torch.Generator().manual_seed(0)
    vocab = gm.model.cfg.d_vocab
    logits = torch.randn(2, 5, vocab, generator=generator)
    a, b = 11, 4000
    logits[0, -1, a], logits[0, -1, b] = 6.0, -6.0  # the correct token is far ahead
    got = run(logits=logits.clone(), correct_token=a, wrong_token=b)
    yield "returns one float number", _scalar(got)
    if _scalar(got) is not None:
        return
    yield "positive when the correct token's logit is larger", None if got.item() > 0 else (
        f"got {got.item():.3g}, but the correct token is ahead, so the difference must be positive")
    yield "swapping the tokens flips the sign", _close(run(logits=logits.clone(), correct_token=b, wrong_token=a), -got,
                                                       "logit_diff(b, a) should be -logit_diff(a, b)")
    yield "the same token twice gives 0", _close(run(logits=logits.clone(), correct_token=a, wrong_token=a),
                                                 torch.tensor(0.0), "logit_diff(a, a)")
    doubled = logits.clone()
    doubled[0, -1] *= 2
    yield "linear in the logits", _close(run(logits=doubled, correct_token=a, wrong_token=b), 2 * got,
                                         "doubling the final logits of item 0 should double the result")
    other = logits.clone()
    other[1:] = torch.randn(other[1:].shape, generator=generator)
    other[0, :-1] = torch.randn(other[0, :-1].shape, generator=generator)
    yield "only the final position of item 0 matters", _close(run(logits=other, correct_token=a, wrong_token=b), got,
                                                              "changing other positions or batch items changed the result")


def patch_residual_stream(run: Run, gm: GradingModel) -> Property:
    model = gm.model
    hook = model.hook_dict[f"blocks.{model.cfg.n_layers - 1}.hook_resid_pre"]
    generator = torch.Generator().manual_seed(1)
    shape = (2, 6, model.cfg.d_model)
    clean, corrupt = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    pos = 3
    got = run(activations=clean.clone(), hook=hook, pos=pos, corrupt_cache={hook.name: corrupt})
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        yield "returns the activations' shape", f"returned {getattr(got, 'shape', type(got).__name__)}, expected {shape}"
        return
    others = [p for p in range(shape[1]) if p != pos]
    yield "other positions unchanged", _close(got[:, others], clean[:, others], "a position other than pos changed")
    yield "position pos comes from the corrupt cache at this hook point", _close(
        got[:, pos], corrupt[:, pos], "position pos does not hold corrupt_cache[hook.name] there")


def residual_patching_sweep(run: Run, gm: GradingModel) -> Property:
    model = gm.model
    case = CORRUPTIONS["surname"]
    got = run(model=model, **case.as_args())
    n_pos = model.to_tokens(case.clean_prompt).shape[1]
    shape = (model.cfg.n_layers + 1, n_pos)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        yield "shape [n_layers + 1, n_pos]", f"returned {getattr(got, 'shape', type(got).__name__)}, expected {shape}"
        return
    yield "finite floats", None if torch.is_floating_point(got) and bool(torch.isfinite(got).all()) else (
        "expected finite floating-point values")
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)

    def diff(prompt):
        final = model(prompt)[0, -1]
        return final[good] - final[bad]

    clean, corrupt = diff(case.clean_prompt), diff(case.corrupt_prompt)
    # After the last block only the final position feeds the prediction.
    yield "last row, final position = the corrupt run", _close(got[-1, -1].cpu(), corrupt.cpu(),
                                                               "entry [-1, -1]", atol=1e-3)
    yield "last row, other positions = the clean run", _close(got[-1, :-1].cpu(), clean.expand(n_pos - 1).cpu(),
                                                              "entries [-1, :-1]", atol=1e-3)


# Chapter 2 -------------------------------------------------------------------------

SHORT = ("Alex Hart Alex", "Alex Carroll Alex", " Hart", " Carroll")  # 4 tokens with BOS: quick on any model


def _sweep_properties(run: Run, gm: GradingModel, shape_of: Callable[[int, int, int], tuple]) -> Property:
    """What any patching sweep must satisfy, checked without a reference answer."""
    model = gm.model
    clean, corrupt, good, bad = SHORT
    args = dict(model=model, clean_prompt=clean, corrupt_prompt=corrupt, clean_answer=good, corrupt_answer=bad)
    got = run(**args)
    shape = shape_of(model.cfg.n_layers, model.cfg.n_heads, model.to_tokens(clean).shape[1])
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        yield f"shape {list(shape)}", f"returned {getattr(got, 'shape', type(got).__name__)}, expected {shape}"
        return
    yield "finite floats", None if torch.is_floating_point(got) and bool(torch.isfinite(got).all()) else (
        "expected finite floating-point values")
    final = model(clean)[0, -1]
    baseline = (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).reshape(1)
    same = run(**{**args, "corrupt_prompt": clean})
    yield "patching from an identical run changes nothing", _close(
        same, baseline.expand(shape), "with corrupt_prompt = clean_prompt every entry must be the clean logit diff",
        atol=1e-3)
    swapped = run(**{**args, "clean_answer": bad, "corrupt_answer": good})
    yield "swapping the two answers flips the sign", _close(swapped, -got, "sweep with answers swapped", atol=1e-3)


def patch_head_output(run: Run, gm: GradingModel) -> Property:
    model = gm.model
    n_heads = model.cfg.n_heads
    hook = model.hook_dict["blocks.0.attn.hook_z"]
    generator = torch.Generator().manual_seed(2)
    shape = (2, 6, n_heads, model.cfg.d_head)
    clean, corrupt = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    head = n_heads - 1
    for pos in (None, 3):
        got = run(activations=clean.clone(), hook=hook, head=head, corrupt_cache={hook.name: corrupt}, pos=pos)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
            yield f"pos={pos}: returns the activations' shape", (
                f"returned {getattr(got, 'shape', type(got).__name__)}, expected {shape}")
            continue
        expected = clean.clone()
        at = slice(None) if pos is None else pos
        expected[:, at, head] = corrupt[:, at, head]
        yield f"pos={pos}: exactly head {head} at {'every position' if pos is None else f'position {pos}'} patched", \
            _close(got, expected, "the patched slice")


def head_patching_sweep(run: Run, gm: GradingModel) -> Property:
    yield from _sweep_properties(run, gm, lambda n_layers, n_heads, n_pos: (n_layers, n_heads))


def head_by_position_sweep(run: Run, gm: GradingModel) -> Property:
    yield from _sweep_properties(run, gm, lambda n_layers, n_heads, n_pos: (n_layers * n_heads, n_pos))


# Chapter 3 -------------------------------------------------------------------------

def _cache(gm: GradingModel):
    _, cache = gm.model.run_with_cache(CLEAN_PROMPT)
    return cache


def attention_score(run: Run, gm: GradingModel) -> Property:
    cache = _cache(gm)
    layer, head = gm.model.cfg.n_layers - 1, 1
    for q_pos, k_pos in ((5, 4), (11, 5)):
        got = run(cache=cache, layer=layer, head=head, q_pos=q_pos, k_pos=k_pos)
        expected = cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, q_pos, k_pos]
        ok = isinstance(got, (float, int, torch.Tensor)) and abs(float(got) - expected.item()) < 1e-3
        yield f"({q_pos}, {k_pos}) equals hook_attn_scores, as the chapter says", None if ok else (
            f"got {got!r:.40}; the score must equal cache['blocks.{layer}.attn.hook_attn_scores'][0, head, q, k]")


def attention_pattern_row(run: Run, gm: GradingModel) -> Property:
    cache = _cache(gm)
    layer, head, q_pos = 0, 0, 6
    got = run(cache=cache, layer=layer, head=head, q_pos=q_pos)
    yield "equals the hook_pattern row, as the chapter says", _close(
        got, cache[f"blocks.{layer}.attn.hook_pattern"][0, head, q_pos], "the pattern row", atol=1e-4)


def head_z(run: Run, gm: GradingModel) -> Property:
    cache = _cache(gm)
    layer, head, pos = gm.model.cfg.n_layers - 1, 0, 7
    got = run(cache=cache, layer=layer, head=head, pos=pos)
    yield "equals hook_z, as the chapter says", _close(
        got, cache[f"blocks.{layer}.attn.hook_z"][0, pos, head], "z", atol=1e-4)


def _patterns() -> tuple[torch.Tensor, torch.Tensor]:
    """Two hand-made heads on the sequence a b c a b c: head 0 attends to the previous
    token, head 1 to the token after the earlier copy of the current one (where it exists)."""
    tokens = torch.tensor([7, 8, 9, 7, 8, 9])
    n = len(tokens)
    pattern = torch.zeros(2, n, n)
    pattern[:, 0, 0] = 1
    for dst in range(1, n):
        pattern[0, dst, dst - 1] = 1
        pattern[1, dst, dst - 2 if dst >= 3 else dst] = 1  # dst - 3 is the copy; dst - 2 follows it
    return pattern, tokens


def previous_token_score(run: Run, gm: GradingModel) -> Property:
    pattern, _ = _patterns()
    got = run(pattern=pattern.clone())
    yield "a pure previous-token head scores 1", _close(got[:1] if isinstance(got, torch.Tensor) else got,
                                                        torch.ones(1), "score of head 0")


def duplicate_token_score(run: Run, gm: GradingModel) -> Property:
    pattern, tokens = _patterns()
    copies = pattern.clone()
    for dst in range(3, 6):
        copies[1, dst] = 0
        copies[1, dst, dst - 3] = 1  # attend to the earlier copy of the same token
    got = run(pattern=copies, tokens=tokens)
    yield "a head attending to earlier copies scores 1", _close(got[1:] if isinstance(got, torch.Tensor) else got,
                                                                torch.ones(1), "score of head 1")


def induction_score(run: Run, gm: GradingModel) -> Property:
    pattern, tokens = _patterns()
    got = run(pattern=pattern.clone(), tokens=tokens)
    yield "a perfect induction head scores 1", _close(got[1:] if isinstance(got, torch.Tensor) else got,
                                                      torch.ones(1), "score of head 1")


# Chapter 5 -------------------------------------------------------------------------

# Exercises that take gradients: the public checks call them with autograd on, as the
# engine does (Exercise.grad), plus once with it off and no context around the call, as
# the chapter's notebook does.
GRAD_CHECKS = frozenset({"attribution_patching_resid", "attribution_patching_heads",
                         "attribution_patching_head_by_position"})


def _requires_grad(model) -> list[bool]:
    return [p.requires_grad for p in model.parameters()]


def _gradient_leftovers(model, before: list[bool]) -> Optional[str]:
    """What a call left behind on the model's parameters; cleared and restored again, so
    later calls and checks start clean."""
    params = list(model.parameters())
    with_grad = sum(p.grad is not None for p in params)
    flipped = sum(p.requires_grad != was for p, was in zip(params, before))
    for p, was in zip(params, before):
        p.grad = None
        p.requires_grad_(was)
    if with_grad:
        return (f"{with_grad} parameters have a .grad afterwards: take gradients of the activations with "
                "torch.autograd.grad (or backward hooks), not with .backward(), which accumulates into the weights")
    if flipped:
        return f"changed requires_grad on {flipped} parameters; leave the model's parameters as they were"
    return None


def _attribution_properties(run: Run, gm: GradingModel, shape_of: Callable[[int, int, int], tuple]) -> Property:
    """What any attribution estimate must satisfy, checked without a reference answer."""
    model = gm.model
    clean, corrupt, good, bad = SHORT
    args = dict(model=model, clean_prompt=clean, corrupt_prompt=corrupt, clean_answer=good, corrupt_answer=bad)
    before, grad_mode = _requires_grad(model), torch.is_grad_enabled()
    for p in model.parameters():
        p.grad = None  # whatever ran before this check is not the learner's doing
    left: list[str] = []

    def call(as_in_notebook: bool = False, **changes):
        """One call, with autograd on as the full check has it or, `as_in_notebook`, off
        and with no context around the call, so a function that switches it on is seen."""
        if as_in_notebook:
            torch.set_grad_enabled(False)
        try:
            return run(_ambient=as_in_notebook, **{**args, **changes})
        finally:
            if (problem := _gradient_leftovers(model, before)) and not left:
                left.append(problem)
            if as_in_notebook and torch.is_grad_enabled() and not left:
                left.append("left autograd switched on; use `with torch.enable_grad():` inside the function, "
                            "not torch.set_grad_enabled(True)")
            torch.set_grad_enabled(grad_mode)

    got = call()
    shape = shape_of(model.cfg.n_layers, model.cfg.n_heads, model.to_tokens(clean).shape[1])
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        yield f"shape {list(shape)}", f"returned {getattr(got, 'shape', type(got).__name__)}, expected {shape}"
        return
    yield "finite floats", None if torch.is_floating_point(got) and bool(torch.isfinite(got).all()) else (
        "expected finite floating-point values")
    final = model(clean)[0, -1]
    baseline = (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).reshape(1)
    yield "an identical corrupt run estimates no change", _close(
        call(corrupt_prompt=clean), baseline.expand(shape),
        "with corrupt_prompt = clean_prompt every entry must be the clean logit diff", atol=1e-3)
    yield "swapping the two answers flips the sign", _close(
        call(clean_answer=bad, corrupt_answer=good), -got, "estimate with answers swapped", atol=1e-3)
    try:
        problem = _close(call(as_in_notebook=True), got, "with gradients switched off around the call", atol=1e-4)
    except LearnerError as err:
        problem = (f"with gradients off around the call, as in the notebook, {err}; switch them on inside your "
                   "function with `with torch.enable_grad():`")
    yield "works with autograd switched off around it, as in the notebook", problem
    yield "leaves no gradient state behind (no .grad, requires_grad and grad mode as they were)", (
        left[0] if left else None)


def attribution_patching_resid(run: Run, gm: GradingModel) -> Property:
    yield from _attribution_properties(run, gm, lambda n_layers, n_heads, n_pos: (n_layers + 1, n_pos))
    model = gm.model
    clean, corrupt, good, bad = SHORT
    got = run(model=model, clean_prompt=clean, corrupt_prompt=corrupt, clean_answer=good, corrupt_answer=bad)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (model.cfg.n_layers + 1, model.to_tokens(clean).shape[1]):
        return
    final = model(clean)[0, -1]
    baseline = (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).reshape(1)
    same_token = model.to_tokens(clean)[0] == model.to_tokens(corrupt)[0]
    # Where the tokens agree the embeddings do too, so row 0 changes only where they differ;
    # after the last block only the final position reaches the logits.
    yield "row 0 changes only where the prompts' tokens differ", _close(
        got[0, same_token.to(got.device)].cpu(), baseline.expand(int(same_token.sum())).cpu(),
        "row 0 at positions where clean and corrupt tokens agree", atol=1e-3)
    yield "last row: positions before the final one estimate no change", _close(
        got[-1, :-1].cpu(), baseline.expand(got.shape[1] - 1).cpu(), "entries [-1, :-1]", atol=1e-3)


def attribution_patching_heads(run: Run, gm: GradingModel) -> Property:
    yield from _attribution_properties(run, gm, lambda n_layers, n_heads, n_pos: (n_layers, n_heads))


def attribution_patching_head_by_position(run: Run, gm: GradingModel) -> Property:
    yield from _attribution_properties(run, gm, lambda n_layers, n_heads, n_pos: (n_layers * n_heads, n_pos))
    model = gm.model
    clean, corrupt, good, bad = SHORT
    got = run(model=model, clean_prompt=clean, corrupt_prompt=corrupt, clean_answer=good, corrupt_answer=bad)
    n_pos = model.to_tokens(clean).shape[1]
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (model.cfg.n_layers * model.cfg.n_heads, n_pos):
        return
    first = int((model.to_tokens(clean)[0] != model.to_tokens(corrupt)[0]).nonzero()[0])
    final = model(clean)[0, -1]
    baseline = (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).reshape(1)
    # Attention is causal: before the first changed token, z is the same in both runs.
    yield f"no change before the first differing token (position {first})", _close(
        got[:, :first].cpu(), baseline.expand(got.shape[0], first).cpu(), f"columns 0 to {first - 1}", atol=1e-3)


PUBLIC_CHECKS: dict[str, Callable[[Run, GradingModel], Property]] = {
    fn.__name__: fn
    for fn in (next_token_prediction, top_tokens_by_unembed_bias, logit_diff, patch_residual_stream,
               residual_patching_sweep, patch_head_output, head_patching_sweep, head_by_position_sweep,
               attention_score, attention_pattern_row, head_z, previous_token_score, duplicate_token_score,
               induction_score, attribution_patching_resid, attribution_patching_heads,
               attribution_patching_head_by_position)
}


def public_check(fn: Callable, model=None) -> Result:
    name = fn.__name__
    if name not in PUBLIC_CHECKS:
        return Result(name, False, 0.0, f"This release has no public check for {name}. {FULL_CHECK_NOTE}")
    models = [GradingModel("yours", model, "your model")] if model is not None else grading_models()

    def run(_ambient: bool = False, **args):
        try:  # _ambient: no autograd context around the call (chapter 5's "as in the notebook")
            return call_learner(fn, args, None if _ambient else name in GRAD_CHECKS)
        finally:
            for gm in models:
                gm.model.reset_hooks()

    held, problems = 0, []
    try:
        for gm in models:
            for label, problem in PUBLIC_CHECKS[name](run, gm):
                if problem is None:
                    held += 1
                else:
                    problems.append(f"{gm.label}, {label}: {problem}")
    except NotImplementedYet:
        return Result(name, False, 0.0, f"not implemented yet: replace `raise NotImplementedError` in `{name}` "
                                        "with your code, run that cell, then run this check again.")
    except LearnerError as err:
        problems.append(str(err))
    total = held + len(problems)
    lines = [f"Public checks (this release has no reference answers): {held}/{total} hold on "
             f"{', '.join(gm.label for gm in models)}."]
    if problems:
        lines.append(f"First problem: {problems[0]}")
    lines.append(FULL_CHECK_NOTE)
    return Result(name, not problems, held / total if total else 0.0, "\n".join(lines))
