"""Every exercise of the course, by name."""

from __future__ import annotations

from graders import (
    ch00_setup,
    ch01_residual_patching,
    ch02_head_patching,
    ch03_attention_patterns,
    ch05_attribution_patching,
)
from graders.engine import Exercise

CHAPTER_MODULES = (
    ch00_setup, ch01_residual_patching, ch02_head_patching, ch03_attention_patterns, ch05_attribution_patching,
)

EXERCISES: dict[str, Exercise] = {ex.name: ex for module in CHAPTER_MODULES for ex in module.EXERCISES}


def exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"No exercise called {name!r}. Exercises: {known}.")
    return EXERCISES[name]
