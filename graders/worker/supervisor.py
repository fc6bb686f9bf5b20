"""The job handler: grades one submission, running no learner code itself.

A job is `circuitlab_graders.wire` data: {"cells": [[index, source], ...], "checks": [[index,
[exercise, ...]], ...]} (the submission's code cells without its test cells, and where each
test cell stands, with the exercises it checks). The answer is {"exercises": {name:
{"calls": {key: outcome}, "printed": ...} or {"failed": kind, "message": ...}},
"cell_errors": {index: message}, "cell_seconds": {index: seconds}}.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from circuitlab_graders import limits, wire
from circuitlab_graders.guard.timer import wall_seconds
from circuitlab_graders.worker import cells as cell_runner
from circuitlab_graders.worker import preload, reports

GRACE = limits.GRACE_S  # past a runner's own limit, before the supervisor stops waiting


def grade(job: bytes) -> bytes:
    tree = wire.loads(job)
    cells = [(int(i), str(source)) for i, source in tree["cells"]]
    checks = {int(i): [str(n) for n in names] for i, names in tree.get("checks", [])}
    skip: set[int] = set()
    exercises: dict[str, dict] = {}
    cell_errors: dict[int, str] = {}
    cell_seconds: dict[str, float] = {}
    for _ in range(len(cells) + len(preload.PLAN.exercises) + 1):
        if _run_once(cells, checks, skip, exercises, cell_errors, cell_seconds):
            break
    for exercise in preload.PLAN.exercises:  # whatever no runner reached
        exercises.setdefault(exercise.name, {"failed": "crashed", "message": "the notebook could not be run this far"})
    return wire.dumps({"exercises": exercises, "cell_errors": {str(k): v for k, v in cell_errors.items()},
                       "cell_seconds": cell_seconds})


def _run_once(cells, checks, skip: set[int], exercises: dict, cell_errors: dict, cell_seconds: dict) -> bool:
    """One cell runner, from the first cell not skipped; True when it got to the end."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setpgid(0, 0)  # its own group, with the exercise runners it forks
        cell_runner.run(cells, checks, skip, {name: _unfinished(entry) for name, entry in exercises.items()}, write_fd)
    try:
        os.setpgid(pid, pid)  # here too, so the group exists however early it must be killed
    except OSError:
        pass
    os.close(write_fd)
    reader = reports.Reader(read_fd)
    where: tuple[str, Any] = ("start", None)
    finished = False
    try:
        while True:
            report = reader.next(time.monotonic() + _limit(where))
            if report is None:
                break  # ended, broke the protocol, or overran
            kind = report["report"]
            _settle(where, exercises, kind, report)
            if kind == "cell":
                where = ("cell", int(report["index"]))
            elif kind == "cell_error":
                cell_errors[int(report["index"])] = str(report.get("message", ""))[:600]
            elif kind == "cell_done":
                cell_seconds[str(int(report["index"]))] = float(report.get("seconds", 0.0))
                where = ("between", None)
            elif kind == "exercise":
                where = ("exercise", str(report["name"]))
            elif kind == "call" and where[0] in ("exercise", "call"):
                where = ("call", where[1], float(report.get("limit", 0)))
            elif kind == "answers":
                exercises[str(report["name"])] = {"calls": report.get("calls", {}), "printed": report.get("printed")}
                where = ("between", None)
            elif kind == "exercise_failed":
                name = str(report["name"])
                exercises.setdefault(name, {"failed": str(report.get("kind", "crashed")),
                                            "message": str(report.get("message", ""))[:600]})
                where = ("between", None)
            elif kind == "done":
                finished = True
                break
    finally:
        os.close(read_fd)
        _stop(pid)
    if not finished:
        _blame(where, skip, exercises, cell_errors, overran=not reader.closed, too_big=reader.too_big)
    return finished


def _unfinished(entry: dict) -> bool:
    """An exercise whose function did not finish (or crashed) when it was graded."""
    if "failed" in entry:
        return entry["failed"] in ("timed_out", "crashed")
    calls = entry.get("calls", {})
    return isinstance(calls, dict) and any(isinstance(c, dict) and c.get("kind") == "timed_out" for c in calls.values())


def _limit(where: tuple) -> float:
    """How long the runner may stay silent where it is: one call's limit during a call
    (the call's own timer may have been switched off by the learner's code)."""
    if where[0] == "call":
        return min(wall_seconds(where[2]), _plan_of(where[1]).deadline) + GRACE
    if where[0] == "exercise":
        return _plan_of(where[1]).deadline + GRACE
    return wall_seconds(preload.PLAN.cell_timeout) + GRACE


def _plan_of(name: str):
    return next(e for e in preload.PLAN.exercises if e.name == name)


def _settle(where, exercises: dict, kind: str, report: dict) -> None:
    """An exercise runner that ended without answering (os._exit(0), say)."""
    if where[0] in ("exercise", "call") and kind not in ("answers", "call") and where[1] not in exercises:
        if kind != "exercise_failed" or report.get("name") != where[1]:
            exercises[where[1]] = {"failed": "crashed",
                                   "message": "the Python process running your function ended without an answer"}


def _blame(where, skip: set[int], exercises: dict, cell_errors: dict, *, overran: bool, too_big: bool) -> None:
    """The runner stopped early: the cell or exercise it was in costs its own points only."""
    what = ("sent back more than 8 MB" if too_big else "did not finish in time" if overran
            else "stopped the Python process")
    if where[0] == "cell":
        skip.add(where[1])
        cell_errors[where[1]] = f"this cell {what}; the notebook was run again without it"
    elif where[0] in ("exercise", "call") and where[1] not in exercises:
        kind = "timed_out" if overran and not too_big else "crashed"
        exercises[where[1]] = {"failed": kind, "message": f"your function {what}"}
    # Between two cells or exercises there is nothing to blame: the next runner tries again.


def _stop(pid: int) -> None:
    """Kill the cell runner and the exercise runner it may have forked (its process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
