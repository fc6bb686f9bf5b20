"""The student distribution: the course without its answers.

    python -m graders student-release OUTDIR [--wheel]

writes OUTDIR as a source tree of the `circuitlab` package (pyproject, README, circuitlab/,
graders/, chapters/) without `solutions/` (the references), chapter 5's estimates
(circuitlab/sweeps/attribution.py) and the patching explorer that uses them, and with
every chapter's declarations stripped of their known mistakes: each `Exercise(...)` loses
its `mistakes=` and `reference=`, and every module-level function or name no longer
reachable from what remains is removed. What is left checks exercises the way a student
release should: `check(fn)` runs the public properties through the same engine and guard.
With `--wheel` it also builds the wheel into OUTDIR/dist. `circuitlab/sweeps/` (the exact
sweeps) ships, because the patching explorer needs it; the guard still treats it as answer code.
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
STRIPPED_KEYWORDS = ("mistakes", "reference")
# Chapter 5's references (their code is the answer) and the explorer, which needs them.
NOT_RELEASED = ("circuitlab/sweeps/attribution.py", "circuitlab/explore")
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


def build(out: Path, wheel: bool = False, log=print) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO / package, out / package, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(chapters_dir(), out / "chapters", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "__init__.py"))
    shutil.copy2(REPO / "README.md", out / "README.md")
    for path in NOT_RELEASED:
        shutil.rmtree(out / path) if (out / path).is_dir() else (out / path).unlink()
    modules = {p.stem: p.read_text() for p in sorted((out / "graders").glob("ch*.py")) if CHAPTER_MODULE.match(p.name)}
    keep = _imported_between_chapters(modules)
    for stem, source in modules.items():
        (out / "graders" / f"{stem}.py").write_text(strip_declarations(source, keep.get(stem, set())))
    pyproject = (REPO / "pyproject.toml").read_text()
    pyproject = re.sub(r'\n\s*"solutions",', "", pyproject).replace(' "circuitlab.explore",', "")
    (out / "pyproject.toml").write_text(pyproject)
    log(f"student release in {out}: no solutions/, {len(modules)} chapter declarations without known mistakes")
    if wheel:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out / "dist"), str(out)], check=True)
        for leftover in (out / "build", *out.glob("*.egg-info")):  # setuptools builds in place
            shutil.rmtree(leftover)
        log(f"wheel: {next((out / 'dist').glob('*.whl'))}")
    return out
