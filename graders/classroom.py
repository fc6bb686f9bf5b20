"""Classroom mode: an nbgrader course generated from the chapters.

`python -m circuitlab_graders course OUTDIR` writes

    OUTDIR/nbgrader_config.py
    OUTDIR/circuitlab_course.json                the hidden seeds (outside source/: never released)
    OUTDIR/source/<chapter>/<chapter>.ipynb      one assignment per chapter

Exercise cells become autograded answer cells whose reference body sits between
`### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader swaps it for a stub in the
release; `circuitlab_graders.notebooks.answer_source` puts it there, as for `render`). Check cells become locked autograder tests worth points; in a student's
release they run the public checks. At autograde nothing in them runs: the course's
config makes nbgrader grade each submission with `circuitlab_graders.nbgrader_plugin.SandboxExecute`,
which runs the student's code in a sandbox and judges it on hidden seeds. Before writing,
the builder grades every source notebook that way and requires full points for the
references.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import nbformat

from circuitlab_graders import limits
from circuitlab_graders.course_secrets import CourseSecrets
from circuitlab_graders.notebooks import CHECK_CALL, answer_source, is_test_cell, read_notebook, select_chapters, solutions_module

COURSE_ID = "circuitlab"
SCHEMA_VERSION = 3  # nbgrader's cell metadata format
POINTS = 1  # per exercise
HIDDEN_SEEDS = 2  # seeded case sets per exercise at autograde, none of them the public seed
CELL_TIMEOUT = limits.CELL_TIMEOUT_S  # CPU seconds a notebook cell may use at autograde, when not measured
MIN_CELL_TIMEOUT = limits.MIN_CELL_TIMEOUT_S  # measured: five times the slowest reference cell, at least this
MEASURING_TIMEOUT = limits.CHAPTER_CELL_S


@dataclass
class Assignment:
    name: str  # also the notebook's name
    notebook: nbformat.NotebookNode
    exercises: list[str]
    seeds: dict[str, list[int]]
    seconds: float = 0.0  # grading the references, measured


@dataclass
class Course:
    root: Path
    assignments: list[Assignment]
    cell_timeout: int


# ---------------------------------------------------------------- cells


def _meta(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: Optional[int] = None) -> dict:
    meta = {"grade": grade, "solution": solution, "locked": locked, "task": False,
            "grade_id": grade_id, "schema_version": SCHEMA_VERSION}
    if points is not None:
        meta["points"] = points
    return meta


def source_notebook(chapter: Path, rng: random.Random) -> Assignment:
    nb = read_notebook(chapter)
    solutions = solutions_module(chapter)
    exercises: list[str] = []
    seeds: dict[str, list[int]] = {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags:
            cell.source, names = answer_source(cell.source, solutions)
            exercises += names
            cell.metadata["nbgrader"] = _meta(names[0], grade=False, solution=True, locked=False)
        elif is_test_cell(cell):
            names = CHECK_CALL.findall(cell.source)
            if not names:
                raise ValueError(f"{chapter.name}: a check cell without check(...):\n{cell.source}")
            for name in names:
                seeds.setdefault(name, [rng.randrange(1, 2**31) for _ in range(HIDDEN_SEEDS)])
            cell.metadata["nbgrader"] = _meta(f"check_{names[0]}", grade=True, solution=False, locked=True,
                                              points=POINTS * len(names))
    unchecked = set(exercises) - set(seeds)
    if unchecked:
        raise ValueError(f"{chapter.name}: exercises without a check cell: {sorted(unchecked)}")
    nb.metadata.pop("jupytext", None)
    return Assignment(chapter.stem, nb, exercises, seeds)


# ---------------------------------------------------------------- checking the references


def verify(assignments: list[Assignment], root: Path, log=print) -> float:
    """Grade each source notebook (references in place) the way autograde will, in the
    sandbox on the hidden seeds, and require every exercise to pass. Returns the slowest
    cell's seconds."""
    from circuitlab_graders.autograde import Autograder

    slowest = 0.0
    for assignment in assignments:
        log(f"grading {assignment.name} with the reference solutions, in the sandbox ...")
        start = time.perf_counter()
        with Autograder(assignment.exercises, assignment.seeds, hide=[root], workers=1,
                        cell_timeout=MEASURING_TIMEOUT, log=log) as grader:
            results = grader.grade_notebooks([assignment.notebook])[0]
            slowest = max([slowest, *grader.cell_seconds[0].values()])
        assignment.seconds = time.perf_counter() - start
        lost = [f"{name}: {r.feedback}" for name, r in results.items() if not r.passed]
        if lost:
            raise RuntimeError(f"{assignment.name}: the reference solutions do not earn full points:\n" + "\n".join(lost))
        log(f"  every exercise passed ({assignment.seconds:.0f} s)")
    return slowest


# ---------------------------------------------------------------- writing

CONFIG = '''\
"""nbgrader configuration for the {course} course, written by `python -m circuitlab_graders course`.

Run nbgrader from this directory, in the Python environment where circuitlab (with its
`solutions` package) and bubblewrap are installed. Autograding never runs a student's
code in nbgrader's kernel: SandboxExecute grades each submission in a sandbox that
cannot see this directory, and judges it on the hidden seeds in circuitlab_course.json.
`python -m circuitlab_graders autograde ASSIGNMENT` grades a whole class in parallel first.
"""

import os

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades

from circuitlab_graders.nbgrader_plugin import SandboxExecute

c = get_config()  # noqa: F821  (nbgrader provides it)

c.CourseDirectory.course_id = "{course}"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# nbgrader's own autograde steps, with its Execute (the student's code in a kernel that can
# reach the gradebook and the answer code) replaced by the sandboxed grader.
c.Autograde.autograde_preprocessors = [SandboxExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
'''


def write(course: Course) -> None:
    (course.root / "source").mkdir(parents=True, exist_ok=True)
    for assignment in course.assignments:
        folder = course.root / "source" / assignment.name
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(assignment.notebook, folder / f"{assignment.name}.ipynb")
    CourseSecrets({a.name: {"exercises": a.exercises, "seeds": a.seeds} for a in course.assignments},
                  course.cell_timeout).write(course.root)
    (course.root / "nbgrader_config.py").write_text(CONFIG.format(course=COURSE_ID))


def build(root: Path, prefixes: tuple[str, ...] = (), seed: Optional[int] = None,
          cell_timeout: Optional[int] = None, check: bool = True, log=print) -> Course:
    """Generate the course; with `check` (the default) first require that the references
    earn full points in the sandbox. `cell_timeout` (CPU seconds a cell may use at autograde)
    is, unless given, five times the slowest cell that check measured."""
    chapters = select_chapters(prefixes)
    rng = random.Random(secrets.randbits(64) if seed is None else seed)
    assignments = [source_notebook(chapter, rng) for chapter in chapters]
    root = Path(root).resolve()
    slowest = verify(assignments, root, log) if check else None
    if cell_timeout is None:
        cell_timeout = CELL_TIMEOUT if slowest is None else max(MIN_CELL_TIMEOUT, math.ceil(5 * slowest))
    course = Course(root, assignments, cell_timeout)
    write(course)
    return course
