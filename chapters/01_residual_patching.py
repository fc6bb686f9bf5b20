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
# # Chapter 1 — Where does the information travel? Residual-stream patching
#
# To predict " Hart" at the end of "Her name was Alex Hart. Tomorrow at lunch time
# Alex", a model has to do two things: notice that the final " Alex" repeats an
# earlier token, and copy the surname that followed that earlier " Alex".
#
# Everything a transformer knows about a position lives in the **residual stream**
# at that position: a vector per token that attention heads and MLPs read from and
# add to, layer after layer. Picture one lane per position. The surname starts in
# the lane of " Hart" and must end up in the lane of the final token, which makes
# the prediction. **Activation patching** shows where it crosses: run the model on
# a slightly different (*corrupt*) prompt, copy one activation from that run into
# a run on the original (*clean*) prompt, and see whether the answer changes.
# (Copying corrupt activations into the clean run is called *noising*; the opposite
# direction, clean into corrupt, *denoising*. They answer different questions: what
# the behaviour needs versus what is enough to restore it. Heimersheim & Nanda, "How to
# use and interpret activation patching" (2024), is the practical guide to both. This
# course noises throughout.)
#
# **By the end of this chapter you will be able to**
#
# - write a TransformerLens hook that overwrites one position of an activation;
# - run a layer × position sweep of residual-stream patches and plot it;
# - read such a plot: where information sits, and in which layer it crosses from
#   one position to another.
#
# You need chapter 0 (the logit difference, the cache) and Python's
# `functools.partial`.

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

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab import course_model, position_labels, residual_patching_figure
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS
from circuitlab_graders import check, prepare

prepare("01_residual_patching")  # the checks get ready in the background (their models load) while you read on

torch.set_grad_enabled(False)
model = course_model()

# %% [markdown]
# ## Three corruptions
#
# The clean prompt carries three pieces of information: the surname, the first
# occurrence of the first name and its second occurrence. Each corruption swaps one
# of them for another single-token name, so both prompts have the same tokens at
# every other position and can be patched position by position.

# %%
for key, case in CORRUPTIONS.items():
    print(f"{key:12s} {case.corrupt_prompt!r}")
tokens = model.to_str_tokens(CLEAN_PROMPT)
print()
print(" | ".join(position_labels(tokens)))

# %% [markdown]
# Keep the positions in mind: position 4 is the first " Alex", position 5 is
# " Hart", and position 11, the last, is the second " Alex", where the prediction
# is made.
#
# ## One patch by hand
#
# TransformerLens lets you attach a **hook**, a function called with the
# activations at a named point (and the `HookPoint` object, whose `.name` says which
# point) that may change them before the forward pass continues.
#
# First record the corrupt run's activations:

# %%
surname = CORRUPTIONS["surname"]
_, corrupt_cache = model.run_with_cache(surname.corrupt_prompt)
hart, carroll = model.to_single_token(" Hart"), model.to_single_token(" Carroll")

# %% [markdown]
# ### Exercise: `patch_residual_stream`
#
# Write the hook. `activations` is the residual stream `[batch, position, d_model]`
# at the hook point `hook.name`. Overwrite position `pos` (every batch item, every
# dimension) with the corrupt run's value at the same hook point,
# `corrupt_cache[hook.name]`, and return the activations. Only that one position may
# change.
#
# (Inside a hook, `hook.name` can be the bridge's own name for the point, such as
# `blocks.0.hook_in` for `blocks.0.hook_resid_pre`. The cache holds both names, so
# `corrupt_cache[hook.name]` is right either way.)

# %% tags=["exercise"]
def patch_residual_stream(activations: Tensor, hook: HookPoint, pos: int, corrupt_cache) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(patch_residual_stream);

# %% [markdown]
# Now attach it after the last block at the surname's position and look at the
# prediction. `partial` fixes the extra arguments so the hook has the signature
# TransformerLens expects. `add_hook` keeps the hook until `reset_hooks()`: always
# reset, or the patch silently stays in every later run.

# %%
last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
clean_final = model(CLEAN_PROMPT)[0, -1]
model.add_hook(last, partial(patch_residual_stream, pos=5, corrupt_cache=corrupt_cache))
patched_final = model(CLEAN_PROMPT)[0, -1]
model.reset_hooks()
for label, final in [("clean", clean_final), ("patched at pos 5", patched_final)]:
    print(f"{label:18s} logit diff Hart - Carroll = {(final[hart] - final[carroll]).item():6.2f}   "
          f"top 3: {[model.to_string(t) for t in final.topk(3).indices]}")

# %% [markdown]
# After the last block, the " Hart" lane no longer matters: the prediction is read
# from the final lane only, so this patch changes nothing. Try `pos=11`, or an
# earlier hook point such as `blocks.0.hook_resid_pre`, and predict the result first.
#
# ## The layer × position sweep
#
# **One intuition before the sweep.** Draw the residual stream as a grid: positions
# left to right, layers top to bottom. Information in that grid travels only
# **rightward** (a position reads itself and earlier positions, never later ones) and
# **downward** (each layer adds to the stream it received). A patch at a cell can
# therefore change only cells below it and to its right, and the final prediction
# sits in the bottom-right corner. Keep the picture in mind when you guess what a
# plot will show.
#
# Doing this by hand does not scale, so we loop over every hook point and every
# position and record the logit difference each time. Three habits from research
# practice: measure with the logit difference rather than eyeballing top tokens;
# use `model.run_with_hooks(tokens, fwd_hooks=[(name, hook_fn)])`, which removes the
# hooks after the run; and plot the result as an image.
#
# ### Exercise: `residual_patching_sweep`
#
# Return a tensor of shape `[n_layers + 1, n_pos]`. Row 0 patches
# `blocks.0.hook_resid_pre`; row `i + 1` patches `blocks.i.hook_resid_post`. Entry
# `[row, pos]` is `logit(clean_answer) − logit(corrupt_answer)` at the final position
# when the corrupt run's activation at that hook point and position is patched into
# the clean run. Answers are strings like `" Hart"`; use `model.to_single_token`.
#
# A plain double loop is fine. (The reference puts all positions of one row into
# a single batched forward pass; try that once yours works.)

# %% tags=["exercise"]
def residual_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(residual_patching_sweep);

# %% [markdown]
# ## What the sweeps show
#
# Blue means the clean answer " Hart" still wins, red means " Carroll" wins, white
# means no preference.
#
# **Predict before you run.** circuitlab-2l has two layers, so its plot has three rows
# (`resid_pre` of block 0, then after block 0, then after block 1) and twelve columns.
# Before running the next cell, sketch on paper which cells you expect to be red when
# the surname is swapped for " Carroll": at the top, at the bottom, and where the
# colour changes column.

# %%
def show_sweep(key: str):
    case = CORRUPTIONS[key]
    result = residual_patching_sweep(model, **case.as_args())
    return residual_patching_figure(result, case, model.to_str_tokens(case.clean_prompt))


show_sweep("surname")

# %% [markdown]
# **Other surname.** At the top (`resid_pre` of block 0) patching is the same as
# changing the input token, so only position 5 matters: patching " Carroll" in
# there flips the answer. At the bottom only the final position matters, because
# by then the final lane already holds the answer. Where the colour moves from
# column 5 to column 11 is where the surname crosses lanes. On circuitlab-2l that
# happens in layer 1 (block 1): after `blocks.0.hook_resid_post` the surname is still
# only at position 5, after `blocks.1.hook_resid_post` it is only at the final position.
#
# **Predict before you run.** Now the *first* " Alex" becomes " Sarah". The surname is
# unchanged, so what can the corrupt run still change? Guess which columns light up,
# and whether they turn red or only pale.

# %%
show_sweep("first_name")

# %% [markdown]
# **Other first first-name** ("Sarah Hart ... Alex"). The first name matters at
# position 4, and, after layer 0, at position 5: a layer-0 head writes "the token
# before me was Alex" into the surname's lane. Later it matters at the final
# position. The colours are paler than in the surname plot: a mismatched first name
# does not point to another surname, it just leaves the model without a reason to
# prefer " Hart", so the difference drops towards zero rather than turning red.
#
# **Predict before you run.** Last, the *second* " Alex" (position 11) becomes
# " Sarah". With the rightward-and-downward picture, which columns can matter at all?

# %%
show_sweep("second_name")

# %% [markdown]
# **Other second first-name** ("Alex Hart ... Sarah"). Only the last column can
# matter: nothing to the right of position 11 can read it, and every other position
# is the same in both runs. Patching position 11 at any
# layer gives the corrupt run's result, because the other lanes are identical in
# both runs.
#
# If the notebook says it runs on random weights, these pictures show noise, not
# this story: the mechanics are identical, the trained circuit is not there.
#
# > **Compared with the tutorial.** The tutorial's first plots are gpt2-small's: there
# > the surname crosses from position 5 to 11 around layer 10, smeared over the layers
# > before and after, typical of a model much larger than the task needs. On the
# > pretrained gelu-2l it found the same two steps as circuitlab-2l shows here: the
# > first name moves to position 5 in layer 0, and the surname moves to position 11 in
# > layer 1.
#
# ## Summary
#
# - A hook receives an activation and its `HookPoint` and may return a changed copy;
#   `run_with_hooks` removes it after the run, `add_hook` keeps it until
#   `reset_hooks()`.
# - A layer × position sweep patches one cell at a time and records the logit
#   difference; information moves only rightward and downward through it.
# - On circuitlab-2l the first name is copied to the surname's position in layer 0,
#   and in layer 1 the surname is copied to the final position.
#
# Chapter 2 finds the attention heads that do it.
