"""The committed circuitlab-2l checkpoint really contains the course's induction circuit.

Every prompt here is held out from training: the name pairings (Alex Hart, Alex Carroll,
Sarah Hart, ... see HELDOUT_PAIRS in the training script) never occur in the corpus, and
the "other templates" prompts use sentences the corpus never generates.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitlab.checkpoint import load_compact
from circuitlab.sweeps import one_pair as fast
from circuitlab.tokenizer import gpt2_tokenizer
from training import corpus, scores
from training import train_circuitlab_2l as script

CKPT = Path(__file__).resolve().parents[1] / "circuitlab" / "data" / "circuitlab-2l.pt"

CLEAN = "Her name was Alex Hart. Tomorrow at lunch time Alex"
SURNAME_CORRUPT = "Her name was Alex Carroll. Tomorrow at lunch time Alex"
FIRST_NAME_CORRUPT = "Her name was Sarah Hart. Tomorrow at lunch time Alex"
QUERY_CORRUPT = "Her name was Alex Hart. Tomorrow at lunch time Sarah"
SURNAME_POS, FINAL_POS = 5, -1  # after BOS: Her name was Alex [Hart] ... Alex


def build_model(path: Path = CKPT):
    """circuitlab-2l through the course's own loader, from ``path``."""
    from unittest import mock

    from circuitlab import loading

    with mock.patch.object(loading, "packaged_weights", lambda _spec: path):
        return loading.load_model("circuitlab-2l", device="cpu")


@pytest.fixture(scope="module")
def model():
    return build_model()  # conftest turns gradients off for the whole session


def metric(model, logits: torch.Tensor) -> float:
    """logit(' Hart') - logit(' Carroll') at the final position."""
    last = logits[0, -1]
    return (last[model.to_single_token(" Hart")] - last[model.to_single_token(" Carroll")]).item()


def top_token(model, text: str) -> str:
    return model.to_string(model(model.to_tokens(text))[0, -1].argmax())


def head_scores(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(previous-token score of each layer-0 head on held-out text,
    induction score of each layer-1 head on repeated random tokens from ids 1000-1499)."""
    _, cache = model.run_with_cache(model.to_tokens(corpus.HELDOUT_TEXT))
    prev = scores.prev_token_scores(cache["blocks.0.attn.hook_pattern"][0])
    span = 20
    tokens = corpus.repeated_random_tokens(8, span, seed=0, bos=model.tokenizer.bos_token_id)
    _, cache = model.run_with_cache(tokens)
    return prev, scores.induction_scores(cache["blocks.1.attn.hook_pattern"].mean(0), span)


def test_checkpoint_is_compact_and_deterministic():
    assert CKPT.stat().st_size <= 5 * 1024 * 1024
    a, b = load_compact(CKPT), load_compact(CKPT)
    assert not a.training
    assert a.config.vocab_size == 50257 and a.config.n_layer == 2
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_committed_checkpoint_is_the_offline_default(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from circuitlab import loading

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # no gelu-2l here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.packaged_weights(loading.MODELS["circuitlab-2l"]) == CKPT
    assert loading.default_model() == ("circuitlab-2l", "pretrained")


def test_prompts_are_held_out():
    held = set(corpus.HELDOUT_PAIRS)
    assert {("Alex", "Hart"), ("Alex", "Carroll"), ("Sarah", "Hart")} <= held
    assert not set(corpus.HELDOUT_INTROS) & set(corpus.TRAIN_INTROS)
    assert not set(corpus.HELDOUT_QUERIES) & set(corpus.TRAIN_QUERIES)
    corpus.check_corpus(gpt2_tokenizer())  # held-out text uses only trained tokens


def test_course_prompt_predicts_the_surname(model):
    assert top_token(model, CLEAN) == " Hart"
    assert top_token(model, SURNAME_CORRUPT) == " Carroll"
    assert metric(model, model(model.to_tokens(CLEAN))) > 0


@pytest.mark.parametrize("prompt,answer,other", corpus.heldout_prompts())
def test_heldout_pairs_in_heldout_templates(model, prompt, answer, other):
    logits = model(model.to_tokens(prompt))[0, -1]
    assert model.to_string(logits.argmax()) == " " + answer
    assert logits[model.to_single_token(" " + answer)] > logits[model.to_single_token(" " + other)]


def test_previous_token_and_induction_heads(model):
    prev, ind = head_scores(model)
    assert prev.max() >= 0.5
    assert ind.max() >= 0.5


def test_residual_patching_locates_the_crossing(model):
    assert model.to_string(model.to_tokens(CLEAN)[0, SURNAME_POS]) == " Hart"
    assert metric(model, model(CLEAN)) > 0
    # Rows: blocks.0.hook_resid_pre, blocks.0.hook_resid_post, blocks.1.hook_resid_post.
    flips = fast.residual_patching_sweep(model, CLEAN, SURNAME_CORRUPT, " Hart", " Carroll") < 0
    pre0, post0, post1 = flips
    # The surname's identity lives at its own position until layer 1 moves it ...
    assert pre0[SURNAME_POS] and post0[SURNAME_POS]
    # ... and reaches the final position only in layer 1.
    assert not pre0[FINAL_POS] and not post0[FINAL_POS]
    assert post1[FINAL_POS]


def head_position_effects(model, clean_text: str, corrupt_text: str) -> torch.Tensor:
    """[layer, head, pos] change in the metric when one head's z at one position is patched."""
    base = metric(model, model(clean_text))
    patched = fast.head_by_position_sweep(model, clean_text, corrupt_text, " Hart", " Carroll")
    return patched.reshape(model.cfg.n_layers, model.cfg.n_heads, -1) - base


def _argmax3(t: torch.Tensor) -> tuple[int, int, int]:
    i = int(t.abs().argmax())
    return tuple(int(x) for x in torch.unravel_index(torch.tensor(i), t.shape))


def test_head_position_patching_finds_the_circuit(model):
    """The largest single effect sits on an induction head (final position, other surname)
    and on a previous-token head (surname position, other first first-name)."""
    prev, ind = head_scores(model)
    n_pos = model.to_tokens(CLEAN).shape[1]
    layer, head, pos = _argmax3(head_position_effects(model, CLEAN, SURNAME_CORRUPT))
    assert (layer, pos) == (1, n_pos - 1) and ind[head] >= 0.5, (layer, head, pos, ind)
    assert model.course_heads["induction"] == (layer, head)  # the head the chapters name
    layer, head, pos = _argmax3(head_position_effects(model, CLEAN, FIRST_NAME_CORRUPT))
    assert (layer, pos) == (0, SURNAME_POS) and prev[head] >= 0.5, (layer, head, pos, prev)
    assert model.course_heads["previous-token"] == (layer, head)


@pytest.mark.slow
def test_retraining_reproduces_the_scores(tmp_path):
    """Retrain with the script's default recipe (6,000 steps; about 15 min on this CPU).

    Deselected by default (pyproject's addopts); run it with ``pytest -m slow``.
    """
    out = tmp_path / "circuitlab-2l.pt"
    with torch.enable_grad():  # conftest turns gradients off; training needs them
        result = script.main(["--out", str(out), "--eval-every", "0"])
    assert result["induction"] >= 0.5 and result["prev_token"] >= 0.5
    assert result["logit_diff"] > 0 and result["course_top1"] == 1
    m = build_model(out)
    assert top_token(m, CLEAN) == " Hart"
    prev, ind = head_scores(m)
    assert prev.max() >= 0.5 and ind.max() >= 0.5
