"""Chapter 4's public properties (what a student release runs): a known wrong answer
breaks the property that says why. (That the reference holds every property is
tests/test_exercises.py's test_reference_holds_every_public_property.)"""

from __future__ import annotations

import pytest

from circuitlab_graders.engine import Grader
from circuitlab_graders.hints import Attempts
from circuitlab_graders.registry import EXERCISES

# exercise -> (description of one known mistake, the property it must break first)
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


@pytest.fixture(scope="module")
def grader():
    return Grader(attempts=Attempts())


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_breaks_a_property(name, grader):
    description, broken = WRONG[name]
    exercise = EXERCISES[name]
    mistake = next(m for m in exercise.mistakes if m.description == description)
    result = grader.grade(exercise, mistake.fn, "public")
    assert not result.passed and result.score < 1.0
    failed = [case for case in result.cases if not case.passed]
    assert broken in failed[0].label, [(case.label, case.message) for case in failed]
    assert f"First failure ({failed[0].model}, {failed[0].label})" in result.feedback


def test_every_chapter_4_exercise_has_a_wrong_answer_here():
    assert sorted(WRONG) == sorted(n for n, ex in EXERCISES.items() if ex.chapter == "04_confirming_the_circuit")
