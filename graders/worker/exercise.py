"""The exercise runner: the learner's function on each of one exercise's inputs, guarded,
in a process of its own (forked from the cell runner), reporting straight to the supervisor."""

from __future__ import annotations

import os
from typing import Any, Callable

from graders.calls import Outcome, guarded_call
from graders.guard import BoundedOutput, Guard, Protected, Snapshot
from graders.worker import preload, reports
from graders.worker.plan import ExercisePlan


TIMED_OUT = 3  # the exit code that says: answered, but a call ran out of time


def run(fn: Callable, exercise: ExercisePlan, fd: int) -> None:
    """Never returns."""
    printed = BoundedOutput()
    snapshots: dict[int, Snapshot] = {}
    answers: dict[str, dict] = {}
    stopped = False
    for call in exercise.calls:
        if stopped:  # after a time-out the rest would only wait too
            answers[call.key] = {"kind": "not_run"}
            continue
        arguments = preload.ARGUMENTS[call.model]
        args, shared = arguments.build(call.inputs)
        for _, value, ref in shared:
            if id(value) not in snapshots:
                snapshots[id(value)] = Snapshot(value, lambda ref=ref, a=arguments: a.fresh_cache(ref), content=False)
        protected = Protected([(path, snapshots[id(value)]) for path, value, _ in shared])
        # Content checks (a sum of every weight and cached tensor per call) are for the notebook's
        # shared model; here each exercise runs in a process of its own, so what a call edits reaches
        # only the later calls of the same learner's exercise, and the trusted side's references never.
        guard = Guard(preload.MODELS[call.model], protected, call.limit, None, printed, content=False, cpu_time=True)
        reports.send(fd, {"report": "call", "name": exercise.name, "limit": call.limit})
        outcome = guarded_call(fn, args, guard)
        stopped = outcome.kind == "timed_out"
        answers[call.key] = encode(outcome)
    reports.send(fd, {"report": "answers", "name": exercise.name, "calls": answers, "printed": printed.note()})
    os._exit(TIMED_OUT if stopped else 0)


def encode(outcome: Outcome) -> dict[str, Any]:
    return {"kind": outcome.kind, "value": outcome.value, "message": outcome.message,
            "notes": list(outcome.notes), "damage": list(outcome.damage)}
