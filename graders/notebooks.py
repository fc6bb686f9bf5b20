"""Chapter notebooks: read them, fill exercises with the references, execute them,
and collect what their check cells reported."""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import json
import os
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import jupytext
import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from circuitlab.course_files import ChaptersNotFound, chapter_sources
from circuitlab.progress import PROGRESS_ENV
from circuitlab.saved_results import CHECK_CALL, checked_exercises  # noqa: F401 (CHECK_CALL: graders.classroom)
from circuitlab_graders import RESULTS_ENV, limits

REPO = Path(__file__).resolve().parent.parent


chapter_paths = chapter_sources  # the chapters' py:percent sources in course order, wherever installed


def select_chapters(prefixes) -> list[Path]:
    """The chapters whose names start with one of `prefixes` (all of them when none is given)."""
    chapters = chapter_paths()
    chosen = [c for c in chapters if not prefixes or any(c.stem.startswith(p) for p in prefixes)]
    if not chosen:
        raise ChaptersNotFound(f"No chapter matches {' '.join(prefixes)}; the chapters are "
                               f"{', '.join(c.stem for c in chapters)}.")
    return chosen


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return jupytext.read(path)


def solutions_module(chapter: Path):
    """`chapters/01_residual_patching.*` -> the module `circuitlab_solutions.ch01_residual_patching`."""
    return importlib.import_module(f"circuitlab_solutions.ch{chapter.stem}")


def is_test_cell(cell) -> bool:
    """A cell that checks exercises (the grader decides what it checks): nbgrader's
    autograder-test cell (graded, not a solution; nbgrader's own `utils.is_grade` rule) or a
    chapter's cell tagged `check`, before nbgrader metadata is added. The one rule every
    side uses: the worker skips these cells, verdicts are written into them, and the
    classroom build makes them nbgrader test cells."""
    if cell.get("cell_type") != "code":
        return False
    metadata = cell.get("metadata", {})
    nbgrader = metadata.get("nbgrader", {})
    return bool(nbgrader.get("grade") and not nbgrader.get("solution")) or "check" in metadata.get("tags", [])


def exercise_names(nb: nbformat.NotebookNode) -> list[str]:
    """Exercises a notebook checks, in order, from its `check(name)` calls."""
    return checked_exercises(cell.source for cell in nb.cells if cell.cell_type == "code")


def defined_function(source: str) -> Optional[str]:
    """The name of the first function a cell defines, if any."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return next((node.name for node in tree.body if isinstance(node, ast.FunctionDef)), None)


def fill_with_solutions(nb: nbformat.NotebookNode, chapter: Path) -> nbformat.NotebookNode:
    """A copy of `nb` whose exercise cells hold the reference implementations, put in by
    `answer_source` as in the classroom's source notebooks."""
    module = solutions_module(chapter)
    filled = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in filled.cells:
        if "exercise" in cell.metadata.get("tags", []):
            cell.source, _ = answer_source(cell.source, module)
    return filled


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
    """The one way references go into notebooks: the exercise cell with each stub's `raise
    NotImplementedError` replaced by the reference body inside nbgrader's solution region
    (the classroom's release swaps it back for the stub; elsewhere the markers are comments),
    keeping the stub's signature, docstring and whatever else the cell holds; also the
    exercise names."""
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


@dataclass
class ExecutedNotebook:
    notebook: nbformat.NotebookNode
    results: dict[str, dict]  # exercise -> {"passed", "score", "feedback"} from its check cell
    expected: list[str]  # exercises the notebook checks
    errors: list[str]  # tracebacks of cells that failed


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _kernel_manager(tmp: Path) -> KernelManager:
    """The kernel talks to us over Unix sockets in `tmp` where there are some: over TCP, ipykernel
    warns on every start that the traffic is unencrypted (and anyone on the machine could connect)."""
    if os.name == "nt":
        return KernelManager(kernel_name="python3")
    return KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp / "kernel"))


def execute(nb: nbformat.NotebookNode, workdir: Path, timeout: float = limits.CHAPTER_CELL_S, *,
            allow_errors: bool = True) -> ExecutedNotebook:
    """Run `nb` in a fresh kernel and gather the results its check cells recorded."""
    expected = exercise_names(nb)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "results.jsonl"
        # The kernel inherits these: where check cells record results, and no progress
        # bars (their widgets do not survive into a saved notebook).
        with _environment({RESULTS_ENV: str(record), PROGRESS_ENV: "0"}):
            km = _kernel_manager(Path(tmp))
            client = NotebookClient(
                nb, km=km, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                resources={"metadata": {"path": str(workdir)}},
            )
            try:
                client.execute()
            finally:
                if km.has_kernel:  # a kernel manager we made is ours to shut down, not nbclient's
                    km.shutdown_kernel(now=True)
        results = {}
        if record.exists():
            for line in record.read_text().splitlines():
                entry = json.loads(line)
                results[entry.pop("exercise")] = entry
    errors = [
        "\n".join(out.get("traceback", [])[-3:])
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    return ExecutedNotebook(nb, results, expected, errors)


def scorecard(title: str, run: ExecutedNotebook) -> tuple[str, bool]:
    """A plain-text scorecard and whether every exercise passed; a failure's whole feedback
    follows its line."""
    lines = [title]
    all_passed = bool(run.expected)
    for name in run.expected:
        entry = run.results.get(name)
        if entry is None:
            all_passed = False
            lines.append(f"  FAIL  {name:38s} never checked (an earlier cell failed)")
            continue
        all_passed &= entry["passed"]
        mark = "PASS" if entry["passed"] else "FAIL"
        summary, *details = entry["feedback"].splitlines() or [""]
        lines.append(f"  {mark}  {name:38s} score {entry['score']:.2f}  {summary}")
        if not entry["passed"]:  # why, as the notebook shows it: first failure, diagnosis, hint
            lines += [f"        {line}" for line in details]
    return "\n".join(lines), all_passed
