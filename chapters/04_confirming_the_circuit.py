# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 4 — Is it really an induction circuit?
#
# Chapter 3 ended with a hypothesis. A previous-token head in layer 0 writes "the token
# before me was Alex" into the lane of " Hart"; a head in layer 1 at the final " Alex"
# looks for that note with its keys and copies " Hart". A second route was possible: a
# duplicate-token head in layer 0 tells the final position "you are like position 4",
# the previous-token head writes "the token before me was at position 4" into " Hart"'s
# lane, and the layer-1 head matches the two positions.
#
# The tutorial stops there and names the experiments that would settle it: composition
# scores (whether the previous-token head K-composes with the copying head, and the
# duplicate-token head Q-composes with it), and patching the positional embedding to
# test the duplicate-token route. This chapter runs them on circuitlab-2l, with the
# heads chapter 3 found (previous-token head 0.0, copying head 1.1), and then the two
# checks researchers reach for next: how much each head adds to the answer directly,
# and whether the circuit alone keeps the behaviour when everything else is ablated.
#
# **By the end of this chapter you will be able to**
#
# - read a head's OV and QK circuits from the weights and score how two heads compose;
# - split the logit difference into each head's direct share;
# - patch one path, from one head into one input of another (path patching);
# - test what layer 0 moves by patching the embeddings in its values;
# - ablate heads (mean and resample) and measure a circuit's faithfulness.
#
# **What this chapter needs.** More tensor code than chapters 0–3. Matrix products on
# stacked tensors (`A @ B` with leading dimensions, which broadcast), transposing only
# the last two dimensions (`.mT`), broadcasting with `None` indices, `torch.einsum`
# (one string names every axis: `"bpm,hmd->bphd"` multiplies over `m` and keeps the
# rest), and the Frobenius norm (`tensor.norm(dim=(-2, -1))`). Each technique starts
# with a worked example on the model before its exercise; if one of these tools is new,
# run the worked example's cell and change it until its shapes make sense.
#
# Each experiment asks a different question. Composition scores read the weights: could
# these heads talk to each other at all? Path patching asks whether they do, on this
# prompt. Direct logit attribution asks who writes the answer. Ablation asks whether the
# named heads are enough.

# %%
# The course's code: the installed circuitlab package or, in a clone opened at chapters/, the clone's.
import sys
from pathlib import Path

if (Path.cwd().parent / "circuitlab" / "__init__.py").exists() and str(Path.cwd().parent) not in sys.path:
    sys.path.append(str(Path.cwd().parent))  # appended: an installed circuitlab still comes first
try:
    import circuitlab  # noqa: F401
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"{missing.name} is not installed. In a clone of the course run `make setup` and open the chapters "
        "with `.venv/bin/jupyter lab chapters/`. Anywhere else (Colab, JupyterHub, a laptop) run "
        "`%pip install <the circuitlab wheel, sdist or git URL>` in a cell, then restart the kernel; "
        "the README's 'Install as a package' says which torch to install first."
    ) from None

# %%
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab import composition_figure, course_model, patching_heatmap
from circuitlab.composition import composition_baseline
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS, name_batch
from circuitlab_graders import check, prepare

prepare("04_confirming_the_circuit")  # the checks get ready in the background (their models load) while you read on

torch.set_grad_enabled(False)
model = course_model()
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
d_model, d_head = model.cfg.d_model, model.cfg.d_head
# The heads the course names for this model (gpt2-small has none: the tutorial's gelu-2l
# numbers stand in, so every cell runs).
previous_token = model.course_heads.get("previous-token", (0, 2))
copier = model.course_heads.get("induction", (1, 6))
print(f"previous-token head {previous_token[0]}.{previous_token[1]}, copying head {copier[0]}.{copier[1]}")

# %% [markdown]
# ## Conventions: the matrices a head reads and writes with
#
# TransformerLens multiplies **row vectors from the right**: a residual-stream vector `x`
# (a row, `[d_model]`) becomes `x @ W`. A head has two circuits, each a
# `[d_model, d_model]` matrix of rank at most `d_head`:
#
# - its **OV circuit** `OV = W_V @ W_O`: what it writes, `x @ OV`, when it attends to a
#   position whose residual stream is `x`;
# - its **QK circuit** `QK = W_Q @ W_K.T`: how much a query `x_q` attends to a key `x_k`,
#   the score `x_q @ QK @ x_k.T` (before the division by √d_head).
#
# `model.OV` and `model.QK` hold them, `[n_layers, n_heads, d_model, d_model]`, as
# `FactoredMatrix` objects that keep the two thin factors; `.AB` multiplies them out.
# Indexing first keeps them cheap: `model.OV[0, 0].AB` is head 0.0's `[d_model, d_model]`
# OV circuit, `model.QK[1].AB` layer 1's four QK circuits, `[4, d_model, d_model]`.
#
# **LayerNorm.** A bridge in compatibility mode folds each LayerNorm's weight and bias
# into the matrices that read it, and centres every matrix that writes into the
# residual stream. So `W_Q`, `W_K`, `W_V` act on the *normalised* stream: centred and
# divided by its scale, one number per position, which the cache keeps as
# `blocks.L.ln1.hook_scale`. The cell checks it: the queries are the normalised stream
# times `W_Q` plus `b_Q`, exactly. Everything in this chapter uses these folded weights,
# as TransformerLens's own composition scores do.

# %%
_, cache = model.run_with_cache(CLEAN_PROMPT)
print("model.OV:", type(model.OV).__name__, tuple(model.OV.shape), " model.QK:", tuple(model.QK.shape))
normalised = cache["blocks.1.ln1.hook_normalized"]
queries = torch.einsum("bpm,hmd->bphd", normalised, model.W_Q[1]) + model.b_Q[1]
print(f"largest |normalised stream @ W_Q + b_Q - hook_q| in layer 1: "
      f"{(queries - cache['blocks.1.attn.hook_q']).abs().max().item():.1e}")
resid = cache["blocks.1.hook_resid_pre"]
by_hand = (resid - resid.mean(-1, keepdim=True)) / cache["blocks.1.ln1.hook_scale"]
print(f"normalised stream = centred stream / ln1.hook_scale, to {(by_hand - normalised).abs().max().item():.1e}")

# %% [markdown]
# ## Composition scores
#
# Two heads *compose* when the later one reads what the earlier one writes. If the
# earlier head writes only into directions the later head ignores, the pair cannot form
# a circuit, however the prompts look. "A Mathematical Framework for Transformer
# Circuits" (Elhage et al., 2021) measures it with one number for two matrices: how
# large their product is compared with the two matrices themselves,
#
#     score(L, R) = ‖L @ R‖_F / (‖L‖_F · ‖R‖_F),
#
# with the Frobenius norm ‖M‖_F (the square root of the sum of squared entries). It
# lies between 0 and 1: 0 when `R` reads nothing that `L` writes, 1 when both have rank
# 1 and `R` reads exactly the direction `L` writes. The paper writes matrices acting on
# column vectors; here `L` acts first on a row vector, then `R`.
#
# **Worked example.** `L` writes only along the first axis (`x @ L` is always a multiple
# of `e0`). A matrix `R` that reads only `e0` gets all of it; one that reads only `e1`
# gets nothing.

# %%
e0, e1 = torch.eye(3)[0], torch.eye(3)[1]
L = torch.outer(torch.tensor([1.0, 2.0, 0.0]), e0)  # every input is written along e0
for name, R in (("reads e0", torch.outer(e0, torch.tensor([0.0, 1.0, 1.0]))),
                ("reads e1", torch.outer(e1, torch.tensor([0.0, 1.0, 1.0])))):
    by_hand = (L @ R).norm() / (L.norm() * R.norm())
    print(f"R {name}: ||L @ R|| / (||L|| ||R||) = {by_hand.item():.3f}")

# %% [markdown]
# Your function does the same for stacks of matrices, one score per pair.
#
# ### Exercise: `composition_score`
#
# Return the score of `left` (`[..., m, k]`) and `right` (`[..., k, n]`). Leading
# dimensions broadcast, as in `left @ right`, and the result has that leading shape (a
# 0-dim tensor for two plain matrices): take each norm over the last two dimensions only.

# %% tags=["exercise"]
def composition_score(left: Tensor, right: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(composition_score);

# %% [markdown]
# ## Which heads compose?
#
# A layer-0 head (the *sender*) writes `y @ OV_s` into some position's stream. A layer-1
# head (the *receiver*) can read it in three ways, and each gives the pair one matrix:
#
# - **K-composition**: the sender wrote at the position the receiver attends *to*. The
#   score becomes `x_q @ QK_r @ (y @ OV_s).T = x_q @ (QK_r @ OV_s.T) @ y.T`; the matrix
#   `QK_r @ OV_s.T` has the same norm as its transpose, so the pair scores
#   `composition_score(OV_s, QK_r.T)`, where `QK_r.T` is the transpose of *one*
#   receiver's matrix. This is the previous-token route: 0.0 writes "after Alex" into
#   the key of " Hart".
# - **Q-composition**: the sender wrote at the position the receiver attends *from*:
#   `(y @ OV_s) @ QK_r @ x_k.T`, so `composition_score(OV_s, QK_r)`. This is the
#   duplicate-token route: "you are like position 4" arrives in the query.
# - **V-composition**: the receiver moves the sender's output on, `(y @ OV_s) @ OV_r`, so
#   `composition_score(OV_s, OV_r)`.
#
# If you have seen the paper's formulas (K: W_QK W_OV, Q: W_QKᵀ W_OV), they are these
# with every matrix transposed: the paper's vectors are columns.
#
# ### Exercises: `k_composition_scores`, `q_composition_scores`, `v_composition_scores`
#
# Each takes the senders' OV circuits, `[n_senders, d_model, d_model]` (e.g.
# `model.OV[0].AB`), and the receivers' QK circuits (or OV circuits, for V), e.g.
# `model.QK[1].AB`, and returns `[n_senders, n_receivers]`: entry `[s, r]` scores sender
# `s` against receiver `r`. Use your `composition_score`; broadcasting
# (`sender_ov[:, None]` against `receiver[None]`) scores every pair at once.
#
# **Transpose the last two dimensions only.** On a stack `[n, d_model, d_model]`,
# `receiver_qk.T` reverses *every* dimension (giving `[d_model, d_model, n]`; PyTorch
# warns that `.T` on more than two dimensions is deprecated). Write
# `receiver_qk.mT` or `receiver_qk.transpose(-2, -1)`, which transposes each matrix of
# the stack.
#
# **Worked example**, one pair, plain matrices: the previous-token head against the
# copying head, each orientation. The exercises compute these for every pair.

# %%
p, c = previous_token[1], copier[1]
one_ov, one_qk = model.OV[0, p].AB, model.QK[1, c].AB  # [d_model, d_model] each
print(f"0.{p} -> 1.{c}:  K {composition_score(one_ov, one_qk.T).item():.3f}  "
      f"Q {composition_score(one_ov, one_qk).item():.3f}  "
      f"V {composition_score(one_ov, model.OV[1, c].AB).item():.3f}")

# %% tags=["exercise"]
def k_composition_scores(sender_ov: Tensor, receiver_qk: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(k_composition_scores);

# %% tags=["exercise"]
def q_composition_scores(sender_ov: Tensor, receiver_qk: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(q_composition_scores);

# %% tags=["exercise"]
def v_composition_scores(sender_ov: Tensor, receiver_ov: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(v_composition_scores);

# %% [markdown]
# What counts as high? Two unrelated matrices of this shape already share some
# directions by chance. The baseline below scores 200 pairs of random circuits: each a
# product of Gaussian `[d_model, d_head]` and `[d_head, d_model]` factors, the shape and
# rank of a real head's circuit. Its mean is the white of the heatmaps: red is above
# chance, blue below. (Trained weights are not Gaussian, so a score a little above the
# baseline proves little; compare the pairs with each other too.)
#
# The cell also checks your scores against TransformerLens's `all_composition_scores`,
# which computes the same numbers from the factored matrices.
#
# **Predict before you run.** If chapter 3's story is right, which row (sender) and
# which columns (receivers) should stand out in the K panel? What should the Q panel
# show, given that chapter 3 found no duplicate-token head?

# %%
sender_ov, receiver_qk, receiver_ov = model.OV[0].AB, model.QK[1].AB, model.OV[1].AB
scores = {"K": k_composition_scores(sender_ov, receiver_qk), "Q": q_composition_scores(sender_ov, receiver_qk),
          "V": v_composition_scores(sender_ov, receiver_ov)}
baseline = composition_baseline(composition_score, d_model, d_head)
print(f"random baseline (d_model {d_model}, d_head {d_head}): {baseline.mean():.3f} ± {baseline.std():.3f}"
      f" (largest of 200: {baseline.max():.3f})")
for kind, ours in scores.items():
    theirs = model.all_composition_scores(kind).scores[0, :, 1, :]
    print(f"{kind}: largest difference from TransformerLens's all_composition_scores: "
          f"{(ours - theirs).abs().max().item():.1e}")
composition_figure(scores, baseline.mean().item(), sender_layer=0, receiver_layer=1)

# %%
k_scores = scores["K"]
sender, receiver = divmod(int(k_scores.argmax()), n_heads)
print(f"largest K-composition: 0.{sender} -> 1.{receiver}, {k_scores.max():.3f} "
      f"= {k_scores.max() / baseline.mean():.1f} x the baseline")
p, c = previous_token[1], copier[1]
print(f"previous-token head -> copying head, 0.{p} -> 1.{c}: K {k_scores[p, c]:.3f} "
      f"({k_scores[p, c] / baseline.mean():.1f} x baseline), Q {scores['Q'][p, c]:.3f}, V {scores['V'][p, c]:.3f}")
print(f"largest Q-composition into the copying head: {scores['Q'][:, c].max():.3f} "
      f"(head 0.{int(scores['Q'][:, c].argmax())}; {scores['Q'][:, c].max() / baseline.mean():.2f} x baseline)")

# %% [markdown]
# **What circuitlab-2l shows.** The row of the previous-token head 0.0 is red in the
# K panel wherever the receiver is one of the three layer-1 heads that chapter 3 scored
# as induction heads on random tokens (1.0, 1.3, 1.1): 0.21 to 0.26, between 2.4 and
# 2.9 times the random baseline of 0.088. The largest pair is **0.0 → 1.0, not 0.0 →
# 1.1**: head 1.0 is the best induction head on repeated random tokens, but on the
# names prompt it rests on the first token, so its weights are ready for the circuit
# while the names prompt uses 1.1 (0.0 → 1.1 scores 0.21, 2.4 times the baseline, the
# third of the row). The weaker previous-token head 0.3 K-composes with the same three
# heads, a little less; head 1.2, which is no induction head, scores below the baseline
# with 0.0. The Q panel has no such row: the largest Q-composition into the copying
# head 1.1 is 0.10 (from 0.2), 1.1 times the baseline. That fits chapter 3, which found
# no duplicate-token head in this model. (The red column there is head 1.2, whose
# queries read the previous-token heads; the experiments below find it playing no part
# in copying the surname.)
#
# Composition scores only say what the weights *allow*. The next experiments ask what
# happens on the prompt.
#
# ## Direct logit attribution
#
# The final residual stream is a sum: the embeddings, every head's output
# `z_h @ W_O[h]`, every MLP's output, and the biases. The logits are that sum after the
# final LayerNorm and the unembedding. LayerNorm is not linear, but once its scale is
# fixed at the value the clean run used (`ln_final.hook_scale` in the cache), the rest
# is: every term of the sum contributes its own share to the logit difference,
#
#     share of head h = (z_h @ W_O[h]) / scale · (W_U[:, clean] − W_U[:, corrupt]).
#
# (The centring of LayerNorm does nothing here: in compatibility mode every matrix that
# writes into the stream is centred, so every head's output already has mean 0.) This
# is *direct* logit attribution: a layer-0 head whose output only matters through a
# layer-1 head gets little credit here, however important it is.
#
# **Worked example**: the copying head's share, by hand. Its `z` at the final position,
# times its slice of `W_O`, is what it writes there; divide by the final LayerNorm's
# scale and project onto the direction that separates the two answers.

# %%
final_scale = cache["ln_final.hook_scale"][0, -1]  # [1]: one number for the final position
answer_direction = model.W_U[:, model.to_single_token(" Hart")] - model.W_U[:, model.to_single_token(" Carroll")]
written = cache[f"blocks.{copier[0]}.attn.hook_z"][0, -1, copier[1]] @ model.W_O[copier[0], copier[1]]  # [d_model]
print(f"head {copier[0]}.{copier[1]} writes {written.norm().item():.1f} long at the final position; "
      f"its direct share of logit(' Hart') - logit(' Carroll'): {(written / final_scale @ answer_direction).item():.2f}")

# %% [markdown]
# ### Exercise: `direct_logit_attribution`
#
# Return `[n_layers, n_heads]`: each head's direct share of
# `logit(clean_answer) − logit(corrupt_answer)` at the final position of batch item 0 of
# `cache`, with `z` from `blocks.L.attn.hook_z`, `model.W_O`, the final position's
# `ln_final.hook_scale` and `model.W_U`.

# %% tags=["exercise"]
def direct_logit_attribution(model, cache, clean_answer: str, corrupt_answer: str) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(direct_logit_attribution);

# %% [markdown]
# The heads' shares and everything else must add up to the model's own logit difference.
# "Everything else" is the token and position embeddings, the MLP outputs, each layer's
# `b_O` (compatibility mode folds the value biases into it) and the unembedding bias.

# %%
good, bad = " Hart", " Carroll"
logit_diff = (lambda final: (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).item())(
    model(CLEAN_PROMPT)[0, -1])
dla = direct_logit_attribution(model, cache, good, bad)
direction = model.W_U[:, model.to_single_token(good)] - model.W_U[:, model.to_single_token(bad)]
scale = cache["ln_final.hook_scale"][0, -1]
rest = {"embeddings": cache["hook_embed"][0, -1] + cache["hook_pos_embed"][0, -1],
        "MLPs": sum(cache[f"blocks.{layer}.hook_mlp_out"][0, -1] for layer in range(n_layers)),
        "b_O": model.b_O.sum(0)}
shares = {name: (vector / scale @ direction).item() for name, vector in rest.items()}
shares["b_U"] = (model.b_U[model.to_single_token(good)] - model.b_U[model.to_single_token(bad)]).item()
print(f"heads {dla.sum().item():+.3f}  " + "  ".join(f"{name} {value:+.3f}" for name, value in shares.items()))
print(f"sum {dla.sum().item() + sum(shares.values()):.4f}   the model's logit difference {logit_diff:.4f}")
patching_heatmap(dla, x_labels=[str(h) for h in range(n_heads)], y_labels=[f"layer {layer}" for layer in range(n_layers)],
                 title=f"Direct logit attribution:{good} vs{bad}", x_title="head",
                 colorbar_label="direct share of the logit difference")

# %% [markdown]
# On circuitlab-2l the copying head 1.1 writes 8.4 of the 13.3 directly, and head 1.3,
# which chapter 2 saw helping, 3.5; every other head adds less than 0.7. The previous-
# token head 0.0 adds only 0.4 directly: its work reaches the answer through 1.1.
#
# ## Path patching: composition tested causally
#
# Chapter 2 patched a head's output into *everything* after it. To test one arrow of
# the circuit, patch it into one place only (*path patching*, introduced by Wang et al.,
# "Interpretability in the Wild", 2022, to find the indirect-object circuit in GPT-2): take the sender's output from the corrupt
# run and let **only one receiver head's query, key or value input** see it, while
# everything else (the sender's other paths, the other heads, the MLPs) sees the clean
# run. If 0.0 → 1.1 is a K-composition, then patching 0.0 from the run with another
# first first-name ("Her name was Sarah Hart ...") into 1.1's *keys* alone should make
# " Hart"'s key say "after Sarah", and 1.1 should stop finding it. Through the queries
# or values, nothing much should happen.
#
# The receiver's input is the clean run's residual stream entering the receiver's
# layer, `blocks.{receiver layer}.hook_resid_pre`, with the sender's output swapped for
# the corrupt run's **at every position**:
# `resid + (z_corrupt − z_clean)[sender] @ W_O[sender]`. (Keys and values matter at
# every position the receiver attends to. Of the queries, in this two-layer model only
# the final position's reaches the logits, since no later layer reads the others; the
# rule stays the same: patch every position.) That changed stream goes through the receiver
# layer's LayerNorm again (its scale depends on the input: do not reuse the clean one)
# and the receiver head's `W_Q`, `W_K` or `W_V` (plus bias). The result replaces that
# head's slice of `hook_q`, `hook_k` or `hook_v`, at every position, in a clean run.
# This patches the *direct* path only; a path through layer 0's MLP is left clean.
#
# ```
#  clean run:    ... blocks.0 ──► blocks.1.hook_resid_pre ──► blocks.1 ──► logits
#                                         │ (+ Δ at every position, this copy only)
#                                         ▼
#                      LayerNorm afresh ──► @ W_K[1, r] + b_K[1, r]
#                                         │
#                                         ▼
#                 blocks.1.attn.hook_k[:, :, r]  ◄── replaced; heads ≠ r, q, v, MLPs: clean
#
#  Δ = (z_corrupt − z_clean)[:, :, s] @ W_O[0, s]     sender 0.s, from both runs' caches
# ```
#
# The diagram shows a key input; for a query or a value input read `W_Q`/`b_Q` and
# `hook_q`, or `W_V`/`b_V` and `hook_v`.
#
# **Worked example**, the first step. With the other first first-name ("Sarah Hart ..."),
# head 0.0's output changes where its input changed. Δ below is that change, one
# `[d_model]` vector per position. On circuitlab-2l it is 15.8 long at " Hart", whose
# previous token is now " Sarah", 4.8 at " Sarah" itself and 1.8 at the "." after
# " Hart"; 0.1 or less everywhere else. The exercise adds Δ to the receiver layer's
# input at every position and follows the diagram from there.

# %%
first_name, second_name = CORRUPTIONS["first_name"], CORRUPTIONS["second_name"]
_, sarah_cache = model.run_with_cache(first_name.corrupt_prompt)
z_name = f"blocks.{previous_token[0]}.attn.hook_z"
delta = ((sarah_cache[z_name] - cache[z_name])[0, :, previous_token[1]]
         @ model.W_O[previous_token[0], previous_token[1]])  # [position, d_model]
print(f"|Δ| per position, sender {previous_token[0]}.{previous_token[1]}:",
      " ".join(f"{x:.1f}" for x in delta.norm(dim=-1).tolist()))
print("|clean resid_pre of layer 1| per position:        ",
      " ".join(f"{x:.1f}" for x in cache["blocks.1.hook_resid_pre"][0].norm(dim=-1).tolist()))

# %% [markdown]
# ### Exercise: `path_patch_to_head_input`
#
# Return the logit difference at the final position of the clean run when the corrupt
# run's output of `sender` (a `(layer, head)` pair) reaches only `receiver`'s
# `receiver_input` (`"q"`, `"k"` or `"v"`), at every position, through the receiver
# layer's `hook_resid_pre` as above. The sender's layer comes before the receiver's.
# The model's `cfg.eps` is LayerNorm's epsilon: `centred / sqrt(mean(centred ** 2) + eps)`.

# %% tags=["exercise"]
def path_patch_to_head_input(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    sender: tuple[int, int], receiver: tuple[int, int], receiver_input: str,
) -> float:
    raise NotImplementedError


# %% tags=["check"]
check(path_patch_to_head_input);

# %%
def clean_logit_diff(case) -> float:
    final = model(case.clean_prompt)[0, -1]
    return (final[model.to_single_token(case.clean_answer)] - final[model.to_single_token(case.corrupt_answer)]).item()


print(f"{first_name.label}: clean logit difference {clean_logit_diff(first_name):.2f}")
print(f"   sender {previous_token[0]}.{previous_token[1]} into    " + "".join(f"{which:>8}" for which in "qkv"))
for r in range(n_heads):
    row = [path_patch_to_head_input(model, **first_name.as_args(), sender=previous_token, receiver=(copier[0], r),
                                    receiver_input=which) for which in "qkv"]
    print(f"   head {copier[0]}.{r}'s input    " + "".join(f"{x:8.2f}" for x in row))

print(f"\n{second_name.label}: clean logit difference {clean_logit_diff(second_name):.2f}")
for s in range(n_heads):
    value = path_patch_to_head_input(model, **second_name.as_args(), sender=(0, s), receiver=copier, receiver_input="q")
    print(f"   0.{s} into {copier[0]}.{copier[1]}'s queries: {value:.3f}")

# %% [markdown]
# **circuitlab-2l.** Through 1.1's keys alone, 0.0's corrupt output takes the logit
# difference from 13.3 to 8.7; through its queries nothing changes, through its values
# it drops by 0.8. Through 1.3's keys it falls to 10.1; the other two layer-1 heads do
# not care. The K-composition is real, and 1.1 and 1.3 share the work. For the
# duplicate-token route the test is the other corruption: change the *second* first name
# and patch each layer-0 head into 1.1's *queries*. A duplicate-token head's output at
# the final position would change ("no earlier copy of Sarah") and break the copying;
# here no layer-0 head moves the logit difference by even 0.01. The duplicate-token
# route is absent, as the Q-composition scores suggested.
#
# **Where the rest of 0.0's effect goes.** Patched at every position into everything
# after it, 0.0 costs −11.8 (chapter 3's table), but the separate paths above add up to
# only about −8.6 (keys of 1.1 −4.6, keys of 1.3 −3.2, values of 1.1 −0.8). Paths do
# not add: the two copying heads cover for each other. With only 1.1's keys patched,
# 1.1's attention to " Hart" falls from 0.98 to 0.21 but 1.3 still copies " Hart"
# (−4.6, where 1.1's direct share was 8.4); with only 1.3's keys patched, 1.1 copies
# on. Patch the keys of 1.1 and 1.3 *together* (one run, both slices replaced) and the
# logit difference falls by 11.2; all three inputs of all four layer-1 heads together,
# by 11.5. The paths from 0.0 through the MLPs or straight to the logits move it by
# less than 0.3 (the largest, through MLP 0, by +0.2). So nearly all of 0.0's effect
# goes through the keys of the two copying heads; path patches one receiver at a time
# understate a circuit whose heads back each other up.
#
# ## Positional embeddings: which information does layer 0 move?
#
# The two routes need layer 0 to move different things.
#
# - **Previous-token route**: the previous-token head at " Hart" copies *which token*
#   came before ("Alex"), and 1.1 matches it against the token at the final position.
# - **Duplicate-token route**: the duplicate-token head at the final position copies
#   *where* the earlier " Alex" was ("position 4"), the previous-token head copies the
#   same "position 4" into " Hart"'s lane, and the layer-1 head matches positions.
#
# Both routes need layer 0's heads to *attend* by position (the previous-token head
# looks one position back), so patching the positional embeddings everywhere would
# break both. The experiment keeps every attention pattern and changes only what the
# layer-0 heads *copy*: in their value vectors, the positional embedding of every
# position is replaced by its mean over the prompt. Then no layer-0 head can tell
# layer 1 where a token was. The mirror experiment replaces the token embedding
# (`hook_embed`) in the values instead, so no layer-0 head can say which token it saw.
#
# **Predict before you run**, with the table below: which row keeps " Hart" on
# circuitlab-2l, given what chapters 3 and 4 have found so far?
#
# | patch in layer 0's values | previous-token route predicts | duplicate-token route predicts |
# |---|---|---|
# | `hook_pos_embed` → its mean | " Hart" as before | " Hart" lost |
# | `hook_embed` → its mean | " Hart" lost | " Hart" as before |
#
# ### Exercise: `positional_embedding_patch`
#
# Return the logit difference at the final position of `prompt` when the embedding at
# `embedding_hook` (`"hook_pos_embed"` or `"hook_embed"`) is replaced by its mean over
# positions *in the values of every layer-0 head only*: from the cache of the prompt,
# take `blocks.0.hook_resid_pre`, swap that embedding for its mean, normalise the
# result afresh (as in the path patch) and compute `hook_v` of layer 0 from it, for
# every head and position. The mean is over **all** the prompt's positions, the
# beginning-of-sequence token at position 0 included, one `[d_model]` vector that
# replaces the embedding at every position (BOS included). Queries, keys, MLPs and
# later layers see the real embeddings.
#
# **Worked example**: the swap itself, for the positional embedding.

# %%
pos_embed = cache["hook_pos_embed"]  # [batch, position, d_model]
mean_pos = pos_embed.mean(dim=1, keepdim=True)  # [batch, 1, d_model]: over all positions, BOS included
swapped = cache["blocks.0.hook_resid_pre"] - pos_embed + mean_pos
print("hook_pos_embed", tuple(pos_embed.shape), "-> its mean", tuple(mean_pos.shape))
print("how far the swap moves the stream, per position (BOS first):",
      " ".join(f"{x:.1f}" for x in (swapped - cache["blocks.0.hook_resid_pre"])[0].norm(dim=-1).tolist()))

# %% [markdown]
# The exercise normalises `swapped` afresh and turns it into layer 0's values.

# %% tags=["exercise"]
def positional_embedding_patch(
    model, prompt: str, clean_answer: str, corrupt_answer: str, embedding_hook: str = "hook_pos_embed",
) -> float:
    raise NotImplementedError


# %% tags=["check"]
check(positional_embedding_patch);

# %%
print(f"clean run:                              {logit_diff:6.2f}")
for hook, what in (("hook_pos_embed", "where a token was"), ("hook_embed", "which token it was")):
    value = positional_embedding_patch(model, CLEAN_PROMPT, good, bad, embedding_hook=hook)
    print(f"layer 0 cannot copy {what:<18} {value:6.2f}   ({hook} -> its mean in layer 0's values)")

# %% [markdown]
# On circuitlab-2l the positional patch changes the logit difference by less than 0.1,
# while the token patch takes it from 13.3 to 4.7: the model uses the previous-token
# route, and only that one.
#
# ## Ablations: is the circuit enough?
#
# The last question turns the experiments around: keep only the circuit and remove
# everything else. *Ablating* a head replaces its output with something that carries no
# information about the prompt at hand:
#
# - **mean ablation**: its `z` at each position, averaged over a batch of similar
#   prompts (here: eight people in the tutorial's template);
# - **resample ablation**: its `z` from another prompt of the batch (prompt i takes
#   prompt i + 1's, and the last prompt wraps around to the first's:
#   `(i + 1) % n`), the same idea as chapter 1's corrupt run.
#
# Zeros are not a good replacement: a head whose output is always large would look
# important only because zero is far from anything it ever writes. The tutorial warns
# that ablations can "mess up your model"; comparing two kinds guards against that.
# (Heimersheim & Nanda, "How to use and interpret activation patching", 2024, discuss
# which replacement answers which question.)
#
# **Worked example**, for a batch of three prompts and one head:
#
# | prompt | its own `z` | mean ablation puts | resample ablation puts |
# |---|---|---|---|
# | 0 | `z0` | `(z0 + z1 + z2) / 3` | `z1` |
# | 1 | `z1` | `(z0 + z1 + z2) / 3` | `z2` |
# | 2 | `z2` | `(z0 + z1 + z2) / 3` | `z0` (wraps around) |
#
# each at every position separately: position p takes the mean, or the next prompt's
# value, at position p.
#
# ### Exercise: `ablate_heads`
#
# Return the mean over the batch of `logit(answers[i]) − logit(wrong_answers[i])` at the
# final position, with every head in `heads` (a list of `(layer, head)`) ablated at
# every position by `method`, `"mean"` or `"resample"` as above (resample: prompt i
# takes prompt `(i + 1) % n`'s `z`, the last one the first's). The prompts have the
# same number of tokens, so one batch runs them all.

# %% tags=["exercise"]
def ablate_heads(
    model, prompts: list[str], answers: list[str], wrong_answers: list[str],
    heads: list[tuple[int, int]], method: str = "mean",
) -> float:
    raise NotImplementedError


# %% tags=["check"]
check(ablate_heads);

# %% [markdown]
# Faithfulness asks how much of the behaviour the circuit keeps on its own:
#
#     faithfulness = (F(only the circuit kept) − F(every head ablated))
#                    / (F(nothing ablated) − F(every head ablated)),
#
# with F the batch's mean logit difference: 1 means the circuit does everything, 0 that
# it does nothing. The circuit is the heads the course names; the cell then adds the
# head that direct logit attribution ranked next.
#
# **Predict before you run.** From path patching and direct logit attribution above,
# roughly what faithfulness do you expect for the two named heads alone, and for the
# two plus the next head?

# %%
batch = name_batch()
every_head = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
circuit = sorted(set(model.course_heads.values())) or [(0, 2), (0, 1), (1, 6)]
ranked = [divmod(int(i), n_heads) for i in dla.flatten().argsort(descending=True)]
helper = next(h for h in ranked if h not in circuit)
print(f"batch of {len(batch.prompts)}, e.g. {batch.prompts[1]!r} -> {batch.answers[1]!r} vs {batch.wrong_answers[1]!r}")


def faithfulness(kept: list[tuple[int, int]], method: str) -> dict[str, float]:
    ablate = lambda heads: ablate_heads(model, **batch.as_args(), heads=heads, method=method)  # noqa: E731
    result = {"nothing ablated": ablate([]), "every head ablated": ablate(every_head),
              "the circuit ablated": ablate(kept), "only the circuit kept": ablate([h for h in every_head if h not in kept])}
    result["faithfulness"] = ((result["only the circuit kept"] - result["every head ablated"])
                              / (result["nothing ablated"] - result["every head ablated"]))
    return result


for kept in (circuit, circuit + [helper]):
    names = ", ".join(f"{layer}.{head}" for layer, head in kept)
    for method in ("mean", "resample"):
        result = faithfulness(kept, method)
        print(f"circuit {{{names}}}, {method:>8}: " + "  ".join(f"{k} {v:6.2f}" for k, v in result.items()))

# %% [markdown]
# **circuitlab-2l.** The batch's mean logit difference is 10.8. Ablating the two named
# heads, 0.0 and 1.1, destroys it (mean ablation: −0.6, as low as ablating every head;
# resample ablation: −9.9, pushed towards the other person's surname). Keeping only
# those two and ablating the other six keeps 85 % of it with mean ablation and 76 %
# with resample ablation. Adding 1.3, the head direct logit attribution ranks next,
# brings it to 99.9 % and 98.5 %: the circuit of this model is 0.0 → {1.1, 1.3}, which is
# what path patching said too.
#
# > **Compared with the tutorial.** The tutorial's gelu-2l circuit is 0.2 → 1.6 (1.1
# > helping), with a probable second route through the duplicate-token head 0.1. It
# > proposed two of this chapter's experiments to settle it: whether 0.2 K-composes and
# > 0.1 Q-composes with 1.6, and a positional-embedding patch, which would cost some of
# > the logit difference if 0.1 copies positions. The pretrained gelu-2l weights cannot
# > be downloaded where this course was built, so its answers are not in this text; with
# > the weights in your Hugging Face cache, this notebook runs on gelu-2l (its course
# > heads are 0.2, 0.1 and 1.6) and every cell above answers them.
#
# ## Summary
#
# On circuitlab-2l every experiment agrees.
#
# - **Weights**: the previous-token head 0.0 K-composes with the layer-1 induction
#   heads, 2.4–2.9 times the random baseline; nothing Q-composes with the copying head.
# - **Direct logit attribution**: 1.1 and 1.3 write the answer (8.4 and 3.5 of 13.3).
# - **Path patching**: 0.0's output reaches 1.1 and 1.3 through their keys; the two
#   heads back each other up, so one at a time understates the path.
# - **Positional patching**: what 0.0 moves is *which* token came before, not where.
# - **Ablations**: those three heads alone keep the behaviour (faithfulness 0.98 or
#   more).
#
# There is no duplicate-token route. It is an induction circuit (Olsson et al., 2022).
