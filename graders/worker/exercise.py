"""The exercise runner: the learner's function on each of one exercise's inputs, guarded,
in a process of its own (forked from the cell runner), reporting straight to the supervisor."""

from __future__ import annotations

import os
from typing import Any, Callable

from circuitlab_graders.calls import Executor, Outcome, Snapshots, StopRule
from circuitlab_graders.worker import preload, reports
from circuitlab_graders.worker.plan import ExercisePlan


TIMED_OUT = 3  # the exit code that says: answered, but the stop rule stopped the calls (a time-out)


def run(fn: Callable, exercise: ExercisePlan, fd: int) -> None:
    """Never returns."""
    # Content checks (a sum of every weight and cached tensor per call) are for the notebook's
    # shared model; here each exercise runs in a process of its own, so what a call edits reaches
    # only the later calls of the same learner's exercise, and the trusted side's references never.
    execute = Executor(fn, Snapshots(content=False), content=False, cpu_time=True)
    stop = StopRule()
    answers: dict[str, dict] = {}
    for call in exercise.calls:
        def make(call=call) -> Outcome:
            reports.send(fd, {"report": "call", "name": exercise.name, "limit": call.limit})
            return execute(preload.ARGUMENTS[call.model], call.inputs, call.limit)

        answers[call.key] = encode(stop(make))
    reports.send(fd, {"report": "answers", "name": exercise.name, "calls": answers, "printed": execute.printed.note()})
    os._exit(TIMED_OUT if stop.stopped else 0)


def encode(outcome: Outcome) -> dict[str, Any]:
    return {"kind": outcome.kind, "value": outcome.value, "message": outcome.message,
            "notes": list(outcome.notes), "damage": list(outcome.damage)}
