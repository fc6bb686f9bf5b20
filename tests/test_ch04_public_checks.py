"""Chapter 4's public checks (what a student release runs): the reference holds every
property, and a known wrong answer breaks the property that says why."""

from __future__ import annotations

import pytest

from graders.public import public_check
from graders.registry import EXERCISES

# exercise -> (description of one known mistake, the property it must break)
WRONG = {
    "composition_score": ("squared the norms", "any matrix with the identity scores 1/sqrt(d)"),
    "k_composition_scores": ("left the receiver's QK untransposed (that is Q-composition)",
                             "a receiver whose keys read what a sender writes scores 1"),
    "q_composition_scores": ("returned [receiver, sender]", "hand-made heads"),
    "v_composition_scores": ("multiplied OV_receiver @ OV_sender", "a receiver whose values read"),
    "direct_logit_attribution": ("left out the final LayerNorm's scale",
                                 "a layer's heads add up to its attention output"),
    "path_patch_to_head_input": ("patched that input of every head in the receiver's layer",
                                 "another receiver head gives another answer"),
    "positional_embedding_patch": ("replaced the embedding with zeros instead of its mean over positions",
                                   "hook_embed on a prompt of one repeated token changes nothing"),
    "ablate_heads": ("ablated with zeros instead of the mean", "a batch of one prompt three times"),
}


def _as(fn, name):
    """`fn` under the exercise's name: the public check finds an exercise by it."""
    def learner(**args):
        return fn(**args)

    learner.__name__ = name
    return learner


@pytest.mark.parametrize("name", sorted(WRONG))
def test_reference_holds_every_public_property(name):
    result = public_check(_as(EXERCISES[name].reference, name))
    assert result.passed, result.feedback
    assert result.score == 1.0 and "Public checks" in result.feedback


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_breaks_a_property(name):
    description, broken = WRONG[name]
    mistake = next(m for m in EXERCISES[name].mistakes if m.description == description)
    result = public_check(_as(mistake.fn, name))
    assert not result.passed and result.score < 1.0
    assert broken in result.feedback.splitlines()[1], result.feedback


def test_every_chapter_4_exercise_has_a_wrong_answer_here():
    assert sorted(WRONG) == sorted(n for n, ex in EXERCISES.items() if ex.chapter == "04_confirming_the_circuit")
