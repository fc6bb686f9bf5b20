"""The grading engine: one loop that grades any exercise from its declaration.

An exercise declares its reference, how to build test cases on a model, how to
compare an answer with the reference's, and a library of known mistakes. The
engine runs the learner's function on every case, scores the share of cases
passed (for 2-D sweep outputs, the share of matching cells), and, when the
learner's answers match a known mistake, names it.

Every learner call runs inside a `guard.Guard`: a time limit, captured output, and
afterwards a check that restores and names anything the call changed (cached inputs,
the model's weights, hooks, training mode, cfg). A learner function that reads the
course's own solutions/ or graders/ code scores zero.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from circuitlab import progress
from graders import hints
from graders.guard import BoundedOutput, Guard, ModelWatch, Protected, course_references, is_course_code
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
    hint: str = ""  # shown from the second failure in a row; a generic hint when empty
    time_limit_s: Optional[float] = None  # per call; default: see Grader.time_limit
    grad: bool = False  # the exercise takes gradients: reference, learner and mistakes run with grad enabled


@dataclass
class CaseResult:
    model: str
    label: str
    passed: bool
    message: str = ""
    cells: Optional[tuple[int, int]] = None  # (matching, total) for 2-D outputs

    @property
    def credit(self) -> float:
        if self.passed:
            return 1.0
        return self.cells[0] / self.cells[1] if self.cells and self.cells[1] else 0.0


@dataclass(repr=False)
class Result:
    exercise: str
    passed: bool
    score: float
    feedback: str
    cases: list[CaseResult] = field(default_factory=list)
    difference: Optional[tuple[str, torch.Tensor]] = None  # (case label, learner − reference) of a sweep

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.exercise} (score {self.score:.2f})\n{self.feedback}"

    __repr__ = __str__

    def _image(self) -> Optional[str]:
        if self.difference is None:
            return None
        from graders.heatmap import difference_png

        label, diff = self.difference
        return difference_png(diff, f"your answer − reference ({label})")

    def _repr_markdown_(self) -> str:
        mark = "✅" if self.passed else "❌"
        body = self.feedback.replace("\n", "  \n")
        return f"{mark} **{self.exercise}** — score {self.score:.2f}  \n{body}"

    def _repr_html_(self) -> str:
        import html

        mark = "✅" if self.passed else "❌"
        body = "<br>".join(html.escape(line) for line in self.feedback.splitlines())
        image = self._image()
        figure = f'<br><img alt="difference heatmap" src="data:image/png;base64,{image}">' if image else ""
        return f"<div>{mark} <b>{html.escape(self.exercise)}</b> — score {self.score:.2f}<br>{body}{figure}</div>"


class NotImplementedYet(Exception):
    """The learner's function is still the stub."""


class LearnerError(Exception):
    """The learner's function raised; the message points at the learner's line."""


MAX_MESSAGE = 600  # characters of one feedback message (a learner's repr can be huge)


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " […]"


def _learner_frame(tb_frames: list[traceback.FrameSummary], fn: Callable) -> Optional[traceback.FrameSummary]:
    code = getattr(fn, "__code__", None)
    own = [f for f in tb_frames if code is not None and f.filename == code.co_filename]
    return own[-1] if own else None


def grad_mode(enabled: Optional[bool]):
    """The autograd mode exercise code runs in: off unless the exercise takes gradients;
    None leaves the caller's mode (and what the call does to it) alone."""
    if enabled is None:
        return contextlib.nullcontext()
    return torch.enable_grad() if enabled else torch.no_grad()


def call_learner(fn: Callable, args: dict[str, Any], grad: Optional[bool] = False) -> Any:
    """Call learner code, turning the stub and crashes into readable messages."""
    try:
        with grad_mode(grad):
            return fn(**args)
    except NotImplementedError as err:
        frames = traceback.extract_tb(err.__traceback__)
        # Raised by the learner's own function body: that is the stub, not a library limit.
        if frames and getattr(fn, "__code__", None) and frames[-1].filename == fn.__code__.co_filename:
            raise NotImplementedYet() from None
        raise LearnerError(_describe_exception(err, fn)) from None
    except SystemExit:
        raise LearnerError("your function called exit(); return a value instead") from None
    except Exception as err:  # learner code can raise anything
        raise LearnerError(_describe_exception(err, fn)) from None


def _describe_exception(err: BaseException, fn: Callable) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = _learner_frame(frames, fn)
    try:
        message = f"{type(err).__name__}: {_short(str(err))}"
    except Exception:  # an exception whose str() fails
        message = type(err).__name__
    if where is None:
        return f"your function raised {message}"
    line = (where.line or "").strip()
    return f"your function raised {message}\n  at line {where.lineno} in {where.name}: {line}"


class Grader:
    """Grades exercises on a set of models, caching cases and reference answers so a
    learner's repeated checks only pay for the learner's own function."""

    MIN_TIME_LIMIT_S = 10.0  # per call: the larger of this and SLOWDOWN x the reference's time
    SLOWDOWN = 20.0

    def __init__(self, models: Optional[list[GradingModel]] = None, attempts: Optional[hints.Attempts] = None) -> None:
        self._models = models
        self._attempts = attempts or hints.SESSION
        self._cases: dict[tuple[str, str], list[Case]] = {}
        self._expected: dict[tuple[str, str, str], tuple[Any, float]] = {}
        self._protected: dict[tuple[str, str, str], Protected] = {}
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
        return self._reference(exercise, gm, case)[0]

    def _reference(self, exercise: Exercise, gm: GradingModel, case: Case) -> tuple[Any, float]:
        """The reference's answer on `case` and the seconds it took (cached)."""
        key = (exercise.name, gm.key, case.label)
        if key not in self._expected:
            start = time.perf_counter()
            with grad_mode(exercise.grad):
                answer = exercise.reference(**case.make_args())
            self._expected[key] = (answer, time.perf_counter() - start)
        return self._expected[key]

    def protected(self, exercise: Exercise, gm: GradingModel, case: Case) -> Protected:
        """The case's inputs that persist between calls, with copies to restore them from."""
        key = (exercise.name, gm.key, case.label)
        if key not in self._protected:
            self._protected[key] = Protected.of(case.make_args)
        return self._protected[key]

    def time_limit(self, exercise: Exercise, reference_s: float) -> float:
        if exercise.time_limit_s is not None:
            return exercise.time_limit_s
        return max(self.MIN_TIME_LIMIT_S, self.SLOWDOWN * reference_s)

    def mistaken(self, exercise: Exercise, index: int, gm: GradingModel, case: Case) -> Any:
        """What known mistake `index` answers on `case` (cached; None if it crashes)."""
        key = (exercise.name, index, gm.key, case.label)
        if key not in self._mistaken:
            self._mistaken[key] = None
            with Guard(gm.model, self.protected(exercise, gm, case)):
                try:
                    self._mistaken[key] = call_learner(exercise.mistakes[index].fn, case.make_args(), exercise.grad)
                except (LearnerError, NotImplementedYet):
                    pass
        return self._mistaken[key]

    def first_match(self, exercise: Exercise, failures: list[tuple[GradingModel, Case, Any]]) -> Optional[Mistake]:
        """The first known mistake whose answers equal the learner's on every failed case."""
        for index, mistake in enumerate(exercise.mistakes):
            if all(
                (wrong := self.mistaken(exercise, index, gm, case)) is not None
                and _safe_compare(exercise.compare, got, wrong) is None
                for gm, case, got in failures
            ):
                return mistake
        return None

    def grade(self, exercise: Exercise, fn: Callable) -> Result:
        with progress.quiet():  # a check shows its verdict, not the references' progress bars
            return self._grade(exercise, fn)

    def _grade(self, exercise: Exercise, fn: Callable) -> Result:
        """Grade `fn`. Course code (a function defined in solutions/ or graders/: the
        references and the known mistakes) is graded as is; anything else that reads the
        course's code scores zero."""
        trusted = is_course_code(fn)
        if not trusted and (uses := course_references(fn)):
            return _reads_course_code(exercise, "; ".join(uses))
        results: list[CaseResult] = []
        failures: list[tuple[GradingModel, Case, Any]] = []
        notes: list[str] = []
        difference: Optional[tuple[str, torch.Tensor]] = None
        timed_out = False
        printed = BoundedOutput()  # everything the learner's calls print, summarised once
        for gm in self.models:
            reaches_model = False
            for case in self.cases(exercise, gm):
                if timed_out:
                    results.append(CaseResult(gm.label, case.label, False, "not run: an earlier case ran out of time"))
                    continue
                expected, reference_s = self._reference(exercise, gm, case)
                limit = self.time_limit(exercise, reference_s)
                args = case.make_args()
                reaches_model |= any(isinstance(v, torch.nn.Module) and next(v.parameters(), None) is not None
                                     for v in args.values())
                guard = Guard(gm.model, self.protected(exercise, gm, case), limit, not trusted, printed)
                error = None
                with guard:
                    try:
                        got = call_learner(fn, args, exercise.grad)
                    except NotImplementedYet:
                        return _not_implemented(exercise)
                    except LearnerError as err:
                        error = str(err)
                del args
                undone = [f"your function {n}" for n in guard.notes]
                notes += [n for n in undone if n not in notes]
                if guard.course_code is not None:
                    return _reads_course_code(exercise, f"runs {guard.course_code}")
                if guard.timed_out:
                    timed_out = True
                    error = (
                        f"stopped after {limit:.3g} s (the reference takes {reference_s:.2g} s): look for an endless "
                        "loop, or a loop over something the exercise lets you do in one batched call"
                    )
                elif error is None and undone:
                    error = undone[0]
                elif error is None and (shared := guard.aliases(got)) is not None:
                    error = (f"returned a tensor that shares memory with {shared}; return a new tensor "
                             "(e.g. `.clone()`), so later edits cannot change the original")
                    if _safe_compare(exercise.compare, got, expected) is not None:
                        failures.append((gm, case, got.clone()))  # the values may still match a known mistake
                if error is not None:
                    results.append(CaseResult(gm.label, case.label, False, _short(error)))
                    continue
                problem = _safe_compare(exercise.compare, got, expected)
                cells = _cells(exercise.compare, got, expected)
                results.append(CaseResult(gm.label, case.label, problem is None, _short(problem or ""), cells))
                if problem is not None:
                    failures.append((gm, case, got))
                    if difference is None and cells is not None and _cellwise(got, expected):
                        difference = (case.label, got.detach().float().cpu() - expected.detach().float().cpu())
            if reaches_model:  # edits through `.data` escape the per-call check
                changed = [f"your function {n}" for n in ModelWatch.of(gm.model).verify()]
                notes += changed
                for r in results:
                    if changed and r.model == gm.label and r.passed:
                        r.passed, r.message = False, changed[0]
        if printed.note():
            notes.append(printed.note())
        mistake = self.first_match(exercise, failures) if failures else None
        result = _summarise(exercise, results, mistake, [gm.label for gm in self.models], notes)
        result.difference = difference
        failures_in_a_row = self._attempts.record(exercise.name, result.passed)
        extra = hints.progressive(exercise.hint, exercise.section, exercise.chapter, failures_in_a_row)
        if extra:
            result.feedback += "\n" + "\n".join(extra)
        return result


def _safe_compare(compare: Compare, got: Any, expected: Any) -> Optional[str]:
    """Compare under a time limit: a learner's return value can run its own code
    (__eq__, __repr__, __torch_function__)."""
    if isinstance(got, torch.Tensor) and type(got) is not torch.Tensor and not isinstance(got, torch.nn.Parameter):
        return f"returned a {type(got).__name__} (a Tensor subclass); return a plain torch.Tensor"
    guard = Guard(None, time_limit_s=Grader.MIN_TIME_LIMIT_S)
    problem: Optional[str] = "the grader could not compare what your function returned"
    with guard:
        try:
            problem = compare(got, expected)
        except Exception as err:
            problem = f"the grader could not compare what your function returned ({type(err).__name__}: {err})"
    if guard.timed_out:
        problem = "comparing what your function returned took too long (does it define its own __eq__?)"
    return problem


def _cells(compare: Compare, got: Any, expected: Any) -> Optional[tuple[int, int]]:
    """(matching, total) cells when the answer is a 2-D tensor (a sweep), else None."""
    if not (isinstance(expected, torch.Tensor) and expected.dim() == 2):
        return None
    total = expected.numel()
    if not _cellwise(got, expected):
        return (0, total)
    atol, rtol = getattr(compare, "atol", 1e-3), getattr(compare, "rtol", 1e-3)
    got_f = got.detach().to(device=expected.device, dtype=torch.float32)
    match = torch.isclose(got_f, expected.to(torch.float32), atol=atol, rtol=rtol) & torch.isfinite(got_f)
    return (int(match.sum()), total)


def _cellwise(got: Any, expected: torch.Tensor) -> bool:
    """Whether `got` can be compared with `expected` cell by cell."""
    return (type(got) is torch.Tensor and got.shape == expected.shape and got.device.type != "meta"
            and torch.is_floating_point(got))


def _not_implemented(exercise: Exercise) -> Result:
    return Result(
        exercise.name,
        False,
        0.0,
        f"not implemented yet: replace `raise NotImplementedError` in `{exercise.name}` "
        "with your code, run that cell, then run this check again.",
    )


def _reads_course_code(exercise: Exercise, what: str) -> Result:
    return Result(
        exercise.name,
        False,
        0.0,
        f"Scored zero: your function reads the course's own code ({what}). The check compares your "
        "implementation with the reference, so it must not use solutions/ or graders/. Write it yourself.",
    )


def _summarise(
    exercise: Exercise, results: list[CaseResult], mistake: Optional[Mistake], models: list[str], notes: list[str] = ()
) -> Result:
    n_passed = sum(r.passed for r in results)
    score = sum(r.credit for r in results) / len(results) if results else 0.0
    passed = bool(results) and n_passed == len(results)
    lines = [f"{n_passed}/{len(results)} cases passed on {', '.join(models)}."]
    sweeps = [r.cells for r in results if r.cells is not None]
    if sweeps and not passed:
        matching, total = sum(c[0] for c in sweeps), sum(c[1] for c in sweeps)
        lines.append(f"Cells matching the reference: {matching}/{total} ({matching / total:.0%}).")
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        lines.append(f"First failure ({first.model}, {first.label}): {first.message}")
    if mistake is not None:
        lines.append(f"It looks like you {mistake.description}. {mistake.fix}")
    lines += [f"Note: {note}" for note in notes if not (failed and note in failed[0].message)]
    return Result(exercise.name, passed, score, "\n".join(lines), results)
