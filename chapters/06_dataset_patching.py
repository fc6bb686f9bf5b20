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
# # Chapter 6 — Your own behaviour: from one prompt pair to a dataset
#
# Every chapter so far patched one clean prompt against one corrupt prompt. The
# tutorial itself says, in its footnotes, that this is not how it is done in
# practice:
#
# - one logit difference (" Hart" against " Carroll") is *somewhat unprincipled*,
#   since " Carroll" may play no part in what the model does; researchers usually
#   consider *all symmetric combinations* of prompts and answers;
# - on *a batch of examples* other metrics serve too (the probability or log
#   probability of the right answer, a top-k success rate);
# - patching has two directions with their own names: overwriting clean-run
#   activations with corrupt-run ones is a **resampling ablation**, overwriting
#   corrupt-run activations with clean-run ones is **causal tracing**.
#
# And its last section sends the reader off to *try these methods on a different
# example*. This chapter does both. You build a dataset of aligned prompt pairs,
# measure a normalised metric on every prompt, patch in both directions, look inside
# the heads at their query, key and value inputs, and report the spread across
# prompts, not one number. The methods are those of Heimersheim & Nanda, "How to use
# and interpret activation patching" (2024). At the end you apply them to a behaviour
# of your own.

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
from typing import Any, Sequence

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuitlab import course_model, load_model, patching_heatmap, position_labels, weights_cached
from circuitlab import datasets
from circuitlab.answer_logits import final_logit_diffs
from circuitlab_graders import check, prepare

prepare("06_dataset_patching")  # the checks get ready in the background (their models load) while you read on
torch.set_grad_enabled(False)
model = course_model()
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
heads = getattr(model, "course_heads", {})
previous_token, induction = heads.get("previous-token", (0, 0)), heads.get("induction", (1, 1))

# %% [markdown]
# ## From one pair to a dataset
#
# A dataset for patching is a batch of **aligned** prompt pairs: in each pair the
# clean and the corrupt prompt have the same number of tokens, and position p means
# the same thing in every prompt of the batch (position 5 is always the surname).
# Only then can the activation at position p of corrupt prompt i be patched into
# clean prompt i, and the results of all prompts be averaged cell by cell.
#
# The tutorial warns that replacement words must have the same number of tokens.
# " Wilson" is one GPT-2 token, " Bartholomew" is three: swap one for the other and
# every later position moves. Batches of unequal prompts are worse than they look:
# `model.to_tokens` pads the short ones at the end, so `logits[:, -1]` of a short
# prompt is the prediction after a padding token, and an unmasked pad is attended to
# like any token. Padding can be made to work (an attention mask, and each prompt's
# own final position), but the simple and safe way is a dataset whose prompts all
# have one length, and that is what we build.
#
# We take circuitlab-2l's name task on prompts it never saw in training: its
# held-out pairings (Emma Wilson, John Taylor, ...) in its held-out templates
# (see its model card, `circuitlab/data/circuitlab-2l.md`).

# %%
print(f"{len(datasets.NAME_TEMPLATES)} templates:")
for template in datasets.NAME_TEMPLATES:
    print("  ", template)
print(datasets.name_fillers("surname")[0])

# %% [markdown]
# ### Exercise: `aligned_prompt_pairs`
#
# Fill every template with every filler, template by template (pair `[t, f]` for
# template t, then filler f). A filler is `{"clean": {field: text}, "corrupt":
# {field: text}, "answers": [clean_answer, corrupt_answer]}`. Drop a pair, with the
# first reason that applies, when
#
# 1. an answer is not a single token (`model.to_single_token` raises an
#    `AssertionError`): `"answer not a single token"`;
# 2. its clean and corrupt prompts tokenize to different lengths (`model.to_tokens`,
#    which prepends BOS): `"clean and corrupt lengths differ"`;
# 3. its length is not the dataset's, which is the length of the first pair that
#    passed tests 1 and 2: `"not the dataset's length"`.
#
# Return a dict: `"clean"` and `"corrupt"`, the kept prompts' tokens `[n, pos]`;
# `"answers"`, `[n, 2]` token ids (clean answer first); `"kept"`, a list of
# `[t, f]`; `"dropped"`, a list of `[t, f, reason]`.

# %% tags=["exercise"]
def aligned_prompt_pairs(model, templates: Sequence[str], fillers: Sequence[dict]) -> dict[str, Any]:
    raise NotImplementedError


# %% tags=["check"]
check(aligned_prompt_pairs);

# %% [markdown]
# Predict first: the three intro templates have 6, 8 and 6 tokens and the three
# query templates 4, 4 and 5 (names included). How many of the nine templates survive,
# and how many of the 108 pairs?

# %%
data = {corruption: aligned_prompt_pairs(model, datasets.NAME_TEMPLATES, datasets.name_fillers(corruption))
        for corruption in datasets.CORRUPTIONS}
surname = data["surname"]
print(f"kept {len(surname['kept'])} pairs, dropped {len(surname['dropped'])}; prompts of "
      f"{surname['clean'].shape[1]} tokens")
print(sorted({reason for _, _, reason in surname["dropped"]}))
str_tokens = model.to_str_tokens(surname["clean"][0])
labels = position_labels(str_tokens)
print(" | ".join(labels))

# %% [markdown]
# ## One number per prompt
#
# Each prompt has its own answers: the clean answer of "Her friend was Emma Wilson.
# At lunch time Emma" is " Wilson", that of the next prompt " Taylor". So the metric
# is computed per prompt, with that prompt's pair, and averaged afterwards.
#
# ### Exercise: `batch_logit_diff`
#
# `logits` is `[batch, pos, d_vocab]`, `answers` `[batch, 2]` token ids. Return
# `logit(answers[i, 0]) − logit(answers[i, 1])` at prompt i's final position, as a
# `[batch]` tensor when `per_prompt` is true and as its mean (a 0-dim tensor)
# otherwise.

# %% tags=["exercise"]
def batch_logit_diff(logits: Tensor, answers: Tensor, per_prompt: bool = False) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(batch_logit_diff);

# %%
clean_diff = batch_logit_diff(model(surname["clean"]), surname["answers"], per_prompt=True)
corrupt_diff = batch_logit_diff(model(surname["corrupt"]), surname["answers"], per_prompt=True)
print(f"clean run:   mean {clean_diff.mean():6.2f}, from {clean_diff.min():6.2f} to {clean_diff.max():6.2f}")
print(f"corrupt run: mean {corrupt_diff.mean():6.2f}, from {corrupt_diff.min():6.2f} to {corrupt_diff.max():6.2f}")

# %% [markdown]
# Every held-out prompt prefers its own surname, and every corrupt prompt (the other
# surname in the intro) prefers the other one. A dataset of this kind is also the
# tutorial's "symmetric combinations": each surname appears as the clean answer of one
# prompt and as the corrupt answer of another, so no single name decides the average.
#
# ## A metric from 0 to 1
#
# Logit differences of different prompts have different sizes, so a patched value of
# 4 means little on its own. The **normalised metric** puts each prompt on one scale:
# 1 where the patched run's logit difference equals the clean run's, 0 where it
# equals the corrupt run's.
#
# ### Exercise: `normalised_patching_metric`
#
# Return `(patched − corrupt) / (clean − corrupt)`, element by element (the inputs
# broadcast, so a `[batch, n_layers, pos]` sweep can be normalised with `[batch, 1, 1]`
# baselines).

# %% tags=["exercise"]
def normalised_patching_metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(normalised_patching_metric);

# %% [markdown]
# Values outside [0, 1] are information, not errors: above 1, the patch made the
# model prefer the clean answer *more* than the clean run does; below 0, it prefers
# the corrupt answer more than the corrupt run does. And the scale is only as good as
# its denominator: a prompt whose clean and corrupt runs nearly agree turns float
# noise into huge values. Look at `clean − corrupt` per prompt before you trust an
# average (we come back to this below).
#
# ## Noising and denoising
#
# Patching has two directions, and they answer two different questions:
#
# - **noising** (resampling ablation, the tutorial's direction): run the *clean*
#   prompt with one activation from the corrupt run. The metric falls from 1 where
#   that activation is **necessary** for the behaviour.
# - **denoising** (causal tracing): run the *corrupt* prompt with one activation from
#   the clean run. The metric rises from 0 where that activation is **sufficient** to
#   bring the behaviour back.
#
# ### Exercise: `dataset_patching_sweep`
#
# Return `[n_layers, pos]`: entry `[L, p]` patches `blocks.L.hook_resid_pre` at
# position p, row i of the patched batch taking row i of the other batch's cache;
# each prompt's logit difference becomes its normalised metric (with its own clean
# and corrupt baselines), and the entry is their mean. `direction` is `"noising"` or
# `"denoising"`.
#
# You only need two logits of each prompt's final position, while a forward pass
# unembeds every position into 50,257 columns. `final_logit_diffs(model, tokens,
# answers, fwd_hooks)` runs the model with your hooks and returns each prompt's logit
# difference without that work; use it, or read the logits of `model.run_with_hooks`.

# %% tags=["exercise"]
def dataset_patching_sweep(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                           direction: str = "noising") -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(dataset_patching_sweep);

# %% [markdown]
# Predict before you run: chapter 1 found, on its one prompt, that the other surname
# matters only at the surname's position until layer 1 moves it to the final
# position. Rows here are `hook_resid_pre` of blocks 0 and 1 (the stream *entering*
# each block, as in `transformer_lens.patching.get_act_patch_resid_pre`). What do the
# two directions show on 48 held-out prompts?

# %%
def side_by_side(corruption: str, dataset: dict) -> None:
    rows = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    for direction in ("noising", "denoising"):
        sweep = dataset_patching_sweep(model, dataset["clean"], dataset["corrupt"], dataset["answers"], direction)
        display(patching_heatmap(sweep, x_labels=labels, y_labels=rows, colorbar_label="normalised metric",
                                 title=f"{corruption}: {direction}, mean of {len(dataset['clean'])} prompts"))
        plt.close("all")


side_by_side("other surname", surname)

# %% [markdown]
# **Other surname.** Both directions show chapter 1's picture on the whole dataset:
# only the surname's position (5) matters, in both rows. Noising it gives 0 (the
# patched run *is* the corrupt run's answer), denoising it gives 1, every other
# position gives 1 and 0, and no prompt differs from the mean by more than 0.02.
# When a corruption changes one token, the only difference between the runs flows
# from that token, so the two directions are mirror images: what is necessary is
# also sufficient.

# %%
side_by_side("other first first-name", data["first_name"])

# %% [markdown]
# **Other first first-name.** Entering block 0 the first name (position 4) carries
# everything; entering block 1 it is the surname's position (5): layer 0's
# previous-token head has written "the name before me was Emma" into the surname's
# lane, as chapter 1 found on its one prompt. Again the two directions mirror each
# other: noising and denoising add up to 1 within 0.01 on the means (within 0.1 on
# single prompts).
#
# ## Corrupting every name
#
# Chapter 1's corruptions change one name each. The corruption used for indirect
# object identification (Wang et al. 2022) changes *every* name: "Emma Wilson ...
# Emma" becomes "Sarah Carroll ... David". It is called **ABC** (three different
# names where the clean prompt had A B ... A): the repetition itself is gone, not only
# one piece of it.
#
# ### Exercise: `abc_corruption`
#
# Given a clean `filling` ({field: name}) and candidate `names` per field, return a
# new filling. Take the fields in order; field k gets the first name in `names[k]`
# that is not a value of the clean filling, not given to an earlier field, and has as
# many tokens as the value it replaces, counted with a leading space
# (`model.to_tokens(" " + name, prepend_bos=False)`).

# %% tags=["exercise"]
def abc_corruption(model, filling: dict[str, str], names: dict[str, list[str]]) -> dict[str, str]:
    raise NotImplementedError


# %% tags=["check"]
check(abc_corruption);

# %%
abc_fillers = []
for i, (first, last) in enumerate(datasets.HELDOUT_PEOPLE):
    clean = {"first": first, "last": last, "again": first}
    corrupt = abc_corruption(model, clean, datasets.abc_candidates(i))
    abc_fillers.append({"clean": clean, "corrupt": corrupt, "answers": [f" {last}", f" {corrupt['last']}"]})
abc = aligned_prompt_pairs(model, datasets.NAME_TEMPLATES, abc_fillers)
print(model.to_string(abc["clean"][0]), "->", model.to_string(abc["corrupt"][0]))

# %% [markdown]
# Predict: in the clean run, the first name (4), the surname (5) and the final name
# (10) all differ from the ABC run. Which of them is necessary (noising), and which
# is sufficient on its own (denoising)?

# %%
side_by_side("ABC", abc)

# %% [markdown]
# **Here the directions disagree.** Noising says all three name positions matter:
# breaking the first name leaves about 0.3 of the behaviour, the final name about
# 0.6, and the surname drives the metric below 0 (the model now copies the ABC
# prompt's surname). Denoising says only the surname is sufficient on its own
# (about 0.6): restoring the first name alone, or the final name alone, gives
# nothing (about −0.1 and −0.2), because induction needs *both* occurrences of the
# first name to match. Necessary is not sufficient: a mechanism that needs two
# things at once (an AND) shows up in noising at each of them and in denoising at
# neither. Run both directions before you call a position unimportant.
#
# ## Which input of a head
#
# Chapter 2 patched a head's output. A head has three inputs: its **query** (what the
# position looks for), its **key** (what each earlier position offers) and its
# **value** (what it passes on when attended to), and from query and key its
# **attention pattern**. Patching one input at a time says which of them carries the
# difference between the runs.
#
# ### Exercise: `head_input_patching`
#
# Return `[n_layers, n_heads]`: entry `[L, h]` patches only head h's `component` of
# layer L from the other run, at every position: `"q"`, `"k"`, `"v"` are
# `blocks.L.attn.hook_q`, `hook_k`, `hook_v` (`[batch, pos, head, d_head]`),
# `"pattern"` is `blocks.L.attn.hook_pattern` (`[batch, head, query, key]`). Each
# entry is the mean normalised metric, as in `dataset_patching_sweep`. (These are the
# numbers of `transformer_lens.patching`'s `get_act_patch_attn_head_q_all_pos` and its
# k, v and pattern siblings.)

# %% tags=["exercise"]
def head_input_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor, component: str,
                        direction: str = "noising") -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(head_input_patching);

# %% [markdown]
# Predict: the induction head finds the earlier copy of the current name and copies
# the token after it, the surname. With the other surname, the other first
# first-name, or the other second first-name, which of its inputs differs between
# the runs?

# %%
layer, head = induction
print(f"noising, induction head {layer}.{head} (1 = no effect, 0 = the whole effect):")
for corruption in datasets.CORRUPTIONS:
    d = data[corruption]
    row = {c: head_input_patching(model, d["clean"], d["corrupt"], d["answers"], c)[layer, head].item()
           for c in ("q", "k", "v", "pattern")}
    print(f"  {corruption:12s} " + "  ".join(f"{c} {value:5.2f}" for c, value in row.items()))

# %% [markdown]
# On circuitlab-2l each corruption enters the induction head 1.1 through one input:
#
# - **other surname**: the **value** (about 0.3 left, so 70 % of the effect). Where
#   the head looks does not change; what it finds there does.
# - **other first first-name**: the **key** and with it the pattern (about 0.55). The
#   surname's position is found through its key, which holds what the previous-token
#   head 0.0 wrote there ("the name before me was Emma"); 0.0 itself passes that on
#   through its value (patching 0.0's value leaves 0.07).
# - **other second first-name**: the **query**, the final name that is looked for.
#
# So the surname's *position* is carried by the key, its *identity* by the value.
#
# ## The spread across prompts
#
# A mean over 48 prompts hides how they differ. Before you report "head 1.1 does 70 %
# of the work", look at every prompt: is the tutorial's single prompt typical, and
# does any prompt behave differently?
#
# ### Exercise: `per_prompt_head_patching`
#
# Return `[n_prompts, len(heads)]`: column j is each prompt's normalised metric with
# head `heads[j] = (layer, head)` patched (its output `blocks.layer.attn.hook_z`, at
# every position) in `direction`. No mean.

# %% tags=["exercise"]
def per_prompt_head_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                             heads: Sequence[Sequence[int]], direction: str = "noising") -> Tensor:
    raise NotImplementedError


# %% tags=["check"]
check(per_prompt_head_patching);

# %%
every_head = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def spread(values: Tensor, title: str):
    """One dot per prompt for each head, the mean as a bar."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(every_head), 3.2))
    jitter = torch.linspace(-0.2, 0.2, values.shape[0])
    for j in range(values.shape[1]):
        ax.scatter(j + jitter, values[:, j].cpu(), s=8, alpha=0.6)
        ax.hlines(values[:, j].mean().item(), j - 0.3, j + 0.3, color="black")
    ax.set_xticks(range(len(every_head)), [f"{layer}.{head}" for layer, head in every_head])
    ax.set_xlabel("head")
    ax.set_ylabel("normalised metric")
    ax.set_title(title)
    return fig


surname_spread = per_prompt_head_patching(model, surname["clean"], surname["corrupt"], surname["answers"], every_head)
display(spread(surname_spread, "other surname, noising: each prompt"))
plt.close("all")
j = every_head.index(induction)
print(f"head {induction[0]}.{induction[1]}: mean {surname_spread[:, j].mean():.2f}, "
      f"from {surname_spread[:, j].min():.2f} to {surname_spread[:, j].max():.2f}")

# %% [markdown]
# Noising the induction head 1.1 leaves between about 0.1 and 0.55 of the behaviour,
# depending on the prompt: on every prompt it matters most, but how much varies by a
# factor of five. The rest is done by 1.3, the second induction head (see chapter 2).
# A single prompt would have given one of these dots; the tutorial's prompt, in a
# template circuitlab-2l saw in training, is one more.
#
# The spread also shows when the metric itself breaks. With the other *second*
# first-name ("... At lunch time John"), the corrupt prompt has no reason to prefer the
# other surname, which does not occur in it: on some prompts the corrupt run prefers
# the clean surname as much as the clean run does, or more, the denominator
# `clean − corrupt` is near zero or negative, and those prompts' values reach ±10:

# %%
second = data["second_name"]
gap = (batch_logit_diff(model(second["clean"]), second["answers"], per_prompt=True)
       - batch_logit_diff(model(second["corrupt"]), second["answers"], per_prompt=True))
second_spread = per_prompt_head_patching(model, second["clean"], second["corrupt"], second["answers"], every_head)
print(f"clean - corrupt: from {gap.min():.2f} to {gap.max():.2f}")
print(f"head {induction[0]}.{induction[1]}: from {second_spread[:, j].min():.1f} to {second_spread[:, j].max():.1f}")

# %% [markdown]
# The mean of such values means nothing. Either choose a corruption whose corrupt run
# gives the other answer (the ABC corruption does), or drop the prompts whose gap is
# small and say so, or normalise the *mean* logit difference by the mean baselines
# (one denominator for the dataset). Always report how many prompts, how they vary, and
# which you dropped.
#
# ## Your turn: a behaviour of your own
#
# The recipe, end to end:
#
# 1. templates and fillers; `aligned_prompt_pairs` (and look at what it dropped);
# 2. the clean and corrupt baselines per prompt, and their gap;
# 3. `dataset_patching_sweep` in both directions;
# 4. the heads (chapter 2's head sweep, or `per_prompt_head_patching` on every head)
#    and their inputs with `head_input_patching`;
# 5. the spread across prompts.
#
# **The worked example: indirect object identification on gpt2-small.** In "When Mary
# and John went to the store, John gave a drink to", gpt2-small predicts " Mary", the
# name that is not repeated. Wang et al. (2022, "Interpretability in the Wild: a
# Circuit for Indirect Object Identification in GPT-2 small", arXiv:2211.00593) found
# the circuit with these methods on an ABC-corrupted dataset: **name mover heads**
# (9.9, 9.6, 10.0) attend from the final position to the indirect object and copy its
# name; **S-inhibition heads** (7.3, 7.9, 8.6, 8.10) tell them not to attend to the
# subject; **induction heads** (5.5, 6.9) and **duplicate-token heads** (0.1, 3.0)
# detect that the subject occurred before, helped by previous-token heads (2.2, 4.11);
# negative name movers (10.7, 11.10) and backup name movers complete the picture.
#
# The cell below runs the recipe on pretrained gpt2-small when its weights are in the
# local Hugging Face cache (see the README) and says so otherwise; random weights
# would show noise, not a circuit.

# %%
if weights_cached("gpt2-small"):
    gpt2 = load_model("gpt2-small")
    ioi_fillers = datasets.ioi_fillers()
    for i, filler in enumerate(ioi_fillers):
        turned = datasets.FIRST_NAMES[3 * i % 30:] + datasets.FIRST_NAMES[:3 * i % 30]
        filler["corrupt"] = abc_corruption(gpt2, filler["clean"], {field: turned for field in filler["clean"]})
    ioi = aligned_prompt_pairs(gpt2, datasets.IOI_TEMPLATES, ioi_fillers)
    ioi_labels = position_labels(gpt2.to_str_tokens(ioi["clean"][0]))
    print(f"{len(ioi['kept'])} IOI pairs, e.g. {gpt2.to_string(ioi['clean'][0])!r}")
    rows = [f"blocks.{layer}.hook_resid_pre" for layer in range(gpt2.cfg.n_layers)]
    for direction in ("noising", "denoising"):
        sweep = dataset_patching_sweep(gpt2, ioi["clean"], ioi["corrupt"], ioi["answers"], direction)
        display(patching_heatmap(sweep, x_labels=ioi_labels, y_labels=rows, colorbar_label="normalised metric",
                                 title=f"IOI on gpt2-small, {direction}"))
        plt.close("all")
    movers = [(9, 9), (9, 6), (10, 0), (7, 3), (7, 9), (8, 6), (8, 10)]
    ioi_spread = per_prompt_head_patching(gpt2, ioi["clean"], ioi["corrupt"], ioi["answers"], movers)
    for (layer, head), column in zip(movers, ioi_spread.T):
        print(f"head {layer}.{head}: mean {column.mean():5.2f}, from {column.min():5.2f} to {column.max():5.2f}")
else:
    print("gpt2-small's pretrained weights are not in the local Hugging Face cache, so this worked example "
          "does not run here (random weights would show noise). The README's 'Models, and getting the real "
          "weights' says how to get them; then run this cell again.")

# %% [markdown]
# **More behaviours to try** (in `circuitlab.datasets.BEHAVIOURS`; each aligns on
# GPT-2's tokenizer, so on gpt2-small every pair is kept):
#
# - **gendered pronoun**: "Yesterday John went to the shop because" → " he", against
#   " she" after "Mary". Which heads move the name's gender to the final position?
# - **subject-verb agreement**: "The key near the old cabinets" → " is", against
#   " are" after "keys": the verb must agree with the subject, not with the nearer
#   noun.
# - **country to capital**: "The capital of France is the city of" → " Paris", against
#   " Rome" for Italy: factual recall, the setting in which causal tracing (denoising)
#   was named (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

# %%
for name, behaviour in datasets.BEHAVIOURS.items():
    pairs = aligned_prompt_pairs(model, behaviour["templates"], behaviour["fillers"])
    print(f"{name:24s} {len(pairs['kept'])} pairs kept, {len(pairs['dropped'])} dropped; "
          f"e.g. {model.to_string(pairs['clean'][0])!r}")

# %% [markdown]
# **Summary.** Build a dataset of aligned pairs, normalise each prompt with its own
# baselines, patch in both directions (necessary and sufficient are different
# questions), patch the heads' inputs to see which one carries the difference, and
# report the spread across prompts with the number you kept and dropped.
