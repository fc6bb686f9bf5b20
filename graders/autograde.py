"""The hidden tests that nbgrader runs at autograde, in the instructor's environment.

A check cell of a generated course notebook starts with a hidden block

    ### BEGIN HIDDEN TESTS
    from graders.autograde import hidden_check
    hidden_check(logit_diff, seeds=[812, 4471], timeout=120)
    ### END HIDDEN TESTS
    check(logit_diff);

`hidden_check` grades the learner's function on cases drawn with seeds the learner
never saw and raises AssertionError (so nbgrader gives the cell no points) unless
every case passes. The learner's function runs in a forked child process with a
time limit: an infinite loop or a crash of the Python process costs that exercise
only. Afterwards the learner's function is replaced in the notebook by the
reference, so later demo cells and later exercises run as if this one were right.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import sys
import warnings
from typing import Callable, Optional, Sequence

import torch

from graders.declare import Exercise
from graders.engine import Grader
from graders.results import Result

# Results of hidden checks in this kernel, so the visible `check(fn)` that follows
# shows them instead of grading again in-process.
AUTOGRADED: dict[str, Result] = {}
_GRADER = Grader()


class ExerciseFailed(AssertionError):
    """Raised in a check cell so nbgrader gives it no points."""


def hidden_check(fn: Callable, seeds: Sequence[int], timeout: float, namespace: Optional[dict] = None) -> Result:
    from graders.registry import exercise as find

    name = fn.__name__
    declared = find(name)
    with _quiet():  # nbgrader scores a test cell that writes to stderr as 0
        # Cases and reference answers are computed here, so the child only runs learner
        # code and this kernel keeps them cached.
        _GRADER.plan(declared, "hidden", seeds)
        result = _grade_isolated(declared, seeds, fn, timeout)
    AUTOGRADED[name] = result
    if not result.passed:
        # Later cells (demos, later exercises that call this one) get the reference.
        (namespace if namespace is not None else fn.__globals__)[name] = declared.reference_fn()
        raise ExerciseFailed(f"{name} FAILED (hidden cases)\n{result.feedback}")
    return result


def _child(conn, exercise: Exercise, seeds: Sequence[int], fn: Callable) -> None:
    # The parent's OpenMP worker threads do not exist here; with more than one thread
    # torch's first parallel region would wait for them forever.
    torch.set_num_threads(1)
    # The child's output would otherwise reach the notebook (and stderr costs points).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    try:
        result = _GRADER.grade(exercise, fn, "hidden", seeds)
    except BaseException as err:  # anything the learner's code can throw past the engine
        result = Result(exercise.name, False, 0.0, f"grading stopped: {type(err).__name__}: {err}")
    conn.send(result)
    conn.close()


def _grade_isolated(exercise: Exercise, seeds: Sequence[int], fn: Callable, timeout: float) -> Result:
    name = exercise.name
    context = multiprocessing.get_context("fork")  # the child shares the loaded models
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, exercise, seeds, fn), daemon=True)
    child.start()
    send.close()
    try:
        if receive.poll(timeout):
            try:
                return receive.recv()
            except EOFError:
                pass  # the child died before it could answer
        else:
            child.kill()
            return Result(name, False, 0.0, f"did not finish within {timeout:.0f} s: look for an endless loop.")
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
        receive.close()
    return Result(name, False, 0.0, f"the Python process crashed while running {name} (exit code {child.exitcode}).")


@contextlib.contextmanager
def _quiet():
    """Silence Python warnings and anything written to stderr, at the file-descriptor level too."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
