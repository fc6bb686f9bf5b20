"""The grader computes each reference answer (and each known mistake's answer) once per
model and case, so a learner's repeated check only pays for the learner's function."""

from __future__ import annotations

from collections import Counter

import torch

from circuitlab_graders.compare import same_value
from circuitlab_graders.declare import Case, Exercise, Mistake
from circuitlab_graders.engine import Grader
from circuitlab_graders.models import GradingModel


class _NoHooks(torch.nn.Module):
    """A parameterless stand-in model: the guard watches modules, the engine resets hooks."""

    def reset_hooks(self) -> None:
        pass


def test_repeated_checks_reuse_reference_and_mistake_answers():
    calls: Counter = Counter()

    def counted(kind, answer):
        def fn(x):
            calls[kind] += 1
            return answer(x)
        return fn

    mistakes = (Mistake("added instead", "Multiply.", counted("mistake", lambda x: x + 2)),)

    class Declared(Exercise):  # its known mistake given here, not read from solutions/mistakes/
        @property
        def mistakes(self):
            return mistakes

    exercise = Declared(
        name="double", chapter="test", section="Doubling", hint="",
        reference=counted("reference", lambda x: 2 * x),
        cases=lambda gm, rng: [Case(f"x={x}", {"x": x}) for x in (1, 2, 3)],
        compare=same_value,
    )
    models = [GradingModel(key, _NoHooks(), key) for key in ("a", "b")]
    grader = Grader(models)
    learner = counted("learner", lambda x: x + 2)  # right on x=2 only, like the mistake

    first = grader.grade(exercise, learner)
    assert not first.passed and "It looks like you added instead." in first.feedback
    assert calls == {"reference": 6, "learner": 6, "mistake": 4}  # mistakes run on failed cases only

    second = grader.grade(exercise, learner)
    assert second.feedback.startswith(first.feedback)  # a repeat failure only adds a hint
    assert calls == {"reference": 6, "learner": 12, "mistake": 4}
