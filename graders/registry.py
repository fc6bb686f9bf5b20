"""Every exercise of the course, by name: the declarations of every graders/chNN_*.py
module, found by name, so a new chapter needs no edit here."""

from __future__ import annotations

import importlib
import pkgutil
import re

import circuitlab_graders as graders
from circuitlab_graders.declare import Exercise

CHAPTER_MODULE = re.compile(r"ch\d\d_\w+$")


def chapter_modules() -> list:
    names = sorted(m.name for m in pkgutil.iter_modules(graders.__path__) if CHAPTER_MODULE.match(m.name))
    return [importlib.import_module(f"circuitlab_graders.{name}") for name in names]


def _collect() -> dict[str, Exercise]:
    found: dict[str, Exercise] = {}
    for module in chapter_modules():
        for ex in module.EXERCISES:
            if ex.name in found:
                raise ValueError(f"exercise {ex.name!r} is declared twice ({found[ex.name].chapter}, {ex.chapter})")
            found[ex.name] = ex
    return found


EXERCISES: dict[str, Exercise] = _collect()


def exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"No exercise called {name!r}. Exercises: {known}.")
    return EXERCISES[name]
