"""The cell runner: a submission's code cells in order, then one exercise runner per
exercise. Runs the learner's top-level code, so nothing here is trusted by anyone."""

from __future__ import annotations

import linecache
import os
import signal
import sys
import time
import traceback

from graders.calls import short
from graders.guard import BoundedOutput, TimeLimitExceeded
from graders.guard.timer import Timer
from graders.worker import exercise as exercise_runner
from graders.worker import preload, reports


def run(cells: list[tuple[int, str]], skip: set[int], done: set[str], fd: int) -> None:
    """Never returns. `cells`: (index, source) of the code cells to run."""
    import graders

    graders.check = lambda *args, **kwargs: None  # the check cells' calls do nothing here
    namespace: dict = {"__name__": "__main__"}
    output = BoundedOutput()
    sys.stdout = sys.stderr = output
    for index, source in cells:
        if index in skip:
            continue
        reports.send(fd, {"report": "cell", "index": index})
        filename = f"/submission/cell-{index}.py"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        started = time.monotonic()
        try:
            with Timer(preload.PLAN.cell_timeout):
                exec(compile(source, filename, "exec"), namespace)
        except TimeLimitExceeded:
            reports.send(fd, {"report": "cell_error", "index": index,
                              "message": f"stopped after {preload.PLAN.cell_timeout:.0f} s"})
        except BaseException as err:  # SyntaxError, SystemExit and anything else a cell can raise
            lines = traceback.format_exception_only(type(err), err)
            reports.send(fd, {"report": "cell_error", "index": index, "message": short("".join(lines).strip())})
        reports.send(fd, {"report": "cell_done", "index": index, "seconds": time.monotonic() - started})
    for exercise in preload.PLAN.exercises:
        if exercise.name in done:
            continue
        fn = namespace.get(exercise.name)
        if not callable(fn):
            reports.send(fd, {"report": "exercise_failed", "name": exercise.name, "kind": "missing",
                              "message": f"`{exercise.name}` is not defined after running the notebook: its cell "
                                         "must define a function of that name (did the cell raise an error?)"})
            continue
        reports.send(fd, {"report": "exercise", "name": exercise.name})
        pid = os.fork()
        if pid == 0:
            exercise_runner.run(fn, exercise, fd)
        _wait(pid, exercise, fd)
    reports.send(fd, {"report": "done"})
    os._exit(0)


def _wait(pid: int, exercise, fd: int) -> None:
    """Wait for an exercise runner; past its deadline, kill it. The supervisor hears of a
    runner that died without answering from the missing answers."""
    deadline = time.monotonic() + exercise.deadline
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                reports.send(fd, {"report": "exercise_failed", "name": exercise.name, "kind": "crashed",
                                  "message": _death(status)})
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    reports.send(fd, {"report": "exercise_failed", "name": exercise.name, "kind": "timeout",
                      "message": f"did not finish within {exercise.deadline:.0f} s"})


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"the Python process running your function crashed (killed by signal {os.WTERMSIG(status)})"
    return f"the Python process running your function crashed (it exited with code {os.WEXITSTATUS(status)})"
