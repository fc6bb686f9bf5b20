"""The grading plan a sandbox serves: which models, and every call of every exercise.

Built by the trusted grader before any learner code runs, written once per sandbox as a
file of `circuitlab_graders.wire` data, and read by `preload.load`. It holds inputs and limits,
never a reference answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuitlab_graders import limits, wire
from circuitlab_graders.guard.timer import wall_seconds


@dataclass(frozen=True)
class Call:
    key: str  # the call's identity: model key and the inputs' content_id
    model: str  # which grading model
    inputs: dict[str, Any]
    limit: float  # seconds of CPU time for this call (graders.guard.timer)


@dataclass(frozen=True)
class ExercisePlan:
    name: str
    calls: tuple[Call, ...]

    @property
    def deadline(self) -> float:
        """Seconds for all of this exercise's calls, with room for encoding them."""
        return sum(wall_seconds(c.limit) for c in self.calls) + limits.ENCODE_S


@dataclass(frozen=True)
class Plan:
    models: tuple[tuple[str, str], ...]  # (key, weights) of each grading model, as load_model takes them
    notebook_model: tuple[str, str]  # what the chapters' course_model() loads here
    exercises: tuple[ExercisePlan, ...]
    cell_timeout: float = limits.CELL_TIMEOUT_S

    def dumps(self) -> bytes:
        return wire.dumps({
            "models": [list(m) for m in self.models], "notebook_model": list(self.notebook_model),
            "cell_timeout": float(self.cell_timeout),
            "exercises": [[e.name, [[c.key, c.model, c.inputs, float(c.limit)] for c in e.calls]]
                          for e in self.exercises]})

    @classmethod
    def loads(cls, data: bytes) -> "Plan":
        tree = wire.loads(data)
        exercises = tuple(ExercisePlan(name, tuple(Call(k, m, dict(i), float(t)) for k, m, i, t in calls))
                          for name, calls in tree["exercises"])
        return cls(tuple(tuple(m) for m in tree["models"]), tuple(tree["notebook_model"]), exercises,
                   float(tree["cell_timeout"]))
