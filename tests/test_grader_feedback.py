"""Feedback for answers the mistake library does not know: crashes, hard-coding, wrong types."""

from __future__ import annotations

import circuitlab_graders as graders


def test_crash_is_reported_at_the_learners_line():
    def logit_diff(logits, correct_token, wrong_token):
        final = logits[0, -1]
        return final[correct_token] - final[wrong_token] / undefined_name  # noqa: F821

    result = graders.grade("logit_diff", logit_diff)
    assert not result.passed and result.score == 0.0
    assert "NameError" in result.feedback
    assert "in logit_diff: return final[correct_token] - final[wrong_token] / undefined_name" in result.feedback


def test_hard_coded_answer_fails_on_fresh_cases():
    def next_token_prediction(model, prompt):
        return " Turing"

    result = graders.grade("next_token_prediction", next_token_prediction)
    assert not result.passed
    assert "returned ' Turing', expected" in result.feedback


def test_wrong_type_is_named():
    def logit_diff(logits, correct_token, wrong_token):
        return float(logits[0, -1, correct_token] - logits[0, -1, wrong_token])

    result = graders.grade("logit_diff", logit_diff)
    assert "returned a float, expected a torch.Tensor" in result.feedback


def test_partial_credit_is_the_share_of_cases_passed():
    def logit_diff(logits, correct_token, wrong_token):
        # Right only when the batch has a single item.
        return logits[-1, -1, correct_token] - logits[-1, -1, wrong_token]

    result = graders.grade("logit_diff", logit_diff)
    n_pass = sum(c.passed for c in result.cases)
    assert 0 < n_pass < len(result.cases)
    assert result.score == n_pass / len(result.cases)


def test_grade_on_a_single_given_model(gelu_twin):
    from circuitlab_solutions.ch00_setup import logit_diff

    result = graders.grade("logit_diff", logit_diff, model=gelu_twin)
    assert result.passed
    assert {c.model for c in result.cases} == {"gelu-2l (random)"}


def test_unknown_exercise_lists_the_known_ones():
    def not_an_exercise():
        pass

    try:
        graders.grade("not_an_exercise", not_an_exercise)
    except KeyError as err:
        assert "logit_diff" in str(err)
    else:
        raise AssertionError("expected a KeyError")


def test_check_records_for_the_cli(tmp_path, monkeypatch, capsys):
    import inspect

    from circuitlab_solutions import ch00_setup

    # Defined the way a notebook cell defines it (check() refuses the course's own function object).
    namespace: dict = {}
    exec(inspect.getsource(ch00_setup.top_tokens_by_unembed_bias), namespace)
    top_tokens_by_unembed_bias = namespace["top_tokens_by_unembed_bias"]
    record = tmp_path / "r.jsonl"
    monkeypatch.setenv(graders.RESULTS_ENV, str(record))
    result = graders.check(top_tokens_by_unembed_bias)
    assert result.passed
    assert '"exercise": "top_tokens_by_unembed_bias"' in record.read_text()
    assert "[PASS] top_tokens_by_unembed_bias" in capsys.readouterr().out


def test_a_new_mistake_starts_its_own_hint_ladder():
    from circuitlab_graders.engine import Grader
    from circuitlab_graders.hints import Attempts
    from circuitlab_graders.registry import exercise

    grader = Grader(graders._GRADER.models, attempts=Attempts())  # the shared models, a session of its own
    declared = exercise("logit_diff")

    def swapped(logits, correct_token, wrong_token):
        return logits[0, -1, wrong_token] - logits[0, -1, correct_token]

    def first_position(logits, correct_token, wrong_token):
        return logits[0, 0, correct_token] - logits[0, 0, wrong_token]

    first, second = (grader.grade(declared, swapped).feedback for _ in range(2))
    assert "wrong way round" in first and "Hint:" not in first
    assert "wrong way round" in second and "Hint: logits[0, -1]" in second
    other = grader.grade(declared, first_position).feedback
    assert "used the first position" in other
    assert "Hint:" not in other and "Reread" not in other  # its first try: no hint yet, never "reread"
    assert "Hint:" in grader.grade(declared, first_position).feedback
    assert "Reread the section" in grader.grade(declared, swapped).feedback  # the first mistake's third time


def test_attempts_count_per_mistake_and_a_pass_resets_them():
    from circuitlab_graders.hints import Attempts

    attempts = Attempts()
    assert [attempts.record("a", False, "m1"), attempts.record("a", False, "m1"), attempts.record("a", False, "m2"),
            attempts.record("a", False, None), attempts.record("b", False, "m1")] == [1, 2, 1, 1, 1]
    assert attempts.record("a", True) == 0 and attempts.record("a", False, "m1") == 1
