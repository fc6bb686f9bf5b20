"""Every claim chapter 6 makes about circuitlab-2l, measured here.

The dataset is the chapter's: circuitlab-2l's held-out name pairings in its held-out
templates (circuitlab/data/circuitlab-2l.md), with chapter 1's three corruptions and the
ABC corruption. Sweeps come from the exact engine (equal to transformer_lens.patching,
tests/test_ch06_matches_tl.py); head inputs from the reference.
"""

from __future__ import annotations

import pytest
import torch

from circuitlab import datasets, load_model
from circuitlab.sweeps.one_pair import residual_patching_sweep
from circuitlab.prompts import CORRUPTIONS
from circuitlab_solutions import ch06_dataset_patching as ref
from circuitlab_solutions import ch06_exact_sweeps as exact
from training import corpus

SURNAME, FIRST, FINAL = 5, 4, 10  # positions in the chapter's prompts
PREVIOUS_TOKEN, INDUCTION = (0, 0), (1, 1)


@pytest.fixture(scope="module")
def model():
    return load_model("circuitlab-2l")


@pytest.fixture(scope="module")
def data(model):
    out = {c: ref.aligned_prompt_pairs(model, datasets.NAME_TEMPLATES, datasets.name_fillers(c))
           for c in datasets.CORRUPTIONS}
    fillers = []
    for i, (first, last) in enumerate(datasets.HELDOUT_PEOPLE):  # as the chapter builds it
        clean = {"first": first, "last": last, "again": first}
        corrupt = ref.abc_corruption(model, clean, datasets.abc_candidates(i))
        fillers.append({"clean": clean, "corrupt": corrupt, "answers": [f" {last}", f" {corrupt['last']}"]})
    out["abc"] = ref.aligned_prompt_pairs(model, datasets.NAME_TEMPLATES, fillers)
    return out


@pytest.fixture(scope="module")
def residual(model, data):
    """(corruption, direction) -> [prompt, layer, pos] normalised metric."""
    return {(c, d): exact.exact_residual_effects(model, x["clean"], x["corrupt"], x["answers"], d)
            for c, x in data.items() for d in ("noising", "denoising")}


def args(x):
    return x["clean"], x["corrupt"], x["answers"]


def test_the_dataset_is_held_out_and_aligned(model, data):
    assert datasets.HELDOUT_PEOPLE == corpus.HELDOUT_PAIRS[4:]
    assert datasets.FIRST_NAMES == corpus.FIRST_NAMES and datasets.SURNAMES == corpus.SURNAMES
    as_corpus = [t.replace("{first}", "{F}").replace("{last}", "{S}") for t in datasets.HELDOUT_INTROS]
    assert as_corpus == corpus.HELDOUT_INTROS
    assert [q.replace("{again}", "{F}") for q in datasets.HELDOUT_QUERIES] == [
        corpus.query_prefix(q) for q in corpus.HELDOUT_QUERIES]
    # "How many of the nine templates survive, and how many of the 108 pairs?"
    surname = data["surname"]
    assert surname["clean"].shape == (48, 11) and len(surname["dropped"]) == 60
    assert {reason for _, _, reason in surname["dropped"]} == {"not the dataset's length"}
    assert sorted({t for t, _ in surname["kept"]}) == [0, 1, 6, 7]  # "Her friend was" / "The teacher was" x 2 queries
    for x in data.values():
        assert x["clean"].shape == (48, 11)
        assert (x["clean"] != x["corrupt"]).any(0).nonzero().flatten().tolist() in ([4], [5], [10], [4, 5, 10])
    tokens = model.to_str_tokens(surname["clean"][0])
    assert (tokens[FIRST], tokens[SURNAME], tokens[FINAL]) == (" Emma", " Wilson", " Emma")


def test_every_prompt_prefers_its_surname_and_every_corrupt_one_the_other(model, data):
    clean, corrupt = exact.baselines(model, *args(data["surname"]))
    assert (clean > 0).all() and (corrupt < 0).all()


@pytest.mark.parametrize("corruption,cells", [("surname", [(0, SURNAME), (1, SURNAME)]),
                                              ("first_name", [(0, FIRST), (1, SURNAME)])])
def test_single_name_corruptions_show_chapter_1s_picture_in_both_directions(residual, corruption, cells):
    noising, denoising = residual[(corruption, "noising")], residual[(corruption, "denoising")]
    mean = noising.mean(0)
    expected = torch.ones_like(mean)
    for layer, pos in cells:
        expected[layer, pos] = 0
    # The listed cells carry everything; the final position entering block 1 (first name) keeps 0.99.
    assert torch.allclose(mean, expected, atol=0.02), mean
    # Mirror images: on the means to 0.01; prompt by prompt to 0.1.
    assert torch.allclose(mean + denoising.mean(0), torch.ones_like(mean), atol=0.01)
    assert torch.allclose(noising + denoising, torch.ones_like(noising), atol=0.1)
    if corruption == "surname":  # "no prompt differs from the mean by more than 0.02"
        assert (noising - mean).abs().max() < 0.02 and (denoising - denoising.mean(0)).abs().max() < 0.02


def test_chapter_1s_single_prompt_flips_at_the_same_cells(model):
    """Chapter 1's tutorial prompt, rows blocks.0.hook_resid_pre and blocks.0.hook_resid_post
    (= blocks.1.hook_resid_pre): the surname corruption matters at the surname only."""
    sweep = residual_patching_sweep(model, **CORRUPTIONS["surname"].as_args())
    clean = CORRUPTIONS["surname"].logit_diff(model, CORRUPTIONS["surname"].clean_prompt)
    for row in (0, 1):
        changed = ((sweep[row] - clean).abs() > 1).nonzero().flatten().tolist()
        assert changed == [SURNAME]


def test_abc_noising_and_denoising_disagree(residual):
    noising, denoising = residual[("abc", "noising")].mean(0), residual[("abc", "denoising")].mean(0)
    # Noising: each name position is necessary.
    assert 0.2 < noising[0, FIRST] < 0.45 and 0.5 < noising[0, FINAL] < 0.75
    assert noising[0, SURNAME] < 0 and noising[1, SURNAME] < 0
    # Denoising: only the surname is sufficient on its own (about 0.6).
    assert 0.5 < denoising[0, SURNAME] < 0.7 and 0.5 < denoising[1, SURNAME] < 0.7
    assert -0.2 < denoising[0, FIRST] < 0.05 and -0.3 < denoising[0, FINAL] < -0.1


def head_inputs(model, x, layer_head):
    layer, head = layer_head
    return {c: ref.head_input_patching(model, *args(x), c)[layer, head].item() for c in exact.COMPONENTS}


def test_each_corruption_enters_the_induction_head_through_one_input(model, data):
    surname = head_inputs(model, data["surname"], INDUCTION)
    assert 0.2 < surname["v"] < 0.4 and min(surname["q"], surname["k"], surname["pattern"]) > 0.95
    first = head_inputs(model, data["first_name"], INDUCTION)
    assert 0.45 < first["k"] < 0.65 and abs(first["pattern"] - first["k"]) < 0.05
    assert min(first["q"], first["v"]) > 0.95
    assert head_inputs(model, data["first_name"], PREVIOUS_TOKEN)["v"] < 0.15  # "leaves 0.07"
    second = head_inputs(model, data["second_name"], INDUCTION)
    assert second["q"] < 0.2 and min(second["k"], second["v"]) > 0.9


def test_the_spread_of_the_induction_head_over_prompts(model, data):
    effects = exact.exact_head_effects(model, *args(data["surname"])).flatten(1)  # [prompt, layer * n_heads + head]
    induction = effects[:, INDUCTION[0] * model.cfg.n_heads + INDUCTION[1]]
    assert 0.05 < induction.min() < 0.2 and 0.45 < induction.max() < 0.6 and 0.25 < induction.mean() < 0.35
    assert induction.max() / induction.min() > 4  # "by a factor of five"
    assert (effects.argmin(1) == INDUCTION[0] * model.cfg.n_heads + INDUCTION[1]).all()  # it matters most on each


def test_the_second_name_corruption_breaks_the_metric(model, data):
    clean, corrupt = exact.baselines(model, *args(data["second_name"]))
    assert (clean - corrupt).min() < 1  # some corrupt runs prefer the clean surname about as much
    effects = exact.exact_head_effects(model, *args(data["second_name"]))
    induction = effects[:, INDUCTION[0], INDUCTION[1]]
    assert (clean - corrupt).min() < 0  # "near zero or negative"
    assert induction.min() < -8 and induction.max() > 6  # "those prompts' values reach ±10"


def test_your_turn_datasets_align_on_gpt2s_tokenizer(gpt2_twin):
    for name, behaviour in datasets.BEHAVIOURS.items():
        pairs = ref.aligned_prompt_pairs(gpt2_twin, behaviour["templates"], behaviour["fillers"])
        assert not pairs["dropped"], (name, pairs["dropped"])
    fillers = datasets.ioi_fillers()
    for i, filler in enumerate(fillers):  # as the chapter's IOI cell
        turned = datasets.FIRST_NAMES[3 * i % 30:] + datasets.FIRST_NAMES[:3 * i % 30]
        filler["corrupt"] = ref.abc_corruption(gpt2_twin, filler["clean"], {f: turned for f in filler["clean"]})
    ioi = ref.aligned_prompt_pairs(gpt2_twin, datasets.IOI_TEMPLATES, fillers)
    assert not ioi["dropped"] and ioi["clean"].shape == (64, 15)
    assert gpt2_twin.to_string(ioi["clean"][0]) == "<|endoftext|>When Mary and John went to the store, John gave a drink to"
