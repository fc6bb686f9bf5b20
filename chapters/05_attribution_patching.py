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
# # Chapter 5 — Every patch from one backward pass: attribution patching
#
# Every sweep so far reruns the model once per cell: 36 runs for circuitlab-2l's
# residual stream on the tutorial prompt, 96 for its heads by position, 1,728 for
# gpt2-small's heads by position, and ten times more on a prompt ten times longer;
# path patching (chapter 4) needs more still. Batching shrinks the constant, not the
# growth. On a large model with long prompts, researchers first *estimate* every
# patch at once and then run the exact patch only where the estimate points.
#
# The estimate is the first term of a Taylor expansion. Write LD for the logit
# difference at the final position, as a function of one activation `a` of the clean
# run. Patching replaces `a_clean` by `a_corrupt`, so
#
#     LD(a_corrupt) − LD(a_clean)  ≈  (a_corrupt − a_clean) · ∂LD/∂a,
#
# with the gradient taken on the **clean** run, the run being patched. The dot
# product sums over the activation's last axis (`d_model` for the residual stream,
# `d_head` for a head's `z`). One corrupt forward pass gives every `a_corrupt`, and one
# clean forward and backward pass gives every `a_clean` and every gradient. Every cell
# of every sweep then costs one multiplication: this is **attribution patching**.
#
# It is only a first-order estimate. This chapter computes it for the three sweeps of
# chapters 1 and 2, lays it beside the exact sweeps, and finds where it goes wrong.
# The method is Neel Nanda's ("Attribution Patching: Activation Patching At Industrial
# Scale", 2023); Kramár et al., "AtP*: An efficient and scalable method for localizing
# LLM behaviour to components" (2024), study when it fails and how to repair it.
#
# **By the end of this chapter you will be able to**
#
# - take gradients of the logit difference with respect to activations on a
#   TransformerLens 4 bridge, without leaving anything behind;
# - estimate the residual, head and head-by-position sweeps from one backward pass;
# - compare an estimate with the exact sweep and explain where and why it misses.
#
# **What this chapter needs**: chapters 1 and 2 (the sweeps and their layouts), and
# PyTorch autograd: `torch.enable_grad()`, `torch.autograd.grad(output, inputs)`, and
# the fact that a gradient has the shape of the tensor it is taken for.

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
import time

import torch
from IPython.display import display
from torch import Tensor

from circuitlab import course_model, head_labels, position_labels, residual_labels
from circuitlab.estimate_plots import correlation, scatter_figure, side_by_side_figure
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS
from circuitlab_graders import check, prepare
from transformer_lens import patching  # TransformerLens's exact sweeps: one forward pass per cell

prepare("05_attribution_patching")  # the checks get ready in the background (their models load) while you read on

torch.set_grad_enabled(False)
model = course_model()
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
str_tokens = model.to_str_tokens(CLEAN_PROMPT)
n_pos = len(str_tokens)
print(" | ".join(position_labels(str_tokens)))

# %% [markdown]
# ## Gradients of activations on a TransformerLens 4 bridge
#
# Like every chapter, this notebook switched autograd off in its first cell. A
# function that needs gradients switches it back on for itself, with
# `with torch.enable_grad():`, and leaves the notebook as it found it.
#
# There are two ways to get ∂LD/∂a at a hook point:
#
# 1. a **forward hook** that keeps the activation it sees (and returns it unchanged),
#    then `torch.autograd.grad(ld, [kept activations])` after the run;
# 2. a **backward hook**, `model.add_hook(name, fn, "bwd")`, which autograd calls with
#    the gradient at that hook point during `ld.backward()`. TransformerLens's
#    attribution-patching demo does it this way.
#
# They give the same numbers. The difference is what they leave behind: a bridge's
# weights have `requires_grad=True`, so `.backward()` also writes a `.grad` into every
# weight the logit difference depends on (on circuitlab-2l 37 of the 41: the other
# four, the attention layers' fused `qkv` weights and biases, are not used by the
# bridge's forward pass), and those add up from call to call until someone clears
# them.
# `torch.autograd.grad` computes only the gradients you ask for. The cell below does
# both on the clean prompt and counts the weights left holding a `.grad`.
#
# A detail from chapter 1 matters here: inside a hook, `hook.name` can be the bridge's
# own name for the point (`blocks.0.hook_in` for `blocks.0.hook_resid_pre`). Keep what
# a hook sees under the name *you* asked for.
#
# Keep it, and return it, **as it is**. The bridge's weights require grad, so what a
# hook sees is already part of the graph. A hook that returns
# `activations.detach().requires_grad_()` starts a new graph at that point: every hook
# before it loses the paths that run through it (for the residual stream, all of them,
# and `torch.autograd.grad` raises; for a layer-0 head, its paths through the later
# layers' heads, and the numbers come out quietly wrong).

# %%
hart, carroll = model.to_single_token(" Hart"), model.to_single_token(" Carroll")
names = ["blocks.0.hook_resid_pre", f"blocks.{n_layers - 1}.attn.hook_z"]
print(f"weights with requires_grad: {sum(p.requires_grad for p in model.parameters())} "
      f"of {len(list(model.parameters()))}")

kept, from_backward_hooks = {}, {}


def keep(activations: Tensor, hook, name: str) -> Tensor:
    kept[name] = activations
    return activations


def keep_gradient(gradient: Tensor, hook, name: str) -> None:
    from_backward_hooks[name] = gradient.detach().clone()


with torch.enable_grad():
    logits = model.run_with_hooks(CLEAN_PROMPT, fwd_hooks=[(n, lambda a, hook, n=n: keep(a, hook, n)) for n in names])
    ld = logits[0, -1, hart] - logits[0, -1, carroll]
    from_autograd = dict(zip(names, torch.autograd.grad(ld, [kept[n] for n in names])))
print(f"after torch.autograd.grad: {sum(p.grad is not None for p in model.parameters())} weights hold a .grad")

with torch.enable_grad():
    for n in names:
        model.add_hook(n, lambda g, hook, n=n: keep_gradient(g, hook, n), "bwd")
    logits = model(CLEAN_PROMPT)
    (logits[0, -1, hart] - logits[0, -1, carroll]).backward()
model.reset_hooks()
print(f"after .backward():         {sum(p.grad is not None for p in model.parameters())} weights hold a .grad")
for n in names:
    print(f"  {n:28s} gradient {tuple(from_autograd[n].shape)}, "
          f"largest difference between the two ways: {(from_autograd[n] - from_backward_hooks[n]).abs().max().item():.1e}")
for p in model.parameters():
    p.grad = None  # clear what .backward() left, so nothing below depends on it

# %% [markdown]
# Both bridge kinds that the course meets support this: the HF-architecture bridges
# (circuitlab-2l, gpt2-small and the random twins) and the native bridge that real
# gelu-2l is. `tests/test_attribution_gradients.py` measures it on both: backward
# hooks on `hook_resid_pre`, `hook_resid_post` and `hook_z` fire and agree exactly with
# `torch.autograd.grad`. What the native bridge lacks is the per-head `hook_result`
# (chapter 2), so, as in chapter 2, the head estimates go through `hook_z`: a head's
# result is `z @ W_O[h]`, a linear map, so the first-order change through `z` is the
# first-order change through the result.
#
# ## The estimate for the residual stream
#
# ### Exercise: `attribution_patching_resid`
#
# Return `[n_layers + 1, n_pos]`, laid out like chapter 1's `residual_patching_sweep`:
# row 0 is `blocks.0.hook_resid_pre`, row `i + 1` is `blocks.i.hook_resid_post`. Entry
# `[row, pos]` is the **estimated patched logit difference**: the clean run's logit
# difference `logit(clean_answer) − logit(corrupt_answer)` at the final position, plus
# `(a_corrupt − a_clean) · ∂LD/∂a` at that hook point and position, summed over
# `d_model`.
#
# 1. Cache the corrupt run (no gradients needed).
# 2. Inside `with torch.enable_grad():`, run the clean prompt with forward hooks that keep
#    the activations at the `n_layers + 1` hook points, compute LD and call
#    `torch.autograd.grad(ld, kept)`.
# 3. Multiply, sum over `d_model`, add the clean LD.
#
# Leave nothing behind: no `.backward()`, no `requires_grad` changes on the weights, no
# `torch.set_grad_enabled`.

# %% tags=["exercise"]
def attribution_patching_resid(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(attribution_patching_resid);

# %% [markdown]
# ## The estimate for every head
#
# ### Exercise: `attribution_patching_heads`
#
# Return `[n_layers, n_heads]`, laid out like chapter 2's `head_patching_sweep`: entry
# `[layer, head]` estimates the logit difference when that head's
# `blocks.layer.attn.hook_z` comes from the corrupt run at every position. Patching a
# head at every position moves many numbers at once; to first order their effects add,
# so sum `(z_corrupt − z_clean) * gradient` over positions *and* `d_head`.

# %% tags=["exercise"]
def attribution_patching_heads(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(attribution_patching_heads);

# %% [markdown]
# ## The estimate for every head at every position
#
# ### Exercise: `attribution_patching_head_by_position`
#
# Return `[n_layers * n_heads, n_pos]`, laid out like chapter 2's
# `head_by_position_sweep`: row `layer * n_heads + head`, column `pos`, summed over
# `d_head` only. The gradients are the ones of the previous exercise; only the sum
# changes.

# %% tags=["exercise"]
def attribution_patching_head_by_position(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str
) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(attribution_patching_head_by_position);

# %% [markdown]
# ## Estimate and exact sweep, side by side
#
# **Predict before you run.** A first-order estimate is exact when LD is linear in the
# patched activation. Where in these sweeps do you expect it to be close, and where
# far off: at layer 0, after the last layer, at the heads whose attention is nearly
# all-or-nothing?
#
# The exact sweeps come from `transformer_lens.patching`, one forward pass per cell,
# fine at circuitlab-2l's size. (Its arguments are called "corrupted tokens" and "clean
# cache"; as in chapter 3 we hand it the clean tokens and the corrupt cache, which
# patches the corrupt run into the clean one.) Every plot shows *changes*: patched
# minus clean logit difference, for both.

# %%
SWEEPS = ("residual stream", "heads", "heads by position")


def clean_logit_diff(case) -> float:
    final = model(case.clean_prompt)[0, -1]
    return (final[model.to_single_token(case.clean_answer)] - final[model.to_single_token(case.corrupt_answer)]).item()


def exact_sweeps(case) -> dict[str, Tensor]:
    """The three exact sweeps, as changes, in the layouts of chapters 1 and 2."""
    tokens = model.to_tokens(case.clean_prompt)
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    pre = patching.get_act_patch_resid_pre(model, tokens, corrupt_cache, metric)  # [layer, pos]
    post = patching.generic_activation_patch(model, tokens, corrupt_cache, metric, patching.layer_pos_patch_setter,
                                             "resid_post", index_axis_names=("layer", "pos"))
    heads = patching.get_act_patch_attn_head_out_all_pos(model, tokens, corrupt_cache, metric)  # [layer, head]
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, tokens, corrupt_cache, metric)  # [layer, pos, head]
    sweeps = [torch.cat([pre[:1], post]), heads, by_pos.permute(0, 2, 1).reshape(n_layers * n_heads, -1)]
    return {name: sweep - clean_logit_diff(case) for name, sweep in zip(SWEEPS, sweeps)}


def estimated_sweeps(case) -> dict[str, Tensor]:
    fns = (attribution_patching_resid, attribution_patching_heads, attribution_patching_head_by_position)
    return {name: fn(model, **case.as_args()) - clean_logit_diff(case) for name, fn in zip(SWEEPS, fns)}


exact = {key: exact_sweeps(case) for key, case in CORRUPTIONS.items()}
estimate = {key: estimated_sweeps(case) for key, case in CORRUPTIONS.items()}


def compare(key: str) -> None:
    case = CORRUPTIONS[key]
    labels = {"residual stream": residual_labels(n_layers), "heads by position": head_labels(n_layers, n_heads)}
    for name, y_title in (("residual stream", ""), ("heads by position", "layer.head")):
        display(side_by_side_figure(exact[key][name], estimate[key][name], x_labels=position_labels(str_tokens),
                                    y_labels=labels[name], title=f"{name}: {case.label}", y_title=y_title))
    display(scatter_figure({name: (exact[key][name], estimate[key][name]) for name in SWEEPS},
                           f"every cell, estimate against exact: {case.label}"))


compare("surname")

# %%
compare("first_name")

# %%
compare("second_name")

# %%
def largest(result: Tensor, rows: list[str]) -> tuple[str, tuple[int, int]]:
    """The label and index of a result's largest cell (by size)."""
    row, col = (int(i) for i in torch.unravel_index(result.abs().argmax(), result.shape))
    return f"{rows[row]} at {col}", (row, col)


print(f"{'corruption':12s} " + " ".join(f"{'r ' + name:>20s}" for name in SWEEPS)
      + "   largest exact head × position cell: exact, estimate")
for key in CORRUPTIONS:
    rs = [correlation(exact[key][name], estimate[key][name]) for name in SWEEPS]
    label, at = largest(exact[key]["heads by position"], head_labels(n_layers, n_heads))
    print(f"{key:12s} " + " ".join(f"{r:20.3f}" for r in rs)
          + f"   {label}: {exact[key]['heads by position'][at].item():6.1f}, "
            f"{estimate[key]['heads by position'][at].item():6.1f}")

# %% [markdown]
# **What the plots show** (on circuitlab-2l; on random weights they show noise). The
# estimate lights up the same cells as the exact sweep, with the same signs, and very
# little anywhere else: the correlations are above 0.99 for the other surname, 0.94 to
# 0.96 for the other first first-name and 0.90 to 0.92 for the other second
# first-name. Its largest cells are the circuit's: head 1.1 at the final position for
# the surname, head 0.0 at the surname's position (5) for the first name.
#
# But the colours on the right are paler. In the scatter plots the points that matter
# lie between the diagonal and zero: the estimate has the right sign and is too small.
# The cells where estimate and exact disagree most are the largest effects
# themselves. Head 1.1 at the final position moves the logit difference by −18.5 when
# the surname is patched and the estimate says −11.1; head 0.0 at the surname moves it
# by −11.9 for the first name and the estimate says −3.4; for the second first-name,
# 1.1 at the final position: −7.5, estimated −1.5.
#
# A high correlation on a sweep that is zero almost everywhere says little more than
# "the estimate finds the same few cells". On twelve prompts held out from
# circuitlab-2l's training (other names, other sentences; `tests/test_ch05_story.py`)
# this is what held: for the other surname the heads-by-position correlation was above
# 0.99 on all twelve and the largest estimated head was 1.1 every time; for the other
# first first-name the correlation ranged from 0.08 to 0.99, head 0.0 was among the
# three largest estimated heads on 10 of 12, and on 3 of 12 the estimate put head 0.0's
# effect at the surname below 0.5 in size where the exact patch moves the logit
# difference by more than 4. On all 36 prompt pairs, the head × position cell where the
# two disagree most was one of the exact sweep's two largest.
#
# ## Where the estimate fails, and why
#
# A first-order estimate is exact for a function that is linear in the patched
# activation, and the further the patch moves through non-linear parts, the worse it
# gets. None of these patches is small: each swaps one name for another. Three places
# show it most.
#
# ### The layer-0 residual stream at the changed token
#
# At `blocks.0.hook_resid_pre` the patch *is* the corruption: a different token's
# embedding, about as long as the clean vector itself. Its effect has to pass through
# every attention pattern, MLP and LayerNorm of the model, and the estimate sees only
# the straight-line part of that journey.

# %%
for key, case in CORRUPTIONS.items():
    changed = int((model.to_tokens(case.clean_prompt) != model.to_tokens(case.corrupt_prompt))[0].nonzero()[0])
    _, clean_cache = model.run_with_cache(case.clean_prompt)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)
    a, b = clean_cache["blocks.0.hook_resid_pre"][0, changed], corrupt_cache["blocks.0.hook_resid_pre"][0, changed]
    print(f"{key:12s} position {changed:2d}: |a_corrupt - a_clean| / |a_clean| = {((b - a).norm() / a.norm()).item():.2f}; "
          f"exact {exact[key]['residual stream'][0, changed].item():6.1f}, "
          f"estimate {estimate[key]['residual stream'][0, changed].item():6.1f}")

# %% [markdown]
# The estimate reaches 58 % of the exact change for the other surname, 16 % for the
# other first first-name and 7 % for the other second first-name. (On some held-out
# prompts it gets the sign wrong for the second first-name.)
#
# ### Saturated attention
#
# The first-name corruption works through attention. Head 0.0 writes "the token before
# me was Alex" into the surname's lane, and the induction head 1.1, at the final
# " Alex", attends to the lane that says so. In the clean run that attention is nearly
# all-or-nothing, and a softmax that has made up its mind is flat: the slope of an
# attention weight `p` with respect to its own score is `p (1 − p)`, close to zero when
# `p` is close to 1. The gradient therefore says "changing 0.0 at the surname barely
# matters", while the actual patch knocks the attention down.

# %%
previous_token = model.course_heads.get("previous-token", (0, 0))
induction = model.course_heads.get("induction", (n_layers - 1, 0))
first_name = CORRUPTIONS["first_name"]
surname_pos = 5  # " Hart"
_, clean_cache = model.run_with_cache(first_name.clean_prompt)
_, corrupt_cache = model.run_with_cache(first_name.corrupt_prompt)
z_name = f"blocks.{previous_token[0]}.attn.hook_z"
pattern_name = f"blocks.{induction[0]}.attn.hook_pattern"
seen = {}


def patch_previous_token_head(z: Tensor, hook) -> Tensor:
    z = z.clone()
    z[:, surname_pos, previous_token[1]] = corrupt_cache[z_name][:, surname_pos, previous_token[1]]
    return z


def keep_pattern(pattern: Tensor, hook) -> Tensor:
    seen["pattern"] = pattern.clone()
    return pattern


model.run_with_hooks(first_name.clean_prompt, fwd_hooks=[(z_name, patch_previous_token_head), (pattern_name, keep_pattern)])
layer, head = induction
p_clean = clean_cache[pattern_name][0, head, -1, surname_pos].item()
print(f"head {layer}.{head}'s attention from the final position to the surname:")
print(f"  clean run                                  {p_clean:.3f}   (slope p(1 - p) = {p_clean * (1 - p_clean):.3f})")
print(f"  clean run, head {previous_token[0]}.{previous_token[1]} patched at position {surname_pos}   "
      f"{seen['pattern'][0, head, -1, surname_pos].item():.3f}")
print(f"  corrupt run                                {corrupt_cache[pattern_name][0, head, -1, surname_pos].item():.3f}")

# %% [markdown]
# Head 1.1 gives 0.98 of its attention to " Hart" in the clean run; the slope there is
# 0.017. Patching head 0.0 at the surname drops that attention to 0.19. A straight line
# that flat cannot follow a fall of 0.8, so head 0.0's effect is estimated at a
# fraction of its size. An effect routed through a saturated pattern is usually
# underestimated this way, though not always: the estimate also adds the patch's other
# paths, which can make up for the flat one or overshoot. Kramár et al. (2024) name
# saturated attention as one of two failure modes that give attribution patching its
# false negatives (components with large effects estimated as small), and repair it in
# AtP* by recomputing the attention softmax exactly for the patched queries and keys
# (their "QK fix").
#
# ### Cancellation
#
# The other failure mode they describe is *cancellation*. An activation reaches the
# logits through several paths at once (directly, and through every later head and
# MLP), and the estimate adds their first-order effects. When those point opposite
# ways, the linear sum can come out near zero although the real patch moves the logit
# difference a lot, and a component that matters looks unimportant. AtP* adds
# *GradDrop* for it: rerun the backward pass once per layer with the gradient through
# that layer's output dropped, so that contributions that cancel in the full sum show
# up in some of the reruns. So a cell the estimate calls near zero is not proof of no
# effect: on a new model or task, patch a sample of such cells exactly before trusting
# them.
#
# ### LayerNorm
#
# The last row of the residual sweep is the simplest case there is: after the last
# block, only the final LayerNorm and the unembedding stand between the activation
# and the logits. The unembedding is linear, so whatever the estimate gets wrong there,
# LayerNorm gets wrong. LayerNorm divides by the vector's size, and its gradient
# assumes that size reacts to the patch as it would to a tiny nudge.
#
# One way to see how much of the error that is: estimate again with the LayerNorm's
# scale held fixed at its clean value, by a hook that detaches
# `ln_final.hook_scale` (then autograd treats it as a constant). `model.hooks(...)`
# keeps the hook on while your function runs, including its own `run_with_hooks`.

# %%
def hold_scale_fixed(scale: Tensor, hook) -> Tensor:
    return scale.detach()


frozen = {}
for key, case in CORRUPTIONS.items():
    with model.hooks(fwd_hooks=[("ln_final.hook_scale", hold_scale_fixed)]):
        frozen[key] = {"residual stream": attribution_patching_resid(model, **case.as_args()) - clean_logit_diff(case),
                       "heads by position": attribution_patching_head_by_position(model, **case.as_args())
                       - clean_logit_diff(case)}

print(f"{'corruption':12s} {'cell':26s} {'exact':>7s} {'estimate':>9s} {'scale held fixed':>17s}")
for key in CORRUPTIONS:
    last = (n_layers, n_pos - 1)
    _, top = largest(exact[key]["heads by position"], head_labels(n_layers, n_heads))
    rows = [("last row, final position", "residual stream", last),
            (f"head {head_labels(n_layers, n_heads)[top[0]]} at {top[1]}", "heads by position", top)]
    for label, name, at in rows:
        print(f"{key:12s} {label:26s} {exact[key][name][at].item():7.1f} {estimate[key][name][at].item():9.1f} "
              f"{frozen[key][name][at].item():17.1f}")

# %% [markdown]
# At the last row the estimate gives −14.0, −3.1 and −2.6 where the exact patch gives
# −25.6, −13.6 and −13.7. With the scale held fixed it gives −23.9, −13.5 and −13.6:
# nearly all of the error there came from LayerNorm's gradient. For the largest head
# cells, holding the scale fixed brings head 1.1 to −16.9 (exact −18.5) for the
# surname and to −8.8 (exact −7.5) for the second first-name, but head 0.0 only to
# −6.1 (exact −11.9) for the first name: what is left there is the saturated
# attention. Holding the scale fixed is not the exact answer either (it overshoots for
# 1.1 under the second first-name); it is a different straight line, one that happens
# to suit large patches through the final LayerNorm better.
#
# ## What it costs
#
# The exact sweeps above and the estimates, timed on the same prompt pair. Each
# estimate is one corrupt forward pass and one clean forward and backward pass
# whatever the number of cells; each exact sweep is one forward pass per cell.

# %%
def seconds(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


case = CORRUPTIONS["surname"]
exact_s = seconds(lambda: exact_sweeps(case), repeats=1)
estimate_s = {name: seconds(lambda fn=fn: fn(model, **case.as_args())) for name, fn in zip(
    SWEEPS, (attribution_patching_resid, attribution_patching_heads, attribution_patching_head_by_position))}
cells = {"residual stream": (n_layers + 1) * n_pos, "heads": n_layers * n_heads, "heads by position": n_layers * n_heads * n_pos}
forward_s = seconds(lambda: model(CLEAN_PROMPT), repeats=5)
print(f"one forward pass: {forward_s * 1e3:.1f} ms;  the exact sweeps above: {exact_s:.2f} s "
      f"({sum(cells.values()) + n_layers * n_pos} forward passes; TL's resid_pre and resid_post sweeps overlap)")
for name in SWEEPS:
    print(f"  {name:18s} {cells[name]:5d} cells   estimate {estimate_s[name] * 1e3:6.1f} ms "
          f"= {estimate_s[name] / forward_s:4.1f} forward passes")
print(f"estimating all three sweeps costs {sum(estimate_s.values()) / exact_s:.1%} of the exact sweeps' time")

# %% [markdown]
# On a two-layer model with twelve positions the exact sweeps are already cheap, and
# the estimate saves seconds. The point is how the two grow. The exact head × position
# sweep needs `n_layers * n_heads * n_pos` forward passes: 1,728 for gpt2-small on the
# tutorial prompt, 14,400 on a 100-token prompt. The estimate stays at one corrupt
# forward pass plus one clean forward and backward pass, whatever the length.
# `make bench` times both for gpt2-small's shape on the tutorial prompt and on a
# 100-token prompt pair, and prints the ratios.
#
# **Summary.** Attribution patching estimates every patch at once from the gradient of
# the clean run: `(a_corrupt − a_clean) · ∂LD/∂a`. On circuitlab-2l it finds the
# circuit's cells, 1.1 at the final position and 0.0 at the surname, with their signs,
# but underestimates them, most where the effect passes through a saturated attention
# pattern, a whole-token change at layer 0, or a LayerNorm. Paths that cancel can hide
# a component altogether. Use it as a map of where to look, then run exact patches on
# the cells it points to.
#
# > **Compared with the tutorial.** The 2023 tutorial stops before attribution
# > patching; its sweeps are exact, run on gelu-2l, whose heads here would be 0.2 and
# > 1.6 instead of 0.0 and 1.1. With gelu-2l's weights cached, this notebook estimates
# > and checks its sweeps too.
#
# ## What now?
#
# You have run the tutorial's whole path, and the experiments it left for later, on a
# model whose circuit you can now describe head by head. Some next steps:
#
# - **Try another behaviour.** Pick a prompt the model gets right, write a corrupt
#   prompt that changes one token and the answer, and run chapters 1–5 on the pair:
#   residual sweep, head sweeps, patterns, then the checks of chapter 4. gpt2-small
#   (`circuitlab.load_model("gpt2-small")`, pretrained where its weights are cached)
#   is the model of Wang et al.'s indirect-object circuit: "When Mary and John went to
#   the store, John gave a drink to" is a classic first target.
# - **Patch the other way.** Everything here was noising (corrupt into clean). Rerun a
#   sweep denoising (clean into corrupt) and compare what it finds (Heimersheim &
#   Nanda, 2024).
# - **Open problems.** Neel Nanda's list "200 Concrete Open Problems in Mechanistic
#   Interpretability" (2022) has problems of every size, many of them runnable with
#   exactly these tools on small models.
#
# Chapter 6 follows with more to explore.
