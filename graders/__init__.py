"""Auto-grading for the circuitlab course.

    from graders import check
    check(next_token_prediction)      # in a notebook: grade and show the result

    from graders import grade
    result = grade("logit_diff", my_fn)   # result.passed, result.score, result.feedback
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

from graders.engine import Grader
from graders.results import Result
from graders.models import GradingModel

__all__ = ["grade", "check", "Result"]

RESULTS_ENV = "CIRCUITLAB_RESULTS"  # set by `python -m graders check` to collect results
MODE_ENV = "CIRCUITLAB_GRADERS"  # "public": check without the reference solutions
_GRADER = Grader()


def grade(exercise: str, fn: Callable, model=None, mode: Optional[str] = None) -> Result:
    """Grade `fn` as the exercise named `exercise`.

    By default it runs on gelu-2l and gpt2-small (pretrained where cached locally,
    otherwise random-weight twins). Pass `model` to grade on that model alone. `mode`:
    "full" (against the reference), "public" (the chapter's stated properties, no
    reference; the default where `solutions` is absent) or "hidden".
    """
    from graders.registry import exercise as find

    declared = find(exercise)
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
                           "from the course directory that `python -m graders course` wrote (its nbgrader_config.py "
                           "sets this up), or `python -m graders autograde ASSIGNMENT` there.")
    if _GRADER.course.owns(fn):
        result = Result(fn.__name__, False, 0.0,
                        f"Scored zero: this `{fn.__name__}` is the course's own code (from {fn.__module__}), "
                        "not yours. Define the function yourself in the exercise cell and check that.")
    else:
        result = grade(fn.__name__, fn, model=model)
    _record(result)
    _show(result)
    return result


def public_mode() -> bool:
    """True without the reference solutions (a student release), or when forced with
    CIRCUITLAB_GRADERS=public."""
    if os.environ.get(MODE_ENV) == "public":
        return True
    try:
        import solutions  # noqa: F401
    except ImportError:
        return True
    return False


def _record(result: Result) -> None:
    path: Optional[str] = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"exercise": result.exercise, "passed": result.passed, "score": result.score,
                                  "implemented": result.implemented, "feedback": result.feedback}) + "\n")


def _show(result: Result) -> None:
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
        display(bundle, metadata=metadata, raw=True)
    else:
        print(result)
