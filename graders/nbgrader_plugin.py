"""nbgrader's classroom flow with the sandboxed grader in the place of its kernel.

The course's nbgrader_config.py (written by `python -m graders course`) replaces
nbgrader's Execute preprocessor with `SandboxExecute`, so every way of autograding this
course is the secure one: plain `nbgrader autograde ASSIGNMENT` grades the submissions
one after another, and `python -m graders autograde ASSIGNMENT` (`autograde_class`)
grades them all in parallel (or on a Dask cluster) first and then lets nbgrader record
them. Either way nbgrader itself sanitises the submission (restoring the locked test
cells from the source), and its SaveAutoGrades writes the scores into the gradebook;
`SandboxExecute` only fills each test cell's output: the feedback as text when the
exercise passed, an error (0 points) when it did not. No student code ever runs in a
process that can see the course directory, the gradebook or the answer code.

The hidden seeds live in `circuitlab_course.json` in the course root, outside `source/`
(nbgrader would release anything there), and are never shown.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import nbformat
from nbconvert.preprocessors import Preprocessor

from circuitlab.saved_results import CHECK_CALL
from graders.notebooks import is_test_cell
from graders.results import Result

COURSE_FILE = "circuitlab_course.json"

# Results graded before nbgrader runs: (student, notebook) -> {exercise: Result}.
PRECOMPUTED: dict[tuple[str, str], dict[str, Result]] = {}


@dataclass(frozen=True)
class CourseSecrets:
    """What the grader needs that students must never see: each assignment's exercises and
    hidden seeds, and the time a notebook cell may take."""

    assignments: dict[str, dict]
    cell_timeout: float

    @classmethod
    def read(cls, root: Path) -> "CourseSecrets":
        path = Path(root) / COURSE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: this is not a course built by `python -m graders course` "
                                    "(it holds the hidden seeds the grader needs)")
        data = json.loads(path.read_text())
        return cls(data["assignments"], float(data["cell_timeout"]))

    def write(self, root: Path) -> None:
        path = Path(root) / COURSE_FILE
        path.write_text(json.dumps({"assignments": self.assignments, "cell_timeout": self.cell_timeout}, indent=1))
        os.chmod(path, 0o600)

    def exercises(self, assignment: str) -> list[str]:
        if assignment not in self.assignments:
            raise KeyError(f"no assignment {assignment!r} in this course; it has: {', '.join(self.assignments)}")
        return list(self.assignments[assignment]["exercises"])

    def seeds(self, assignment: str) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.assignments[assignment]["seeds"].items()}


_AUTOGRADERS: dict[tuple[str, str], object] = {}  # one warm Autograder per course and assignment


def autograder(root: Path, assignment: str, workers: Optional[int] = 1, scheduler: Optional[str] = None):
    """A started Autograder for `assignment` (kept for the process's lifetime)."""
    from graders.autograde import Autograder

    key = (str(Path(root).resolve()), assignment)
    if key not in _AUTOGRADERS:
        secrets = CourseSecrets.read(root)
        grader = Autograder(secrets.exercises(assignment), secrets.seeds(assignment), hide=[Path(root).resolve()],
                            workers=workers, scheduler=scheduler, cell_timeout=secrets.cell_timeout)
        _AUTOGRADERS[key] = grader.__enter__()
    return _AUTOGRADERS[key]


def close_autograders() -> None:
    while _AUTOGRADERS:
        _AUTOGRADERS.popitem()[1].__exit__(None, None, None)


class SandboxExecute(Preprocessor):
    """nbgrader's Execute, replaced: grade the notebook in the sandbox (or take the result
    graded in parallel before) and write each test cell's verdict as its output. Every
    test cell gets a verdict: one left without output would earn nbgrader's full points."""

    enabled = True  # nbconvert preprocessors are off unless enabled

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict):
        info = resources.get("nbgrader", {})
        student, notebook = info.get("student"), info.get("notebook")
        root = Path(self.config.CourseDirectory.get("root", os.getcwd()))
        results = PRECOMPUTED.pop((student, notebook), None)
        if results is None:
            grader = autograder(root, info.get("assignment"))
            results = grader.grade_notebooks([nb])[0]
        write_verdicts(nb, results)
        return nb, resources


def write_verdicts(nb: nbformat.NotebookNode, results: dict[str, Result]) -> None:
    for cell in nb.cells:
        if not is_test_cell(cell):
            continue
        names = CHECK_CALL.findall(cell.source)
        verdicts = [results.get(n) or Result(n, False, 0.0, "this exercise is not graded in this course") for n in names]
        cell.outputs = [_output(result) for result in verdicts]
        cell.execution_count = None


def _output(result: Result):
    if result.passed:
        return nbformat.v4.new_output("stream", name="stdout",
                                      text=f"{result.exercise} passed on the hidden cases\n{result.feedback}\n")
    return nbformat.v4.new_output("error", ename="ExerciseFailed", evalue=f"{result.exercise} failed on the hidden cases",
                                  traceback=[f"{result.exercise} failed on the hidden cases", *result.feedback.splitlines()])


# ---------------------------------------------------------------- a whole class


def submissions(root: Path, assignment: str, students: Sequence[str] = ()) -> dict[str, Path]:
    """student -> submitted notebook, in nbgrader's default layout submitted/<student>/<assignment>/."""
    found = {}
    for path in sorted((Path(root) / "submitted").glob(f"*/{assignment}/{assignment}.ipynb")):
        student = path.parent.parent.name
        if not students or student in students:
            found[student] = path
    missing = sorted(set(students) - set(found))
    if missing:
        raise FileNotFoundError(f"no submission of {assignment} from: {', '.join(missing)}")
    return found


def autograde_class(root: Path, assignment: str, students: Sequence[str] = (), workers: Optional[int] = None,
                    scheduler: Optional[str] = None, log: Callable = print) -> dict[str, dict[str, Result]]:
    """Grade every submission of `assignment` (or those of `students`) in sandboxes, in
    parallel, then record them with nbgrader's own autograde (gradebook, autograded
    notebooks). Returns student -> exercise -> Result."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from tqdm.auto import tqdm
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(root).resolve()
    found = submissions(root, assignment, students)
    if not found:
        raise FileNotFoundError(f"no submissions of {assignment} under {root / 'submitted'}")
    secrets = CourseSecrets.read(root)
    from graders.autograde import Autograder

    log(f"preparing {assignment}: {', '.join(secrets.exercises(assignment))} on hidden cases ...")
    start = time.perf_counter()
    with Autograder(secrets.exercises(assignment), secrets.seeds(assignment), hide=[root], workers=workers,
                    scheduler=scheduler, cell_timeout=secrets.cell_timeout, log=log) as grader:
        notebooks = [nbformat.read(path, as_version=4) for path in found.values()]
        with tqdm(total=len(notebooks), desc=f"grading {assignment}", unit="submission") as bar:
            graded = grader.grade_notebooks(notebooks, progress=lambda done: bar.update(done - bar.n))
    results = dict(zip(found, graded))
    log(f"graded {len(found)} submissions in {time.perf_counter() - start:.0f} s; recording them with nbgrader ...")
    start = time.perf_counter()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    unrecorded = []
    for student, by_exercise in results.items():  # one submission nbgrader cannot read must not stop the rest
        PRECOMPUTED[(student, found[student].stem)] = by_exercise
        outcome = api.autograde(assignment, student, force=True, create=True)
        PRECOMPUTED.pop((student, found[student].stem), None)
        if not outcome.get("success"):
            unrecorded.append(f"{student}: {(outcome.get('error') or outcome.get('log') or '').strip()[-800:]}")
    log(f"recorded in {time.perf_counter() - start:.0f} s")
    if unrecorded:
        raise RuntimeError("nbgrader could not record these submissions (the others are recorded):\n"
                           + "\n".join(unrecorded))
    return results
