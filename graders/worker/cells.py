"""The cell runner: a submission's code cells in order, forking an exercise runner where
each test cell stands. Runs the learner's top-level code, so nothing here is trusted by
anyone."""

from __future__ import annotations

import linecache
import os
import signal
import sys
import time
import traceback

from circuitlab_graders.calls import short
from circuitlab_graders.guard import BoundedOutput, TimeLimitExceeded
from circuitlab_graders.guard.timer import Timer
from circuitlab_graders.worker import exercise as exercise_runner
from circuitlab_graders.worker import preload, reports


def run(cells: list[tuple[int, str]], checks: dict[int, list[str]], skip: set[int], done: dict[str, bool],
        fd: int) -> None:
    """Never returns. `cells`: (index, source) of the code cells to run; `checks`: at the
    index of each test cell, the exercises it checks, graded right there (the rest after
    the last cell); `done`: exercises a previous runner graded, and whether they failed to
    finish."""
    import circuitlab_graders as graders

    graders.check = lambda *args, **kwargs: None  # a check(...) the learner calls does nothing here
    namespace: dict = {"__name__": "__main__"}
    for name, unfinished in done.items():
        if unfinished:
            namespace[name] = _stand_in(name)
    output = BoundedOutput()
    sys.stdout = sys.stderr = output
    events = sorted([(i, "cell", source) for i, source in cells] + [(i, "check", names) for i, names in checks.items()])
    graded = set(done)
    for index, kind, payload in events:
        if kind == "check":
            for name in payload:
                _grade(name, namespace, graded, fd)
            continue
        if index in skip:
            continue
        _run_cell(index, payload, namespace, fd)
    for exercise in preload.PLAN.exercises:
        _grade(exercise.name, namespace, graded, fd)
    reports.send(fd, {"report": "done"})
    os._exit(0)


def _run_cell(index: int, source: str, namespace: dict, fd: int) -> None:
    reports.send(fd, {"report": "cell", "index": index})
    filename = f"/submission/cell-{index}.py"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    started = time.process_time()  # CPU time, as the cell's limit counts it
    timer = Timer(preload.PLAN.cell_timeout, cpu=True)
    try:
        with timer:
            exec(compile(source, filename, "exec"), namespace)
    except TimeLimitExceeded:
        reports.send(fd, {"report": "cell_error", "index": index, "message": timer.describe()})
    except BaseException as err:  # SyntaxError, SystemExit and anything else a cell can raise
        lines = traceback.format_exception_only(type(err), err)
        reports.send(fd, {"report": "cell_error", "index": index, "message": short("".join(lines).strip())})
    reports.send(fd, {"report": "cell_done", "index": index, "seconds": time.process_time() - started})


def _grade(name: str, namespace: dict, graded: set[str], fd: int) -> None:
    """Grade one exercise in a process of its own; if it did not finish, later cells that
    call the function get a stand-in that says so at once instead of waiting again."""
    exercise = next((e for e in preload.PLAN.exercises if e.name == name), None)
    if exercise is None or name in graded:
        return
    graded.add(name)
    fn = namespace.get(name)
    if not callable(fn):
        # A call would raise NameError: reported as a raised call, with what to do.
        reports.send(fd, {"report": "exercise_failed", "name": name, "kind": "raised",
                          "message": f"`{name}` is not defined when it is checked: its cell must define a function "
                                     "of that name (did the cell raise an error?)"})
        return
    reports.send(fd, {"report": "exercise", "name": name})
    pid = os.fork()
    if pid == 0:
        exercise_runner.run(fn, exercise, fd)
    if not _wait(pid, exercise, fd):
        namespace[name] = _stand_in(name)


def _stand_in(name: str):
    def stand_in(*args, **kwargs):
        raise RuntimeError(f"{name} did not finish when it was graded, so it is not run again here")

    return stand_in


def _wait(pid: int, exercise, fd: int) -> bool:
    """Wait for an exercise runner; past its deadline, kill it. True when every call
    finished. The supervisor hears of a runner that died without answering from the
    missing answers."""
    deadline = time.monotonic() + exercise.deadline
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, exercise_runner.TIMED_OUT):
                return os.WEXITSTATUS(status) == 0
            reports.send(fd, {"report": "exercise_failed", "name": exercise.name, "kind": "crashed",
                              "message": _death(status)})
            return False
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    reports.send(fd, {"report": "exercise_failed", "name": exercise.name, "kind": "timed_out",
                      "message": f"did not finish within {exercise.deadline:.0f} s"})
    return False


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"the Python process running your function crashed (killed by signal {os.WTERMSIG(status)})"
    return f"the Python process running your function crashed (it exited with code {os.WEXITSTATUS(status)})"
