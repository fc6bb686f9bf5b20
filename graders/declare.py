"""The vocabulary of an exercise's declaration (graders/chNN_*.py).

An `Exercise` names everything the engine needs besides the learner's function: cases
(inputs on which the answer is compared with the reference's), the comparison, public
properties (behaviour the chapter text states, checked without the reference), known
mistakes, a hint and the chapter section that teaches it.

Declarations hold no answer code: the reference is named by a string and imported on
first use, and an exercise's known mistakes are declared beside the references, in
`circuitlab_solutions.mistakes.chNN_*` (a `MISTAKES` dict: exercise name -> tuple of `Mistake`), read
on first use. A student release is the package without `solutions/`: the same
declarations load, with no reference and no known mistakes, and check the public
properties.
"""

from __future__ import annotations

import functools
import importlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from circuitlab_graders.inputs import MODEL, Cache, Hook, content_id

if TYPE_CHECKING:
    from circuitlab_graders.models import GradingModel

__all__ = ["MODEL", "Cache", "Case", "Exercise", "Hook", "Mistake", "Property", "known_mistakes"]

# compare(got, expected) -> None when they agree, else a sentence saying how they differ.
Compare = Callable[[Any, Any], Optional[str]]


@dataclass(frozen=True)
class Case:
    """Inputs on which the learner's answer must equal the reference's. Its identity is
    its content (see `circuitlab_graders.inputs`); the label only names it in feedback."""

    label: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class Property:
    """Behaviour the chapter states, checked without the reference: the learner's
    function is called once per entry of `calls`, and `holds(answers)` returns None, or
    what is wrong. Anything `holds` needs from the model is computed when the property
    is built, before any learner code runs."""

    label: str
    calls: tuple[Mapping[str, Any], ...]
    holds: Callable[[list], Optional[str]]


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation, and what to tell a learner whose answers match it."""

    description: str  # what the learner's code did, e.g. "patched every position"
    fix: str  # what to do instead
    fn: Callable[..., Any]  # the wrong implementation, same signature as the reference


@dataclass(frozen=True)
class Loop:
    """The straightforward loop a chapter teaches for a sweep: one forward pass of
    `inputs[prompt]` per cell. An honest learner may write exactly that, so each call's
    time limit covers it (Grader.time_limit): `passes(model, inputs)` counts its passes."""

    passes: Callable[[Any, Mapping[str, Any]], int]
    prompt: str = "clean_prompt"


def _no_properties(gm: "GradingModel") -> list[Property]:
    return []


@dataclass(frozen=True)
class Exercise:
    name: str
    chapter: str  # e.g. "01_residual_patching"
    section: str  # the `##` heading of the chapter that teaches it, for hints
    hint: str  # shown from the second failure in a row
    cases: Callable[["GradingModel", random.Random], list[Case]]
    compare: Compare
    properties: Callable[["GradingModel"], list[Property]] = _no_properties
    # "module:function"; by default the same name in solutions.ch<chapter>.
    reference: Union[str, Callable[..., Any], None] = None
    time_limit_s: Optional[float] = None  # per call; default: see Grader.time_limit
    loop: Optional[Loop] = None  # a sweep's one-pass-per-cell loop, which its time limit allows

    def reference_fn(self) -> Callable[..., Any]:
        if callable(self.reference):
            return self.reference
        module, _, name = (self.reference or f"circuitlab_solutions.ch{self.chapter}:{self.name}").partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as err:
            raise RuntimeError(
                f"{self.name}: its reference ({module}) is not installed here. This looks like a student "
                "release; its checks are the public ones (graders.grade(..., mode='public'))") from err

    @property
    def mistakes(self) -> tuple[Mistake, ...]:
        """The known mistakes declared for this exercise in solutions/ (none without it)."""
        return tuple(known_mistakes(self.chapter).get(self.name, ()))

    def case_id(self, model_key: str, case: Case) -> str:
        """The case's identity: exercise, model and inputs (never the label)."""
        return content_id((self.name, model_key, dict(case.inputs)))


MISTAKES_PACKAGE = "circuitlab_solutions.mistakes"


@functools.lru_cache(maxsize=None)
def known_mistakes(chapter: str) -> Mapping[str, tuple[Mistake, ...]]:
    """Exercise name -> its known mistakes, from circuitlab_solutions.mistakes.ch<chapter>; empty
    where solutions/ is absent (a student release) or the chapter declares none."""
    module = f"{MISTAKES_PACKAGE}.ch{chapter}"
    try:
        return importlib.import_module(module).MISTAKES
    except ModuleNotFoundError as err:
        if err.name in ("circuitlab_solutions", MISTAKES_PACKAGE, module):
            return {}
        raise
