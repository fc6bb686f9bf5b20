"""A library of what learners plausibly get wrong in chapters 4 and 5, written the way a
learner would (self-contained: nothing read from solutions/ or the known mistakes), and
how the grader answers them: every one is rejected, and at least 9 in 10 are named
("It looks like you ...") with a fix, not only "returned 0.105, expected 0.110".

Unlike tests/test_exercises.py, which grades the declared mistakes themselves, this
measures the declared library against code it did not come from."""

from __future__ import annotations

import torch

import circuitlab_graders as graders

# ---------------------------------------------------------------- learner helpers


def _diff(model, logits, clean_answer, corrupt_answer):
    return (logits[0, -1, model.to_single_token(clean_answer)]
            - logits[0, -1, model.to_single_token(corrupt_answer)]).item()


def _fro(m):
    return m.pow(2).sum((-2, -1)).sqrt()


def _dla(model, cache, clean_answer, corrupt_answer, *, scale=True, position=-1, sign=1, answer_only=False):
    direction = model.W_U[:, model.to_single_token(clean_answer)]
    if not answer_only:
        direction = direction - model.W_U[:, model.to_single_token(corrupt_answer)]
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][0]
        z = z.sum(0) if position is None else z[position]
        heads = torch.einsum("hd,hdm->hm", z, model.W_O[layer])
        if scale:
            heads = heads / cache["ln_final.hook_scale"][0, -1]
        out.append(sign * heads @ direction)
    return torch.stack(out)


def _path(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, sender, receiver, receiver_input, *,
          last_only=False, sign=1, all_heads=False, corrupt_stream=False, bias=True, clean_scale=False):
    (sl, sh), (rl, rh) = sender, receiver
    _, c = model.run_with_cache(clean_prompt)
    _, x = model.run_with_cache(corrupt_prompt)
    delta = sign * (x[f"blocks.{sl}.attn.hook_z"][0, :, sh] - c[f"blocks.{sl}.attn.hook_z"][0, :, sh]) @ model.W_O[sl, sh]
    stream = x[f"blocks.{rl}.hook_resid_pre"][0] if corrupt_stream else c[f"blocks.{rl}.hook_resid_pre"][0] + delta
    stream = stream - stream.mean(-1, keepdim=True)
    if clean_scale:
        stream = stream / c[f"blocks.{rl}.ln1.hook_scale"][0]
    else:
        stream = stream / (stream.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    W = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[receiver_input][rl]
    b = {"q": model.b_Q, "k": model.b_K, "v": model.b_V}[receiver_input][rl]
    new = torch.einsum("pm,hmd->phd", stream, W) + (b if bias else 0)
    heads = slice(None) if all_heads else rh

    def hook(act, hook):
        if last_only:
            act[0, -1, heads] = new[-1, heads]
        else:
            act[0, :, heads] = new[:, heads]
        return act

    logits = model.run_with_hooks(clean_prompt, fwd_hooks=[(f"blocks.{rl}.attn.hook_{receiver_input}", hook)])
    return _diff(model, logits, clean_answer, corrupt_answer)


def _embedding(model, prompt, clean_answer, corrupt_answer, embedding_hook="hook_pos_embed", *, how="mean"):
    _, cache = model.run_with_cache(prompt)
    emb = cache[embedding_hook]
    new_emb = {"mean": lambda: emb.mean(1, keepdim=True), "no_bos": lambda: emb[:, 1:].mean(1, keepdim=True),
               "dim0": lambda: emb.mean(0, keepdim=True), "zeros": lambda: torch.zeros_like(emb)}[how]()
    stream = cache["blocks.0.hook_resid_pre"] - emb + new_emb
    stream = stream - stream.mean(-1, keepdim=True)
    stream = stream / (stream.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    v = torch.einsum("bpm,hmd->bphd", stream, model.W_V[0]) + model.b_V[0]
    logits = model.run_with_hooks(prompt, fwd_hooks=[("blocks.0.attn.hook_v", lambda act, hook: v)])
    return _diff(model, logits, clean_answer, corrupt_answer)


def _ablate(model, prompts, answers, wrong_answers, heads, method="mean", *, how=None):
    tokens = model.to_tokens(list(prompts))
    _, cache = model.run_with_cache(tokens)
    layers = sorted({layer for layer, _ in heads})

    def hook(act, hook):
        layer = int(hook.name.split(".")[1])
        for l, h in heads:
            if l != layer:
                continue
            z = cache[hook.name][:, :, h]
            if method == "mean":
                act[:, :, h] = {None: lambda: z.mean(0, keepdim=True), "zeros": lambda: torch.zeros_like(z),
                                "both": lambda: z.mean((0, 1), keepdim=True)}.get(how, lambda: z.mean(0, keepdim=True))()
            elif how == "previous":
                act[:, :, h] = torch.cat([z[-1:], z[:-1]])
            elif how == "no_wrap":
                act[:-1, :, h] = z[1:]
                act[-1, :, h] = z[-1]
            else:
                act[:, :, h] = torch.cat([z[1:], z[:1]])
        return act

    logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{l}.attn.hook_z", hook) for l in layers])
    good = torch.tensor([model.to_single_token(a) for a in answers])
    bad = torch.tensor([model.to_single_token(a) for a in wrong_answers])
    rows = torch.arange(len(prompts))
    return (logits[rows, -1, good.to(logits.device)] - logits[rows, -1, bad.to(logits.device)]).mean().item()


def _attribution(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, *, kind, change="corrupt-clean",
                 grad_run="clean", metric="diff", baseline=True, heads_last_only=False, enable_grad=True):
    if kind == "resid":
        names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    else:
        names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)

    def run(prompt):
        acts = {}

        def keep(act, hook, name):
            if not act.requires_grad:  # only the first hook makes a leaf: later ones keep the graph
                act = act.detach().requires_grad_(True)
            acts[name] = act
            return act

        logits = model.run_with_hooks(prompt, fwd_hooks=[(n, lambda a, hook, n=n: keep(a, hook, n)) for n in names])
        diff = logits[0, -1, good] - logits[0, -1, bad]
        target = {"diff": diff, "answer": logits[0, -1, good]}[metric]
        grads = torch.autograd.grad(target, [acts[n] for n in names])
        return diff.item(), [acts[n].detach()[0] for n in names], [g[0] for g in grads]

    with (torch.enable_grad() if enable_grad else torch.no_grad()):
        clean_diff, clean_acts, clean_grads = run(clean_prompt)
        _, corrupt_acts, corrupt_grads = run(corrupt_prompt)
    grads = clean_grads if grad_run == "clean" else corrupt_grads
    deltas = {"corrupt-clean": [x - c for c, x in zip(clean_acts, corrupt_acts)],
              "clean-corrupt": [c - x for c, x in zip(clean_acts, corrupt_acts)],
              "corrupt": corrupt_acts}[change]
    prods = [d * g for d, g in zip(deltas, grads)]
    if kind == "resid":
        out = torch.stack([p.sum(-1) for p in prods])
    elif kind == "heads":
        out = torch.stack([(p[-1] if heads_last_only else p.sum(0)).sum(-1) for p in prods])
    else:
        out = torch.cat([p.sum(-1).T for p in prods])
        if kind == "head_major":
            n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
            out = out.reshape(n_l, n_h, -1).transpose(0, 1).reshape(n_l * n_h, -1)
    return out + clean_diff if baseline else out


def _learner(fn, **knobs):
    def wrong(*args, **kwargs):
        return fn(*args, **kwargs, **knobs)

    return wrong


def _attr(kind, **knobs):
    def wrong(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        return _attribution(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, kind=kind, **knobs)

    return wrong


# ---------------------------------------------------------------- the library

LIBRARY = [
    ("composition_score", "no normalisation", lambda left, right: _fro(left @ right)),
    ("composition_score", "right @ left", lambda left, right: _fro(right @ left) / (_fro(left) * _fro(right))),
    ("k_composition_scores", "QK untransposed",
     lambda sender_ov, receiver_qk: _fro(sender_ov[:, None] @ receiver_qk[None])
     / (_fro(sender_ov)[:, None] * _fro(receiver_qk)[None])),
    ("k_composition_scores", "[receiver, sender]",
     lambda sender_ov, receiver_qk: (_fro(sender_ov[:, None] @ receiver_qk.mT[None])
                                     / (_fro(sender_ov)[:, None] * _fro(receiver_qk)[None])).T),
    ("k_composition_scores", "`.T` on the stack (the chapter's QK_r.T, written for one matrix)",
     lambda sender_ov, receiver_qk: _fro(sender_ov[:, None] @ receiver_qk.T[None])
     / (_fro(sender_ov)[:, None] * _fro(receiver_qk.T)[None])),
    ("q_composition_scores", "QK transposed",
     lambda sender_ov, receiver_qk: _fro(sender_ov[:, None] @ receiver_qk.mT[None])
     / (_fro(sender_ov)[:, None] * _fro(receiver_qk)[None])),
    ("v_composition_scores", "receiver @ sender",
     lambda sender_ov, receiver_ov: _fro(receiver_ov[None] @ sender_ov[:, None])
     / (_fro(sender_ov)[:, None] * _fro(receiver_ov)[None])),
    ("direct_logit_attribution", "forgot the LayerNorm scale", _learner(_dla, scale=False)),
    ("direct_logit_attribution", "every position", _learner(_dla, position=None)),
    ("direct_logit_attribution", "sign", _learner(_dla, sign=-1)),
    ("direct_logit_attribution", "answer only", _learner(_dla, answer_only=True)),
    ("path_patch_to_head_input", "final position only", _learner(_path, last_only=True)),
    ("path_patch_to_head_input", "clean - corrupt", _learner(_path, sign=-1)),
    ("path_patch_to_head_input", "every head", _learner(_path, all_heads=True)),
    ("path_patch_to_head_input", "corrupt stream", _learner(_path, corrupt_stream=True)),
    ("path_patch_to_head_input", "no bias", _learner(_path, bias=False)),
    ("path_patch_to_head_input", "clean LayerNorm scale", _learner(_path, clean_scale=True)),
    ("positional_embedding_patch", "BOS left out", _learner(_embedding, how="no_bos")),
    ("positional_embedding_patch", "mean over dim 0", _learner(_embedding, how="dim0")),
    ("positional_embedding_patch", "zeros", _learner(_embedding, how="zeros")),
    ("ablate_heads", "zeros", _learner(_ablate, how="zeros")),
    ("ablate_heads", "mean over positions too", _learner(_ablate, how="both")),
    ("ablate_heads", "resample from i - 1", _learner(_ablate, how="previous")),
    ("ablate_heads", "resample without wrap", _learner(_ablate, how="no_wrap")),
    ("attribution_patching_resid", "clean - corrupt", _attr("resid", change="clean-corrupt")),
    ("attribution_patching_resid", "corrupt activation, no difference", _attr("resid", change="corrupt")),
    ("attribution_patching_resid", "gradient of the answer logit", _attr("resid", metric="answer")),
    ("attribution_patching_resid", "no baseline", _attr("resid", baseline=False)),
    ("attribution_patching_resid", "corrupt run's gradient", _attr("resid", grad_run="corrupt")),
    ("attribution_patching_heads", "final position only", _attr("heads", heads_last_only=True)),
    ("attribution_patching_heads", "corrupt run's gradient", _attr("heads", grad_run="corrupt")),
    ("attribution_patching_heads", "clean - corrupt", _attr("heads", change="clean-corrupt")),
    ("attribution_patching_heads", "corrupt activation, no difference", _attr("heads", change="corrupt")),
    ("attribution_patching_head_by_position", "rows head-major", _attr("head_major")),
    ("attribution_patching_head_by_position", "no baseline", _attr("head_by_position", baseline=False)),
    ("attribution_patching_head_by_position", "gradient of the answer logit",
     _attr("head_by_position", metric="answer")),
]

NAMED = "It looks like you "


def test_the_learner_helpers_are_right_with_no_mistake():
    """The library's helpers, with no knob turned, pass: each entry's one change is the mistake."""
    for exercise, fn in [("attribution_patching_heads", _attr("heads")), ("path_patch_to_head_input", _path)]:
        result = graders.grade(exercise, fn, mode="full")
        assert result.passed, result.feedback


def test_the_library_is_rejected_and_at_least_nine_in_ten_named():
    unnamed, accepted = [], []
    for exercise, label, fn in LIBRARY:
        result = graders.grade(exercise, fn, mode="full")
        if result.passed or result.score >= 1.0:
            accepted.append(f"{exercise}: {label}")
        if NAMED not in result.feedback:
            unnamed.append(f"{exercise}: {label}: {result.feedback[:300]}")
    assert not accepted, accepted
    named_share = 1 - len(unnamed) / len(LIBRARY)
    print(f"named {len(LIBRARY) - len(unnamed)} of {len(LIBRARY)} ({named_share:.0%})")
    assert named_share >= 0.9, "\n".join(unnamed)
