"""The student distribution: the course without its answers.

    python -m graders student-release OUTDIR [--wheel]

writes OUTDIR as a source tree of the `circuitlab` package (pyproject, README, circuitlab/,
graders/, chapters/) without `solutions/`, where the references and the known mistakes live.
The declarations in graders/ hold no answer code, so they are copied as they are: without
solutions/ an exercise has no reference and no known mistakes, and `check(fn)` runs its
public properties through the same engine and guard. `circuitlab/sweeps/` (the exact
sweeps) ships, because the patching explorer needs it; the guard still treats it as answer
code. With `--wheel` it also builds the wheel into OUTDIR/dist.
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


def build(out: Path, *, wheel: bool = False, log=print) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO / package, out / package, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(chapters_dir(), out / "chapters", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "__init__.py"))
    shutil.copy2(REPO / "README.md", out / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text()
    pyproject = re.sub(r'\s*"solutions", "solutions.mistakes",', "", pyproject)
    (out / "pyproject.toml").write_text(pyproject)
    log(f"student release in {out}: the package without solutions/ (no references, no known mistakes)")
    if wheel:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out / "dist"), str(out)], check=True)
        for leftover in (out / "build", *out.glob("*.egg-info")):  # setuptools builds in place
            shutil.rmtree(leftover)
        log(f"wheel: {next((out / 'dist').glob('*.whl'))}")
    return out
