"""Chapter 6 reference solutions: patching a dataset, the way researchers do.

A dataset is a batch of aligned prompt pairs: row i of `clean` and row i of `corrupt`
have the same length and differ only in the filled-in words, and `answers[i]` holds
prompt i's two answer token ids (the clean one, counted +, then the corrupt one). The
sweeps report each prompt's normalised metric (1 = the clean run, 0 = the corrupt run),
averaged over the dataset.

Directions: "noising" patches the corrupt run's activations into the clean run (the
tutorial's direction, a resampling ablation); "denoising" patches the clean run's into
the corrupt run (causal tracing).

Each exercise's reference is self-contained (the chapter's filled-in notebook runs its
source), calling only the chapter's earlier exercises and `final_logit_diffs`. The
graders' references for the two exact sweeps (the same numbers from `circuitlab.sweeps`)
are in solutions/ch06_exact_sweeps.py.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab.answer_logits import final_logit_diffs

# ---------------------------------------------------------------- building the dataset


def aligned_prompt_pairs(model, templates: Sequence[str], fillers: Sequence[dict]) -> dict[str, Any]:
    """The clean and corrupt token batches of every template filled with every filler.

    `templates` are format strings ("Her friend was {first} {last}. At lunch time {again}");
    each filler is a dict {"clean": {field: text}, "corrupt": {field: text},
    "answers": [clean_answer, corrupt_answer]}. Pairs are made template by template, each
    with every filler in order. A pair is dropped, with the first reason that applies:

    * "answer not a single token": an answer is several tokens;
    * "clean and corrupt lengths differ": the two prompts tokenize to different lengths;
    * "not the dataset's length": its length is not the dataset's, the length of the first
      pair that passed the two other tests (position p must mean the same in every prompt).

    Returns {"clean": [n, pos] token ids, "corrupt": [n, pos], "answers": [n, 2] token ids,
    "kept": [[template, filler], ...], "dropped": [[template, filler, reason], ...]}.
    """
    clean, corrupt, answers, kept, dropped = [], [], [], [], []
    length = None
    for t, template in enumerate(templates):
        for f, filler in enumerate(fillers):
            try:
                pair = [model.to_single_token(answer) for answer in filler["answers"]]
            except AssertionError:  # TransformerLens: "... is not a single token!"
                dropped.append([t, f, "answer not a single token"])
                continue
            clean_tokens = model.to_tokens(template.format(**filler["clean"]))[0]
            corrupt_tokens = model.to_tokens(template.format(**filler["corrupt"]))[0]
            if len(clean_tokens) != len(corrupt_tokens):
                dropped.append([t, f, "clean and corrupt lengths differ"])
                continue
            length = len(clean_tokens) if length is None else length
            if len(clean_tokens) != length:
                dropped.append([t, f, "not the dataset's length"])
                continue
            clean.append(clean_tokens)
            corrupt.append(corrupt_tokens)
            answers.append(pair)
            kept.append([t, f])
    if not kept:
        raise ValueError("every pair was dropped; look at the reasons: print(...['dropped'])")
    return {"clean": torch.stack(clean), "corrupt": torch.stack(corrupt),
            "answers": torch.tensor(answers, device=clean[0].device), "kept": kept, "dropped": dropped}


def abc_corruption(model, filling: dict[str, str], names: dict[str, list[str]]) -> dict[str, str]:
    """A corrupt filling in which every field holds a different name, none of the clean ones.

    Fields are taken in the filling's order; field k gets the first candidate in
    `names[k]` that is not a value of the clean filling, not given to an earlier field,
    and has as many tokens (with a leading space, as a name mid-sentence) as the value it
    replaces, so the corrupt prompt stays aligned with the clean one. A name repeated in
    the clean filling ("Alex ... Alex") gets two different names: the repetition is gone.
    """

    def n_tokens(text: str) -> int:
        return model.to_tokens(" " + text, prepend_bos=False).shape[1]

    taken = set(filling.values())
    out = {}
    for field, value in filling.items():
        width = n_tokens(value)
        choice = next((name for name in names[field] if name not in taken and n_tokens(name) == width), None)
        if choice is None:
            raise ValueError(f"no candidate left for {field!r}: give more names of {width} token(s)")
        out[field] = choice
        taken.add(choice)
    return out


# ---------------------------------------------------------------- metrics


def batch_logit_diff(logits: Tensor, answers: Tensor, per_prompt: bool = False) -> Tensor:
    """logit(answers[i, 0]) - logit(answers[i, 1]) at prompt i's final position.

    `logits` is [batch, pos, d_vocab], `answers` [batch, 2] token ids: each prompt has its
    own answer pair. Returns the [batch] differences with `per_prompt`, else their mean
    (a 0-dim tensor).
    """
    final = logits[:, -1]  # [batch, d_vocab]
    chosen = final.gather(1, answers.to(final.device))  # [batch, 2]: each row's own answers
    diffs = chosen[:, 0] - chosen[:, 1]
    return diffs if per_prompt else diffs.mean()


def normalised_patching_metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> Tensor:
    """(patched - corrupt) / (clean - corrupt): 1 where a patched run's logit difference
    equals the clean run's, 0 where it equals the corrupt run's. Element by element
    (broadcasting), so each prompt is normalised with its own baselines.

    Above 1: the patch made the model prefer the clean answer more than the clean run
    does. Below 0: it prefers the corrupt answer more than the corrupt run does.
    """
    return (patched - corrupt) / (clean - corrupt)


# ---------------------------------------------------------------- sweeps


def dataset_patching_sweep(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                           direction: str = "noising") -> Tensor:
    """[n_layers, pos]: the residual-stream sweep over a dataset.

    Entry [L, p]: with `blocks.L.hook_resid_pre` at position p patched, each prompt's
    normalised metric (its own clean and corrupt logit differences as 1 and 0), averaged
    over the prompts. "noising" runs the clean batch with activations from the corrupt
    batch (row i from row i); "denoising" runs the corrupt batch with the clean batch's.
    """
    if direction not in ("noising", "denoising"):
        raise ValueError(f"direction must be 'noising' or 'denoising', not {direction!r}")
    base, source = (clean, corrupt) if direction == "noising" else (corrupt, clean)
    clean_diff = batch_logit_diff(model(clean), answers, per_prompt=True)
    corrupt_diff = batch_logit_diff(model(corrupt), answers, per_prompt=True)
    _, source_cache = model.run_with_cache(source)
    result = torch.zeros(model.cfg.n_layers, base.shape[1], device=clean_diff.device)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        for pos in range(base.shape[1]):

            def patch(activations: Tensor, hook: HookPoint, pos: int = pos, name: str = name) -> Tensor:
                activations[:, pos] = source_cache[name][:, pos]  # prompt i from source prompt i
                return activations

            # Two logits of the final position are all we need (see final_logit_diffs).
            patched = final_logit_diffs(model, base, answers, [(name, patch)])
            result[layer, pos] = normalised_patching_metric(patched, clean_diff, corrupt_diff).mean()
    return result


def head_input_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor, component: str,
                        direction: str = "noising") -> Tensor:
    """[n_layers, n_heads]: patch only one head's query ("q", `attn.hook_q`), key ("k",
    `attn.hook_k`), value ("v", `attn.hook_v`), at every position, or its attention
    pattern ("pattern", `attn.hook_pattern`), from the other run, and average each
    prompt's normalised metric over the dataset. The numbers of transformer_lens.patching's
    get_act_patch_attn_head_{q,k,v,pattern}_all_pos; here every head of a layer goes
    through one forward pass, the batch repeated once per head.
    """
    if component not in ("q", "k", "v", "pattern"):
        raise ValueError(f"component must be 'q', 'k', 'v' or 'pattern', not {component!r}")
    if direction not in ("noising", "denoising"):
        raise ValueError(f"direction must be 'noising' or 'denoising', not {direction!r}")
    base, source = (clean, corrupt) if direction == "noising" else (corrupt, clean)
    clean_diff = batch_logit_diff(model(clean), answers, per_prompt=True)
    corrupt_diff = batch_logit_diff(model(corrupt), answers, per_prompt=True)
    _, source_cache = model.run_with_cache(source)
    n_heads, batch = model.cfg.n_heads, base.shape[0]
    result = torch.zeros(model.cfg.n_layers, n_heads, device=clean_diff.device)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_{component}"

        def patch(activations: Tensor, hook: HookPoint, name: str = name) -> Tensor:
            # Copy h of the batch (rows h * batch ... (h + 1) * batch - 1) patches head h.
            for head in range(n_heads):
                rows = slice(head * batch, (head + 1) * batch)
                if component == "pattern":  # [batch, head, query, key]
                    activations[rows, head] = source_cache[name][:, head]
                else:  # [batch, pos, head, d_head]
                    activations[rows, :, head] = source_cache[name][:, :, head]
            return activations

        patched = final_logit_diffs(model, base.repeat(n_heads, 1), answers.repeat(n_heads, 1), [(name, patch)])
        metric = normalised_patching_metric(patched.reshape(n_heads, batch), clean_diff, corrupt_diff)
        result[layer] = metric.mean(1)
    return result


def per_prompt_head_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                             heads: Sequence[Sequence[int]], direction: str = "noising") -> Tensor:
    """[n_prompts, len(heads)]: prompt i's normalised metric with head heads[j] =
    (layer, head) patched (its output, `attn.hook_z`, at every position) in `direction`.
    The distribution over prompts, not only its mean: one prompt may not be representative.
    """
    if direction not in ("noising", "denoising"):
        raise ValueError(f"direction must be 'noising' or 'denoising', not {direction!r}")
    base, source = (clean, corrupt) if direction == "noising" else (corrupt, clean)
    clean_diff = batch_logit_diff(model(clean), answers, per_prompt=True)
    corrupt_diff = batch_logit_diff(model(corrupt), answers, per_prompt=True)
    _, source_cache = model.run_with_cache(source)
    columns = []
    for layer, head in heads:
        name = f"blocks.{layer}.attn.hook_z"

        def patch(activations: Tensor, hook: HookPoint, name: str = name, head: int = head) -> Tensor:
            activations[:, :, head] = source_cache[name][:, :, head]
            return activations

        patched = final_logit_diffs(model, base, answers, [(name, patch)])
        columns.append(normalised_patching_metric(patched, clean_diff, corrupt_diff))
    return torch.stack(columns, dim=1)
