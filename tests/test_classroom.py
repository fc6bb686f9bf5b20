"""Classroom mode end to end, with nbgrader's own CLI and an sqlite gradebook in a temp dir:
build the course (chapter 0; the build grades the references in the sandbox first),
generate the release, autograde a class with `python -m circuitlab_graders autograde` and one more
submission with plain `nbgrader autograde`, read the scores the way formgrader does,
generate feedback. Also: the release holds no reference code and no seeds, and the
public checks run without the `solutions` package."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

import circuitlab_graders as graders
from circuitlab_graders.classroom import build
from circuitlab_graders.notebooks import REPO, reference_body
from circuitlab_graders.registry import EXERCISES
from tests.submissions import CRASH, HANG, with_answers

ASSIGNMENT = "00_setup"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
CH00 = [name for name, ex in EXERCISES.items() if ex.chapter == ASSIGNMENT]
SANDBOXED = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make test installs it)")


def _env() -> dict:
    # nbgrader runs `alembic` from PATH, as it would in an activated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def _run(course: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=course, env=_env(), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (make test installs it)")
    root = tmp_path_factory.mktemp("course")
    built = build(root, ("00",), seed=1234, log=lambda *_: None)  # grades the references first, timing the cells
    _run(root, "nbgrader", "generate_assignment", ASSIGNMENT, "--force")
    return root, built


def test_source_layout_and_metadata(course):
    root, built = course
    assert sorted(p.relative_to(root).as_posix() for p in (root / "source").rglob("*") if p.is_file()) == [
        f"source/{ASSIGNMENT}/{NOTEBOOK}"]  # nothing but notebooks: nbgrader would release any other file
    secrets = json.loads((root / "circuitlab_course.json").read_text())
    assert secrets["assignments"][ASSIGNMENT]["exercises"] == CH00
    assert all(len(s) == 2 for s in secrets["assignments"][ASSIGNMENT]["seeds"].values())
    assert stat.S_IMODE((root / "circuitlab_course.json").stat().st_mode) == 0o600
    config = (root / "nbgrader_config.py").read_text()
    assert "c.Autograde.autograde_preprocessors = [SandboxExecute," in config
    nb = nbformat.read(root / "source" / ASSIGNMENT / NOTEBOOK, as_version=4)
    meta = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader for c in nb.cells if "nbgrader" in c.metadata}
    assert sorted(meta) == sorted(CH00 + [f"check_{n}" for n in CH00])
    for name in CH00:
        assert meta[name] == {"grade": False, "solution": True, "locked": False, "task": False,
                              "grade_id": name, "schema_version": 3}
        assert meta[f"check_{name}"] == {"grade": True, "solution": False, "locked": True, "task": False,
                                         "grade_id": f"check_{name}", "points": 1, "schema_version": 3}
    tests = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert tests == [f"check({name});" for name in CH00]  # nothing hidden in the notebook: the seeds stay out
    assert built.assignments[0].seconds > 0
    assert secrets["cell_timeout"] == built.cell_timeout >= 30  # five times the slowest cell measured, at least 30 s


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
    seeds = json.loads((root / "circuitlab_course.json").read_text())["assignments"][ASSIGNMENT]["seeds"]
    for marker in ["BEGIN SOLUTION", "HIDDEN TESTS", "seeds", *(str(s) for v in seeds.values() for s in v)]:
        assert marker not in text
    nb = nbformat.read(release / NOTEBOOK, as_version=4)
    stubs = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(stubs) == len(CH00) and all("raise NotImplementedError" in s for s in stubs)


CHEAT = f"""import sqlite3, glob
for db in glob.glob("/**/gradebook.db", recursive=True)[:5]:
    sqlite3.connect(db).execute("update grade set manual_score = 1")"""


def test_a_class_is_autograded_in_sandboxes(course):
    root, _ = course
    release = nbformat.read(root / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    first, second, third = CH00
    submissions = {
        "all_correct": ({name: "ref" for name in CH00}, []),
        "all_stubs": ({}, []),
        "half_correct": ({first: "ref", third: "ref"}, []),
        # An endless loop and a dead Python process cost their own exercises only.
        "hang_and_crash": ({first: HANG, second: CRASH, third: "ref"}, []),
        "cheater": ({}, [CHEAT, "from circuitlab_solutions.ch00_setup import *"]),
    }
    for student, (answers, top) in submissions.items():
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(with_answers(release, answers, top), folder / NOTEBOOK)
    out = _run(root, "circuitlab_graders", "autograde", ASSIGNMENT, "--workers", "2")
    assert "all_correct              3/3" in out.stdout
    _run(root, "nbgrader", "generate_feedback", ASSIGNMENT)

    expected = {
        "all_correct": {first: 1, second: 1, third: 1},
        "all_stubs": {first: 0, second: 0, third: 0},
        "half_correct": {first: 1, second: 0, third: 1},
        "hang_and_crash": {first: 0, second: 0, third: 1},
        "cheater": {first: 0, second: 0, third: 0},
    }
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student, want in expected.items():
            notebook = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
            assert {g.name.removeprefix("check_"): g.auto_score for g in notebook.grades} == want, student
            assert all(g.manual_score is None for g in notebook.grades)
    # What formgrader shows comes from nbgrader's API.
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    api = NbGraderAPI(coursedir=CourseDirectory(root=str(root)))
    scores = {s["student"]: s["score"] for s in api.get_submissions(ASSIGNMENT)}
    assert scores == {student: float(sum(want.values())) for student, want in expected.items()}

    def feedback(student: str) -> str:
        return (root / "feedback" / student / ASSIGNMENT / NOTEBOOK.replace(".ipynb", ".html")).read_text()

    failing = lambda html: set(re.findall(r"(\w+) failed on the hidden cases", html))  # noqa: E731
    assert failing(feedback("all_correct")) == set()
    assert failing(feedback("all_stubs")) == set(CH00)
    assert failing(feedback("half_correct")) == {second}
    html = feedback("hang_and_crash")
    assert failing(html) == {first, second}
    assert "stopped after" in html and "crash" in html
    assert "not implemented yet" in feedback("all_stubs")
    seeds = json.loads((root / "circuitlab_course.json").read_text())["assignments"][ASSIGNMENT]["seeds"]
    for student in expected:
        assert not any(str(s) in feedback(student) for v in seeds.values() for s in v)


def test_plain_nbgrader_autograde_is_sandboxed_too(course):
    """The course's nbgrader_config.py makes nbgrader's own command the sandboxed grader."""
    root, _ = course
    release = nbformat.read(root / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    folder = root / "submitted" / "late_student" / ASSIGNMENT
    folder.mkdir(parents=True)
    first = CH00[0]
    nbformat.write(with_answers(release, {first: "ref"}, [CHEAT]), folder / NOTEBOOK)
    _run(root, "nbgrader", "autograde", ASSIGNMENT, "--student", "late_student")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "late_student")
        assert {g.name.removeprefix("check_"): g.auto_score for g in notebook.grades} == {
            name: float(name == first) for name in CH00}


def test_grading_in_an_nbgrader_kernel_is_refused(monkeypatch):
    """If nbgrader ever ran this course's notebook in a kernel (its config not in use),
    every check cell errors: zero points, never the student's own verdict."""
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")

    def logit_diff(logits, correct_token, wrong_token):
        return logits[0, -1, correct_token] - logits[0, -1, wrong_token]

    with pytest.raises(RuntimeError, match="autograded in a sandbox"):
        graders.check(logit_diff)


def test_public_checks_run_without_solutions():
    """What a student's `check` does with no `solutions` package: sanity and behaviour
    checks that pass a correct answer and reject a stub and known mistakes."""
    functions = {}
    for name in CH00:
        functions[name] = inspect.getsource(EXERCISES[name].reference_fn())
    script = f"""
import sys, json
sys.modules["circuitlab_solutions"] = None  # import solutions -> ImportError, as in a student release
import torch
from torch import Tensor
import circuitlab_graders as graders
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
assert "circuitlab_solutions" not in sys.modules or sys.modules["circuitlab_solutions"] is None
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
    from circuitlab_graders.models import GradingModel

    gm = GradingModel("gelu-2l", gelu_twin, "gelu-2l")
    assert {name: bool(ex.properties(gm)) for name, ex in EXERCISES.items()} == {name: True for name in EXERCISES}
