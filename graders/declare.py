"""The vocabulary of an exercise's declaration (graders/chNN_*.py).

An `Exercise` names everything the engine needs besides the learner's function: cases
(inputs on which the answer is compared with the reference's), the comparison, public
properties (behaviour the chapter text states, checked without the reference), known
mistakes, a hint and the chapter section that teaches it.

Declarations import no answer code when they load: the reference is named by a string
and imported on first use, and known mistakes reach answer code through
`answer_module`, so a student release without `solutions/` loads the same declarations.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from graders.inputs import MODEL, Cache, Hook, fingerprint

if TYPE_CHECKING:
    from graders.models import GradingModel

__all__ = ["MODEL", "Cache", "Case", "Exercise", "Hook", "Mistake", "Property", "answer_module"]

# compare(got, expected) -> None when they agree, else a sentence saying how they differ.
Compare = Callable[[Any, Any], Optional[str]]


@dataclass(frozen=True)
class Case:
    """Inputs on which the learner's answer must equal the reference's. Its identity is
    its content (see `graders.inputs`); the label only names it in feedback."""

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
    mistakes: tuple[Mistake, ...] = ()
    # "module:function"; by default the same name in solutions.ch<chapter>.
    reference: Union[str, Callable[..., Any], None] = None
    time_limit_s: Optional[float] = None  # per call; default: see Grader.time_limit
    loop: Optional[Loop] = None  # a sweep's one-pass-per-cell loop, which its time limit allows

    def reference_fn(self) -> Callable[..., Any]:
        if callable(self.reference):
            return self.reference
        module, _, name = (self.reference or f"solutions.ch{self.chapter}:{self.name}").partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as err:
            raise RuntimeError(
                f"{self.name}: its reference ({module}) is not installed here. This looks like a student "
                "release; its checks are the public ones (graders.grade(..., mode='public'))") from err

    def case_id(self, model_key: str, case: Case) -> str:
        """The case's identity: exercise, model and inputs (never the label)."""
        return fingerprint((self.name, model_key, dict(case.inputs)))


class answer_module:
    """A module of answer code, imported on first use (known mistakes built from the
    references or the fast sweeps use it, so declarations load without them)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)
