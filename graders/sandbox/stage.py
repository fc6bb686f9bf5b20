"""Copy the modules the sandbox side imports into a directory of their own.

The real `graders/` is hidden in the sandbox, yet the zygote must import
`circuitlab_graders.sandbox.zygote`: so the sandbox package (and any module a caller names) is
copied into a fresh directory that the sandbox mounts read-only and puts first on sys.path.
Parent packages get empty `__init__.py` stubs: a staged module must not rely on them.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

ALWAYS = ("circuitlab_graders.sandbox", "circuitlab_graders.limits")  # the sandbox package, and the limits it reads


def stage(modules: tuple[str, ...] | list[str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="circuitlab-sandbox-stage-"))
    for name in dict.fromkeys((*ALWAYS, *modules)):
        _copy(name, root)
    return root


def _copy(name: str, root: Path) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"cannot stage {name!r}: no such module with a file")
    parts = name.split(".")
    for depth in range(1, len(parts)):
        package = root.joinpath(*parts[:depth])
        package.mkdir(exist_ok=True)
        (package / "__init__.py").touch()  # a stub, or the staged package's own file later
    if spec.submodule_search_locations:
        shutil.copytree(Path(spec.origin).parent, root.joinpath(*parts), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(spec.origin, root.joinpath(*parts[:-1], parts[-1] + ".py"))
