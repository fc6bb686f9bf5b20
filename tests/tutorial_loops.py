"""The straightforward sweeps a learner writes from the tutorial: one `run_with_hooks` per
cell, prompts passed as strings, a hook built with functools.partial. Honest and right on
every cell, and the slowest correct answer the chapters allow, so the time limits are
measured against them (tests/test_grader_trust.py)."""

from __future__ import annotations

from functools import partial

import torch


def _logit_diff(logits, model, clean_answer, corrupt_answer):
    final = logits[0, -1]
    return final[model.to_single_token(clean_answer)] - final[model.to_single_token(corrupt_answer)]


def _copy_resid(activations, hook, pos, cache):
    activations[:, pos] = cache[hook.name][:, pos]
    return activations


def _copy_head(activations, hook, head, pos, cache):
    if pos is None:
        activations[:, :, head] = cache[hook.name][:, :, head]
    else:
        activations[:, pos, head] = cache[hook.name][:, pos, head]
    return activations


def residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    _, corrupt_cache = model.run_with_cache(corrupt_prompt)
    n_pos = model.to_tokens(clean_prompt).shape[1]
    result = torch.zeros(model.cfg.n_layers + 1, n_pos)
    for layer in range(model.cfg.n_layers + 1):
        name = f"blocks.{layer}.hook_resid_pre" if layer < model.cfg.n_layers \
            else f"blocks.{layer - 1}.hook_resid_post"
        for pos in range(n_pos):
            logits = model.run_with_hooks(clean_prompt,
                                          fwd_hooks=[(name, partial(_copy_resid, pos=pos, cache=corrupt_cache))])
            result[layer, pos] = _logit_diff(logits, model, clean_answer, corrupt_answer)
    return result


def head_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    _, corrupt_cache = model.run_with_cache(corrupt_prompt)
    result = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hook = partial(_copy_head, head=head, pos=None, cache=corrupt_cache)
            logits = model.run_with_hooks(clean_prompt, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
            result[layer, head] = _logit_diff(logits, model, clean_answer, corrupt_answer)
    return result


def head_by_position_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    _, corrupt_cache = model.run_with_cache(corrupt_prompt)
    n_pos = model.to_tokens(clean_prompt).shape[1]
    n_heads = model.cfg.n_heads
    result = torch.zeros(model.cfg.n_layers * n_heads, n_pos)
    for layer in range(model.cfg.n_layers):
        for head in range(n_heads):
            for pos in range(n_pos):
                hook = partial(_copy_head, head=head, pos=pos, cache=corrupt_cache)
                logits = model.run_with_hooks(clean_prompt, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
                result[layer * n_heads + head, pos] = _logit_diff(logits, model, clean_answer, corrupt_answer)
    return result
