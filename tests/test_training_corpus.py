"""The circuitlab-2l corpus keeps its promises: held-out prompts are never generated, and
the loss mask marks exactly the tokens an induction head can predict."""

from __future__ import annotations

import random

import pytest

from circuitlab.tokenizer import gpt2_tokenizer
from training import corpus

BOS = 50256


def test_names_documents_never_contain_held_out_pairs_or_templates():
    rng = random.Random(7)
    held_intros = [t.split("{F}")[0] for t in corpus.HELDOUT_INTROS]
    for _ in range(2000):
        text = corpus.names_document(rng)
        for f, s in corpus.HELDOUT_PAIRS:
            assert f" {f} {s}" not in f" {text}", text
        for intro in held_intros:  # "Her friend was", "We met", "The teacher was"
            assert intro not in text, text


def test_held_out_prompts_use_only_trained_tokens():
    corpus.check_corpus(gpt2_tokenizer())  # raises on an untrained token
    prompts = corpus.heldout_prompts()
    assert len(prompts) == 12
    for prompt, answer, other in prompts:
        assert answer != other and f" {answer}" in prompt and f" {other}" in prompt


@pytest.mark.parametrize("style", ["pairs", "multi", "markov", "planted"])
def test_rows_are_full_length_and_start_with_bos(style):
    rng = random.Random(0)
    for _ in range(50):
        row, known = corpus.RowShape(style).row(rng, BOS)
        assert len(row) == len(known) == corpus.SEQ_LEN
        assert row[0] == BOS and not known[0]
        assert all(t in corpus.RANDOM_IDS for t in row[1:])


def test_planted_rows_mark_exactly_the_recallable_tokens():
    """A token is marked iff its predecessor occurred earlier followed by it (and it is planted)."""
    rng = random.Random(3)
    marked = 0
    for _ in range(200):
        row, known = corpus.RowShape("planted", plant_near=0.5).row(rng, BOS)
        for i in range(2, len(row)):
            recallable = any(row[j - 1] == row[i - 1] and row[j] == row[i] for j in range(2, i))
            if known[i]:
                assert recallable, (row, i)
        marked += sum(known)
    assert marked / 200 > 8  # a dense signal: many recallable tokens per row


def test_pairs_rows_mark_tokens_that_repeat_their_span():
    rng = random.Random(4)
    for _ in range(100):
        row, known = corpus.RowShape("pairs").row(rng, BOS)
        for i, k in enumerate(known):
            if k:  # the same token sits one span length earlier, and so does its predecessor
                assert any(row[i - d] == row[i] and row[i - 1 - d] == row[i - 1]
                           for d in range(8, 25) if i - 1 - d >= 1), (row, i)


def test_permutation_echo_rows_echo_the_image_of_the_token_two_back():
    rng = random.Random(5)
    shape = corpus.RowShape("planted", echo_map="permutation", echo_loss_only=True)
    assert sorted(corpus.ECHO_PERMUTATION.values()) == list(corpus.RANDOM_IDS)
    echoes = 0
    for _ in range(50):
        row, known = corpus.echo_row(rng, BOS, shape)
        for i, k in enumerate(known):
            if k:
                assert row[i] == corpus.ECHO_PERMUTATION[row[i - 2]]
                echoes += 1
    assert 0.2 < echoes / (50 * (corpus.SEQ_LEN - 3)) < 0.4  # about 30 % of the tokens
