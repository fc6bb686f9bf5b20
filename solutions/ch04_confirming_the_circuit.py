"""Chapter 4 reference solutions: testing the induction-circuit hypothesis.

Conventions (TransformerLens's, stated once here and in the chapter):

- Matrices act on row vectors from the right: a residual vector x (a row) becomes
  x @ W. A head's OV circuit is OV = W_V @ W_O and its QK circuit QK = W_Q @ W_K.T,
  both [d_model, d_model]; the head reads x @ OV and scores query x_q against key
  x_k with x_q @ QK @ x_k.T. `model.OV` and `model.QK` are these products, stacked
  [n_layers, n_heads, d_model, d_model], as `FactoredMatrix`es (`.AB` is the dense one).
- Compatibility mode folds each LayerNorm's weight and bias into the matrices that read
  its output, and centres every matrix that writes into the residual stream. So W_Q,
  W_K, W_V act on the *normalised* residual stream (centred, divided by its scale
  `ln.hook_scale`), and every head's output z @ W_O already has mean 0 over d_model.
  All scores below use these folded weights, as TransformerLens's own
  `all_composition_scores` does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint


def composition_score(left: Tensor, right: Tensor) -> Tensor:
    """How much of `left`'s output `right` reads: ||left @ right||_F / (||left||_F ||right||_F).

    `left` is [..., m, k] and `right` [..., k, n]; leading dimensions broadcast, and the
    result has the broadcast leading shape (a 0-dim tensor for two plain matrices).
    The score is 1 when right reads exactly the one direction left writes (both rank 1
    and aligned) and 0 when right ignores everything left can write.
    """
    product = (left @ right).norm(dim=(-2, -1))
    return product / (left.norm(dim=(-2, -1)) * right.norm(dim=(-2, -1)))


def k_composition_scores(sender_ov: Tensor, receiver_qk: Tensor) -> Tensor:
    """K-composition: how much each sender head's output feeds each receiver head's keys.

    `sender_ov` is [n_senders, d_model, d_model] (e.g. `model.OV[0].AB`), `receiver_qk`
    [n_receivers, d_model, d_model] (e.g. `model.QK[1].AB`). A sender writes y @ OV_s at
    the key position; the receiver scores it as x_q @ QK_r @ (y @ OV_s).T =
    x_q @ (QK_r @ OV_s.T) @ y.T, and ||QK_r @ OV_s.T||_F = ||OV_s @ QK_r.T||_F, so the
    pair's matrix is OV_s @ QK_r.T. Returns [n_senders, n_receivers].
    """
    return composition_score(sender_ov[:, None], receiver_qk.transpose(-2, -1)[None])


def q_composition_scores(sender_ov: Tensor, receiver_qk: Tensor) -> Tensor:
    """Q-composition: the sender writes y @ OV_s at the query position; the receiver
    scores (y @ OV_s) @ QK_r @ x_k.T, so the pair's matrix is OV_s @ QK_r.
    Shapes as in `k_composition_scores`; returns [n_senders, n_receivers]."""
    return composition_score(sender_ov[:, None], receiver_qk[None])


def v_composition_scores(sender_ov: Tensor, receiver_ov: Tensor) -> Tensor:
    """V-composition: the receiver moves the sender's output on, (y @ OV_s) @ OV_r, so
    the pair's matrix is OV_s @ OV_r. `receiver_ov` is [n_receivers, d_model, d_model];
    returns [n_senders, n_receivers]."""
    return composition_score(sender_ov[:, None], receiver_ov[None])


def direct_logit_attribution(model, cache, clean_answer: str, corrupt_answer: str) -> Tensor:
    """Each head's direct contribution to logit(clean_answer) - logit(corrupt_answer) at
    the final position of batch item 0. Returns [n_layers, n_heads].

    A head writes z @ W_O into the residual stream; the final LayerNorm divides the
    stream by its scale (`ln_final.hook_scale`, one number per position, from the
    cache), and the unembedding turns it into logits. With the scale held at its
    cached value this is linear, so each head's share is
    (z_h @ W_O[h]) / scale @ (W_U[:, clean] - W_U[:, corrupt]).
    """
    direction = model.W_U[:, model.to_single_token(clean_answer)] - model.W_U[:, model.to_single_token(corrupt_answer)]
    scale = cache["ln_final.hook_scale"][0, -1]  # [1]
    W_O = model.W_O  # a bridge stacks the layers' weights on every access: once is enough
    rows = []
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][0, -1]  # [head, d_head]
        outputs = torch.einsum("hd,hdm->hm", z, W_O[layer])  # [head, d_model]
        rows.append(outputs / scale @ direction)
    return torch.stack(rows)


def path_patch_to_head_input(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    sender: tuple[int, int], receiver: tuple[int, int], receiver_input: str,
) -> float:
    """Logit difference when only the path sender -> receiver's `receiver_input` ("q",
    "k" or "v") carries the corrupt run's sender output; everything else is clean.

    The receiver's input residual stream is the clean one with the sender's output
    swapped for the corrupt run's: resid + (z_corrupt - z_clean) @ W_O[sender], at every
    position. It goes through the receiver layer's LayerNorm afresh (its scale changes
    with the input) and the receiver head's W_Q, W_K or W_V; that replaces only this
    head's `hook_q`/`hook_k`/`hook_v` in a clean run. Only the direct path is patched:
    MLPs and heads between sender and receiver, and the receiver's other inputs, see the
    clean sender.
    """
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    if receiver_input not in ("q", "k", "v"):
        raise ValueError(f"receiver_input must be 'q', 'k' or 'v', not {receiver_input!r}")
    if s_layer >= r_layer:
        raise ValueError(f"the sender (layer {s_layer}) must come before the receiver (layer {r_layer})")
    _, clean = model.run_with_cache(clean_prompt)
    _, corrupt = model.run_with_cache(corrupt_prompt)
    z_name = f"blocks.{s_layer}.attn.hook_z"
    change = (corrupt[z_name][:, :, s_head] - clean[z_name][:, :, s_head]) @ model.W_O[s_layer, s_head]
    resid = clean[f"blocks.{r_layer}.hook_resid_pre"] + change
    # What the folded LayerNorm does, with the scale of *this* input: centre, then divide.
    centred = resid - resid.mean(-1, keepdim=True)
    normalised = centred / (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    weight = getattr(model, f"W_{receiver_input.upper()}")[r_layer, r_head]  # W_Q, W_K or W_V: [d_model, d_head]
    bias = getattr(model, f"b_{receiver_input.upper()}")[r_layer, r_head]
    patched = normalised @ weight + bias

    def patch_receiver(activations: Tensor, hook: HookPoint) -> Tensor:
        activations[:, :, r_head] = patched
        return activations

    name = f"blocks.{r_layer}.attn.hook_{receiver_input}"
    final = model.run_with_hooks(clean_prompt, fwd_hooks=[(name, patch_receiver)])[0, -1]
    return (final[model.to_single_token(clean_answer)] - final[model.to_single_token(corrupt_answer)]).item()


def positional_embedding_patch(
    model, prompt: str, clean_answer: str, corrupt_answer: str, embedding_hook: str = "hook_pos_embed",
) -> float:
    """Logit difference when layer 0's heads move no information from one embedding.

    In the values of every layer-0 head, the embedding at `embedding_hook`
    ("hook_pos_embed" or "hook_embed") is replaced by its mean over the prompt's
    positions; the values are recomputed through layer 0's LayerNorm. The heads'
    queries and keys (so their attention patterns), the MLPs and every later layer see
    the real embeddings. With "hook_pos_embed" the layer-0 heads can no longer copy
    *where* a token was; with "hook_embed", no longer *which* token it was.
    """
    if embedding_hook not in ("hook_pos_embed", "hook_embed"):
        raise ValueError(f"embedding_hook must be 'hook_pos_embed' or 'hook_embed', not {embedding_hook!r}")
    _, cache = model.run_with_cache(prompt)
    embedding = cache[embedding_hook]
    resid = cache["blocks.0.hook_resid_pre"] - embedding + embedding.mean(dim=1, keepdim=True)
    centred = resid - resid.mean(-1, keepdim=True)
    normalised = centred / (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    values = torch.einsum("bpm,hmd->bphd", normalised, model.W_V[0]) + model.b_V[0]

    def patch_values(activations: Tensor, hook: HookPoint) -> Tensor:
        return values

    final = model.run_with_hooks(prompt, fwd_hooks=[("blocks.0.attn.hook_v", patch_values)])[0, -1]
    return (final[model.to_single_token(clean_answer)] - final[model.to_single_token(corrupt_answer)]).item()


def ablate_heads(
    model, prompts: list[str], answers: list[str], wrong_answers: list[str],
    heads: list[tuple[int, int]], method: str = "mean",
) -> float:
    """Mean logit difference over a batch of prompts with `heads` ablated.

    The prompts must have the same number of tokens. Each listed head's `hook_z` is
    replaced at every position: with "mean", by its mean over the batch at that
    position; with "resample", by its value on the next prompt of the batch (prompt i
    takes prompt (i + 1) % n's). Entry i's logit difference is
    logit(answers[i]) - logit(wrong_answers[i]) at the final position.
    """
    if method not in ("mean", "resample"):
        raise ValueError(f"method must be 'mean' or 'resample', not {method!r}")
    if len({model.to_tokens(prompt).shape[1] for prompt in prompts}) != 1:
        raise ValueError("the prompts must all have the same number of tokens")
    tokens = model.to_tokens(list(prompts))
    _, cache = model.run_with_cache(tokens)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(activations: Tensor, hook: HookPoint) -> Tensor:
        layer_heads = by_layer[int(hook.name.split(".")[1])]
        clean = cache[hook.name][:, :, layer_heads]
        if method == "mean":
            replacement = clean.mean(dim=0, keepdim=True).expand_as(clean)
        else:
            replacement = clean.roll(-1, dims=0)
        activations[:, :, layer_heads] = replacement
        return activations

    hooks = [(f"blocks.{layer}.attn.hook_z", ablate) for layer in by_layer]
    final = model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
    good = torch.tensor([model.to_single_token(a) for a in answers], device=final.device)
    bad = torch.tensor([model.to_single_token(a) for a in wrong_answers], device=final.device)
    rows = torch.arange(len(prompts), device=final.device)
    return (final[rows, good] - final[rows, bad]).mean().item()
