"""The student distribution: the course without its answers.

    python -m circuitlab_graders student-release OUTDIR [--wheel]

writes OUTDIR as a source tree of the `circuitlab` package (pyproject, README, circuitlab/,
graders/, chapters/) without `solutions/`, where the references and the known mistakes live,
and without `circuitlab/sweeps/` (the exact sweeps and the attribution estimates: the answers to
the sweep exercises of chapters 1, 2, 5 and 6) and `circuitlab/explore/` (the patching explorer,
which needs them). The declarations in graders/ hold no answer code, so they are copied as they
are: without solutions/ an exercise has no reference and no known mistakes, and `check(fn)` runs
its public properties through the same engine and guard. With `--wheel` it also builds the wheel
into OUTDIR/dist.

It stays the `circuitlab` distribution, at the full one's version with the local label
"+student" (circuitlab-0.1.0+student-py3-none-any.whl): pip then replaces one with the other
whichever is installed (two distribution names would both stay installed, sharing files, and
the references would outlive the student wheel), and a person tells them apart by the file
name, `pip show circuitlab` and the README it carries, which is its own (STUDENT_README).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from circuitlab.course_files import chapters_dir

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("circuitlab", "graders")
LOCAL_LABEL = "student"
STUDENT_README = """\
# circuitlab {version}: the student release

A hands-on, auto-graded course in activation patching with TransformerLens 4, as handed out in
a class. This is the student release: its checks are the public ones (the properties each
chapter states), and it holds no reference solutions and no known mistakes. Your instructor's
autograder runs the full check, with hidden cases, on what you submit.

## Install and start

In a fresh virtual environment (`python3 -m venv venv && source venv/bin/activate`):

```bash
# Without a GPU, install the CPU build of torch first (an unpinned torch is a CUDA build of several GB).
pip install torch --index-url https://download.pytorch.org/whl/cpu
pip install circuitlab-{version}-py3-none-any.whl
circuitlab start course                  # copies the chapter notebooks into ./course
jupyter lab course                       # then open 00_setup.ipynb
circuitlab check course/00_setup.ipynb   # run a notebook in a fresh kernel and grade it, with the reasons
circuitlab progress course               # every exercise: passed, failed, not implemented or not tried
```

On Colab: `%pip install` the wheel from your Drive, then `!python -m circuitlab start
/content/drive/MyDrive/circuitlab` and open the notebooks from Drive. On JupyterHub: in a
terminal, `python -m pip install` the wheel and `python -m circuitlab start ~/circuitlab`.

In each chapter, replace `raise NotImplementedError` with your code, run the cell, then its
check cell: it says what passed and, when something failed, the first failing case, the
mistake it recognises and, on later tries, a hint.

## Which circuitlab is installed

`pip show circuitlab` says `Version: {version}` for this release. The full course (same name,
version without `+{label}`) carries the references; installing either wheel replaces the other.
"""
# The answer code outside solutions/, and the explorer that runs it.
NOT_RELEASED = ("circuitlab/sweeps", "circuitlab/explore")


def student_pyproject(pyproject: str) -> tuple[str, str]:
    """The full course's pyproject.toml as the student release's, and the release's version."""
    version = re.search(r'^version = "([^"+]+)"$', pyproject, re.MULTILINE).group(1) + f"+{LOCAL_LABEL}"
    pyproject = re.sub(r'^version = ".*"$', f'version = "{version}"', pyproject, count=1, flags=re.MULTILINE)
    pyproject = re.sub(r'^(description = ".*)"$', r'\1 (student release: public checks, no references)"',
                       pyproject, count=1, flags=re.MULTILINE)
    for package in ("circuitlab_solutions", "circuitlab_solutions.mistakes", "circuitlab.sweeps", "circuitlab.explore"):
        pyproject = pyproject.replace(f' "{package}",', "").replace(f'"{package}", ', "")
    pyproject = pyproject.replace('"circuitlab_solutions" = "circuitlab_solutions"\n', "")  # no folder to map
    return re.sub(r"\n[ \t]+\n", "\n", pyproject), version  # a line left empty


def build(out: Path, *, wheel: bool = False, log=print) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO / package, out / package, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(chapters_dir(), out / "chapters", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "__init__.py"))
    for path in NOT_RELEASED:
        if (out / path).exists():
            shutil.rmtree(out / path)
    pyproject, version = student_pyproject((REPO / "pyproject.toml").read_text())
    (out / "pyproject.toml").write_text(pyproject)
    (out / "README.md").write_text(STUDENT_README.format(version=version, label=LOCAL_LABEL))
    log(f"student release in {out}: the package without solutions/, circuitlab/sweeps/ and circuitlab/explore/")
    if wheel:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out / "dist"), str(out)], check=True)
        for leftover in (out / "build", *out.glob("*.egg-info")):  # setuptools builds in place
            shutil.rmtree(leftover)
        log(f"wheel: {next((out / 'dist').glob('*.whl'))}")
    return out
