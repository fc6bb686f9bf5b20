"""The student distribution: the course without its answers.

    python -m graders student-release OUTDIR [--wheel]

writes OUTDIR as a source tree of the `circuitlab` package (pyproject, README, circuitlab/,
graders/, chapters/) without `solutions/` (the references) and with
every chapter's declarations stripped of their known mistakes: each `Exercise(...)` loses
its `mistakes=` and `reference=`, and every module-level function or name no longer
reachable from what remains is removed. What is left checks exercises the way a student
release should: `check(fn)` runs the public properties through the same engine and guard.
With `--wheel` it also builds the wheel into OUTDIR/dist. `circuitlab/sweeps/` (the exact
sweeps) ships, because the patching explorer needs it; the guard still treats it as answer code.

It stays the `circuitlab` distribution, at the full one's version with the local label
"+student" (circuitlab-0.1.0+student-py3-none-any.whl): pip then replaces one with the other
whichever is installed (two distribution names would both stay installed, sharing files, and
the references would outlive the student wheel), and a person tells them apart by the file
name, `pip show circuitlab` and the README it carries, which is its own (STUDENT_README).
"""

from __future__ import annotations

import ast
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
STRIPPED_KEYWORDS = ("mistakes", "reference")
CHAPTER_MODULE = re.compile(r"ch\d\d_\w+\.py$")


def strip_declarations(source: str, keep: set[str] = frozenset()) -> str:
    """A chapter's declaration module without its known mistakes: `keep` names other modules
    import from it."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Exercise":
            node.keywords = [k for k in node.keywords if k.arg not in STRIPPED_KEYWORDS]
    defined = {name: stmt for stmt in tree.body for name in _defines(stmt)}
    roots = [stmt for stmt in tree.body if not _defines(stmt) or "EXERCISES" in _defines(stmt)
             or set(_defines(stmt)) & keep]
    reachable: set[str] = set()
    pending = [name for stmt in roots for name in _uses(stmt)]
    while pending:
        name = pending.pop()
        if name in reachable or name not in defined:
            continue
        reachable.add(name)
        pending += _uses(defined[name])
    tree.body = [stmt for stmt in tree.body if not _defines(stmt) or stmt in roots
                 or set(_defines(stmt)) & reachable]
    used = {name for stmt in tree.body if not isinstance(stmt, ast.ImportFrom) for name in _uses(stmt)} | set(keep)
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
            stmt.names = [a for a in stmt.names if (a.asname or a.name) in used]
    tree.body = [stmt for stmt in tree.body if not (isinstance(stmt, ast.ImportFrom) and not stmt.names)]
    return ast.unparse(tree) + "\n"


def _defines(stmt: ast.stmt) -> list[str]:
    """Module-level names a statement defines (imports excepted: they stay)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _uses(stmt: ast.stmt) -> list[str]:
    return [n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)]


def _imported_between_chapters(modules: dict[str, str]) -> dict[str, set[str]]:
    """module stem -> names other chapter modules import from it."""
    wanted: dict[str, set[str]] = {stem: set() for stem in modules}
    for source in modules.values():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("graders.ch"):
                stem = node.module.split(".", 1)[1]
                wanted.setdefault(stem, set()).update(alias.name for alias in node.names)
    return wanted


def student_pyproject(pyproject: str) -> tuple[str, str]:
    """The full course's pyproject.toml as the student release's, and the release's version."""
    version = re.search(r'^version = "([^"+]+)"$', pyproject, re.MULTILINE).group(1) + f"+{LOCAL_LABEL}"
    pyproject = re.sub(r'^version = ".*"$', f'version = "{version}"', pyproject, count=1, flags=re.MULTILINE)
    pyproject = re.sub(r'^(description = ".*)"$', r'\1 (student release: public checks, no references)"',
                       pyproject, count=1, flags=re.MULTILINE)
    return re.sub(r'\n\s*"solutions",', "", pyproject), version


def build(out: Path, wheel: bool = False, log=print) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO / package, out / package, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(chapters_dir(), out / "chapters", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "__init__.py"))

    modules = {p.stem: p.read_text() for p in sorted((out / "graders").glob("ch*.py")) if CHAPTER_MODULE.match(p.name)}
    keep = _imported_between_chapters(modules)
    for stem, source in modules.items():
        (out / "graders" / f"{stem}.py").write_text(strip_declarations(source, keep.get(stem, set())))
    pyproject, version = student_pyproject((REPO / "pyproject.toml").read_text())
    (out / "pyproject.toml").write_text(pyproject)
    (out / "README.md").write_text(STUDENT_README.format(version=version, label=LOCAL_LABEL))
    log(f"student release in {out}: no solutions/, {len(modules)} chapter declarations without known mistakes")
    if wheel:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out / "dist"), str(out)], check=True)
        for leftover in (out / "build", *out.glob("*.egg-info")):  # setuptools builds in place
            shutil.rmtree(leftover)
        log(f"wheel: {next((out / 'dist').glob('*.whl'))}")
    return out
