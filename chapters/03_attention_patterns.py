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
# # Chapter 3 — What do the heads look at? Attention patterns
#
# Chapter 2 pointed at the heads that carry the names, and you guessed their jobs.
# Patching says *that* a head matters,
# not *how*. An attention head's "how" is mostly its attention pattern: for each
# position (the *query*, or destination), how much it reads from each earlier position
# (the *key*, or source). This chapter rebuilds a head's pattern and output from the
# cached q, k and v, draws the patterns, and turns three common head behaviours into
# numbers.
#
# Shapes to keep at hand: `hook_q`, `hook_k`, `hook_v` and `hook_z` are
# `[batch, position, head, d_head]`; `hook_attn_scores` and `hook_pattern` are
# `[batch, head, query, key]`, so a row is one query position. Information moves *from*
# the key *to* the query, which is why some people call the key "src" and the query
# "dst". If you ever read a score of about -100000 or -inf, you have put a later key
# after an earlier query: that cell is masked.
#
# The heads this chapter looks at are the ones that induction relies on. Induction
# heads were named and studied by Olsson et al., "In-context Learning and Induction
# Heads" (2022), building on Elhage et al., "A Mathematical Framework for Transformer
# Circuits" (2021): a previous-token head and a head that looks for "the token after
# an earlier copy of me" together continue a repeated sequence.
#
# **By the end of this chapter you will be able to**
#
# - compute an attention score, a pattern row and a head's `z` by hand from the
#   cached q, k and v, and check them against the cache;
# - draw every head's attention pattern and read it;
# - score heads as previous-token, duplicate-token or induction heads, and tie those
#   roles to the patching effects of chapter 2.
#
# You need chapter 2 (the heads and their patching plots), dot products and softmax.


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
import math

import torch
from IPython.display import display
from torch import Tensor

from circuitlab import course_model, head_labels, position_labels
from circuitlab.attention_view import attention_heads
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS
from circuitlab_graders import check, prepare
from transformer_lens import patching  # TransformerLens's own sweeps: one forward pass per patched cell

prepare("03_attention_patterns")  # the checks get ready in the background (their models load) while you read on

torch.set_grad_enabled(False)
model = course_model()
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
_, cache = model.run_with_cache(CLEAN_PROMPT)
str_tokens = model.to_str_tokens(CLEAN_PROMPT)
print(" | ".join(position_labels(str_tokens)))


# %% [markdown]
# ## From q and k to a score
#
# Head h scores key position k for query position q with the dot product of the
# query's q vector and the key's k vector, divided by √d_head so that the scores do not
# grow with the head's width.
#
# ### Exercise: `attention_score`
#
# Return, as a Python float, the score of head `head` in layer `layer` from query
# position `q_pos` to key position `k_pos`, for batch item 0, computed from
# `cache[f"blocks.{layer}.attn.hook_q"]` and `hook_k`.

# %% tags=["exercise"]
def attention_score(cache, layer: int, head: int, q_pos: int, k_pos: int) -> float:
    raise NotImplementedError


# %% tags=["check"]
check(attention_score);


# %% [markdown]
# The tutorial's first example asks how much " Hart" (position 5) wants to read " Alex"
# (position 4). Chapter 2 suggested that a layer-0 head moves the first name into the
# surname's lane. Which layer-0 head scores " Alex" highest from " Hart"? The cache
# stores the same numbers, in `hook_attn_scores`.

# %%
hart_to_alex = [attention_score(cache, 0, head, 5, 4) for head in range(n_heads)]
for head, score in enumerate(hart_to_alex):
    print(f"head 0.{head}: {score:7.2f}   (cache: {cache['blocks.0.attn.hook_attn_scores'][0, head, 5, 4].item():7.2f})")
keen = max(range(n_heads), key=lambda head: hart_to_alex[head])


# %% [markdown]
# ## From scores to a pattern
#
# A query may only read itself and earlier positions (the *causal mask*): scores of
# later keys become -inf. A softmax over the keys then turns the query's row of scores
# into weights that are positive and sum to 1: the attention pattern.
#
# ### Exercise: `attention_pattern_row`
#
# Return the `[n_pos]` pattern row of query `q_pos`: its scores against every key
# (scaled by √d_head), with keys after `q_pos` set to `-inf`, softmaxed over the keys.

# %% tags=["exercise"]
def attention_pattern_row(cache, layer: int, head: int, q_pos: int) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(attention_pattern_row);

# %%
row = attention_pattern_row(cache, 0, keen, 5)
print(f"head 0.{keen}, query 5 (' Hart'):", row)
print("matches hook_pattern:", torch.allclose(row, cache["blocks.0.attn.hook_pattern"][0, keen, 5], atol=1e-6))


# %% [markdown]
# ## From a pattern to z
#
# What the head reads at a position is the weighted sum of every position's value
# vector, weighted by that position's pattern row. That is `hook_z`, the activation
# chapter 2 patched.
#
# ### Exercise: `head_z`
#
# Return the `[d_head]` vector `z` of head `head` at position `pos`, from
# `hook_pattern` and `hook_v`.

# %% tags=["exercise"]
def head_z(cache, layer: int, head: int, pos: int) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(head_z);


# %% [markdown]
# ## Interlude: think like a transformer
#
# Before looking at any pattern, solve the task yourself with the model's tools. At the
# final " Alex" the model must output " Hart". One layer cannot do it: the final
# position holds only "Alex", and nothing in " Hart"'s lane says it belongs to Alex
# yet. Each step that depends on an earlier step's result needs its own layer, so
# two layers are the minimum:
#
# 1. **Layer 0, at " Hart"**: a *previous-token head* copies something about the token
#    before it, " Alex", into the surname's lane: which token it was ("Alex vibes", in
#    the tutorial's words) or where it was ("position 4 vibes"). Information only flows
#    rightwards, so it has to be written there, at the later position.
# 2. **Layer 1, at the final " Alex"**: an *induction head* looks for a lane that says
#    "the token before me was Alex" (its query is the current token, its key the
#    previous-token information) and copies that lane's token, " Hart".
#
# A second route, the tutorial's: a *duplicate-token head* in layer 0 at the final
# position notices that " Alex" appeared before, at position 4, and writes "I am like
# position 4" there. A layer-1 head then reads that in its query and looks for the lane
# that says "the token before me was at position 4", which the previous-token head
# wrote into " Hart"'s lane, and copies " Hart". This route needs the previous-token
# head too, but to copy *positions*, not tokens. Chapter 4 tells the two routes apart.
#
# **Your guess.** Use chapter 2's plots. A previous-token head writes at position 5 and
# matters only when the *first* first name changes. A duplicate-token head writes at
# the final position and matters when *either* first name changes. The copying head
# breaks (white) when the first names disagree and pushes " Carroll" (red) when the
# surname is patched. Write down (double-click to edit) which heads of the model you
# loaded fit, before the patterns below show you:
#
# - previous-token head: …
# - duplicate-token head: …
# - the head that copies the surname: …

# %% [markdown]
# ## Looking at patterns
#
# circuitsvis draws every head of a layer: hover over a head for its full pattern,
# and over a token to see where it attends. Its usual HTML loads the drawing code
# from a CDN, which fails offline; `circuitlab.attention_view.attention_heads` puts
# circuitsvis's own bundled code into the notebook once, so these views work with
# no network. Check your guesses: a previous-token head's pattern is a line just below
# the diagonal; a copying head attends from the final " Alex" to " Hart".

# %%
for layer in range(n_layers):
    print(f"layer {layer}")
    display(attention_heads(cache[f"blocks.{layer}.attn.hook_pattern"][0], str_tokens,
                            head_names=[f"{layer}.{h}" for h in range(n_heads)]))


# %% [markdown]
# <details><summary><b>Answer for circuitlab-2l</b> (click to open after looking)</summary>
#
# Head 0.0 is the previous-token head: from " Hart" it gives 0.998 of its attention to
# " Alex" (0.3 is a weaker one, 0.57 there). Heads 1.1 and 1.3 attend from the final
# " Alex" to " Hart" (0.98 and 0.74): they copy the surname. Head 1.0 rests on the first
# token (0.88), and 1.2 attends from each token to the one just before it. No layer-0
# head attends from the final " Alex" to the first: circuitlab-2l has no duplicate-token
# head. The table below measures these roles, and compares them with the heads the
# course lists for the model you loaded (`model.course_heads`).
# </details>

# %% [markdown]
# ## Scores that name a head
#
# Eyeballing patterns does not scale to 144 heads. Three numbers summarise the
# behaviours this task needs. Each takes one prompt's pattern, `[head, dst, src]`,
# and returns one score per head:
#
# - **previous-token score**: the mean attention from each position to the one right
#   before it (over positions 1 to n_pos − 1);
# - **duplicate-token score**: the attention from a position to earlier copies of its
#   own token (summed over the copies), averaged over the positions that have an
#   earlier copy;
# - **induction score**: the attention from a position to the tokens right *after*
#   earlier copies of its own token (summed over them), averaged over the positions
#   that have one. "Earlier copy" means a strictly earlier position, as for the
#   duplicate-token score, but the token after it need not be earlier: when the copy
#   sits at `dst − 1` (a token repeated twice in a row), the token right after it is
#   `dst` itself, and it counts. In `[BOS, A, A, B]` position 2 has a target, position
#   2 (itself), so a head that attends to itself there scores 1 at that position.
#
# `tokens` is the prompt's `[n_pos]` token ids. Return zeros when no position has a
# target.
#
# ### Exercises: `previous_token_score`, `duplicate_token_score`, `induction_score`

# %% tags=["exercise"]
def previous_token_score(pattern: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(previous_token_score);

# %% tags=["exercise"]
def duplicate_token_score(pattern: Tensor, tokens: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(duplicate_token_score);

# %% tags=["exercise"]
def induction_score(pattern: Tensor, tokens: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(induction_score);


# %% [markdown]
# Now measure. On a sequence of random tokens repeated twice, every token of the
# second half has an earlier copy, and the token after that copy is known, so all
# three scores are well defined. The table ties each head's scores to its patching
# effects from chapter 2 (patched minus clean logit difference, all positions).

# %%
generator = torch.Generator().manual_seed(0)
# Ids 1000-1499: ordinary GPT-2 tokens, and the ones circuitlab-2l was trained on.
random_half = torch.randint(1000, 1500, (20,), generator=generator)
repeated = torch.cat([model.to_tokens("")[0, :1].cpu(), random_half, random_half]).unsqueeze(0).to(model.cfg.device)
_, repeated_cache = model.run_with_cache(repeated)

THRESHOLD = 0.4  # a head takes a role when that score is above this; the highest such score wins
ROLES = ("previous-token", "duplicate-token", "induction")


def head_scores(layer: int) -> Tensor:
    """[n_heads, 3]: previous-token, duplicate-token and induction scores of each head."""
    pattern, tokens = repeated_cache[f"blocks.{layer}.attn.hook_pattern"][0], repeated[0]
    return torch.stack([previous_token_score(pattern), duplicate_token_score(pattern, tokens),
                        induction_score(pattern, tokens)], dim=-1)


def role(scores: Tensor) -> str:
    best = int(scores.argmax())
    return ROLES[best] if scores[best] > THRESHOLD else "other"


def clean_logit_diff(case) -> float:
    final = model(case.clean_prompt)[0, -1]
    return (final[model.to_single_token(case.clean_answer)] - final[model.to_single_token(case.corrupt_answer)]).item()


scores = torch.cat([head_scores(layer) for layer in range(n_layers)])  # [layer * n_heads + head, 3]
def head_effects(case) -> Tensor:
    """Chapter 2's head sweep minus the clean logit difference, [layer * n_heads + head].
    TransformerLens calls its arguments "corrupted tokens" and "clean cache"; handing it
    the clean tokens and the corrupt cache patches the corrupt run into the clean one,
    as this course does."""
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)
    sweep = patching.get_act_patch_attn_head_out_all_pos(
        model, model.to_tokens(case.clean_prompt), corrupt_cache, lambda logits: logits[0, -1, good] - logits[0, -1, bad])
    return (sweep - clean_logit_diff(case)).flatten()


effects = {key: head_effects(case) for key, case in CORRUPTIONS.items()}
roles = {label: role(s) for label, s in zip(head_labels(n_layers, n_heads), scores)}

print(f"{'head':>5} {'prev':>6} {'dup':>6} {'induct':>6}   {'role':<16}"
      + "".join(f"{'patch ' + key:>18}" for key in effects))
for i, label in enumerate(head_labels(n_layers, n_heads)):
    prev, dup, ind = scores[i].tolist()
    print(f"{label:>5} {prev:6.2f} {dup:6.2f} {ind:6.2f}   {roles[label]:<16}"
          + "".join(f"{effects[key][i].item():18.2f}" for key in effects))


# %% [markdown]
# Do the roles match your guesses? The cell below compares the roles the course names
# for the model you loaded (`model.course_heads`) with the roles computed here.

# %%
for expected, (layer, head) in model.course_heads.items():
    label = f"{layer}.{head}"
    found = roles.get(label, "(no such head)")
    print(f"head {label}: the course says {expected:<16} this model: {found:<16} "
          f"{'agrees' if found == expected else 'differs'}")
if not model.course_heads:
    print(f"The course names no heads for {model.course_name}; the roles below are all there is.")
for name in ROLES:
    print(f"{name:>16} heads here: {[label for label, r in roles.items() if r == name] or 'none'}")


# %% [markdown]
# **circuitlab-2l.** On repeated random tokens 0.0 (0.99) and 0.3 (0.86) score as
# previous-token heads, and 1.0, 1.3 and 1.1 as induction heads (0.95, 0.90, 0.83);
# 1.2 scores as a previous-token head in layer 1. No head scores above 0.03 as a
# duplicate-token head. The model card names 0.0 previous-token and 1.1 induction: of
# the three induction heads, 1.1 is the one the names prompt uses (1.0 rests on the
# first token there). The heads with roles are the heads with large patching effects,
# in the columns the interlude predicted: the previous-token head 0.0 only under
# "first_name" (−11.8), and the copying heads 1.1 and 1.3 under all three, negative in
# each (1.1: −18.5 under "surname", −7.0 and −7.5 under the first names): patched from
# the other surname they push " Carroll", patched from either first-name run they stop
# copying " Hart". On random weights the patterns are close to uniform, no head earns a
# role, and the comparison says "differs": the code is right, the circuit is absent.
#
# > **Compared with the tutorial.** On the pretrained gelu-2l the tutorial guessed from
# > its patching plots, then confirmed in the attention patterns, head 0.2 as the
# > previous-token head, 0.1 as a duplicate-token head and 1.6 as the copying head
# > (it could not tell what 1.1 does). It concluded that gelu-2l runs an induction
# > circuit, 0.2 → 1.6, and that there is "probably" a second route through the
# > duplicate-token head 0.1, which it left to be confirmed by patching the positional
# > embedding. circuitlab-2l has only the first route.
#
# ## Summary
#
# - A score is `q · k / √d_head`; the causal mask and a softmax over keys make a pattern
#   row; `z` is that row's weighted sum of value vectors.
# - Attention patterns show *where* a head reads; previous-token, duplicate-token and
#   induction scores turn three behaviours into numbers.
# - The two layers of circuitlab-2l form an induction circuit (Olsson et al., 2022): the
#   previous-token head 0.0 marks " Hart" as "after Alex", and the induction head 1.1,
#   with 1.3, finds that mark from the final " Alex" and copies " Hart". Whether the mark
#   is the token or its position, and whether the heads really talk to each other, is
#   chapter 4's question.
