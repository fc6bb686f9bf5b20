"""Chapter 6 reference solutions: patching a dataset, the way researchers do.

A dataset is a batch of aligned prompt pairs: row i of `clean` and row i of `corrupt`
have the same length and differ only in the filled-in words, and `answers[i]` holds
prompt i's two answer tokens (the clean one, counted +, and the corrupt one, counted -).
Every sweep here reports the normalised metric (1 = the clean run, 0 = the corrupt run)
of each prompt, averaged over the dataset.

Directions: "noising" patches the corrupt run's activations into the clean run (the
tutorial's direction; a resampling ablation); "denoising" patches the clean run's into
the corrupt run (causal tracing). The exact residual and head-output sweeps come from
the course's sweeps engine; the head-input sweep patches with batched hooks.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab.sweeps import head_sweep, residual_sweep

DIRECTIONS = ("noising", "denoising")
COMPONENTS = ("q", "k", "v", "pattern")
# Why aligned_prompt_pairs drops a pair, checked in this order.
NOT_ONE_TOKEN = "answer not a single token"
UNEQUAL = "clean and corrupt lengths differ"
OTHER_LENGTH = "not the dataset's length"


# ---------------------------------------------------------------- building the dataset


def aligned_prompt_pairs(model, templates: Sequence[str], fillers: Sequence[dict]) -> dict[str, Any]:
    """The clean and corrupt token batches of every template filled with every filler.

    `templates` are format strings ("Her friend was {first} {last}. At lunch time {again}");
    each filler is a dict {"clean": {field: text}, "corrupt": {field: text},
    "answers": [clean_answer, corrupt_answer]}. Pairs are made template by template, each
    with every filler in order. A pair is kept only when both answers are single tokens,
    its clean and corrupt prompts have the same number of tokens, and that number is the
    dataset's length (the length of the first pair that passed the two other tests), so
    that position p means the same thing in every prompt.

    Returns {"clean": [n, pos] token ids, "corrupt": [n, pos], "answers": [n, 2] token ids,
    "kept": [[template, filler], ...], "dropped": [[template, filler, reason], ...]} with
    reason one of NOT_ONE_TOKEN, UNEQUAL, OTHER_LENGTH.
    """
    clean, corrupt, answers, kept, dropped = [], [], [], [], []
    length = None
    for t, template in enumerate(templates):
        for f, filler in enumerate(fillers):
            try:
                pair = [model.to_single_token(answer) for answer in filler["answers"]]
            except (AssertionError, ValueError, KeyError):
                dropped.append([t, f, NOT_ONE_TOKEN])
                continue
            clean_tokens = model.to_tokens(template.format(**filler["clean"]))[0]
            corrupt_tokens = model.to_tokens(template.format(**filler["corrupt"]))[0]
            if len(clean_tokens) != len(corrupt_tokens):
                dropped.append([t, f, UNEQUAL])
                continue
            length = len(clean_tokens) if length is None else length
            if len(clean_tokens) != length:
                dropped.append([t, f, OTHER_LENGTH])
                continue
            clean.append(clean_tokens)
            corrupt.append(corrupt_tokens)
            answers.append(pair)
            kept.append([t, f])
    if not kept:
        raise ValueError("no pair is aligned: every one was dropped (see the reasons in a loop over the pairs)")
    device = clean[0].device
    return {"clean": torch.stack(clean), "corrupt": torch.stack(corrupt),
            "answers": torch.tensor(answers, device=device), "kept": kept, "dropped": dropped}


def abc_corruption(model, filling: dict[str, str], names: dict[str, list[str]]) -> dict[str, str]:
    """A corrupt filling in which every field holds a different name, none of the clean ones.

    Fields are taken in the filling's order; field k gets the first candidate in
    `names[k]` that is not a value of the clean filling, not given to an earlier field,
    and has as many tokens (with a leading space, as a name mid-sentence) as the value it
    replaces, so the corrupt prompt stays aligned with the clean one. A name repeated in
    the clean filling ("Alex ... Alex") gets two different names: the repetition is gone.
    """
    taken = set(filling.values())
    out = {}
    for field, value in filling.items():
        width = _n_tokens(model, value)
        choice = next((name for name in names[field] if name not in taken and _n_tokens(model, name) == width), None)
        if choice is None:
            raise ValueError(f"no candidate left for {field!r}: give more names of {width} token(s)")
        out[field] = choice
        taken.add(choice)
    return out


def _n_tokens(model, text: str) -> int:
    return model.to_tokens(" " + text, prepend_bos=False).shape[1]


# ---------------------------------------------------------------- metrics


def batch_logit_diff(logits: Tensor, answers: Tensor, per_prompt: bool = False) -> Tensor:
    """logit(answers[i, 0]) - logit(answers[i, 1]) at prompt i's final position.

    `logits` is [batch, pos, d_vocab], `answers` [batch, 2] token ids: each prompt has its
    own answer pair. Returns the [batch] differences with `per_prompt`, else their mean
    (a 0-dim tensor).
    """
    final = logits[:, -1]
    diffs = final.gather(1, answers.to(final.device)).float()
    diffs = diffs[:, 0] - diffs[:, 1]
    return diffs if per_prompt else diffs.mean()


def normalised_patching_metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> Tensor:
    """(patched - corrupt) / (clean - corrupt): 1 where a patched run's logit difference
    equals the clean run's, 0 where it equals the corrupt run's. Element by element
    (broadcasting), so it normalises each prompt with its own baselines.

    Above 1: the patch made the model prefer the clean answer more than the clean run
    does. Below 0: more than the corrupt run prefers the corrupt answer.
    """
    return (patched - corrupt) / (clean - corrupt)


# ---------------------------------------------------------------- sweeps


def _runs(clean: Tensor, corrupt: Tensor, direction: str) -> tuple[Tensor, Tensor]:
    """(base, source): the run that is patched and the run the patches come from."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} must have one shape: "
                         "build them with aligned_prompt_pairs")
    return (clean, corrupt) if direction == "noising" else (corrupt, clean)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the final residual stream is known."""


@torch.no_grad()
def answer_logit_diffs(model, tokens: Tensor, answers: Tensor, fwd_hooks=()) -> Tensor:
    """[batch]: `batch_logit_diff(..., per_prompt=True)` of a run with `fwd_hooks`, without
    computing the whole unembedding (the two answer columns at the final position only;
    the full one is most of a small model's forward pass). Checked against the model's
    own logits on the first prompt."""
    final: dict[str, Tensor] = {}

    def stop(normalized: Tensor, hook: HookPoint) -> None:
        final["x"] = normalized[:, -1]
        raise _Stop

    try:
        model.run_with_hooks(tokens, fwd_hooks=[*fwd_hooks, ("ln_final.hook_normalized", stop)])
    except _Stop:
        pass
    answers = answers.to(final["x"].device)
    direction = model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]  # [d_model, batch]
    diffs = (final["x"] * direction.T).sum(-1) + model.b_U[answers[:, 0]] - model.b_U[answers[:, 1]]
    if not fwd_hooks:
        full = batch_logit_diff(model(tokens[:1]), answers[:1], per_prompt=True)
        if not torch.allclose(diffs[:1], full, atol=1e-3, rtol=1e-3):
            raise NotImplementedError(f"answer_logit_diffs does not reproduce {model.cfg.model_name}'s logits")
    return diffs


def _baselines(model, clean: Tensor, corrupt: Tensor, answers: Tensor) -> tuple[Tensor, Tensor]:
    return answer_logit_diffs(model, clean, answers), answer_logit_diffs(model, corrupt, answers)


def residual_effects(model, clean: Tensor, corrupt: Tensor, answers: Tensor, direction: str = "noising") -> Tensor:
    """[batch, n_layers, pos]: each prompt's normalised metric with blocks.L.hook_resid_pre
    at position p patched in `direction` (see `dataset_patching_sweep`)."""
    base, source = _runs(clean, corrupt, direction)
    clean_diff, corrupt_diff = _baselines(model, clean, corrupt, answers)
    patched = residual_sweep(model, base, source, answers)  # [batch, n_layers, pos], exact
    return normalised_patching_metric(patched, clean_diff[:, None, None], corrupt_diff[:, None, None])


def dataset_patching_sweep(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                           direction: str = "noising") -> Tensor:
    """[n_layers, pos]: the residual-stream sweep over a dataset.

    Entry [L, p]: with `blocks.L.hook_resid_pre` at position p patched, each prompt's
    normalised metric (its own clean and corrupt logit differences as 1 and 0), averaged
    over the prompts. "noising" patches the corrupt run into the clean run (values fall
    from 1 where the position carries what the clean answer needs); "denoising" patches
    the clean run into the corrupt run (values rise from 0 where the position carries
    enough to restore it).
    """
    return residual_effects(model, clean, corrupt, answers, direction).mean(0)


def _head_input_hook(component: str, head_of_copy: Tensor, source_cache):
    """A hook that gives copy c of the batch head head_of_copy[c]'s `component` from the source run."""

    def hook(activations: Tensor, hook: HookPoint) -> Tensor:
        source = source_cache[hook.name].to(activations.dtype)  # [batch, ...] of the source prompts
        batch = source.shape[0]
        out = activations.clone()
        for copy, head in enumerate(head_of_copy.tolist()):
            rows = slice(copy * batch, (copy + 1) * batch)
            if component == "pattern":  # [batch, head, query, key]
                out[rows, head] = source[:, head]
            else:  # [batch, pos, head, d_head]
                out[rows, :, head] = source[:, :, head]
        return out

    return hook


def head_input_names(layer: int) -> dict[str, str]:
    return {"q": f"blocks.{layer}.attn.hook_q", "k": f"blocks.{layer}.attn.hook_k",
            "v": f"blocks.{layer}.attn.hook_v", "pattern": f"blocks.{layer}.attn.hook_pattern"}


@torch.no_grad()
def head_input_effects(model, clean: Tensor, corrupt: Tensor, answers: Tensor, component: str,
                       direction: str = "noising") -> Tensor:
    """[batch, n_layers, n_heads]: each prompt's normalised metric with one head's
    `component` input taken from the other run (see `head_input_patching`)."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, not {component!r}")
    base, source = _runs(clean, corrupt, direction)
    clean_diff, corrupt_diff = _baselines(model, clean, corrupt, answers)
    _, cache = model.run_with_cache(source)
    n_layers, n_heads, batch = model.cfg.n_layers, model.cfg.n_heads, base.shape[0]
    heads = torch.arange(n_heads)
    repeated = base.repeat(n_heads, 1)  # copy h (rows h*batch ... ) patches head h
    answers_repeated = answers.repeat(n_heads, 1)
    patched = torch.empty(n_layers, n_heads, batch, device=base.device)
    for layer in range(n_layers):
        name = head_input_names(layer)[component]
        hooks = [(name, _head_input_hook(component, heads, cache))]
        patched[layer] = answer_logit_diffs(model, repeated, answers_repeated, hooks).reshape(n_heads, batch)
    return normalised_patching_metric(patched.permute(2, 0, 1), clean_diff[:, None, None], corrupt_diff[:, None, None])


def head_input_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor, component: str,
                        direction: str = "noising") -> Tensor:
    """[n_layers, n_heads]: patch only one head's query ("q", `attn.hook_q`), key ("k"),
    value ("v") at every position, or its attention pattern ("pattern", `attn.hook_pattern`),
    from the other run, and average each prompt's normalised metric over the dataset. As
    transformer_lens.patching's get_act_patch_attn_head_{q,k,v,pattern}_all_pos do, one
    head at a time; here every head of a layer goes through in one batched forward pass.
    """
    return head_input_effects(model, clean, corrupt, answers, component, direction).mean(0)


def per_prompt_head_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                             heads: Sequence[Sequence[int]], direction: str = "noising") -> Tensor:
    """[batch, len(heads)]: prompt i's normalised metric with head heads[j] = (layer, head)
    patched (its output, `attn.hook_z`, at every position) in `direction`. The
    distribution over prompts, not only its mean: one prompt may not be representative.
    """
    base, source = _runs(clean, corrupt, direction)
    clean_diff, corrupt_diff = _baselines(model, clean, corrupt, answers)
    patched = head_sweep(model, base, source, answers)  # [batch, n_layers, n_heads], exact
    layers = [int(layer) for layer, _ in heads]
    columns = [int(head) for _, head in heads]
    chosen = patched[:, layers, columns]
    return normalised_patching_metric(chosen, clean_diff[:, None], corrupt_diff[:, None])
