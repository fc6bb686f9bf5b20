"""Auto-grading for the circuitlab course.

    from circuitlab_graders import check, prepare
    prepare("00_setup")               # in a chapter's import cell: get its checks ready in the background
    check(next_token_prediction)      # in a notebook: grade and show the result

    from circuitlab_graders import grade
    result = grade("logit_diff", my_fn)   # result.passed, result.score, result.feedback
"""

from __future__ import annotations

import json
import os
import threading
from typing import Callable, Optional

from circuitlab_graders.engine import Grader
from circuitlab_graders.results import Result
from circuitlab_graders.models import GradingModel

__all__ = ["grade", "check", "prepare", "Result"]

RESULTS_ENV = "CIRCUITLAB_RESULTS"  # set by `python -m circuitlab_graders check` to collect results
MODE_ENV = "CIRCUITLAB_GRADERS"  # "public": check without the reference solutions
_GRADER = Grader()
_PREPARING: Optional[threading.Thread] = None  # prepare()'s thread, until a check has waited for it
_STOP_PREPARING = threading.Event()
_PREPARED: set = set()  # the chapters prepare() has run for in this session
READY_NOTE = "getting the grading models ready first (gelu-2l and gpt2-small: about half a minute, once per session)"


def prepare(chapter: Optional[str] = None) -> None:
    """Get the checks ready in the background while the learner reads and types: load the
    grading models, then compute the cases and reference numbers of `chapter`'s exercises
    (e.g. "00_setup"), so that the first check pays only for the learner's own function.

    Only in a learner's Jupyter kernel (not under nbgrader's autograde, not in a classroom
    sandbox, not in a plain script), and once per session. A check never grades beside it:
    it stops the preparation after the exercise in hand and waits for it.
    """
    global _PREPARING
    if _PREPARING is not None or chapter in _PREPARED or not _in_learners_kernel():
        return
    _PREPARED.add(chapter)
    _STOP_PREPARING.clear()
    _PREPARING = threading.Thread(target=_prepare, args=(chapter,), name="circuitlab-prepare", daemon=True)
    _PREPARING.start()


def _in_learners_kernel() -> bool:
    from circuitlab.progress import _in_notebook
    from circuitlab_graders.worker.preload import PLAN_ENV

    return _in_notebook() and os.environ.get("NBGRADER_EXECUTION") is None and PLAN_ENV not in os.environ


def _prepare(chapter: Optional[str]) -> None:
    import torch

    from circuitlab import progress
    from circuitlab_graders.registry import EXERCISES

    try:
        with progress.quiet(), torch.no_grad():  # as a check computes them, in a chapter's grad-free kernel
            _GRADER.models
            mode = "public" if public_mode() else "full"
            for exercise in EXERCISES.values():
                if _STOP_PREPARING.is_set():
                    return
                if exercise.chapter == chapter:
                    _GRADER.prepare(exercise, mode)
    except Exception:  # noqa: BLE001 (the check that follows does the same work and reports what fails)
        pass


def _wait_for_preparation() -> None:
    """Stop prepare()'s thread after the exercise in hand and wait for it: grading (and its
    guard, which watches the models) never runs beside it."""
    global _PREPARING
    if _PREPARING is not None:
        _STOP_PREPARING.set()
        _PREPARING.join()
        _PREPARING = None


def grade(exercise: str, fn: Callable, model=None, mode: Optional[str] = None) -> Result:
    """Grade `fn` as the exercise named `exercise`.

    By default it runs on gelu-2l and gpt2-small (pretrained where cached locally,
    otherwise random-weight twins). Pass `model` to grade on that model alone. `mode`:
    "full" (against the reference), "public" (the chapter's stated properties, no
    reference; the default where `solutions` is absent) or "hidden".
    """
    from circuitlab_graders.registry import exercise as find

    declared = find(exercise)
    _wait_for_preparation()
    grader = _GRADER if model is None else Grader([_custom_model(model)])
    return grader.grade(declared, fn, mode or ("public" if public_mode() else "full"))


def _custom_model(model) -> GradingModel:
    name = str(getattr(model, "course_name", None) or getattr(model.cfg, "model_name", "your model"))
    return GradingModel(f"{name}#{id(model)}", model, name)


def check(fn: Callable, model=None) -> Result:
    """Grade `fn` (found by its name), show the result, and return it.

    This is the learner's entry point, so handing it the course's own reference
    (e.g. imported from `solutions`) scores zero. In a student release of the nbgrader
    course (no `solutions` package) it runs the public checks. (Autograding never runs
    it: see graders.nbgrader_plugin.)
    """
    if os.environ.get("NBGRADER_EXECUTION") == "autograde":
        # nbgrader is running this notebook in a kernel: the course's nbgrader_config.py is
        # not in use. Grading here would let the student's code judge itself: refuse, loudly.
        raise RuntimeError("This course is autograded in a sandbox, not in the notebook's kernel: run nbgrader "
                           "from the course directory that `python -m circuitlab_graders course` wrote (its nbgrader_config.py "
                           "sets this up), or `python -m circuitlab_graders autograde ASSIGNMENT` there.")
    ready = model is not None or _GRADER._models is not None
    status = _status(f"Checking {fn.__name__}" + ("…" if ready else f": {READY_NOTE}…"))
    if _GRADER.course.owns(fn):
        result = Result(fn.__name__, False, 0.0,
                        f"Scored zero: this `{fn.__name__}` is the course's own code (from {fn.__module__}), "
                        "not yours. Define the function yourself in the exercise cell and check that.")
    else:
        result = grade(fn.__name__, fn, model=model)
    _record(result)
    _show(result, status)
    return result


def public_mode() -> bool:
    """True without the reference solutions (a student release), or when forced with
    CIRCUITLAB_GRADERS=public."""
    if os.environ.get(MODE_ENV) == "public":
        return True
    try:
        import circuitlab_solutions as solutions  # noqa: F401
    except ImportError:
        return True
    return False


def _record(result: Result) -> None:
    path: Optional[str] = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"exercise": result.exercise, "passed": result.passed, "score": result.score,
                                  "implemented": result.implemented, "feedback": result.feedback}) + "\n")


def _status(text: str):
    """Say at once what a check is doing: in a notebook, a line the result then replaces (its
    display handle); elsewhere a printed line, only when the wait is long (models to load)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        return display({"text/plain": text}, raw=True, display_id=True)
    if READY_NOTE in text:
        print(text, flush=True)
    return None


def _show(result: Result, status=None) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is not None:
        # Rich display (HTML, with the difference heatmap for sweeps) plus a machine-readable
        # part that the saved notebook keeps for `circuitlab progress`.
        from circuitlab.saved_results import RESULT_MIME

        bundle, metadata = shell.display_formatter.format(result)
        bundle[RESULT_MIME] = {"exercise": result.exercise, "passed": bool(result.passed),
                               "score": float(result.score), "implemented": bool(result.implemented)}
        if status is not None:
            status.update(bundle, metadata=metadata, raw=True)
        else:
            display(bundle, metadata=metadata, raw=True)
    else:
        print(result)
