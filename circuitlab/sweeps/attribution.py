"""Attribution patching: first-order estimates of the exact sweeps, from one corrupt
forward pass and one clean forward and backward pass.

The patch that takes activation `a` from the corrupt run changes the metric by about

    (a_corrupt - a_clean) · ∂metric/∂a     (the gradient taken on the clean run)

summed over the activation's last axis (d_model or d_head). The metric is the logit
difference at the final position, as in the exact sweeps, and every estimate returns
the clean logit difference plus that first-order change, so it lies beside the exact
sweep cell for cell. For the reverse direction (clean activations into the corrupt run)
pass the corrupt prompt as `clean_prompt` and the clean one as `corrupt_prompt`, with the
same answers: the estimate is then taken around the corrupt run.

These are chapter 5's reference answers (`circuitlab_solutions.ch05_attribution_patching` re-exports
them; the nbgrader course inlines their bodies into the solution notebook, so each is
self-contained) and the patching explorer's estimates. Answer code: a learner function
that calls them scores zero.

The gradients are taken with `torch.autograd.grad` on activations saved by forward
hooks: nothing accumulates in the parameters' `.grad`, grad mode is only switched on
inside the function, and `run_with_hooks` removes the hooks even when a run fails.
"""

from __future__ import annotations

import torch
from torch import Tensor


def attribution_patching_resid(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    """The first-order estimate of `residual_patching_sweep`: [n_layers + 1, n_pos].

    Row 0 is `blocks.0.hook_resid_pre`, row i + 1 `blocks.i.hook_resid_post`; entry
    [row, pos] is the clean logit difference plus (corrupt − clean residual stream at
    that hook and position) · (its gradient on the clean run), summed over d_model.
    """
    clean_tokens = model.to_tokens(clean_prompt)
    corrupt_tokens = model.to_tokens(corrupt_prompt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt_tokens, names_filter=lambda name: name in names)
    saved: dict[str, Tensor] = {}

    def save(activations: Tensor, hook, name: str) -> Tensor:
        if not activations.requires_grad:  # frozen weights: make it a leaf autograd can differentiate
            activations = activations.detach().requires_grad_(True)
        saved[name] = activations
        return activations

    with torch.enable_grad():
        hooks = [(name, lambda act, hook, name=name: save(act, hook, name)) for name in names]
        logits = model.run_with_hooks(clean_tokens, fwd_hooks=hooks)
        clean_diff = logits[0, -1, good] - logits[0, -1, bad]
        grads = torch.autograd.grad(clean_diff, [saved[name] for name in names])
    rows = [((corrupt_cache[name] - saved[name].detach()) * grad)[0].sum(-1) for name, grad in zip(names, grads)]
    return clean_diff.detach() + torch.stack(rows)


def attribution_patching_heads(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    """The first-order estimate of `head_patching_sweep`: [n_layers, n_heads].

    Entry [layer, head] is the clean logit difference plus (corrupt − clean
    `blocks.layer.attn.hook_z` of that head) · (its gradient on the clean run),
    summed over positions and d_head.
    """
    clean_tokens = model.to_tokens(clean_prompt)
    corrupt_tokens = model.to_tokens(corrupt_prompt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt_tokens, names_filter=lambda name: name in names)
    saved: dict[str, Tensor] = {}

    def save(activations: Tensor, hook, name: str) -> Tensor:
        if not activations.requires_grad:  # frozen weights: make it a leaf autograd can differentiate
            activations = activations.detach().requires_grad_(True)
        saved[name] = activations
        return activations

    with torch.enable_grad():
        hooks = [(name, lambda act, hook, name=name: save(act, hook, name)) for name in names]
        logits = model.run_with_hooks(clean_tokens, fwd_hooks=hooks)
        clean_diff = logits[0, -1, good] - logits[0, -1, bad]
        grads = torch.autograd.grad(clean_diff, [saved[name] for name in names])
    # z is [batch, pos, head, d_head]: sum over positions and d_head, one number per head.
    rows = [((corrupt_cache[name] - saved[name].detach()) * grad)[0].sum((0, 2)) for name, grad in zip(names, grads)]
    return clean_diff.detach() + torch.stack(rows)


def attribution_patching_head_by_position(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    """The first-order estimate of `head_by_position_sweep`: [n_layers * n_heads, n_pos].

    Row layer * n_heads + head, column pos: the clean logit difference plus (corrupt −
    clean `hook_z` of that head at that position) · (its gradient on the clean run),
    summed over d_head.
    """
    clean_tokens = model.to_tokens(clean_prompt)
    corrupt_tokens = model.to_tokens(corrupt_prompt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt_tokens, names_filter=lambda name: name in names)
    saved: dict[str, Tensor] = {}

    def save(activations: Tensor, hook, name: str) -> Tensor:
        if not activations.requires_grad:  # frozen weights: make it a leaf autograd can differentiate
            activations = activations.detach().requires_grad_(True)
        saved[name] = activations
        return activations

    with torch.enable_grad():
        hooks = [(name, lambda act, hook, name=name: save(act, hook, name)) for name in names]
        logits = model.run_with_hooks(clean_tokens, fwd_hooks=hooks)
        clean_diff = logits[0, -1, good] - logits[0, -1, bad]
        grads = torch.autograd.grad(clean_diff, [saved[name] for name in names])
    # [batch, pos, head, d_head] -> sum over d_head -> [pos, head] -> [head, pos]: one row per head.
    rows = [((corrupt_cache[name] - saved[name].detach()) * grad)[0].sum(-1).T for name, grad in zip(names, grads)]
    return clean_diff.detach() + torch.cat(rows)
