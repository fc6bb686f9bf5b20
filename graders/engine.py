"""The grading engine: one loop that grades any exercise from its declaration.

An exercise declares its reference, how to build test cases on a model, how to
compare an answer with the reference's, and a library of known mistakes. The
engine runs the learner's function on every case, scores the share of cases
passed, and, when the learner's answers match a known mistake, names it.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from circuitlab import progress
from graders.models import GradingModel, grading_models


@dataclass(frozen=True)
class Case:
    """One input to an exercise. `make_args` builds fresh arguments for every call, so
    a function that edits its inputs in place cannot spoil the next call."""

    label: str
    make_args: Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation, and what to tell a learner whose answers match it."""

    description: str  # what the learner's code did, e.g. "patched every position"
    fix: str  # what to do instead
    fn: Callable[..., Any]  # the wrong implementation, same signature as the reference


# compare(got, expected) -> None when they agree, else a sentence saying how they differ.
Compare = Callable[[Any, Any], Optional[str]]


@dataclass(frozen=True)
class Exercise:
    name: str
    chapter: str  # e.g. "01_residual_patching"
    section: str  # the chapter section that teaches it, for hints
    reference: Callable[..., Any]
    cases: Callable[[GradingModel, random.Random], list[Case]]
    compare: Compare
    mistakes: tuple[Mistake, ...] = ()
    seed: int = 0


@dataclass
class CaseResult:
    model: str
    label: str
    passed: bool
    message: str = ""


@dataclass
class Result:
    exercise: str
    passed: bool
    score: float
    feedback: str
    cases: list[CaseResult] = field(default_factory=list)

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.exercise} (score {self.score:.2f})\n{self.feedback}"

    def _repr_markdown_(self) -> str:
        mark = "✅" if self.passed else "❌"
        body = self.feedback.replace("\n", "  \n")
        return f"{mark} **{self.exercise}** — score {self.score:.2f}  \n{body}"


class NotImplementedYet(Exception):
    """The learner's function is still the stub."""


class LearnerError(Exception):
    """The learner's function raised; the message points at the learner's line."""


def _learner_frame(tb_frames: list[traceback.FrameSummary], fn: Callable) -> Optional[traceback.FrameSummary]:
    code = getattr(fn, "__code__", None)
    own = [f for f in tb_frames if code is not None and f.filename == code.co_filename]
    return own[-1] if own else None


def call_learner(fn: Callable, args: dict[str, Any]) -> Any:
    """Call learner code, turning the stub and crashes into readable messages."""
    try:
        with torch.no_grad():
            return fn(**args)
    except NotImplementedError as err:
        frames = traceback.extract_tb(err.__traceback__)
        # Raised by the learner's own function body: that is the stub, not a library limit.
        if frames and getattr(fn, "__code__", None) and frames[-1].filename == fn.__code__.co_filename:
            raise NotImplementedYet() from None
        raise LearnerError(_describe_exception(err, fn)) from None
    except Exception as err:  # learner code can raise anything
        raise LearnerError(_describe_exception(err, fn)) from None


def _describe_exception(err: BaseException, fn: Callable) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = _learner_frame(frames, fn)
    message = f"{type(err).__name__}: {err}"
    if where is None:
        return f"your function raised {message}"
    line = (where.line or "").strip()
    return f"your function raised {message}\n  at line {where.lineno} in {where.name}: {line}"


class Grader:
    """Grades exercises on a set of models, caching cases and reference answers so a
    learner's repeated checks only pay for the learner's own function."""

    def __init__(self, models: Optional[list[GradingModel]] = None) -> None:
        self._models = models
        self._cases: dict[tuple[str, str], list[Case]] = {}
        self._expected: dict[tuple[str, str, str], Any] = {}
        self._mistaken: dict[tuple[str, int, str, str], Any] = {}

    @property
    def models(self) -> list[GradingModel]:
        if self._models is None:
            self._models = grading_models()
        return self._models

    def cases(self, exercise: Exercise, gm: GradingModel) -> list[Case]:
        key = (exercise.name, gm.key)
        if key not in self._cases:
            rng = random.Random(f"{exercise.name}/{gm.key}/{exercise.seed}")
            self._cases[key] = exercise.cases(gm, rng)
        return self._cases[key]

    def expected(self, exercise: Exercise, gm: GradingModel, case: Case) -> Any:
        key = (exercise.name, gm.key, case.label)
        if key not in self._expected:
            with torch.no_grad():
                self._expected[key] = exercise.reference(**case.make_args())
        return self._expected[key]

    def mistaken(self, exercise: Exercise, index: int, gm: GradingModel, case: Case) -> Any:
        """What known mistake `index` answers on `case` (cached; None if it crashes)."""
        key = (exercise.name, index, gm.key, case.label)
        if key not in self._mistaken:
            try:
                self._mistaken[key] = call_learner(exercise.mistakes[index].fn, case.make_args())
            except (LearnerError, NotImplementedYet):
                self._mistaken[key] = None
            finally:
                gm.model.reset_hooks()
        return self._mistaken[key]

    def first_match(self, exercise: Exercise, failures: list[tuple[GradingModel, Case, Any]]) -> Optional[Mistake]:
        """The first known mistake whose answers equal the learner's on every failed case."""
        for index, mistake in enumerate(exercise.mistakes):
            if all(
                (wrong := self.mistaken(exercise, index, gm, case)) is not None
                and exercise.compare(got, wrong) is None
                for gm, case, got in failures
            ):
                return mistake
        return None

    def grade(self, exercise: Exercise, fn: Callable) -> Result:
        with progress.quiet():  # a check shows its verdict, not the references' progress bars
            return self._grade(exercise, fn)

    def _grade(self, exercise: Exercise, fn: Callable) -> Result:
        results: list[CaseResult] = []
        failures: list[tuple[GradingModel, Case, Any]] = []
        for gm in self.models:
            for case in self.cases(exercise, gm):
                expected = self.expected(exercise, gm, case)
                try:
                    got = call_learner(fn, case.make_args())
                except NotImplementedYet:
                    return Result(
                        exercise.name,
                        False,
                        0.0,
                        f"not implemented yet: replace `raise NotImplementedError` in `{exercise.name}` "
                        "with your code, run that cell, then run this check again.",
                    )
                except LearnerError as err:
                    results.append(CaseResult(gm.label, case.label, False, str(err)))
                    continue
                finally:
                    gm.model.reset_hooks()
                problem = exercise.compare(got, expected)
                results.append(CaseResult(gm.label, case.label, problem is None, problem or ""))
                if problem is not None:
                    failures.append((gm, case, got))
        mistake = self.first_match(exercise, failures) if failures else None
        return _summarise(exercise, results, mistake, [gm.label for gm in self.models])


def _summarise(exercise: Exercise, results: list[CaseResult], mistake: Optional[Mistake], models: list[str]) -> Result:
    n_passed = sum(r.passed for r in results)
    score = n_passed / len(results) if results else 0.0
    passed = bool(results) and n_passed == len(results)
    lines = [f"{n_passed}/{len(results)} cases passed on {', '.join(models)}."]
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        lines.append(f"First failure ({first.model}, {first.label}): {first.message}")
    if mistake is not None:
        lines.append(f"It looks like you {mistake.description}. {mistake.fix}")
    elif failed:
        lines.append(f"Revisit {exercise.section} in chapter {exercise.chapter}.")
    return Result(exercise.name, passed, score, "\n".join(lines), results)
