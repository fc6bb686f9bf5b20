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
# # Chapter 2 — Which heads move the names? Attention-head patching
#
# Chapter 1 found *where* the names travel: on circuitlab-2l the first name reaches
# the surname's position in layer 0, and the surname reaches the final position in
# layer 1. Moving information between positions is what attention heads do, and each
# layer has several of them. This chapter patches one head at a time to find out
# which ones carry the information.
#
# **By the end of this chapter you will be able to**
#
# - say which activation holds one head's output, and why patching `hook_z` patches
#   the head's whole contribution;
# - patch one head, at every position or at one, and sweep every head;
# - read the change in logit difference and *guess* each head's job from where and
#   when it matters, before looking inside it.
#
# You need chapter 1 (hooks, sweeps) and tensor indexing over a `head` axis.
#
# ## What a head writes, and which hook we patch
#
# Inside an attention layer, for every head and position, TransformerLens exposes
# (all `[batch, position, head, d_head]`):
#
# - `blocks.L.attn.hook_q`, `hook_k`, `hook_v`: the query, key and value vectors;
# - `blocks.L.attn.hook_z`: the head's mix of value vectors, weighted by its
#   attention pattern (chapter 3 computes it by hand).
#
# A head's contribution to the residual stream is its `z` multiplied by its own slice
# of the output matrix, `z[..., h, :] @ W_O[L, h]` (`[d_model]` per position). The sum
# over heads, plus the bias `b_O`, is `blocks.L.hook_attn_out`. TransformerLens can also
# record each head's contribution separately, as `blocks.L.attn.hook_result`
# (`[batch, position, head, d_model]`), if you set `model.cfg.use_attn_result = True`.
#
# **This course patches `hook_z`.** Real gelu-2l is loaded as a *native* TransformerLens
# bridge, which has no per-head `hook_result` (asking for it raises
# `NotImplementedError`); `hook_z` exists on every model. Nothing is lost: the head's
# result is `z @ W_O[h]`, a fixed linear map of its `z`, so replacing head h's `z`
# with the corrupt run's `z` replaces head h's result with the corrupt run's result,
# and every later computation sees exactly the same numbers. The cell below shows it
# on models whose bridge supports `hook_result` and says so on those that do not.

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
from functools import partial
from typing import Optional

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab import course_model, head_by_position_figure, head_patching_figure
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS
from circuitlab_graders import check, prepare

prepare("02_head_patching")  # the checks get ready in the background (their models load) while you read on

torch.set_grad_enabled(False)
model = course_model()
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
print(f"{n_layers} layers x {n_heads} heads, d_head = {model.cfg.d_head}")

# %%
_, cache = model.run_with_cache(CLEAN_PROMPT)
print("hook_z:", tuple(cache["blocks.0.attn.hook_z"].shape), " W_O:", tuple(model.W_O.shape))
try:
    model.cfg.use_attn_result = True
except NotImplementedError as err:
    print(f"This bridge has no per-head hook_result ({err!s:.80}).")
    print("That is why the course patches hook_z: patching z patches z @ W_O[h], the head's result.")
else:
    _, cache_with_result = model.run_with_cache(CLEAN_PROMPT)
    model.cfg.use_attn_result = False  # extra activations cost memory; switch them off again
    result = cache_with_result["blocks.0.attn.hook_result"]
    from_z = torch.einsum("bphd,hdm->bphm", cache_with_result["blocks.0.attn.hook_z"], model.W_O[0])
    print("hook_result:", tuple(result.shape))
    print(f"largest |hook_result - z @ W_O| in layer 0: {(result - from_z).abs().max().item():.2e}")

# %% [markdown]
# ## Patching one head
#
# ### Exercise: `patch_head_output`
#
# Write a hook for a per-head activation: `activations` is `[batch, position, head, ...]`
# (`hook_z`, or `hook_result` where it exists). Overwrite head `head` with the corrupt
# run's value at the same hook point, `corrupt_cache[hook.name]`: at position `pos`
# only, or at every position when `pos` is `None`. Leave every other head alone and
# return the activations.

# %% tags=["exercise"]
def patch_head_output(
    activations: Tensor, hook: HookPoint, head: int, corrupt_cache, pos: Optional[int] = None
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(patch_head_output);

# %% [markdown]
# Try it on one head (heads are named `layer.head`: 1.1 is layer 1, head 1). The cell
# takes one from `model.course_heads`, the heads the course lists for the model you
# loaded; do not take the list on trust: the sweeps below test every head, and you
# will judge the choice yourself. Patch that head's `z` from the run where the surname
# is " Carroll":

# %%
surname = CORRUPTIONS["surname"]
_, corrupt_cache = model.run_with_cache(surname.corrupt_prompt)
hart, carroll = model.to_single_token(" Hart"), model.to_single_token(" Carroll")


def logit_diff_with(fwd_hooks) -> float:
    final = model.run_with_hooks(CLEAN_PROMPT, fwd_hooks=fwd_hooks)[0, -1]
    return (final[hart] - final[carroll]).item()


layer, head = model.course_heads.get("induction", (1, 6))  # gpt2-small: no head named
hook_name = f"blocks.{layer}.attn.hook_z"
copier = partial(patch_head_output, head=head, corrupt_cache=corrupt_cache)
print(f"clean run:              {logit_diff_with([]):7.3f}")
print(f"head {layer}.{head} patched:       {logit_diff_with([(hook_name, copier)]):7.3f}")
print(f"{layer}.{head} patched at pos 11:  {logit_diff_with([(hook_name, partial(copier, pos=11))]):7.3f}")

# %% [markdown]
# ## The head sweep
#
# ### Exercise: `head_patching_sweep`
#
# Return `[n_layers, n_heads]`: entry `[layer, head]` is the logit difference
# `logit(clean_answer) − logit(corrupt_answer)` at the final position of the clean run
# when that head's `hook_z` is taken from the corrupt run at every position. Patch
# `f"blocks.{layer}.attn.hook_z"`, one head per run.
#
# **Predict before you run.** Chapter 1 showed the surname crossing to the final
# position in layer 1. How many heads do you expect to matter when the surname is
# swapped, in which layer, and with which sign?
#
# A double loop over layers and heads works. (The reference puts all heads of a layer
# into one batch: copy h of the clean prompt is patched at head h only. It returns a new
# tensor from the hook with `torch.where(mask, corrupt, activations)`.)

# %% tags=["exercise"]
def head_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(head_patching_sweep);

# %% [markdown]
# ## Reading the plots: the logit-diff difference
#
# A raw logit difference mixes two things: how sure the clean run is, and how much the
# patch changed. Subtracting the clean run's logit difference leaves only the change:
# white is "this head does not matter here", red is "patching it pushes towards the
# corrupt answer (or away from the clean one)", blue the opposite. The tutorial calls
# this the *logit difference difference*.

# %%
def clean_logit_diff(case) -> float:
    final = model(case.clean_prompt)[0, -1]
    return (final[model.to_single_token(case.clean_answer)] - final[model.to_single_token(case.corrupt_answer)]).item()


def show_heads(key: str):
    case = CORRUPTIONS[key]
    change = head_patching_sweep(model, **case.as_args()) - clean_logit_diff(case)
    return head_patching_figure(change, case)


show_heads("surname")

# %%
show_heads("first_name")

# %% [markdown]
# **Predict before you run** the first-name plot: the first " Alex" becomes " Sarah".
# Chapter 1 saw that change at position 5 after layer 0 and at the final position after
# layer 1. How many layer-0 heads, and how many layer-1 heads, do you expect to light up?
#
# ## Heads by position
#
# A head that matters may matter at one position only. Patching each head at each
# position separately gives a `[layer.head, position]` picture: which head, writing
# into which lane, carries the information.
#
# ### Exercise: `head_by_position_sweep`
#
# Return `[n_layers * n_heads, n_pos]`: row `layer * n_heads + head`, column `pos`, the
# logit difference when only that head at only that position is taken from the corrupt
# run. Your `patch_head_output` with `pos=` does each patch. With `n_pos` positions this
# is `n_layers * n_heads * n_pos` runs: 192 for gelu-2l, 1,728 for gpt2-small on the
# clean prompt. Batching them (copy `head * n_pos + pos` patched at `(pos, head)`) makes
# gelu-2l take seconds; gpt2-small still takes a minute or two on a CPU.

# %% tags=["exercise"]
def head_by_position_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(head_by_position_sweep);

# %% [markdown]
# **Predict before you run.** Three plots follow, one per corruption. For each, guess
# which column (position) and which rows (heads) will light up. The next section
# then asks you to name each head's job.

# %%
def show_heads_by_position(key: str):
    case = CORRUPTIONS[key]
    change = head_by_position_sweep(model, **case.as_args()) - clean_logit_diff(case)
    return head_by_position_figure(change, case, model.to_str_tokens(case.clean_prompt), n_heads)


show_heads_by_position("surname")

# %%
show_heads_by_position("first_name")

# %%
show_heads_by_position("second_name")

# %% [markdown]
# ## What to look for
#
# Read each plot with the residual-stream plots of chapter 1 beside it: every head
# that matters must sit in a lane and a layer where chapter 1 saw the information.
#
# - **The head that moves the surname** writes into the final position (the last
#   column) in the last layer, and patching it from the " Carroll" run turns the
#   prediction red: it copies whatever surname it finds.
# - **A head that moves the first name to the surname** is in layer 0 and matters at
#   the surname's position (" Hart", position 5), and only when the *first* first name
#   changes (second plot), not when the second one does (third plot).
# - **A head that notices the repeated first name** is in layer 0 at the final
#   position, and matters when either first name changes.
#
# **Your guess.** Before reading on, write down (double-click this cell to edit it)
# which head, if any, plays each part on the model you loaded:
#
# - moves the surname to the final position: head …
# - moves the first name to the surname's position: head …
# - notices the repeated first name: head …
#
# Chapter 3 checks your guesses by looking at where these heads attend.

# %% [markdown]
# <details><summary><b>Answer for circuitlab-2l</b> (click to open after guessing)</summary>
#
# - **Moves the surname:** head 1.1 at the final position (patched with " Carroll":
#   −18.5), with head 1.3 helping (−5.0). Patched from either first-name run they
#   cost −7.0 and −7.5 (1.3: −3.2 and −3.0): they stop copying when the first names
#   disagree.
# - **Moves the first name to the surname:** head 0.0 at position 5, and only in the
#   first-name plot (−11.9).
# - **Notices the repeated first name:** no head. In the third plot (second first-name
#   changed) only layer 1 lights up, at the final position; no layer-0 head moves the
#   logit difference by even 0.1. circuitlab-2l has no such head.
#
# If the notebook says it runs on random weights, the plots show noise with the same
# axes; the story needs the trained model.
# </details>

# %% [markdown]
# > **Compared with the tutorial.** On the pretrained gelu-2l (eight heads a layer) the
# > tutorial read the same three plots and found head 1.6 (strongest; 1.1 helps) moving
# > the surname, head 0.2 at position 5 moving the first name, and head 0.1 at the final
# > position breaking when either first name changes: a third role that circuitlab-2l
# > does not have.
#
# ## Summary
#
# - A head's output is `z @ W_O[h]`, so patching its `hook_z` patches its whole
#   contribution; the bridge for gelu-2l has no per-head `hook_result`.
# - Head sweeps (every position) say *which* heads matter; head-by-position sweeps say
#   in which lane. Subtract the clean logit difference to see only the change.
# - Where and when a head matters is a guess at its job: on circuitlab-2l, 0.0 moves
#   the first name into the surname's lane in layer 0, and 1.1 (with 1.3) copies the
#   surname to the final position in layer 1.
#
# Chapter 3 looks inside these heads: where they attend, and why that is enough to
# copy a surname.
