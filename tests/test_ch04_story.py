"""Chapter 4's story, asserted on circuitlab-2l with the reference solutions: every number
the chapter's text states about the offline model is checked here."""

from __future__ import annotations

import pytest
import torch

from circuitlab import load_model
from circuitlab.composition import composition_baseline
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS, name_batch
from circuitlab_solutions import ch04_confirming_the_circuit as ref

PREVIOUS, COPIER, HELPER = (0, 0), (1, 1), (1, 3)
INDUCTION_ON_RANDOM_TOKENS = {0, 1, 3}  # layer-1 heads 1.0, 1.1, 1.3 (chapter 3, the model card)


@pytest.fixture(scope="module")
def model():
    return load_model("circuitlab-2l")


@pytest.fixture(scope="module")
def scores(model):
    ov, qk, ov1 = model.OV[0].AB, model.QK[1].AB, model.OV[1].AB
    return {"K": ref.k_composition_scores(ov, qk), "Q": ref.q_composition_scores(ov, qk),
            "V": ref.v_composition_scores(ov, ov1)}


@pytest.fixture(scope="module")
def baseline(model):
    return composition_baseline(ref.composition_score, model.cfg.d_model, model.cfg.d_head)


def _logit_diff(model, prompt, good=" Hart", bad=" Carroll") -> float:
    final = model(prompt)[0, -1]
    return (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).item()


def test_course_heads_are_the_ones_the_text_names(model):
    assert model.course_heads == {"previous-token": PREVIOUS, "induction": COPIER}


def test_random_baseline(baseline):
    assert baseline.shape == (200,)
    assert baseline.mean().item() == pytest.approx(0.088, abs=0.001)
    assert baseline.std().item() < 0.005


def test_previous_token_heads_k_compose_with_the_induction_heads(scores, baseline):
    k, chance = scores["K"], baseline.mean().item()
    # The largest pair is 0.0 -> 1.0, not 0.0 -> 1.1 (the text says so).
    assert divmod(int(k.argmax()), k.shape[1]) == (0, 0)
    assert k[0, 0].item() == pytest.approx(0.255, abs=0.005)
    assert k.max().item() / chance == pytest.approx(2.9, abs=0.1)
    # 0.0 -> 1.1: 0.21, 2.4 x the baseline, third of its row; the row's top three are 1.0, 1.3, 1.1.
    assert k[0, 1].item() == pytest.approx(0.213, abs=0.005)
    assert k[0, 1].item() / chance == pytest.approx(2.4, abs=0.1)
    assert set(k[0].argsort(descending=True)[:3].tolist()) == INDUCTION_ON_RANDOM_TOKENS
    assert k[0].argsort(descending=True)[2].item() == 1
    assert all(0.21 <= k[0, r].item() <= 0.26 for r in INDUCTION_ON_RANDOM_TOKENS)
    # 0.3 composes with the same three heads, a little less; 1.2 scores below the baseline with 0.0.
    assert set(k[3].argsort(descending=True)[:3].tolist()) == INDUCTION_ON_RANDOM_TOKENS
    assert all(k[3, r] < k[0, r] for r in INDUCTION_ON_RANDOM_TOKENS)
    assert k[0, 2].item() < chance


def test_no_layer0_head_q_composes_with_the_copier(scores, baseline):
    q, chance = scores["Q"][:, COPIER[1]], baseline.mean().item()
    assert q.max().item() == pytest.approx(0.10, abs=0.005) and int(q.argmax()) == 2
    assert q.max().item() / chance < 1.2
    assert q.max() < scores["K"][0, COPIER[1]] / 2
    # The red column of the Q panel is head 1.2, read by the previous-token heads 0.0 and 0.3.
    assert int(scores["Q"].max(dim=0).values.argmax()) == 2
    assert scores["Q"][0, 2].item() > 1.5 * chance and scores["Q"][3, 2].item() > 1.5 * chance


def test_direct_logit_attribution(model):
    _, cache = model.run_with_cache(CLEAN_PROMPT)
    dla = ref.direct_logit_attribution(model, cache, " Hart", " Carroll")
    assert divmod(int(dla.argmax()), dla.shape[1]) == COPIER
    assert dla[COPIER].item() == pytest.approx(8.4, abs=0.1)
    assert dla[HELPER].item() == pytest.approx(3.5, abs=0.1)
    others = [dla[layer, head].abs().item() for layer in range(2) for head in range(4) if (layer, head) not in
              (COPIER, HELPER)]
    assert max(others) < 0.7
    assert dla[PREVIOUS].item() == pytest.approx(0.4, abs=0.1)
    # The heads' shares plus the rest add up to the model's logit difference.
    good, bad = model.to_single_token(" Hart"), model.to_single_token(" Carroll")
    direction, scale = model.W_U[:, good] - model.W_U[:, bad], cache["ln_final.hook_scale"][0, -1]
    rest = (cache["hook_embed"][0, -1] + cache["hook_pos_embed"][0, -1] + model.b_O.sum(0)
            + sum(cache[f"blocks.{layer}.hook_mlp_out"][0, -1] for layer in range(2)))
    total = dla.sum() + rest / scale @ direction + model.b_U[good] - model.b_U[bad]
    assert _logit_diff(model, CLEAN_PROMPT) == pytest.approx(13.3, abs=0.05)
    assert total.item() == pytest.approx(_logit_diff(model, CLEAN_PROMPT), abs=1e-4)


def _path(model, case, sender, receiver, which) -> float:
    return ref.path_patch_to_head_input(model, **case.as_args(), sender=sender, receiver=receiver,
                                        receiver_input=which)


def test_path_patching_finds_the_k_composition(model):
    case = CORRUPTIONS["first_name"]
    clean = _logit_diff(model, case.clean_prompt)
    through = {which: _path(model, case, PREVIOUS, COPIER, which) for which in "qkv"}
    assert through["k"] == pytest.approx(8.7, abs=0.05)
    assert abs(through["q"] - clean) < 0.01
    assert clean - through["v"] == pytest.approx(0.8, abs=0.05)
    assert _path(model, case, PREVIOUS, HELPER, "k") == pytest.approx(10.1, abs=0.05)
    for other in ((1, 0), (1, 2)):
        assert abs(_path(model, case, PREVIOUS, other, "k") - clean) < 0.1


def test_path_patching_finds_no_duplicate_token_route(model):
    case = CORRUPTIONS["second_name"]
    clean = _logit_diff(model, case.clean_prompt)
    for head in range(4):
        assert abs(_path(model, case, (0, head), COPIER, "q") - clean) < 0.01


def test_layer0_moves_which_token_not_where(model):
    clean = _logit_diff(model, CLEAN_PROMPT)
    where = ref.positional_embedding_patch(model, CLEAN_PROMPT, " Hart", " Carroll", "hook_pos_embed")
    which = ref.positional_embedding_patch(model, CLEAN_PROMPT, " Hart", " Carroll", "hook_embed")
    assert abs(where - clean) < 0.1
    assert which == pytest.approx(4.7, abs=0.05)


@pytest.mark.parametrize("method,kept,faithfulness,ablated", [
    ("mean", [PREVIOUS, COPIER], 0.85, -0.6),
    ("resample", [PREVIOUS, COPIER], 0.76, -9.9),
    ("mean", [PREVIOUS, COPIER, HELPER], 0.999, None),
    ("resample", [PREVIOUS, COPIER, HELPER], 0.985, None),
])
def test_ablations_and_faithfulness(model, method, kept, faithfulness, ablated):
    batch = name_batch()
    every = [(layer, head) for layer in range(2) for head in range(4)]

    def run(heads):
        return ref.ablate_heads(model, **batch.as_args(), heads=heads, method=method)

    clean, nothing_left = run([]), run(every)
    only_circuit = run([h for h in every if h not in kept])
    assert clean == pytest.approx(10.76, abs=0.01)
    assert nothing_left == pytest.approx({"mean": -0.63, "resample": -11.95}[method], abs=0.01)
    assert (only_circuit - nothing_left) / (clean - nothing_left) == pytest.approx(faithfulness, abs=0.005)
    if ablated is not None:  # ablating the circuit destroys the behaviour
        assert run(kept) == pytest.approx(ablated, abs=0.05)


def test_the_helper_is_the_head_dla_ranks_next(model):
    """The chapter adds "the head direct logit attribution ranks next" to the circuit."""
    _, cache = model.run_with_cache(CLEAN_PROMPT)
    dla = ref.direct_logit_attribution(model, cache, " Hart", " Carroll")
    ranked = [divmod(int(i), 4) for i in dla.flatten().argsort(descending=True)]
    assert next(h for h in ranked if h not in (PREVIOUS, COPIER)) == HELPER


def test_name_batch_is_what_the_text_says(model):
    batch = name_batch()
    assert len(batch.prompts) == 8
    assert batch.prompts[1] == "Her name was Sarah Carroll. Tomorrow at lunch time Sarah"
    assert (batch.answers[1], batch.wrong_answers[1]) == (" Carroll", " Smith")
    assert len({model.to_tokens(p).shape[1] for p in batch.prompts}) == 1
    # Every prompt of the batch gets its own surname ahead of the next person's.
    assert all(_logit_diff(model, p, a, w) > 5 for p, a, w in zip(batch.prompts, batch.answers, batch.wrong_answers))


def test_composition_score_broadcasts():
    """The scores are plain tensors (the chapter broadcasts them), not FactoredMatrix."""
    left, right = torch.randn(3, 1, 5, 5), torch.randn(1, 2, 5, 5)
    assert ref.composition_score(left, right).shape == (3, 2)
