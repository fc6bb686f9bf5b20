"""Every exercise, in full and public mode: the reference passes, the chapter's stub is
reported as not implemented, every known mistake is rejected and named, and each
declaration's hint points at a real section of its chapter."""

from __future__ import annotations

import functools
import re

import pytest

import circuitlab_graders as graders
from circuitlab_graders.engine import Grader
from circuitlab_graders.hints import Attempts
from circuitlab_graders.models import grading_model
from circuitlab_graders.notebooks import chapter_paths, defined_function, read_notebook
from circuitlab_graders.registry import EXERCISES

NAMES = sorted(EXERCISES)
SPREAD_ACROSS_WORKERS = True  # ~350 independent gradings: one file on one worker was the suite's longest group


@functools.cache
def chapter_stubs() -> dict[str, object]:
    """The stub functions exactly as a learner first sees them in the chapters."""
    stubs = {}
    for chapter in chapter_paths():
        namespace: dict = {}
        exec("import torch\nfrom torch import Tensor\nfrom transformer_lens.hook_points import HookPoint", namespace)
        for cell in read_notebook(chapter).cells:
            if "exercise" in cell.metadata.get("tags", []):
                exec(cell.source, namespace)
                name = defined_function(cell.source)
                stubs[name] = namespace[name]
    return stubs


def headings(chapter: str) -> list[str]:
    path = next(p for p in chapter_paths() if p.stem == chapter)
    return re.findall(r"^# ## (.+)$", path.read_text(), re.MULTILINE)


def test_every_exercise_has_a_stub_and_a_check():
    assert sorted(chapter_stubs()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_declaration_names_a_section_of_its_chapter_and_a_hint(name):
    exercise = EXERCISES[name]
    assert exercise.section in headings(exercise.chapter), (exercise.section, headings(exercise.chapter))
    assert len(exercise.hint) > 40


def test_a_section_that_is_not_a_heading_is_caught():
    assert "The logit difference" not in headings("00_setup")  # the old hint's section name


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes(name):
    result = graders.grade(name, EXERCISES[name].reference_fn(), mode="full")
    assert result.passed, result.feedback
    assert result.score == 1.0
    assert "gelu-2l" in result.feedback and "gpt2-small" in result.feedback
    models = {case.model for case in result.cases}
    assert len(models) == 2 and len(result.cases) >= 3


@pytest.mark.parametrize("name", NAMES)
def test_reference_holds_every_public_property(name):
    result = graders.grade(name, EXERCISES[name].reference_fn(), mode="public")
    assert result.passed, result.feedback
    assert result.mode == "public" and len(result.cases) >= 2
    assert result.feedback.startswith(f"{len(result.cases)}/{len(result.cases)} public checks held on gelu-2l")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["full", "public"])
def test_stub_is_not_implemented(name, mode):
    result = graders.grade(name, chapter_stubs()[name], mode=mode)
    assert not result.passed and result.score == 0.0
    assert result.feedback.startswith("not implemented yet")
    assert "Traceback" not in result.feedback


MISTAKES = [(name, i) for name in NAMES for i in range(len(EXERCISES[name].mistakes))]


@functools.cache
def gelu_grader() -> Grader:
    return Grader([grading_model("gelu-2l")], attempts=Attempts())


@pytest.mark.parametrize("name,index", MISTAKES, ids=[f"{n}-{i}" for n, i in MISTAKES])
def test_known_mistake_is_rejected_and_named(name, index):
    """Graded on gelu-2l first: a mistake it shows there is rejected by the full check too (a
    failing case fails it), at a fraction of gpt2-small's cost (180 mistakes). One gelu-2l
    cannot show is graded on both models, as a learner's check is."""
    mistake = EXERCISES[name].mistakes[index]
    result = gelu_grader().grade(EXERCISES[name], mistake.fn, mode="full")
    if result.passed:
        result = graders.grade(name, mistake.fn, mode="full")
    assert not result.passed and result.score < 1.0
    assert f"It looks like you {mistake.description}." in result.feedback


def test_each_chapter_names_at_least_five_mistakes():
    per_chapter: dict[str, int] = {}
    for ex in EXERCISES.values():
        per_chapter[ex.chapter] = per_chapter.get(ex.chapter, 0) + len(ex.mistakes)
    assert per_chapter and min(per_chapter.values()) >= 5, per_chapter
