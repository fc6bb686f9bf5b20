"""Classroom mode end to end, with nbgrader's own CLI and an sqlite gradebook in a temp dir:
build the course (chapter 0), generate the release, autograde four submissions, generate
feedback. Also: the release holds no reference code, and the public checks run without
the `solutions` package."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from graders.classroom import build, reference_body
from graders.notebooks import REPO, defined_function
from graders.registry import EXERCISES

ASSIGNMENT = "00_setup"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
CH00 = [name for name, ex in EXERCISES.items() if ex.chapter == ASSIGNMENT]
HANG = "    while True:\n        pass"
CRASH = "    import os\n    os._exit(1)"


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # nbgrader runs `alembic` from PATH, as it would in an activated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _submission(release: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The release notebook with the named exercise cells' bodies replaced: "ref" for the
    reference, anything else is used as the function body; unnamed ones stay stubs."""
    nb = nbformat.from_dict(json.loads(json.dumps(release)))
    for cell in nb.cells:
        name = defined_function(cell.source) if cell.metadata.get("nbgrader", {}).get("solution") else None
        if name in answers:
            reference = EXERCISES[name].reference_fn()
            body = answers[name]
            if body == "ref":
                body = "\n".join("    " + line for line in reference_body(reference))
            cell.source = cell.source.split("# YOUR CODE HERE")[0].rstrip() + "\n" + body
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    # Timeouts given, so the build skips its measuring run (the all-correct submission
    # below is the same check: references earn full points under nbgrader).
    built = build(root, ("00",), seed=1234, exercise_timeout=30, cell_timeout=400, log=lambda *_: None)
    _nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    return root, built


def test_source_layout_and_metadata(course):
    root, built = course
    assert sorted(p.relative_to(root).as_posix() for p in (root / "source").rglob("*") if p.is_file()) == [
        f"source/{ASSIGNMENT}/{NOTEBOOK}"]  # nothing but notebooks: nbgrader would release any other file
    config = (root / "nbgrader_config.py").read_text()
    assert "c.Execute.timeout = 400" in config and "ExecutePreprocessor" not in config
    nb = nbformat.read(root / "source" / ASSIGNMENT / NOTEBOOK, as_version=4)
    meta = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader for c in nb.cells if "nbgrader" in c.metadata}
    assert sorted(meta) == sorted(CH00 + [f"check_{n}" for n in CH00])
    for name in CH00:
        assert meta[name] == {"grade": False, "solution": True, "locked": False, "task": False,
                              "grade_id": name, "schema_version": 3}
        assert meta[f"check_{name}"] == {"grade": True, "solution": False, "locked": True, "task": False,
                                         "grade_id": f"check_{name}", "points": 1, "schema_version": 3}
    hidden = [c.source for c in nb.cells if "BEGIN HIDDEN TESTS" in c.source]
    assert len(hidden) == len(CH00) and all("seeds=[" in s and "timeout=30" in s for s in hidden)


def test_release_has_no_reference_code(course):
    root, _ = course
    release = root / "release" / ASSIGNMENT
    files = [p for p in release.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [NOTEBOOK]
    raw = files[0].read_text()
    text = raw + "\n".join(c.source for c in nbformat.reads(raw, as_version=4).cells)
    public = (REPO / "chapters" / f"{ASSIGNMENT}.py").read_text()  # what every learner sees anyway
    for name in CH00:
        reference = EXERCISES[name].reference_fn()
        secret = [line.strip() for line in reference_body(reference) if line.strip() and line.strip() not in public]
        assert secret, f"nothing in the reference of {name} to look for"
        for line in secret + [inspect.getdoc(reference).split("\n")[0]]:
            assert line not in text, f"reference line of {name} in the release: {line}"
    for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "hidden_check", "seeds="):
        assert marker not in text
    nb = nbformat.read(release / NOTEBOOK, as_version=4)
    stubs = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(stubs) == len(CH00) and all("raise NotImplementedError" in s for s in stubs)


def test_autograde_scores_and_feedback(course):
    root, _ = course
    release = nbformat.read(root / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    first, second, third = CH00
    submissions = {
        "all_correct": {name: "ref" for name in CH00},
        "all_stubs": {},
        "half_correct": {first: "ref", third: "ref"},
        # An endless loop and a dead Python process cost their own exercises only.
        "hang_and_crash": {first: HANG, second: CRASH, third: "ref"},
    }
    for student, answers in submissions.items():
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(_submission(release, answers), folder / NOTEBOOK)
    _nbgrader(root, "autograde", ASSIGNMENT)
    _nbgrader(root, "generate_feedback", ASSIGNMENT)

    scores: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in submissions:
            notebook = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
            assert {grade.max_score for grade in notebook.grades} == {1}
            scores[student] = {grade.name.removeprefix("check_"): grade.auto_score for grade in notebook.grades}
            totals[student] = gradebook.find_submission(ASSIGNMENT, student).score
    expected = {
        "all_correct": {first: 1, second: 1, third: 1},
        "all_stubs": {first: 0, second: 0, third: 0},
        "half_correct": {first: 1, second: 0, third: 1},
        "hang_and_crash": {first: 0, second: 0, third: 1},
    }
    assert scores == expected
    assert totals == {
        "all_correct": 3, "all_stubs": 0, "half_correct": 2, "hang_and_crash": 1}

    def feedback(student: str) -> str:
        return (root / "feedback" / student / ASSIGNMENT / NOTEBOOK.replace(".ipynb", ".html")).read_text()

    failing = lambda html: set(re.findall(r"(\w+) FAILED \(hidden cases\)", html))  # noqa: E731
    assert failing(feedback("all_correct")) == set()
    assert failing(feedback("all_stubs")) == set(CH00)
    assert failing(feedback("half_correct")) == {second}
    html = feedback("hang_and_crash")
    assert failing(html) == {first, second}
    # The grader's own time limit stops the loop first; the forked child's limit is the backstop.
    assert re.search(r"stopped after [0-9.]+ s|did not finish within 30 s", html)
    assert "the Python process crashed" in html
    assert "not implemented yet" in feedback("all_stubs")


def test_public_checks_run_without_solutions():
    """What a student's `check` does with no `solutions` package: sanity and behaviour
    checks that pass a correct answer and reject a stub and known mistakes."""
    functions = {}
    for name in CH00:
        functions[name] = inspect.getsource(EXERCISES[name].reference_fn())
    script = f"""
import sys, json
sys.modules["solutions"] = None  # import solutions -> ImportError, as in a student release
import torch
from torch import Tensor
import graders
assert graders.public_mode()
out = {{}}
sources = json.loads({json.dumps(json.dumps(functions))})
for name, source in sources.items():
    exec(source)
    right = graders.check(eval(name))
    exec(source.split(":\\n", 1)[0].split(" -> ")[0] + ":\\n    raise NotImplementedError")
    stub = graders.check(eval(name))
    out[name] = [right.passed, right.feedback, stub.passed, stub.feedback]
def logit_diff(logits, correct_token, wrong_token):
    return logits[0, -1, wrong_token] - logits[0, -1, correct_token]
wrong = graders.check(logit_diff)
out["wrong_way_round"] = [wrong.passed, wrong.feedback]
assert "solutions" not in sys.modules or sys.modules["solutions"] is None
print("RESULT" + json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in CH00:
        right_passed, right_feedback, stub_passed, stub_feedback = out[name]
        assert right_passed, right_feedback
        assert "public checks held" in right_feedback and "hidden cases" in right_feedback
        assert not stub_passed and "not implemented yet" in stub_feedback
    passed, feedback = out["wrong_way_round"]
    assert not passed and "must be positive" in feedback


def test_every_exercise_has_public_properties(gelu_twin):
    """A student release checks each exercise with its declared properties; one without
    them would only be graded at submission."""
    from graders.models import GradingModel

    gm = GradingModel("gelu-2l", gelu_twin, "gelu-2l")
    assert {name: bool(ex.properties(gm)) for name, ex in EXERCISES.items()} == {name: True for name in EXERCISES}


def test_measured_timeouts_cover_the_slowest_cell():
    from graders.classroom import MIN_EXERCISE_TIMEOUT, Assignment, execute_timeout, learner_limit

    assert learner_limit(5.0) == MIN_EXERCISE_TIMEOUT
    assert learner_limit(100.2) == 301  # three times the reference's check, rounded up
    fast = Assignment("a", nbformat.v4.new_notebook(), [], {}, cell_seconds=[3, 40], timeouts={"x": 60})
    slow = Assignment("b", nbformat.v4.new_notebook(), [], {}, cell_seconds=[183, 20], timeouts={"y": 549})
    # a check cell = preparing references (<= its measured time) + the learner's limit
    assert execute_timeout([fast, slow]) == 2 * 183 + 549 + 30
    assert execute_timeout([fast]) == 2 * 40 + 60 + 30


def test_hidden_check_isolates_the_learner_with_a_multithreaded_torch():
    """The forked child must not wait for the parent's OpenMP threads (it did, before the
    child set torch to one thread), and a failed exercise is swapped for the reference."""
    script = """
import torch
torch.set_num_threads(2)
from graders.autograde import hidden_check
from graders.models import grading_models
from solutions.ch00_setup import logit_diff
for gm in grading_models():
    gm.model(torch.randint(0, 1000, (4, 16)))  # start the OpenMP pool before forking
ns = {}
print("PASSED", hidden_check(logit_diff, seeds=[3], timeout=60, namespace=ns).passed)
def logit_diff(logits, correct_token, wrong_token):
    while True:
        pass
try:
    hidden_check(logit_diff, seeds=[3], timeout=5, namespace=ns)
except AssertionError as err:
    print("HANG", str(err).splitlines()[1])
print("SWAPPED", ns["logit_diff"].__module__)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    assert "PASSED True" in proc.stdout
    assert "HANG did not finish within 5 s" in proc.stdout
    assert "SWAPPED solutions.ch00_setup" in proc.stdout
