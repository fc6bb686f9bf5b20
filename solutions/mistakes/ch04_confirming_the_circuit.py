"""Chapter 4's known mistakes: composition scores, direct logit attribution, path
patching, positional-embedding patching and ablations.

Each computation whose mistakes are knobs is written once, as the reference with keyword
knobs (`_dla_variant`, `_path_variant`, `_embedding_variant`, `_ablation_variant`), and each
mistake passes it one setting; the others reuse the references.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab_graders.declare import Mistake
from circuitlab_solutions import ch04_confirming_the_circuit as ref


def _norms(left: Tensor, right: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (left @ right).norm(dim=(-2, -1)), left.norm(dim=(-2, -1)), right.norm(dim=(-2, -1))


def _reversed_product(left, right):
    return ref.composition_score(right, left)


def _unnormalised(left, right):
    return _norms(left, right)[0]


def _sum_of_norms(left, right):
    product, l_norm, r_norm = _norms(left, right)
    return product / (l_norm + r_norm)


def _squared(left, right):
    product, l_norm, r_norm = _norms(left, right)
    return product**2 / (l_norm**2 * r_norm**2)


def _whole_batch_norm(left, right):
    return (left @ right).norm() / (left.norm() * right.norm())


def _spectral(left, right):
    norm = lambda m: torch.linalg.matrix_norm(m, ord=2)  # noqa: E731
    return norm(left @ right) / (norm(left) * norm(right))


def _pairs(formula):
    """[sender, receiver] scores of composition_score(*formula(OV_s, M_r)) for every pair."""

    def scores(sender_ov: Tensor, receiver: Tensor) -> Tensor:
        left, right = formula(sender_ov[:, None], receiver[None])
        return ref.composition_score(left, right)

    return scores


def _t(m: Tensor) -> Tensor:
    return m.transpose(-2, -1)


def _stack_dot_t(sender_ov: Tensor, receiver_qk: Tensor) -> Tensor:
    """The chapter's `QK_r.T` applied to the whole stack, as a learner writes it: `.T`
    reverses all three dimensions, and the broadcast asks for n_senders * d_model**3
    numbers (21.7 GB on gpt2-small: the call fails within its memory budget there)."""
    return ref.composition_score(sender_ov[:, None], receiver_qk.T[None])


def _dla_variant(model, cache, clean_answer, corrupt_answer, *, scale_at=-1, use_scale=True, answer_only=False,
                 every_position=False):
    good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
    direction = model.W_U[:, good] if answer_only else model.W_U[:, good] - model.W_U[:, bad]
    scale = cache["ln_final.hook_scale"][0, scale_at] if use_scale else 1.0
    W_O = model.W_O
    at = (lambda z: z.sum(0)) if every_position else (lambda z: z[-1])  # [pos, head, d_head] -> [head, d_head]
    z = torch.stack([at(cache[f"blocks.{layer}.attn.hook_z"][0]) for layer in range(model.cfg.n_layers)])
    return torch.einsum("lhd,lhdm->lhm", z, W_O) / scale @ direction


def _dla_with(**knobs):
    return lambda model, cache, clean_answer, corrupt_answer: _dla_variant(
        model, cache, clean_answer, corrupt_answer, **knobs)


def _normalise(resid: Tensor, eps: float) -> Tensor:
    """A folded LayerNorm: centre, then divide by the scale of this input."""
    centred = resid - resid.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def _path_variant(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, sender, receiver,
                  receiver_input, *, inputs=None, every_head=False, clean_scale=False, keep_clean_sender=False,
                  swap_runs=False, final_only=False, stream="receiver", direction=1, use_bias=True):
    """The reference path patch with one knob turned: `inputs` (which of q, k, v get the
    patched stream), `every_head` (every head of the receiver's layer), `clean_scale`
    (LayerNorm keeps the clean run's scale), `keep_clean_sender` (the corrupt output is
    added on top of the clean one), `swap_runs` (clean sender patched into the corrupt run),
    `final_only` (only the final position is patched), `stream` ("sender": the change is
    added to the sender layer's hook_resid_pre; "corrupt": the corrupt run's whole
    hook_resid_pre, no sender change), `direction=-1` (z_clean - z_corrupt), `use_bias=False`
    (the receiver's b_Q/b_K/b_V left out)."""
    if swap_runs:
        clean_prompt, corrupt_prompt = corrupt_prompt, clean_prompt
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    _, clean = model.run_with_cache(clean_prompt)
    _, corrupt = model.run_with_cache(corrupt_prompt)
    z_name = f"blocks.{s_layer}.attn.hook_z"
    W_O = model.W_O[s_layer, s_head]
    added = corrupt[z_name][:, :, s_head] @ W_O
    change = added if keep_clean_sender else direction * (added - clean[z_name][:, :, s_head] @ W_O)
    resid = {"receiver": lambda: clean[f"blocks.{r_layer}.hook_resid_pre"] + change,
             "sender": lambda: clean[f"blocks.{s_layer}.hook_resid_pre"] + change,
             "corrupt": lambda: corrupt[f"blocks.{r_layer}.hook_resid_pre"]}[stream]()
    if clean_scale:
        normalised = (resid - resid.mean(-1, keepdim=True)) / clean[f"blocks.{r_layer}.ln1.hook_scale"]
    else:
        normalised = _normalise(resid, model.cfg.eps)
    heads = list(range(model.cfg.n_heads)) if every_head else [r_head]
    at = slice(-1, None) if final_only else slice(None)
    hooks = []
    for which in inputs or (receiver_input,):
        weight, bias = getattr(model, f"W_{which.upper()}")[r_layer], getattr(model, f"b_{which.upper()}")[r_layer]
        patched = torch.einsum("bpm,hmd->bphd", normalised, weight) + (bias if use_bias else 0)

        def patch(activations, hook, patched=patched):
            activations[:, at, heads] = patched[:, at][:, :, heads]
            return activations

        hooks.append((f"blocks.{r_layer}.attn.hook_{which}", patch))
    final = model.run_with_hooks(clean_prompt, fwd_hooks=hooks)[0, -1]
    return (final[model.to_single_token(clean_answer)] - final[model.to_single_token(corrupt_answer)]).item()


def _path_with(**knobs):
    def wrong(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, sender, receiver, receiver_input):
        return _path_variant(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, sender, receiver,
                             receiver_input, **knobs)

    return wrong


def _sender_everywhere(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, sender, receiver,
                       receiver_input):
    """Chapter 2's head patch: the sender's hook_z from the corrupt run, on every path."""
    s_layer, s_head = sender
    _, corrupt = model.run_with_cache(corrupt_prompt)
    name = f"blocks.{s_layer}.attn.hook_z"

    def patch(activations, hook):
        activations[:, :, s_head] = corrupt[name][:, :, s_head]
        return activations

    final = model.run_with_hooks(clean_prompt, fwd_hooks=[(name, patch)])[0, -1]
    return (final[model.to_single_token(clean_answer)] - final[model.to_single_token(corrupt_answer)]).item()


def _embedding_variant(model, prompt, clean_answer, corrupt_answer, embedding_hook="hook_pos_embed", *,
                       inputs=("v",), zero=False, clean_scale=False, hook_name=None, everywhere=False,
                       bos="averaged", mean_dim=1):
    """The reference with one knob turned: which layer-0 inputs see the replaced stream,
    zeros instead of the mean, the clean LayerNorm scale, a fixed hook, the embedding
    replaced at its own hook (so on every path), or BOS's place in the mean (`bos`:
    "left_out" of the mean, or "kept": BOS keeps its own embedding, the rest take the
    mean of positions 1..) or `mean_dim=0` (the mean over the batch of one prompt: no
    change)."""
    embedding_hook = hook_name or embedding_hook
    _, cache = model.run_with_cache(prompt)
    embedding = cache[embedding_hook]
    averaged = embedding if bos == "averaged" else embedding[:, 1:]
    replacement = torch.zeros_like(embedding) if zero else averaged.mean(dim=mean_dim, keepdim=True).expand_as(
        embedding)
    if bos == "kept":
        replacement = torch.cat([embedding[:, :1], replacement[:, 1:]], dim=1)
    if everywhere:
        hooks = [(embedding_hook, lambda activations, hook: replacement)]
    else:
        resid = cache["blocks.0.hook_resid_pre"] - embedding + replacement
        if clean_scale:
            normalised = (resid - resid.mean(-1, keepdim=True)) / cache["blocks.0.ln1.hook_scale"]
        else:
            normalised = _normalise(resid, model.cfg.eps)
        hooks = []
        for which in inputs:
            weight, bias = getattr(model, f"W_{which.upper()}")[0], getattr(model, f"b_{which.upper()}")[0]
            values = torch.einsum("bpm,hmd->bphd", normalised, weight) + bias
            hooks.append((f"blocks.0.attn.hook_{which}", lambda activations, hook, values=values: values))
    final = model.run_with_hooks(prompt, fwd_hooks=hooks)[0, -1]
    return (final[model.to_single_token(clean_answer)] - final[model.to_single_token(corrupt_answer)]).item()


def _embedding_with(**knobs):
    def wrong(model, prompt, clean_answer, corrupt_answer, embedding_hook="hook_pos_embed"):
        return _embedding_variant(model, prompt, clean_answer, corrupt_answer, embedding_hook, **knobs)

    return wrong


def _ablation_variant(model, prompts, answers, wrong_answers, heads, method="mean", *, zeros=False,
                      over_positions=False, whole_layers=False, always_mean=False, reduce="mean", resample="next"):
    """The reference ablation with one knob turned; `resample` is "next" (the reference:
    prompt i takes (i + 1) % n's z), "previous" (i - 1) or "no_wrap" (the last prompt
    keeps its own)."""
    if always_mean:
        method = "mean"
    tokens = model.to_tokens(list(prompts))
    _, cache = model.run_with_cache(tokens)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    if whole_layers:
        by_layer = {layer: list(range(model.cfg.n_heads)) for layer in by_layer}

    def ablate(activations: Tensor, hook: HookPoint) -> Tensor:
        layer_heads = by_layer[int(hook.name.split(".")[1])]
        clean = cache[hook.name][:, :, layer_heads]
        if method == "mean" and zeros:
            replacement = torch.zeros_like(clean)
        elif method == "mean":
            dims = (0, 1) if over_positions else (0,)
            replacement = clean.mean(dim=dims, keepdim=True).expand_as(clean)
        elif resample == "no_wrap":
            replacement = torch.cat([clean[1:], clean[-1:]])
        else:
            replacement = clean.roll(-1 if resample == "next" else 1, dims=0)
        activations[:, :, layer_heads] = replacement
        return activations

    final = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate) for layer in by_layer])
    final = final[:, -1]
    rows = torch.arange(len(prompts), device=final.device)
    good = torch.tensor([model.to_single_token(a) for a in answers], device=final.device)
    bad = torch.tensor([model.to_single_token(a) for a in wrong_answers], device=final.device)
    diffs = final[rows, good] - final[rows, bad]
    return {"mean": diffs.mean(), "sum": diffs.sum(), "first": diffs[0]}[reduce].item()


def _ablation_with(**knobs):
    def wrong(model, prompts, answers, wrong_answers, heads, method="mean"):
        return _ablation_variant(model, prompts, answers, wrong_answers, heads, method, **knobs)

    return wrong


MISTAKES = {
    "composition_score": (
        Mistake("multiplied right @ left", "The product is left @ right: left's output is what right reads.",
                _reversed_product),
        Mistake("left out the normalisation", "Divide ||left @ right||_F by ||left||_F * ||right||_F.",
                _unnormalised),
        Mistake("divided by the sum of the two norms", "Divide by their product: ||left||_F * ||right||_F.",
                _sum_of_norms),
        Mistake("squared the norms", "Use the Frobenius norms themselves, not their squares.", _squared),
        Mistake("took one norm over the whole batch",
                "Take each norm over the last two dimensions only: .norm(dim=(-2, -1)).", _whole_batch_norm),
        Mistake("used the spectral norm (the largest singular value)",
                "The score uses the Frobenius norm: the square root of the sum of squared entries.", _spectral),
    ),
    "k_composition_scores": (
        Mistake("left the receiver's QK untransposed (that is Q-composition)",
                "A sender writing into the keys meets QK from the right: use OV_sender @ QK_receiver.T.",
                lambda sender_ov, receiver_qk: ref.q_composition_scores(sender_ov, receiver_qk)),
        Mistake("used the paper's column-vector formula with TransformerLens's row-vector matrices (QK @ OV)",
                "TransformerLens's OV and QK act on row vectors: the K-composition matrix is "
                "OV_sender @ QK_receiver.T.",
                lambda sender_ov, receiver_qk: _pairs(lambda ov, qk: (qk, ov))(sender_ov, receiver_qk)),
        Mistake("transposed the sender's OV instead of the receiver's QK",
                "Only the receiver's QK is transposed: OV_sender @ QK_receiver.T.",
                lambda sender_ov, receiver_qk: _pairs(lambda ov, qk: (_t(ov), qk))(sender_ov, receiver_qk)),
        Mistake("returned [receiver, sender]", "Rows are sender heads, columns receiver heads.",
                lambda sender_ov, receiver_qk: ref.k_composition_scores(sender_ov, receiver_qk).T),
        Mistake("transposed the stack of receiver QKs with `.T`, which reverses every dimension",
                "On [n_receivers, d_model, d_model], `receiver_qk.T` is [d_model, d_model, n_receivers]; "
                "`receiver_qk.mT` (or `.transpose(-2, -1)`) transposes each matrix of the stack.",
                _stack_dot_t),
    ),
    "q_composition_scores": (
        Mistake("transposed the receiver's QK (that is K-composition)",
                "A sender writing into the queries meets QK from the left: OV_sender @ QK_receiver.",
                lambda sender_ov, receiver_qk: ref.k_composition_scores(sender_ov, receiver_qk)),
        Mistake("used the paper's column-vector formula with TransformerLens's row-vector matrices (QK.T @ OV)",
                "TransformerLens's OV and QK act on row vectors: the Q-composition matrix is "
                "OV_sender @ QK_receiver.",
                lambda sender_ov, receiver_qk: _pairs(lambda ov, qk: (_t(qk), ov))(sender_ov, receiver_qk)),
        Mistake("multiplied QK_receiver @ OV_sender",
                "A row vector passes the sender first: OV_sender @ QK_receiver.",
                lambda sender_ov, receiver_qk: _pairs(lambda ov, qk: (qk, ov))(sender_ov, receiver_qk)),
        Mistake("returned [receiver, sender]", "Rows are sender heads, columns receiver heads.",
                lambda sender_ov, receiver_qk: ref.q_composition_scores(sender_ov, receiver_qk).T),
    ),
    "v_composition_scores": (
        Mistake("multiplied OV_receiver @ OV_sender",
                "A row vector passes the sender first: OV_sender @ OV_receiver.",
                lambda sender_ov, receiver_ov: _pairs(lambda a, b: (b, a))(sender_ov, receiver_ov)),
        Mistake("transposed the receiver's OV",
                "Nothing is transposed in V-composition: OV_sender @ OV_receiver.",
                lambda sender_ov, receiver_ov: _pairs(lambda a, b: (a, _t(b)))(sender_ov, receiver_ov)),
        Mistake("returned [receiver, sender]", "Rows are sender heads, columns receiver heads.",
                lambda sender_ov, receiver_ov: ref.v_composition_scores(sender_ov, receiver_ov).T),
    ),
    "direct_logit_attribution": (
        Mistake("left out the final LayerNorm's scale",
                "Divide each head's output by cache['ln_final.hook_scale'][0, -1] before unembedding.",
                _dla_with(use_scale=False)),
        Mistake("used the LayerNorm scale of position 0",
                "Use the scale of the final position: cache['ln_final.hook_scale'][0, -1].",
                _dla_with(scale_at=0)),
        Mistake("attributed the clean answer's logit, not the logit difference",
                "Unembed with W_U[:, clean] - W_U[:, corrupt].", _dla_with(answer_only=True)),
        Mistake("summed each head's output over every position, not the final one",
                "The answer is read at the final position: take hook_z[0, -1] of each layer.",
                _dla_with(every_position=True)),
        Mistake("subtracted the wrong way round", "The direction is W_U[:, clean_answer] - W_U[:, corrupt_answer].",
                lambda model, cache, clean_answer, corrupt_answer: -ref.direct_logit_attribution(
                    model, cache, clean_answer, corrupt_answer)),
        Mistake("returned [n_heads, n_layers]", "Rows are layers, columns heads: [n_layers, n_heads].",
                lambda model, cache, clean_answer, corrupt_answer: ref.direct_logit_attribution(
                    model, cache, clean_answer, corrupt_answer).T),
    ),
    "path_patch_to_head_input": (
        Mistake("patched the sender into the receiver's q, k and v at once",
                "Patch only the input named by receiver_input.", _path_with(inputs=("q", "k", "v"))),
        Mistake("patched that input of every head in the receiver's layer",
                "Write the recomputed vectors into the receiver head only: activations[:, :, head].",
                _path_with(every_head=True)),
        Mistake("patched the sender's output on every path (its hook_z, as in chapter 2)",
                "Leave the sender's hook_z clean; change only what the receiver's input reads.",
                _sender_everywhere),
        Mistake("kept the clean run's LayerNorm scale",
                "The scale depends on the input: normalise the patched residual stream afresh.",
                _path_with(clean_scale=True)),
        Mistake("added the corrupt sender output without taking away the clean one",
                "Add the difference: (z_corrupt - z_clean) @ W_O of the sender head.",
                _path_with(keep_clean_sender=True)),
        Mistake("patched the clean sender into the corrupt run",
                "Run the clean prompt and take the sender's output from the corrupt run.",
                _path_with(swap_runs=True)),
        Mistake("patched the receiver's input at the final position only",
                "Patch the receiver's q, k or v at every position: keys and values are read wherever the "
                "receiver attends.", _path_with(final_only=True)),
        Mistake("built the receiver's input from the sender layer's hook_resid_pre",
                "Start from the stream the receiver reads, blocks.{receiver layer}.hook_resid_pre of the clean run, "
                "and add (z_corrupt - z_clean)[sender] @ W_O[sender].", _path_with(stream="sender")),
        Mistake("gave the receiver the corrupt run's whole residual stream, not only the sender's change",
                "Only the sender's output changes: clean hook_resid_pre + (z_corrupt - z_clean)[sender] @ "
                "W_O[sender].", _path_with(stream="corrupt")),
        Mistake("added (z_clean - z_corrupt), the sender's change the wrong way round",
                "The patched stream carries the corrupt sender: add (z_corrupt - z_clean)[sender] @ W_O[sender].",
                _path_with(direction=-1)),
        Mistake("left out the receiver's bias (b_Q, b_K or b_V)",
                "Recompute the input as the model does: normalised @ W_[QKV][layer, head] + b_[QKV][layer, head].",
                _path_with(use_bias=False)),
    ),
    "positional_embedding_patch": (
        Mistake("replaced the embedding on every path (at its own hook), not only in layer 0's values",
                "Leave the embedding hook alone: recompute only layer 0's hook_v from the changed stream.",
                _embedding_with(everywhere=True)),
        Mistake("replaced it in layer 0's queries and keys too",
                "Only the values change; the attention patterns must see the real embeddings.",
                _embedding_with(inputs=("q", "k", "v"))),
        Mistake("replaced the embedding with zeros instead of its mean over positions",
                "Use embedding.mean(dim=1, keepdim=True): every position gets the average.",
                _embedding_with(zero=True)),
        Mistake("kept the clean run's LayerNorm scale",
                "The scale depends on the input: normalise the changed residual stream afresh.",
                _embedding_with(clean_scale=True)),
        Mistake("always replaced hook_pos_embed, whatever embedding_hook said",
                "Read cache[embedding_hook]: 'hook_embed' asks for the token embedding.",
                _embedding_with(hook_name="hook_pos_embed")),
        Mistake("left the beginning-of-sequence token out of the mean over positions",
                "Average the embedding over all the prompt's positions, BOS (position 0) included: "
                "embedding.mean(dim=1, keepdim=True).", _embedding_with(bos="left_out")),
        Mistake("left BOS's own embedding in place and averaged only positions 1 onwards",
                "Every position, BOS included, takes the one mean over all positions.", _embedding_with(bos="kept")),
        Mistake("averaged over the batch (dim 0) instead of over positions, so nothing changed",
                "Average over positions: embedding.mean(dim=1, keepdim=True).", _embedding_with(mean_dim=0)),
    ),
    "ablate_heads": (
        Mistake("ablated with zeros instead of the mean",
                "Mean ablation replaces a head's z by its mean over the batch, not by 0.",
                _ablation_with(zeros=True)),
        Mistake("took the mean over positions as well as prompts",
                "Average over the batch only (dim 0): each position keeps its own mean.",
                _ablation_with(over_positions=True)),
        Mistake("ablated every head of the listed heads' layers",
                "Overwrite only the listed heads: activations[:, :, [heads of this layer]].",
                _ablation_with(whole_layers=True)),
        Mistake("mean-ablated even when method was 'resample'",
                "With 'resample', prompt i takes prompt (i + 1) % n's z: cache[...].roll(-1, dims=0).",
                _ablation_with(always_mean=True)),
        Mistake("returned the sum over the batch, not the mean", "Average the logit differences over the prompts.",
                _ablation_with(reduce="sum")),
        Mistake("returned the first prompt's logit difference only",
                "Average the logit differences over every prompt of the batch.", _ablation_with(reduce="first")),
        Mistake("resampled without wrapping around: the last prompt kept its own z",
                "Prompt i takes prompt (i + 1) % n's z, so the last prompt takes the first's: "
                "cache[...].roll(-1, dims=0).", _ablation_with(resample="no_wrap")),
        Mistake("resampled from the previous prompt (i - 1) instead of the next (i + 1)",
                "Prompt i takes prompt (i + 1) % n's z: roll(-1, dims=0), not roll(1).",
                _ablation_with(resample="previous")),
    ),
}
