"""Honest learner code: copies of the course's reference implementations defined outside
the answer code, as a learner who wrote exactly the reference would have them."""

from __future__ import annotations

import importlib
import inspect
import tempfile
from pathlib import Path
from typing import Callable

_FOLDER = Path(tempfile.mkdtemp(prefix="learner-"))


def honest_copy(module: str, name: str) -> Callable:
    """`name` from a copy of the whole module that defines it (its helpers come along; a
    reference `module` re-exports is copied from where it is written), compiled from a file
    outside the course's packages."""
    module = getattr(importlib.import_module(module), name).__module__
    source = inspect.getsource(importlib.import_module(module))
    path = _FOLDER / f"{module.replace('.', '_')}.py"
    path.write_text(source)
    namespace: dict = {"__name__": f"learner_{module.replace('.', '_')}"}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace[name]


def readable_reference(exercise) -> Callable:
    """The honest copy of the reference a learner reads in solutions/ for `exercise`."""
    return honest_copy(f"circuitlab_solutions.ch{exercise.chapter}", exercise.name)
