"""Chapter 1's known mistakes: patching the residual stream.

The sweep's mistakes are computed exactly on the fast sweeps (the graders' reference
numbers too), so naming one does not pay for slow sweeps.
"""

from __future__ import annotations

import torch

from circuitlab.plotting import residual_labels
from circuitlab_graders.declare import Mistake
from circuitlab.sweeps import one_pair as fast

# ---------------------------------------------------------------- patch_residual_stream


def patched_all(activations, hook, pos, corrupt_cache):
    activations[:] = corrupt_cache[hook.name]
    return activations


def patched_next(activations, hook, pos, corrupt_cache):
    activations[:, pos + 1] = corrupt_cache[hook.name][:, pos + 1]
    return activations


def patched_previous(activations, hook, pos, corrupt_cache):
    activations[:, pos - 1] = corrupt_cache[hook.name][:, pos - 1]
    return activations


def fixed_hook(activations, hook, pos, corrupt_cache):
    activations[:, pos] = corrupt_cache["blocks.0.hook_resid_pre"][:, pos]
    return activations


def unchanged(activations, hook, pos, corrupt_cache):
    return activations  # the learner copied clean into corrupt, leaving the run untouched


# ---------------------------------------------------------------- residual_patching_sweep


def swapped_runs(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    return fast.residual_patching_sweep(model, corrupt_prompt, clean_prompt, clean_answer, corrupt_answer)


def second_to_last_logits(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    # Logits at position -2 are those of the prompt without its last token, and a
    # patch at the last position cannot reach them.
    clean, corrupt = model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt)
    if clean.shape != corrupt.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    run, corrupt_cache = fast.prepare(model, clean[:, :-1], corrupt[:, :-1], clean_answer, corrupt_answer)
    rows = fast.residual_rows(run, corrupt_cache)
    return torch.cat([rows, run.baseline.expand(len(rows), 1)], dim=1)


def resid_pre_rows(model, **args):
    # Row i + 1 patched blocks.i.hook_resid_pre, which is row i of the right sweep.
    rows = fast.residual_patching_sweep(model, **args)
    return rows[[0] + list(range(model.cfg.n_layers))]


def whole_stream(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    run, corrupt = fast.prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    names = residual_labels(model.cfg.n_layers)
    rows = [run.patch_resid(row, corrupt[name][0][None]) for row, name in enumerate(names)]
    return torch.cat(rows)[:, None].expand(len(names), run.n_pos).clone()


MISTAKES = {
    "patch_residual_stream": (
        Mistake("patched every position", "Overwrite only activations[:, pos, :].", patched_all),
        Mistake("patched position pos + 1", "Index the position axis (axis 1) with pos itself.", patched_next),
        Mistake("patched position pos - 1", "Index the position axis (axis 1) with pos itself.", patched_previous),
        Mistake("read the corrupt cache at a fixed hook point",
                "Read corrupt_cache[hook.name]: the same hook point the activations come from.", fixed_hook),
        Mistake("left the activations unchanged (the patch went the wrong way or nowhere)",
                "Write the corrupt value into `activations` and return them.", unchanged),
    ),
    "residual_patching_sweep": (
        Mistake("subtracted the wrong way round", "Each entry is logit(clean_answer) − logit(corrupt_answer).",
                lambda **args: -fast.residual_patching_sweep(**args)),
        Mistake("patched the clean run into the corrupt run",
                "Cache the corrupt prompt and run the clean prompt with its activations patched in.", swapped_runs),
        Mistake("read the logits at the second-to-last position",
                "The answer is predicted at the final position: logits[0, -1].", second_to_last_logits),
        Mistake("used hook_resid_pre for every row",
                "Row 0 is blocks.0.hook_resid_pre; row i + 1 is blocks.i.hook_resid_post.", resid_pre_rows),
        Mistake("patched the whole residual stream instead of one position",
                "Overwrite only activations[:, pos, :].", whole_stream),
        Mistake("returned the result as [position, layer]",
                "Rows are layers (n_layers + 1 of them), columns are positions.",
                lambda **args: fast.residual_patching_sweep(**args).T),
    ),
}
