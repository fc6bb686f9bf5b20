"""This project's default view: what a sandbox grading circuitlab submissions must hide and show.

Hidden: every checkout or installed copy of the `graders` and `solutions` packages (a
source checkout is hidden whole, its git objects included: they hold every reference),
`circuitlab.sweeps` (the exact sweeps, answer code inside the runtime package), and the
paths the caller adds (the nbgrader course root). Shown again, read-only, where a
hidden tree covers them: the venv, the `circuitlab` package, and the model and tokenizer
caches, which the worker needs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from circuitlab_graders.sandbox.bwrap import SandboxUnavailable
from circuitlab_graders.sandbox.view import SYSTEM_MOUNTS, View, venv_python

COURSE_PACKAGES = ("circuitlab_graders", "circuitlab_solutions", "circuitlab.sweeps")
SOURCE_MARKERS = ("pyproject.toml", "setup.py", ".git")


def course_view(extra_hidden: list[Path] | tuple[Path, ...] = ()) -> View:
    hidden = set(hidden_paths()) | {Path(p).resolve() for p in extra_hidden}
    python = venv_python()
    circuitlab = _package_dir("circuitlab")
    caches = {"HF_HOME": _hf_home(), "CIRCUITLAB_CACHE": _circuitlab_cache()}
    needed = [python.parent.parent, circuitlab, *map(Path, caches.values())]
    unseen = [p for p in needed if p.exists() and any(p.resolve().is_relative_to(m) for m in SYSTEM_MOUNTS)]
    if unseen:  # the sandbox mounts its own empty /tmp (and /dev, /proc, /run) over the host's
        raise SandboxUnavailable(
            f"the sandbox gives learner code an empty /tmp of its own, so it cannot see {unseen[0]}, which "
            "the grading worker needs: put the venv, the course checkout and the model caches outside "
            f"{', '.join(map(str, SYSTEM_MOUNTS))} (for example under /var/tmp or your home directory)")
    expose = [(p, p) for p in needed if p.exists() and _under(p, hidden)]
    pythonpath = [circuitlab.parent] if _under(circuitlab, hidden) else []
    return View(hide=tuple(sorted(hidden)), expose=tuple(expose), pythonpath=tuple(pythonpath),
                env=caches, python=python)


def hidden_paths() -> list[Path]:
    """Where the course's answer packages live: their source checkouts whole, else the packages."""
    hidden: set[Path] = set()
    for name in COURSE_PACKAGES:
        for package in package_dirs(name):
            root = package.parent
            if any((root / marker).exists() for marker in SOURCE_MARKERS):
                hidden |= {root, *_git_dirs(root)}
            else:
                hidden.add(package)
    return sorted(hidden)


def package_dirs(name: str) -> set[Path]:
    """Every directory a `name` package (top-level or dotted) could be imported from: on
    sys.path, where setuptools' editable finders map its top-level package (they bypass
    sys.path), and where it is imported from now."""
    top, *rest = name.split(".")
    found = set()
    for entry in sys.path:
        candidate = Path(entry or os.getcwd()).joinpath(top, *rest)
        if (candidate / "__init__.py").exists():
            found.add(candidate.resolve())
    for finder in sys.meta_path:
        mapping = getattr(sys.modules.get(getattr(finder, "__module__", "")), "MAPPING", None)
        if isinstance(mapping, dict) and top in mapping and Path(mapping[top]).joinpath(*rest).is_dir():
            found.add(Path(mapping[top]).joinpath(*rest).resolve())
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
        found |= {Path(p).resolve() for p in spec.submodule_search_locations}
    return found


def _git_dirs(root: Path) -> set[Path]:
    """A git worktree's `.git` is a file naming its git dir, which lives in the main repository."""
    dot_git = root / ".git"
    if not dot_git.is_file():
        return set()
    gitdir = (root / dot_git.read_text().split("gitdir:", 1)[1].strip()).resolve()
    common = gitdir / "commondir"
    found = {gitdir}
    if common.exists():
        common_dir = (gitdir / common.read_text().strip()).resolve()
        found.add(common_dir)
        if (common_dir.parent / "pyproject.toml").exists():
            found.add(common_dir.parent)  # the main checkout: it holds the same answers
    return found


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _hf_home() -> str:
    cache = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return str(Path(os.environ.get("HF_HOME", Path(cache) / "huggingface")).resolve())


def _circuitlab_cache() -> str:
    from circuitlab.tokenizer import cache_dir

    return str(cache_dir().resolve())


def _under(path: Path, roots: set[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)
