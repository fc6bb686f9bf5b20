"""Classroom mode: an nbgrader course generated from the chapters.

`python -m graders course OUTDIR` writes

    OUTDIR/nbgrader_config.py
    OUTDIR/source/<chapter>/<chapter>.ipynb      one assignment per chapter

Exercise cells become autograded answer cells whose reference body sits between
`### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader swaps it for a stub in the
release). Check cells become locked autograder tests worth points; each starts with a
`### BEGIN HIDDEN TESTS` block that grades on freshly seeded cases (see
graders.autograde) and that nbgrader strips from the release. Before writing, the
builder runs every source notebook as nbgrader would and requires full points for the
references; the slowest cell it measures sets the timeouts.
"""

from __future__ import annotations

import ast
import datetime
import inspect
import json
import math
import random
import secrets
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import nbformat

from graders.notebooks import CHECK_CALL, chapter_paths, execute, read_notebook, solutions_module

COURSE_ID = "circuitlab"
SCHEMA_VERSION = 3  # nbgrader's cell metadata format
POINTS = 1  # per exercise
HIDDEN_SEEDS = 2  # seeded case sets per exercise at autograde, none of them the public seed
MIN_EXERCISE_TIMEOUT = 60  # seconds for the learner's code in one hidden check
MIN_CELL_TIMEOUT = 120
PROVISIONAL_TIMEOUT = 3600  # while measuring


@dataclass
class Assignment:
    name: str  # also the notebook's name
    notebook: nbformat.NotebookNode
    exercises: list[str]
    seeds: dict[str, list[int]]
    cell_seconds: list[float] = field(default_factory=list)  # measured, per code cell
    check_seconds: dict[str, float] = field(default_factory=dict)  # measured, per exercise's check cell
    timeouts: dict[str, int] = field(default_factory=dict)  # per exercise: the learner's limit


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


def _is_stub(node: ast.FunctionDef) -> bool:
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def reference_body(fn) -> list[str]:
    """The reference's body without its signature and docstring, dedented."""
    source = textwrap.dedent(inspect.getsource(fn))
    node = ast.parse(source).body[0]
    lines = source.split("\n")
    doc = node.body[0] if ast.get_docstring(node) is not None else None
    start = doc.end_lineno if doc is not None else node.body[0].lineno - 1
    return textwrap.dedent("\n".join(lines[start:node.end_lineno])).strip("\n").split("\n")


def answer_source(stub_source: str, solutions) -> tuple[str, list[str]]:
    """The exercise cell with each stub's `raise NotImplementedError` replaced by the
    reference body inside a solution region; also the exercise names."""
    tree = ast.parse(stub_source)
    stubs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and _is_stub(node)]
    if not stubs:
        raise ValueError(f"an exercise cell without a stub function:\n{stub_source}")
    lines = stub_source.split("\n")
    for node in sorted(stubs, key=lambda n: n.lineno, reverse=True):
        raise_line = node.body[-1].lineno - 1
        indent = lines[raise_line][: len(lines[raise_line]) - len(lines[raise_line].lstrip())]
        body = [indent + line if line else "" for line in reference_body(getattr(solutions, node.name))]
        lines[raise_line: node.body[-1].end_lineno] = [
            indent + "### BEGIN SOLUTION", *body, indent + "### END SOLUTION"]
    return "\n".join(lines), [node.name for node in stubs]


def hidden_test_source(check_source: str, seeds: dict[str, list[int]], timeouts: dict[str, int]) -> str:
    """The check cell with a hidden block that grades each checked exercise on hidden seeds."""
    names = list(dict.fromkeys(CHECK_CALL.findall(check_source)))
    hidden = ["### BEGIN HIDDEN TESTS", "from graders.autograde import hidden_check"]
    hidden += [f"hidden_check({name}, seeds={seeds[name]}, timeout={timeouts.get(name, PROVISIONAL_TIMEOUT)})"
               for name in names]
    hidden.append("### END HIDDEN TESTS")
    return "\n".join(hidden) + "\n" + check_source


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
        elif "check" in tags:
            names = CHECK_CALL.findall(cell.source)
            if not names:
                raise ValueError(f"{chapter.name}: a check cell without check(...):\n{cell.source}")
            for name in names:
                seeds.setdefault(name, [rng.randrange(1, 2**31) for _ in range(HIDDEN_SEEDS)])
            cell.source = hidden_test_source(cell.source, seeds, {})
            cell.metadata["nbgrader"] = _meta(f"check_{names[0]}", grade=True, solution=False, locked=True,
                                              points=POINTS * len(names))
    unchecked = set(exercises) - set(seeds)
    if unchecked:
        raise ValueError(f"{chapter.name}: exercises without a check cell: {sorted(unchecked)}")
    nb.metadata.pop("jupytext", None)
    return Assignment(chapter.stem, nb, exercises, seeds)


def retime(assignment: Assignment) -> None:
    for cell in assignment.notebook.cells:
        if "nbgrader" in cell.metadata and cell.metadata["nbgrader"]["grade"]:
            original = cell.source.split("### END HIDDEN TESTS\n", 1)[1]
            cell.source = hidden_test_source(original, assignment.seeds, assignment.timeouts)


# ---------------------------------------------------------------- measuring


def _seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    try:
        start = datetime.datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except KeyError:
        return 0.0
    return (end - start).total_seconds()


def measure(assignment: Assignment) -> None:
    """Run the source notebook as the autograder would (references in place, hidden
    tests included) and require that every test cell earns its points."""
    from nbgrader.utils import determine_grade

    nb = nbformat.from_dict(json.loads(json.dumps(assignment.notebook)))
    with tempfile.TemporaryDirectory() as tmp:
        run = execute(nb, workdir=Path(tmp), timeout=PROVISIONAL_TIMEOUT, allow_errors=True)
    lost = []
    for cell in run.notebook.cells:
        if cell.cell_type == "code" and "nbgrader" in cell.metadata and cell.metadata["nbgrader"]["grade"]:
            score, points = determine_grade(cell)
            if score != points:
                outputs = [o.get("text") or "\n".join(o.get("traceback", [])) for o in cell.outputs]
                lost.append(f"{cell.metadata['nbgrader']['grade_id']}: {score}/{points}\n" + "\n".join(outputs))
    if lost or run.errors:
        raise RuntimeError(f"{assignment.name}: the reference solutions do not earn full points:\n"
                           + "\n".join(lost + run.errors))
    assignment.cell_seconds = [_seconds(c) for c in run.notebook.cells if c.cell_type == "code"]
    for cell in run.notebook.cells:
        if "nbgrader" in cell.metadata and cell.metadata["nbgrader"]["grade"]:
            for name in CHECK_CALL.findall(cell.source):
                assignment.check_seconds[name] = _seconds(cell)


def learner_limit(check_seconds: float) -> int:
    """The learner's limit in a hidden check: a few times what the check took with the
    reference (a plain loop may be slower than a batched reference)."""
    return math.ceil(max(MIN_EXERCISE_TIMEOUT, 3 * check_seconds))


def execute_timeout(assignments: list[Assignment]) -> int:
    """nbgrader's per-cell limit. A check cell spends at most its measured time preparing
    reference answers plus the learner's limit; this covers that with room to spare."""
    slowest = max(s for a in assignments for s in a.cell_seconds)
    longest = max(t for a in assignments for t in a.timeouts.values())
    return math.ceil(max(MIN_CELL_TIMEOUT, 2 * slowest + longest + 30))


# ---------------------------------------------------------------- writing

CONFIG = '''\
"""nbgrader configuration for the {course} course, written by `python -m graders course`.

Run nbgrader from this directory, with the Python environment where circuitlab and its
`solutions` package are installed (the autograder's hidden tests import them).
"""

import os

c = get_config()  # noqa: F821  (nbgrader provides it)

c.CourseDirectory.course_id = "{course}"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# Seconds nbgrader allows each cell at autograde ({basis}).
# Within it, each hidden check stops the learner's code after its own `timeout=`
# (at most {exercise} s) and awards no points.
c.Execute.timeout = {cell}
'''


def write(course: Course) -> None:
    (course.root / "source").mkdir(parents=True, exist_ok=True)
    for assignment in course.assignments:
        folder = course.root / "source" / assignment.name
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(assignment.notebook, folder / f"{assignment.name}.ipynb")
    seconds = [s for a in course.assignments for s in a.cell_seconds]
    basis = (f"the slowest cell took {max(seconds):.0f} s with the reference solutions when this course was built"
             if seconds else "set by hand with --cell-timeout")
    (course.root / "nbgrader_config.py").write_text(CONFIG.format(
        course=COURSE_ID, basis=basis, cell=course.cell_timeout,
        exercise=max(t for a in course.assignments for t in a.timeouts.values())))


def build(root: Path, prefixes: tuple[str, ...] = (), seed: Optional[int] = None,
          exercise_timeout: Optional[int] = None, cell_timeout: Optional[int] = None, log=print) -> Course:
    """Generate the course. With both timeouts given, the measuring run is skipped."""
    chapters = [c for c in chapter_paths() if not prefixes or any(c.stem.startswith(p) for p in prefixes)]
    if not chapters:
        raise ValueError(f"no chapter matches {prefixes}")
    rng = random.Random(secrets.randbits(64) if seed is None else seed)
    assignments = [source_notebook(chapter, rng) for chapter in chapters]
    if exercise_timeout is None or cell_timeout is None:
        for assignment in assignments:
            log(f"measuring {assignment.name} with the reference solutions ...")
            measure(assignment)
            log(f"  slowest cell {max(assignment.cell_seconds):.0f} s, total {sum(assignment.cell_seconds):.0f} s")
    for assignment in assignments:
        assignment.timeouts = {name: exercise_timeout or learner_limit(assignment.check_seconds[name])
                               for name in assignment.exercises}
        retime(assignment)
    course = Course(Path(root), assignments, cell_timeout or execute_timeout(assignments))
    write(course)
    return course
