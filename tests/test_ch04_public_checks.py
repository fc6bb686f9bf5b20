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


@pytest.mark.parametrize("mode", ["full", "public"])
def test_dot_t_on_the_stack_of_receivers_is_named(mode, grader):
    """The chapter's one-matrix `QK_r.T`, written on the stack: `.T` reverses all three
    dimensions. On gpt2-small the call asks for 21.7 GB and fails within its memory budget;
    the cases it answers are named, in full mode by the declared mistake, in public mode by
    the hand-made heads' property."""

    def k_composition_scores(sender_ov, receiver_qk):
        left, right = sender_ov[:, None], receiver_qk.T[None]
        return (left @ right).norm(dim=(-2, -1)) / (left.norm(dim=(-2, -1)) * right.norm(dim=(-2, -1)))

    result = grader.grade(EXERCISES["k_composition_scores"], k_composition_scores, mode)
    assert not result.passed and result.score == 0.0
    named = {"full": "It looks like you transposed the stack of receiver QKs with `.T`, which reverses every dimension",
             "public": "shape [2, 8] ([n_senders, d_model]), not [n_senders, n_receivers] = [2, 3]: that is what "
                       "`receiver_qk.T` gives"}[mode]
    assert named in result.feedback and "`receiver_qk.mT`" in result.feedback, result.feedback
    on_gpt2 = [case.message for case in result.cases if case.model.startswith("gpt2-small") and "model's" in case.label]
    assert on_gpt2 and all("tried to allocate a tensor of 21.7 GB" in m for m in on_gpt2), on_gpt2
