"""Chapter 6's known mistakes: patching a dataset.

Each is the reference with one thing wrong. The sweeps' mistakes are two functions with
knobs: `residual_variant` (the residual sweep) and `head_variant` (one head's input or
output patched, per prompt), like `transformer_lens.patching` builds every patch from
one generic patcher.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from circuitlab.answer_logits import final_logit_diffs
from circuitlab.sweeps import residual_sweep
from circuitlab_graders.declare import Mistake
from circuitlab_solutions import ch06_dataset_patching as ref
from circuitlab_solutions import ch06_exact_sweeps as exact

OTHER = {"noising": "denoising", "denoising": "noising"}

# ---------------------------------------------------------------- aligned_prompt_pairs


def pairs_variant(model, templates, fillers, *, bos: bool = True, swap_answers: bool = False,
                  first_piece: bool = False, fillers_outer: bool = False) -> dict:
    """aligned_prompt_pairs with one knob turned."""
    order = ([(t, f) for f in range(len(fillers)) for t in range(len(templates))] if fillers_outer
             else [(t, f) for t in range(len(templates)) for f in range(len(fillers))])
    clean, corrupt, answers, kept, dropped, length = [], [], [], [], [], None
    for t, f in order:
        filler = fillers[f]
        if first_piece:  # the answer's first token, whatever its length
            pair = [int(model.to_tokens(a, prepend_bos=False)[0, 0]) for a in filler["answers"]]
        else:
            try:
                pair = [model.to_single_token(a) for a in filler["answers"]]
            except AssertionError:
                dropped.append([t, f, "answer not a single token"])
                continue
        if swap_answers:
            pair = pair[::-1]
        a = model.to_tokens(templates[t].format(**filler["clean"]), prepend_bos=bos)[0]
        b = model.to_tokens(templates[t].format(**filler["corrupt"]), prepend_bos=bos)[0]
        if len(a) != len(b):
            dropped.append([t, f, "clean and corrupt lengths differ"])
            continue
        length = len(a) if length is None else length
        if len(a) != length:
            dropped.append([t, f, "not the dataset's length"])
            continue
        clean.append(a)
        corrupt.append(b)
        answers.append(pair)
        kept.append([t, f])
    return {"clean": torch.stack(clean), "corrupt": torch.stack(corrupt),
            "answers": torch.tensor(answers, device=clean[0].device), "kept": kept, "dropped": dropped}


# ---------------------------------------------------------------- abc_corruption


def n_tokens(model, text: str) -> int:
    return model.to_tokens(" " + text, prepend_bos=False).shape[1]


def abc_variant(model, filling, names, *, keep_repeats: bool = False, any_width: bool = False,
                own_value_only: bool = False) -> dict:
    """abc_corruption with one knob turned."""
    taken = set(filling.values())
    out: dict[str, str] = {}
    given: dict[str, str] = {}  # clean value -> its replacement (keep_repeats)
    for field, value in filling.items():
        if keep_repeats and value in given:
            out[field] = given[value]
            continue
        width = n_tokens(model, value)
        banned = ({value} | set(out.values())) if own_value_only else taken
        choice = next(name for name in names[field]
                      if name not in banned and (any_width or n_tokens(model, name) == width))
        out[field] = given[value] = choice
        taken.add(choice)
    return out


# ---------------------------------------------------------------- batch_logit_diff


def logit_diff_variant(logits: Tensor, answers: Tensor, per_prompt: bool = False, *, pos: int = -1,
                       first_answers: bool = False, total: bool = False, always_mean: bool = False) -> Tensor:
    final = logits[:, pos]
    pairs = answers[:1].expand_as(answers) if first_answers else answers
    diffs = final.gather(1, pairs).float()
    diffs = diffs[:, 0] - diffs[:, 1]
    if per_prompt and not always_mean:
        return diffs
    return diffs.sum() if total else diffs.mean()


# ---------------------------------------------------------------- the sweeps


def residual_variant(model, clean, corrupt, answers, direction="noising", *, normalise: str = "per prompt",
                     post: bool = False, first_source: bool = False, drop: bool = False) -> Tensor:
    """dataset_patching_sweep with one knob turned: `normalise` "per prompt", "mean" (the
    mean logit difference normalised by the mean baselines) or "none"; `post` patches
    hook_resid_post; `first_source` patches every prompt from source prompt 0; `drop`
    reports 1 - the metric."""
    base, source = exact._runs(clean, corrupt, direction)
    if first_source:
        source = source[:1].expand_as(source)
    clean_diff, corrupt_diff = exact.baselines(model, clean, corrupt, answers)
    patched = residual_sweep(model, base, source, answers)  # [batch, n_layers, pos]
    if post:  # resid_post L = resid_pre L + 1; after the last block only the final position counts
        base_diff, source_diff = final_logit_diffs(model, base, answers), final_logit_diffs(model, source, answers)
        last = base_diff[:, None].expand(-1, patched.shape[2]).clone()
        last[:, -1] = source_diff
        patched = torch.cat([patched[:, 1:], last[:, None]], dim=1)
    if normalise == "none":
        return patched.mean(0)
    if normalise == "mean":
        return ref.normalised_patching_metric(patched.mean(0), clean_diff.mean(), corrupt_diff.mean())
    metric = ref.normalised_patching_metric(patched, clean_diff[:, None, None], corrupt_diff[:, None, None]).mean(0)
    return 1 - metric if drop else metric


@torch.no_grad()
def head_variant(model, clean, corrupt, answers, component, direction="noising", *, every_head: bool = False,
                 final_only: bool = False, normalise: bool = True, per_prompt: bool = False) -> Tensor:
    """One head (or, `every_head`, the whole layer) patched at a time: its `component`
    ("q", "k", "v", "pattern" or "z", the head's output), at every position or
    (`final_only`) the final one. [n_layers, n_heads] averaged over prompts, or
    [batch, n_layers, n_heads] with `per_prompt`. Batched like the reference: copy h of
    the batch patches head h."""
    base, source = exact._runs(clean, corrupt, direction)
    clean_diff, corrupt_diff = exact.baselines(model, clean, corrupt, answers)
    _, cache = model.run_with_cache(source)
    n_layers, n_heads, batch = model.cfg.n_layers, model.cfg.n_heads, clean.shape[0]
    out = torch.empty(batch, n_layers, n_heads, device=clean.device)
    rows = slice(-1, None) if final_only else slice(None)
    for layer in range(n_layers):
        name = f"blocks.{layer}.attn.hook_{component}"

        def patch(activations: Tensor, hook, name: str = name) -> Tensor:
            source_values = cache[name].to(activations.dtype)
            for head in range(n_heads):
                copy = slice(head * batch, (head + 1) * batch)
                heads = slice(None) if every_head else head
                if component == "pattern":  # [batch, head, query, key]
                    activations[copy, heads, rows] = source_values[:, heads, rows]
                else:  # [batch, pos, head, ...]
                    activations[copy, rows, heads] = source_values[:, rows, heads]
            return activations

        diffs = final_logit_diffs(model, base.repeat(n_heads, 1), answers.repeat(n_heads, 1), [(name, patch)])
        out[:, layer] = diffs.reshape(n_heads, batch).T
    if normalise:
        out = ref.normalised_patching_metric(out, clean_diff[:, None, None], corrupt_diff[:, None, None])
    return out if per_prompt else out.mean(0)


SWAPPED_QK = {"q": "k", "k": "q", "v": "v", "pattern": "pattern"}


def per_prompt_variant(model, clean, corrupt, answers, heads, direction="noising", **knobs) -> Tensor:
    """per_prompt_head_patching from `head_variant` with its knobs."""
    every = head_variant(model, clean, corrupt, answers, "z", direction, per_prompt=True, **knobs)
    return every[:, [int(h[0]) for h in heads], [int(h[1]) for h in heads]]


MISTAKES = {
    "aligned_prompt_pairs": (
        Mistake("tokenized the prompts without the BOS token every other run of the model starts with",
                "Use model.to_tokens(prompt) (it prepends BOS), as every sweep does.",
                lambda **a: pairs_variant(**a, bos=False)),
        Mistake("put the corrupt answer first in `answers`",
                "answers[i] is [clean answer, corrupt answer]: the one counted +, then the one counted -.",
                lambda **a: pairs_variant(**a, swap_answers=True)),
        Mistake("kept answers of several tokens, using their first token",
                "Drop a pair whose answer is not one token (model.to_single_token raises for it).",
                lambda **a: pairs_variant(**a, first_piece=True)),
        Mistake("looped over the fillers first and the templates inside",
                "Go template by template, each with every filler in order: pair (t, f) for t, then f.",
                lambda **a: pairs_variant(**a, fillers_outer=True)),
    ),
    "abc_corruption": (
        Mistake("gave a name repeated in the clean filling the same replacement each time",
                "Every field gets its own new name: the repetition is what an ABC corruption removes.",
                lambda **a: abc_variant(**a, keep_repeats=True)),
        Mistake("took replacements of any length",
                "Only a name with as many tokens (with a leading space) as the one it replaces keeps the "
                "prompts aligned.", lambda **a: abc_variant(**a, any_width=True)),
        Mistake("only kept each field from its own clean name, so a field can get another field's clean name",
                "A replacement may be none of the clean filling's values, and no earlier field's new name.",
                lambda **a: abc_variant(**a, own_value_only=True)),
    ),
    "batch_logit_diff": (
        Mistake("subtracted the wrong way round", "answers[:, 0] is counted +, answers[:, 1] is counted -.",
                lambda **a: -ref.batch_logit_diff(**a)),
        Mistake("read the logits at the second-to-last position", "Each prompt's answer is predicted at its "
                "final position: logits[:, -1].", lambda **a: logit_diff_variant(**a, pos=-2)),
        Mistake("used the first prompt's answers for every prompt",
                "Each prompt has its own pair: gather answers[i] from prompt i's logits.",
                lambda **a: logit_diff_variant(**a, first_answers=True)),
        Mistake("summed over prompts instead of averaging", "Return the mean of the per-prompt differences.",
                lambda **a: logit_diff_variant(**a, total=True)),
        Mistake("returned the mean even with per_prompt=True",
                "With per_prompt=True return the [batch] tensor of differences.",
                lambda **a: logit_diff_variant(**a, always_mean=True)),
    ),
    "normalised_patching_metric": (
        Mistake("subtracted the clean baseline: 0 at the clean run, -1 at the corrupt run",
                "Subtract the corrupt baseline: (patched - corrupt) / (clean - corrupt).",
                lambda patched, clean, corrupt: (patched - clean) / (clean - corrupt)),
        Mistake("measured the drop from the clean run (0 at clean, 1 at corrupt)",
                "1 at the clean run, 0 at the corrupt run: (patched - corrupt) / (clean - corrupt).",
                lambda patched, clean, corrupt: (clean - patched) / (clean - corrupt)),
        Mistake("divided by the clean baseline alone",
                "Divide by the gap between the baselines, clean - corrupt.",
                lambda patched, clean, corrupt: (patched - corrupt) / clean),
    ),
    "dataset_patching_sweep": (
        Mistake("patched in the other direction",
                "noising: base run = clean, activations from corrupt; denoising: base run = corrupt, "
                "activations from clean.", lambda **a: residual_variant(**{**a, "direction": OTHER[a.get(
                    "direction", "noising")]})),
        Mistake("normalised the mean logit difference instead of each prompt's",
                "Normalise each prompt with its own clean and corrupt logit differences, then average.",
                lambda **a: residual_variant(**a, normalise="mean")),
        Mistake("averaged the raw logit differences without normalising",
                "Turn each patched logit difference into the normalised metric with that prompt's baselines.",
                lambda **a: residual_variant(**a, normalise="none")),
        Mistake("reported 1 minus the metric", "The metric is 1 at the clean run and 0 at the corrupt run.",
                lambda **a: residual_variant(**a, drop=True)),
        Mistake("patched hook_resid_post", "Row L patches blocks.L.hook_resid_pre.",
                lambda **a: residual_variant(**a, post=True)),
        Mistake("patched every prompt from the first source prompt",
                "Prompt i takes its patch from source prompt i: row i of the other batch.",
                lambda **a: residual_variant(**a, first_source=True)),
    ),
    "head_input_patching": (
        Mistake("patched in the other direction",
                "noising: base run = clean, activations from corrupt; denoising: the other way round.",
                lambda **a: ref.head_input_patching(**{**a, "direction": OTHER[a.get("direction", "noising")]})),
        Mistake("patched the head's output (hook_z) instead of the asked input",
                "Hook blocks.L.attn.hook_q / hook_k / hook_v / hook_pattern, as `component` says.",
                lambda **a: head_variant(**{**a, "component": "z"})),
        Mistake("patched the key when asked for the query and the query when asked for the key",
                "q is attn.hook_q (what a position looks for), k is attn.hook_k (what it offers).",
                lambda **a: ref.head_input_patching(**{**a, "component": SWAPPED_QK[a["component"]]})),
        Mistake("patched every head of the layer at once", "Patch one head per run: its slice on the head axis.",
                lambda **a: head_variant(**a, every_head=True)),
        Mistake("patched the final position only", "Patch the head's input at every position (all_pos).",
                lambda **a: head_variant(**a, final_only=True)),
        Mistake("averaged the raw logit differences without normalising",
                "Turn each patched logit difference into the normalised metric with that prompt's baselines.",
                lambda **a: head_variant(**a, normalise=False)),
    ),
    "per_prompt_head_patching": (
        Mistake("returned [head, prompt]", "Rows are prompts, columns the heads in the order given.",
                lambda **a: exact.exact_per_prompt_head_patching(**a).T),
        Mistake("patched in the other direction",
                "noising: base run = clean, activations from corrupt; denoising: the other way round.",
                lambda **a: exact.exact_per_prompt_head_patching(**{**a, "direction": OTHER[a.get("direction", "noising")]})),
        Mistake("patched the head at the final position only", "Patch its hook_z at every position.",
                lambda **a: per_prompt_variant(**a, final_only=True)),
        Mistake("returned raw logit differences", "Normalise each prompt with its own baselines.",
                lambda **a: per_prompt_variant(**a, normalise=False)),
    ),
}
