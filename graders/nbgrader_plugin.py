"""nbgrader's classroom flow with the sandboxed grader in the place of its kernel.

The course's nbgrader_config.py (written by `python -m circuitlab_graders course`) replaces
nbgrader's Execute preprocessor with `SandboxExecute`, so every way of autograding this
course is the secure one: plain `nbgrader autograde ASSIGNMENT` grades the submissions
one after another, and `python -m circuitlab_graders autograde ASSIGNMENT` (graders.whole_class)
grades them all in parallel (or on a Dask cluster) first and then lets nbgrader record
them. Either way nbgrader itself sanitises the submission (restoring the locked test
cells from the source), and its SaveAutoGrades writes the scores into the gradebook;
`SandboxExecute` only fills each test cell's output: the feedback as text when the
exercise passed, an error (0 points) when it did not. No student code ever runs in a
process that can see the course directory, the gradebook or the answer code.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor

from circuitlab.saved_results import CHECK_CALL
from circuitlab_graders.notebooks import is_test_cell
from circuitlab_graders.results import Result

# Results graded before nbgrader runs (graders.whole_class): (student, notebook) -> {exercise: Result}.
PRECOMPUTED: dict[tuple[str, str], dict[str, Result]] = {}


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
            from circuitlab_graders.autograde import warm_autograder

            grader = warm_autograder(root, info.get("assignment"))
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
