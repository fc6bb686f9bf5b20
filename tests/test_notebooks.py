"""The chapters: .py and .ipynb hold the same cells, and each runs top to bottom with the
references filled in, every check passing."""

from __future__ import annotations

import subprocess
import sys

import jupytext
import nbformat
import pytest

from circuitlab.course_files import chapters_dir
from circuitlab_graders.notebooks import chapter_paths, exercise_names, read_notebook, scorecard

CHAPTER_FILES = chapter_paths()


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("chapter", CHAPTER_FILES, ids=[p.stem for p in CHAPTER_FILES])
def test_pair_in_sync(chapter):
    paired = chapter.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run jupytext --sync {chapter.name}"
    assert _cells(nbformat.read(paired, as_version=4)) == _cells(jupytext.read(chapter))


@pytest.mark.parametrize("chapter", CHAPTER_FILES, ids=[p.stem for p in CHAPTER_FILES])
def test_chapter_runs_with_references(chapter, executed_chapter):
    assert exercise_names(read_notebook(chapter)), "a chapter without check cells"
    run = executed_chapter(chapter)
    text, ok = scorecard(chapter.stem, run)
    assert not run.errors, run.errors
    assert ok, text
    assert "This notebook runs on" in str(run.notebook.cells)


def test_cli_check_fails_a_stub_notebook_with_a_scorecard():
    chapter = chapters_dir() / "00_setup.ipynb"
    proc = subprocess.run([sys.executable, "-m", "circuitlab_graders", "check", str(chapter)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  next_token_prediction" in proc.stdout
    assert "not implemented yet" in proc.stdout
