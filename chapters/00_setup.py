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
# # Chapter 0 — A model to play with
#
# This course takes you from "I know what a transformer is" to running your own
# activation-patching experiments in one weekend. We follow a small, concrete
# question all the way through: *how does a model finish "Her name was Alex Hart.
# Tomorrow at lunch time Alex" with " Hart"?*
#
# In this chapter you load a model, turn its output into a next-word prediction,
# look inside it with a cache of activations, and meet the one number we will use
# to measure behaviour for the rest of the course: the **logit difference**.
#
# **By the end of this chapter you will be able to**
#
# - load a course model and say which one you got;
# - read its logits, `[batch, position, vocab]`, and turn the last position's into a
#   next-token prediction;
# - find any activation in the cache of `run_with_cache` by its hook name;
# - measure which of two answers the model prefers with the logit difference.
#
# You need: Python, PyTorch tensors (indexing, `argmax`, `topk`), and what a
# transformer is (embeddings, attention heads, MLPs, a residual stream).
#
# **How the exercises work.** Each exercise is a function whose body is
# `raise NotImplementedError`. Replace that line with your code, run the cell, then
# run the check cell below it. The check calls your function on two models
# (gelu-2l and gpt2-small, or their random-weight stand-ins when the real weights
# are not on this machine) and on prompts you have not seen, compares the result
# with a reference solution, and tells you what went wrong if it differs.

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

from circuitlab import course_model
from circuitlab_graders import check, prepare

prepare("00_setup")  # the checks get ready in the background (their models load) while you read on

torch.set_grad_enabled(False)  # we only ever read and patch activations, never train

# %% [markdown]
# ## Loading a model
#
# TransformerLens 4 wraps a Hugging Face model in a `TransformerBridge` and, once
# compatibility mode is on, gives it the hook names and conveniences the
# interpretability literature uses (`blocks.0.hook_resid_pre`, `run_with_cache`, ...).
# `course_model()` does that for you and prints which model you got: the 2-layer
# model **gelu-2l** when its weights are on this machine, otherwise the course's
# offline default, **circuitlab-2l**: a 2-layer model of the same kind that the course
# trained itself, on made-up name stories and random token sequences, so that the
# tutorial's circuit really forms in it (its model card is
# `circuitlab/data/circuitlab-2l.md`). You can load any course model yourself with
# `circuitlab.load_model("gpt2-small")`, `circuitlab.load_model("gelu-2l")` or
# `circuitlab.load_model("circuitlab-2l")`.

# %%
model = course_model()
print(f"{model.cfg.n_layers} layers, {model.cfg.n_heads} heads per layer, d_model = {model.cfg.d_model}")

# %% [markdown]
# ## Logits and the next word
#
# Calling the model on a string tokenizes it (adding a beginning-of-sequence token
# at position 0) and returns **logits**, one score per vocabulary entry, at every
# position: a tensor of shape `[batch, position, vocab]`. The scores at position
# *p* are the model's guess for the token at position *p + 1*.

# %%
prompt = "Famous computer scientist Alan"
logits = model(prompt)
print("tokens:", model.to_str_tokens(prompt))
print("logits shape [batch, position, vocab]:", tuple(logits.shape))

# %% [markdown]
# ### Exercise: `next_token_prediction`
#
# Return the model's most likely next token after `prompt`, as a string. Take the
# logits at the final position of the (only) batch item, find the largest, and turn
# that token id back into text with `model.to_string(token_id)`. Keep the string
# exactly as decoded: most word tokens start with a space, like `" Turing"`.

# %% tags=["exercise"]
def next_token_prediction(model, prompt: str) -> str:
    raise NotImplementedError


# %% tags=["check"]
check(next_token_prediction);

# %%
print(repr(next_token_prediction(model, prompt)))

# %% [markdown]
# ## Looking inside: `run_with_cache`
#
# `run_with_cache` runs the model and also returns a cache: a dictionary from hook
# names to the activations recorded there. Almost everything you will ever want to
# look at is in it. Names to look for:
#
# - `blocks.L.hook_resid_pre` / `hook_resid_post` — the residual stream entering and
#   leaving block `L`, shape `[batch, position, d_model]`;
# - `blocks.L.attn.hook_pattern` — attention patterns, `[batch, head, query position, key position]`;
# - `blocks.L.attn.hook_z` — each head's weighted sum of value vectors, `[batch, position, head, d_head]`.
#
# The bridge also records its own names for the same points (for example
# `blocks.0.hook_in` next to `blocks.0.hook_resid_pre`), so you will see more keys
# than a 2023 tutorial shows.

# %%
logits, cache = model.run_with_cache(prompt)
for name, activation in cache.items():
    if name.startswith("blocks.0.") or not name.startswith("blocks."):
        print(f"{name:40s} {tuple(activation.shape)}")

# %% [markdown]
# ## Parameters
#
# Every weight is available too. `model.named_parameters()` lists the wrapped
# Hugging Face modules' tensors; compatibility mode adds the TransformerLens-style
# views such as `model.W_E` (embedding, `[vocab, d_model]`), `model.W_U`
# (unembedding, `[d_model, vocab]`) and `model.b_U` (a bias added to the logits,
# `[vocab]`).

# %%
for name, parameter in list(model.named_parameters())[:6]:
    print(f"{name:70s} {tuple(parameter.shape)}")
print("W_E", tuple(model.W_E.shape), " W_U", tuple(model.W_U.shape), " b_U", tuple(model.b_U.shape))

# %% [markdown]
# ### Exercise: `top_tokens_by_unembed_bias`
#
# `b_U` is added to the logits whatever the input, so it acts as a prior over
# tokens. Return the `k` tokens with the largest bias, largest first, as strings.
# (`Tensor.topk` returns values and indices, sorted.)
#
# Where `b_U` comes from depends on the model. GPT-2-architecture models
# (gpt2-small, circuitlab-2l) have no unembedding bias of their own: their
# `lm_head` is a weight only. Their `b_U` is the final LayerNorm's bias pushed
# through the unembedding, `ln_final.b @ W_U`, which compatibility mode *folds*
# into a bias of the logits (chapter 4 explains folding). On circuitlab-2l it is
# not small: its norm is about 20.

# %% tags=["exercise"]
def top_tokens_by_unembed_bias(model, k: int) -> list[str]:
    raise NotImplementedError


# %% tags=["check"]
check(top_tokens_by_unembed_bias);

# %%
print(top_tokens_by_unembed_bias(model, 10))

# %% [markdown]
# On circuitlab-2l the list starts `','`, `' Nelson'`, `' Turner'`, `' morning'`:
# a comma, surnames and time-of-day words, the tokens its name stories use most.
# The prior reflects what a model read. A random-weight model shows arbitrary
# tokens.
#
# ## The task, and the logit difference
#
# Now our example. After "Her name was Alex Hart. Tomorrow at lunch time Alex" a
# model that tracks names should rate " Hart" highly. Let us look at its top
# predictions and where " Hart" ranks.

# %%
task = "Her name was Alex Hart. Tomorrow at lunch time Alex"
final = model(task)[0, -1]
hart = model.to_single_token(" Hart")
rank = int((final > final[hart]).sum())
print("top 5:", [model.to_string(t) for t in final.topk(5).indices])
print(f"' Hart' has rank {rank} (0 = the top prediction)")

# %% [markdown]
# Ranks are coarse. In the next chapters we compare the model on two prompts that
# differ in one name, and we want one number that says which answer it prefers:
# the **logit difference** `logit(" Hart") − logit(" Carroll")` at the final
# position. Positive means " Hart" wins, negative means " Carroll" wins.
# (Note `model.to_single_token(" Hart")` for token ids: in TransformerLens 4
# `model.tokenizer.encode` prepends the beginning-of-sequence token.)
#
# ### Exercise: `logit_diff`
#
# Given logits `[batch, position, vocab]` and two token ids, return
# `logit(correct_token) − logit(wrong_token)` at the final position of batch item 0,
# as a 0-dimensional tensor (a single number).

# %% tags=["exercise"]
def logit_diff(logits: Tensor, correct_token: int, wrong_token: int) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(logit_diff);

# %%
carroll = model.to_single_token(" Carroll")
print(f"logit(' Hart') - logit(' Carroll') = {logit_diff(model(task), hart, carroll).item():.2f}")

# %% [markdown]
# On circuitlab-2l this is clearly positive, about +13: the model prefers
# Alex's surname, although it never saw the pairing "Alex Hart" in training, so it
# must read the surname from the prompt. (It has only ever read name stories and
# random tokens, so its guess after "Famous computer scientist Alan" above is not
# " Turing".)
#
# > **Compared with the tutorial.** The 2023 weekend tutorial this course follows
# > (Stefan Heimersheim, "How-to Transformer Mechanistic Interpretability — in 50 lines
# > of code or less!") asks the same question of gpt2-small and then of the pretrained
# > 2-layer gelu-2l, which it finds "still really good at this task". The chapters
# > tell the story of the model that runs in your notebook and end each story with
# > one comparison like this one, marked the same way, with what the tutorial found
# > on gelu-2l.
#
# ## Summary
#
# - `course_model()` loads a model with TransformerLens hook names; its logits are
#   `[batch, position, vocab]`, and position *p* predicts token *p + 1*.
# - `run_with_cache` records every activation under a hook name; weights are
#   `model.W_E`, `model.W_U`, `model.b_U` (on GPT-2-architecture models, the folded
#   final LayerNorm bias) and more.
# - The logit difference `logit(" Hart") − logit(" Carroll")` at the final position
#   is the course's measure of behaviour.
#
# Chapter 1 asks *where* in the network the surname travels.
