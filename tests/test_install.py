"""A learner's install: the wheel, built from the sdist, installed (not editable) into a
fresh venv and used from an empty directory far from this checkout, as on Colab or a laptop.

About 2 minutes on the project's idle 2-core machine and 4 under a load of 5, a third of it pip
fetching the dependencies from PyPI (torch comes from the pinned CPU wheel on disk) and most of
the rest chapter 0's run. `-m "not install"` skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from circuitlab_graders.notebooks import chapter_paths, exercise_names, read_notebook

pytestmark = pytest.mark.install
REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "classroom", ".whl", "*.egg-info",
                                    "__pycache__", ".pytest_cache", ".ipynb_checkpoints")
TORCH = "torch==2.13.0"  # the Makefile's pin: a CPU build on this machine's disk


def _run(cmd, cwd, timeout=600, env=None) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    print(f"{time.perf_counter() - start:6.1f} s  {' '.join(str(c) for c in cmd)[:100]}")  # shown with -s
    return proc


class Install:
    def __init__(self, root: Path):
        self.root = root
        self.dist = root / "dist"
        self.venv = root / "venv-real"
        self.link = root / "venv"  # the same venv reached through a symlink
        # Nothing from this checkout or the test's own venv leaks in.
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env["HF_HUB_OFFLINE"] = "1"

    def build(self) -> None:
        source = self.root / "source"
        shutil.copytree(REPO, source, ignore=NOT_SOURCE)
        _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(self.dist)!r})"],
             cwd=source)
        (self.sdist,) = self.dist.glob("circuitlab-*.tar.gz")
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
              "-w", self.dist, self.sdist], cwd=self.root)
        (self.wheel,) = self.dist.glob("circuitlab-*.whl")

    def install(self) -> None:
        _run([sys.executable, "-m", "venv", self.venv], cwd=self.root)
        self.link.symlink_to(self.venv, target_is_directory=True)
        # --no-compile: byte-compiling ~180 packages costs more than the few modules a run imports
        pip = [self.venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile"]
        _run(pip + [TORCH], cwd=self.root, env=self.env)
        _run(pip + [self.wheel], cwd=self.root, env=self.env)

    def run(self, venv: Path, args, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
        return _run([venv / "bin" / args[0], *args[1:]], cwd=cwd, timeout=timeout, env=self.env)


@pytest.fixture(scope="module")
def installed() -> Iterator[Install]:
    with tempfile.TemporaryDirectory(prefix="circuitlab-install-") as root:  # 2 GB: never left behind
        install = Install(Path(root))
        install.build()
        install.install()
        yield install


def test_the_wheel_and_the_sdist_carry_the_course(installed):
    chapters = [p.name for c in chapter_paths() for p in (c, c.with_suffix(".ipynb"))]
    wheel = zipfile.ZipFile(installed.wheel)
    names = set(wheel.namelist())
    assert {f"circuitlab/chapters/{n}" for n in chapters} <= names
    assert {"circuitlab_graders/templates/offline/index.html.j2", "circuitlab_graders/templates/offline/conf.json",
            "circuitlab/data/circuitlab-2l.pt", "circuitlab/sweeps/exact.py", "circuitlab_solutions/ch00_setup.py"} <= names
    # no generic top-level import name: a learner's own solutions.py or graders/ would shadow it
    assert {n.split("/")[0] for n in names if "/" in n and ".dist-info/" not in n} == {
        "circuitlab", "circuitlab_graders", "circuitlab_solutions"}
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "circuitlab = circuitlab.cli:main" in wheel.read(entry_points).decode()
    sdist = {n.split("/", 1)[1] for n in tarfile.open(installed.sdist).getnames() if "/" in n}
    assert {f"chapters/{n}" for n in chapters} <= sdist and "graders/templates/offline/index.html.j2" in sdist
    # what the tests import comes with them, so the sdist's tests run
    assert {"tests/conftest.py", "tests/honest.py", "training/corpus.py", "training/scores.py",
            "training/train_circuitlab_2l.py"} <= sdist


# Run in the learner's directory with the venv's python: chapter 0 with the references pasted into
# its exercise cells, saved as Jupyter would, exported to HTML with the shipped template.
CHAPTER_0 = """
from pathlib import Path
import nbformat
import circuitlab_graders as graders
from circuitlab_graders.html import notebook_html
from circuitlab_graders.notebooks import execute, fill_with_solutions, scorecard

path = Path("00_setup.ipynb")
run = execute(fill_with_solutions(nbformat.read(path, as_version=4), path), workdir=Path.cwd(), allow_errors=False)
nbformat.write(run.notebook, path)
Path("00_setup.html").write_text(notebook_html(run.notebook), encoding="utf-8")
text, ok = scorecard("00_setup", run)
print(text)
print("graders from", graders.__file__)
raise SystemExit(0 if ok else 1)
"""


def test_a_learner_starts_works_through_chapter_0_and_sees_their_progress(installed, tmp_path):
    home = tmp_path / "learner"
    home.mkdir()
    started = installed.run(installed.venv, ["circuitlab", "start"], cwd=home)
    assert "copied:   00_setup.ipynb, 01_residual_patching.ipynb" in started.stdout
    assert sorted(p.name for p in home.iterdir()) == [c.with_suffix(".ipynb").name for c in chapter_paths()]

    run = installed.run(installed.venv, ["python", "-c", CHAPTER_0], cwd=home, timeout=900)
    expected = exercise_names(read_notebook(chapter_paths()[0]))
    assert all(f"PASS  {name}" in run.stdout for name in expected), run.stdout
    assert f"graders from {installed.venv}/lib/" in run.stdout  # the wheel's graders, not this checkout's
    assert "This notebook runs on" in (home / "00_setup.html").read_text()

    progress = installed.run(installed.venv, ["circuitlab", "progress"], cwd=home).stdout
    total = sum(len(exercise_names(read_notebook(c))) for c in chapter_paths())
    assert all(f"  {'passed':15s}  {name:38s} score 1.00\n" in progress for name in expected), progress
    assert f"  {'not tried':15s}  patch_residual_stream\n" in progress
    assert progress.rstrip().endswith(f"{len(expected)} of {total} exercises passed, 0 failed, "
                                      f"{total - len(expected)} not tried.")


COURSE_CODE = """
import json
import circuitlab_solutions as solutions, circuitlab_solutions.ch00_setup as reference
from circuitlab_graders import check

def logit_diff(logits, correct_token, wrong_token):
    from circuitlab_solutions.ch00_setup import logit_diff as answer
    return answer(logits, correct_token, wrong_token)

results = {"reference": check(reference.logit_diff), "importing": check(logit_diff)}
print(json.dumps({"circuitlab_solutions": solutions.__file__,
                  **{k: [r.score, r.feedback.splitlines()[0]] for k, r in results.items()}}))
"""


@pytest.mark.parametrize("through", ["venv", "symlink"])
def test_course_code_scores_zero_in_the_installed_wheel(installed, through, tmp_path):
    venv = installed.venv if through == "venv" else installed.link
    out = installed.run(venv, ["python", "-c", COURSE_CODE], cwd=tmp_path, timeout=300).stdout
    found = json.loads(out.splitlines()[-1])
    assert found["circuitlab_solutions"].startswith(f"{venv}/lib/")
    assert found["importing"][0] == 0.0 and "reads the course's own code" in found["importing"][1]
    assert found["reference"] == [0.0, "Scored zero: this `logit_diff` is the course's own code "
                                        "(from circuitlab_solutions.ch00_setup), not yours. Define the function "
                                        "yourself in the exercise cell and check that."]


# What is installed, read without importing anything (the venv below has no dependencies).
INSTALLED = """
import importlib.metadata, importlib.util, json, pathlib
solutions = importlib.util.find_spec("circuitlab_solutions")
mistakes = solutions and pathlib.Path(solutions.submodule_search_locations[0], "mistakes", "ch00_setup.py")
print(json.dumps({"versions": sorted(d.version for d in importlib.metadata.distributions()
                                     if d.metadata["Name"] == "circuitlab"),
                  "circuitlab_solutions": solutions is not None,
                  "known mistakes": bool(mistakes and "Mistake(" in mistakes.read_text())}))
"""


def test_the_student_wheel_and_the_full_one_replace_each_other(installed, tmp_path):
    from circuitlab_graders.student_release import build

    student = next((build(tmp_path / "student", wheel=True, log=lambda *_: None) / "dist").glob("*.whl"))
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    version = installed.wheel.name.split("-")[1]
    full = {"versions": [version], "circuitlab_solutions": True, "known mistakes": True}
    students = {"versions": [f"{version}+student"], "circuitlab_solutions": False, "known mistakes": False}
    # pip's handling of one distribution over another needs no dependencies: --no-deps keeps it to seconds
    for wheel, expected in ((installed.wheel, full), (student, students), (installed.wheel, full), (student, students)):
        installed.run(venv, ["python", "-m", "pip", "install", "--quiet", "--no-deps", wheel], cwd=empty)
        found = json.loads(installed.run(venv, ["python", "-c", INSTALLED], cwd=empty).stdout)
        assert found == expected, wheel.name
