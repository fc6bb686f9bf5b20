"""The first check of a session: it says at once what it is doing, and `prepare` (run by each
chapter's import cell) gets the chapter's checks ready in the background, so that a check
pays only for the learner's own function; a check never grades beside the preparation."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

import circuitlab_graders as graders
from circuitlab_graders.engine import Grader
from circuitlab_graders.hints import Attempts
from circuitlab_graders.models import grading_model
from circuitlab_graders.registry import EXERCISES
from tests.honest import readable_reference


@pytest.fixture
def gelu(monkeypatch):
    """circuitlab_graders' own grader, on gelu-2l alone, for this test only."""
    grader = Grader([grading_model("gelu-2l")], attempts=Attempts())
    monkeypatch.setattr(graders, "_GRADER", grader)
    monkeypatch.setattr(graders, "_PREPARING", None)
    monkeypatch.setattr(graders, "_PREPARED", set())
    return grader


class SlowToLoad(Grader):
    """A grader whose models take 3 s to load, as a session's first check waits for them."""

    @property
    def models(self):
        if self._models is None:
            time.sleep(3)
            self._models = [grading_model("gelu-2l")]
        return self._models


class Timed:
    """stdout, remembering when each piece was written."""

    def __init__(self):
        self.writes: list[tuple[float, str]] = []

    def write(self, text):
        self.writes.append((time.perf_counter(), text))
        return len(text)

    def flush(self):
        pass


def test_the_first_check_says_what_it_is_doing_within_2_s(monkeypatch):
    monkeypatch.setattr(graders, "_GRADER", SlowToLoad(attempts=Attempts()))
    fn = readable_reference(EXERCISES["logit_diff"])
    out = Timed()
    monkeypatch.setattr(sys, "stdout", out)
    start = time.perf_counter()
    result = graders.check(fn)
    monkeypatch.undo()
    assert result.passed, result.feedback
    (first_at, first), *_ = [(t, text) for t, text in out.writes if text.strip()]
    assert first_at - start < 2, first
    assert first.startswith("Checking logit_diff: getting the grading models ready first"), first
    assert "[PASS] logit_diff" in "".join(text for _, text in out.writes)
    assert out.writes[-1][0] - start >= 3  # the result came after the models


def test_in_a_notebook_the_status_line_is_replaced_by_the_result():
    script = (
        "import json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "from IPython.utils.capture import capture_output\n"
        "import circuitlab_graders as graders, circuitlab_solutions.ch00_setup as course\n"
        "InteractiveShell.instance()\n"
        "with capture_output() as cap:\n"
        "    graders.check(course.logit_diff)\n"  # the course's own code: a verdict without grading
        "print(json.dumps([[o.data.get('text/plain', ''), o.update, (o.transient or {}).get('display_id'),\n"
        "                   'application/vnd.circuitlab.result+json' in o.data] for o in cap.outputs]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (status, shown_first, status_id, _), (result, update, result_id, saved) = json.loads(proc.stdout.splitlines()[-1])
    assert status.startswith("Checking logit_diff") and not shown_first
    assert result.startswith("[FAIL] logit_diff") and update and saved and result_id == status_id is not None


def _exercises(chapter):
    return [e for e in EXERCISES.values() if e.chapter == chapter]


def test_prepare_computes_a_chapters_reference_numbers_in_the_background(gelu, monkeypatch):
    monkeypatch.setattr(graders, "_in_learners_kernel", lambda: True)
    graders.prepare("00_setup")
    thread = graders._PREPARING
    assert isinstance(thread, threading.Thread) and thread.daemon
    thread.join(timeout=600)
    (gm,) = gelu.models
    for exercise in _exercises("00_setup"):
        assert all(exercise.case_id(gm.key, case) in gelu._expected for case in gelu.cases(exercise, gm))
    assert not any(e.chapter != "00_setup" for e in EXERCISES.values()
                   if any(k.startswith(e.name) for k in map(str, gelu._cases)))

    computed = dict(gelu._expected)
    result = graders.check(readable_reference(EXERCISES["next_token_prediction"]))
    assert result.passed and gelu._expected == computed  # the check computed no reference number itself
    assert graders._PREPARING is None


def test_a_check_stops_the_preparation_and_waits_for_it(gelu, monkeypatch):
    monkeypatch.setattr(graders, "_in_learners_kernel", lambda: True)
    graders.prepare("01_residual_patching")
    preparing = graders._PREPARING
    result = graders.check(readable_reference(EXERCISES["patch_residual_stream"]))
    assert result.passed, result.feedback
    assert not preparing.is_alive() and graders._PREPARING is None
    graders.prepare("01_residual_patching")  # once per chapter and session (its import cell run again)
    assert graders._PREPARING is None


@pytest.mark.parametrize("where", ["a script", "nbgrader autograde", "a classroom sandbox"])
def test_prepare_does_nothing_outside_a_learners_kernel(gelu, monkeypatch, where):
    from circuitlab import progress

    if where != "a script":
        monkeypatch.setattr(progress, "_in_notebook", lambda: True)
        monkeypatch.setenv(*{"nbgrader autograde": ("NBGRADER_EXECUTION", "autograde"),
                             "a classroom sandbox": ("CIRCUITLAB_PLAN", "/plan")}[where])
    graders.prepare("00_setup")
    assert graders._PREPARING is None and gelu._expected == {}
