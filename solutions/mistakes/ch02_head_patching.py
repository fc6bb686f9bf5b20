"""Chapter 2's known mistakes: patching attention heads.

The sweeps' mistakes are the exact fast sweep turned one way (a transpose, a sign) or
`sweep_variant`, one batched head sweep with a knob for what each run patches.
"""

from __future__ import annotations

from typing import Callable

import torch

from circuitlab.prompts import PatchingCase
from circuitlab_graders.declare import Mistake
from circuitlab.sweeps import one_pair as fast

# ---------------------------------------------------------------- patch_head_output

def positions(pos):
    return slice(None) if pos is None else pos


def all_heads(activations, hook, head, corrupt_cache, pos=None):
    at = positions(pos)
    activations[:, at] = corrupt_cache[hook.name][:, at]
    return activations


def next_head(activations, hook, head, corrupt_cache, pos=None):
    at, wrong = positions(pos), (head + 1) % activations.shape[2]
    activations[:, at, wrong] = corrupt_cache[hook.name][:, at, wrong]
    return activations


def swapped_axes(activations, hook, head, corrupt_cache, pos=None):
    at = positions(pos)
    activations[:, head, at] = corrupt_cache[hook.name][:, head, at]
    return activations


def ignored_pos(activations, hook, head, corrupt_cache, pos=None):
    activations[:, :, head] = corrupt_cache[hook.name][:, :, head]
    return activations


def unchanged(activations, hook, head, corrupt_cache, pos=None):
    return activations


# ---------------------------------------------------------------- the sweeps

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


def variant(**knobs) -> Callable:
    return lambda **args: sweep_variant(**args, **knobs)


def minus_clean(**args) -> torch.Tensor:
    case = PatchingCase("", *(args[k] for k in ("clean_prompt", "corrupt_prompt", "clean_answer", "corrupt_answer")))
    return head_sweep(**args) - case.logit_diff(args["model"], case.clean_prompt)


def by_position(fn: Callable[[torch.Tensor, int, int, int], torch.Tensor]) -> Callable:
    """A by-position mistake computed from the shared reference reshaped to [layer, head, pos]."""

    def wrong(**args):
        model = args["model"]
        full = head_pos_sweep(**args)
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        return fn(full.reshape(n_layers, n_heads, -1), n_layers, n_heads, full.shape[1])

    return wrong


def spread_over_positions(**args) -> torch.Tensor:
    per_head = sweep_variant(**args, copies="head")  # [layer, head]
    n_pos = args["model"].to_tokens(args["clean_prompt"]).shape[1]
    return per_head[:, :, None].expand(-1, -1, n_pos).reshape(-1, n_pos)


def spread_over_heads(**args) -> torch.Tensor:
    per_pos = sweep_variant(**args, copies="position")  # [layer, pos]
    n_heads = args["model"].cfg.n_heads
    return per_pos[:, None, :].expand(-1, n_heads, -1).reshape(-1, per_pos.shape[1])


MISTAKES = {
    "patch_head_output": (
        Mistake("patched every head", "Index the head axis (axis 2) with `head`: activations[:, pos, head].",
                all_heads),
        Mistake("patched head + 1 instead of head", "Heads count from 0: use `head` itself on axis 2.",
                next_head),
        Mistake(
            "swapped the position and head axes",
            "hook_z and hook_result are [batch, position, head, ...]: position is axis 1, head is axis 2.",
            swapped_axes,
        ),
        Mistake("patched every position even though `pos` was given",
                "Patch only activations[:, pos, head] when pos is not None.", ignored_pos),
        Mistake("left the activations unchanged",
                "Write corrupt_cache[hook.name]'s values into `activations` and return them.", unchanged),
    ),
    "head_patching_sweep": (
        Mistake("subtracted the wrong way round", "Each entry is logit(clean_answer) − logit(corrupt_answer).",
                lambda **args: -head_sweep(**args)),
        Mistake("returned the result as [head, layer]", "Rows are layers, columns are heads: [n_layers, n_heads].",
                lambda **args: head_sweep(**args).T),
        Mistake("patched the clean run into the corrupt run",
                "Cache the corrupt prompt and run the clean prompt with one head patched from it.",
                variant(copies="head", swap_runs=True)),
        Mistake("patched the head at the final position only",
                "In this sweep a head is patched at every position (pos=None).", variant(copies="head_final")),
        Mistake("patched every head of the layer at once",
                "Patch one head per run: activations[:, :, head].",
                lambda **args: variant(copies="layer")(**args).expand(-1, args["model"].cfg.n_heads)),
        Mistake("subtracted the clean run's logit difference",
                "Return the patched logit difference itself; the plot subtracts the baseline separately.",
                minus_clean),
    ),
    "head_by_position_sweep": (
        Mistake("ordered the rows head * n_layers + layer",
                "Row layer * n_heads + head: all heads of layer 0 first, then layer 1, ...",
                by_position(lambda r, L, H, P: r.transpose(0, 1).reshape(L * H, P))),
        Mistake("returned the result as [position, layer·head]",
                "Rows are layer·head (n_layers * n_heads of them), columns are positions.",
                by_position(lambda r, L, H, P: r.reshape(L * H, P).T)),
        Mistake("returned [n_layers, n_heads, n_pos] without flattening layer and head",
                "Reshape to [n_layers * n_heads, n_pos] (row = layer * n_heads + head).",
                by_position(lambda r, L, H, P: r)),
        Mistake("patched head + 1 instead of head",
                "Heads count from 0: use `head` itself on axis 2 of hook_z.",
                by_position(lambda r, L, H, P: r.roll(-1, dims=1).reshape(L * H, P))),
        Mistake("patched the head at every position instead of one",
                "Pass pos to the hook: overwrite activations[:, pos, head] only.", spread_over_positions),
        Mistake("patched every head at that position",
                "Overwrite only one head: activations[:, pos, head].", spread_over_heads),
        Mistake("subtracted the wrong way round", "Each entry is logit(clean_answer) − logit(corrupt_answer).",
                lambda **args: -head_pos_sweep(**args)),
    ),
}
