"""The grading engine: one loop that grades any exercise from its declaration, in every mode.

A grade has three steps, in this order:

1. Plan (trusted). The mode picks the checks: "full" compares with the reference on the
   exercise's cases (seed 0), "hidden" does the same on cases drawn from other seeds,
   "public" checks the properties the chapter states, without the reference. Every
   number the grader itself needs (reference answers, the facts a property compares
   with) is computed now, before any learner code runs, and cached by the case's
   content.
2. Call. The learner's function runs on each check's inputs, one call at a time, each
   made by `calls.Executor` (as in classroom grading's worker) inside a `guard.Guard`
   (time limit, captured output, answer-code watch, restore and name of side effects, the
   weights' content included), so every call starts from the model and inputs the
   grader's numbers were computed on; `calls.StopRule` says when the rest are not made.
3. Judge (trusted). Answers are compared, failures matched against the exercise's known
   mistakes and then the generic diagnoses, and the feedback written.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch

from circuitlab import progress
from circuitlab_graders import calls, hints, limits, token_diagnoses
from circuitlab_graders.declare import Case, Exercise, Mistake
from circuitlab_graders.calls import Executor, Outcome, Snapshots, StopRule, short
from circuitlab_graders.diagnoses import Failure, diagnose
from circuitlab_graders.guard import CourseCode, Guard
from circuitlab_graders.inputs import Arguments, content_id
from circuitlab_graders.models import GradingModel, grading_models
from circuitlab_graders.results import CaseResult, Result, not_implemented, reads_course_code

MODES = ("full", "hidden", "public")
ANSWER_PACKAGES = ("circuitlab_solutions", "circuitlab_graders", "circuitlab.sweeps")


# ---------------------------------------------------------------- checks


@dataclass
class Check:
    """One thing the learner's function is checked on: the calls to make, and how to
    judge their answers (None when they pass, else what is wrong)."""

    gm: GradingModel
    label: str
    calls: list[Mapping[str, Any]]
    judge: Callable[[list[Any]], Optional[str]]
    limit: float  # seconds per call
    expected: Any = None  # the reference's answer, for cases
    case: Optional[Case] = None


class Grader:
    """Grades exercises on a set of models, caching cases, reference answers and known
    mistakes' answers by content, so a learner's repeated check only pays for the
    learner's own function."""

    # The limits and their reasons: graders.limits (tests lower these attributes).
    MIN_TIME_LIMIT_S = limits.CALL_FLOOR_S
    JUDGE_TIME_LIMIT_S = limits.JUDGE_S
    MISTAKE_TIME_LIMIT_S = limits.MISTAKE_CALL_S
    SLOWDOWN = limits.SLOWDOWN
    LOOP_SLOWDOWN = limits.LOOP_SLOWDOWN
    PUBLIC_TIME_LIMIT_S = limits.PUBLIC_CALL_S

    def __init__(self, models: Optional[list[GradingModel]] = None, attempts: Optional[hints.Attempts] = None) -> None:
        self._models = models
        self._attempts = attempts or hints.SESSION
        self._cases: dict[tuple[str, str, int], list[Case]] = {}
        self._expected: dict[str, tuple[Any, float]] = {}
        self._mistaken: dict[tuple[int, str], Any] = {}
        self._arguments: dict[int, Arguments] = {}
        self._forward_s: dict[tuple[str, str], float] = {}
        self.snapshots = Snapshots()  # kept across grades, like the caches they are of
        self.course = CourseCode(ANSWER_PACKAGES, harness=(__file__, calls.__file__))

    @property
    def models(self) -> list[GradingModel]:
        if self._models is None:
            self._models = grading_models()
        return self._models

    # ------------------------------------------------------------ trusted numbers

    def cases(self, exercise: Exercise, gm: GradingModel, seed: int = 0) -> list[Case]:
        key = (exercise.name, gm.key, seed)
        if key not in self._cases:
            self._cases[key] = exercise.cases(gm, random.Random(f"{exercise.name}/{gm.key}/{seed}"))
        return self._cases[key]

    def expected(self, exercise: Exercise, gm: GradingModel, case: Case) -> tuple[Any, float]:
        """The reference's answer on `case` and the seconds it took (cached by content)."""
        key = exercise.case_id(gm.key, case)
        if key not in self._expected:
            args, _ = self.arguments(gm).build(case.inputs)
            start = time.perf_counter()
            with torch.no_grad():  # as in the chapters; a reference that takes gradients enables them itself
                answer = exercise.reference_fn()(**args)
            self._expected[key] = (answer, time.perf_counter() - start)
        return self._expected[key]

    def arguments(self, gm: GradingModel) -> Arguments:
        if id(gm.model) not in self._arguments:
            self._arguments[id(gm.model)] = Arguments(gm.model)
        return self._arguments[id(gm.model)]

    def time_limit(self, exercise: Exercise, reference_s: Optional[float], floor: Optional[float] = None,
                   gm: Optional[GradingModel] = None, inputs: Sequence[Mapping[str, Any]] = ()) -> float:
        """Per learner call: SLOWDOWN x the reference's time, at least `floor`; for a sweep
        (`exercise.loop`), at least LOOP_SLOWDOWN x the time of the plain one-pass-per-cell
        loop on these inputs, so the loop the chapter teaches is never stopped."""
        if exercise.time_limit_s is not None:
            return exercise.time_limit_s
        if reference_s is None:
            limit = self.PUBLIC_TIME_LIMIT_S
        else:
            limit = max(self.MIN_TIME_LIMIT_S if floor is None else floor, self.SLOWDOWN * reference_s)
        if exercise.loop is not None and gm is not None:
            for call in inputs:
                passes = exercise.loop.passes(gm.model, call)
                loop_s = passes * self.forward_seconds(gm, call[exercise.loop.prompt])
                limit = max(limit, self.LOOP_SLOWDOWN * loop_s)
        return limit

    def forward_seconds(self, gm: GradingModel, prompt: str) -> float:
        """One hooked forward pass of `prompt`, as a learner's loop makes it (cached)."""
        key = (gm.key, prompt)
        if key not in self._forward_s:
            hooks = [("blocks.0.hook_resid_pre", lambda activations, hook: activations)]
            times = []
            with torch.no_grad():
                for _ in range(4):  # the first pass warms caches; the median of the rest counts
                    start = time.perf_counter()
                    gm.model.run_with_hooks(prompt, fwd_hooks=hooks)
                    times.append(time.perf_counter() - start)
            self._forward_s[key] = sorted(times[1:])[1]
        return self._forward_s[key]

    def plan(self, exercise: Exercise, mode: str, seeds: Sequence[int] = (0,),
             floor: Optional[float] = None) -> list[Check]:
        """Every check of `exercise` in `mode`, with the grader's own numbers computed
        (`floor`: the least time limit per call, MIN_TIME_LIMIT_S unless given)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        checks = []
        for gm in self.models:
            if mode == "public":
                for prop in exercise.properties(gm):
                    checks.append(Check(gm, prop.label, list(prop.calls), prop.holds,
                                        self.time_limit(exercise, None, gm=gm, inputs=prop.calls)))
                continue
            for seed in seeds:
                for case in self.cases(exercise, gm, seed):
                    expected, seconds = self.expected(exercise, gm, case)
                    checks.append(Check(gm, case.label, [case.inputs],
                                        lambda answers, e=expected: exercise.compare(answers[0], e),
                                        self.time_limit(exercise, seconds, floor, gm, [case.inputs]), expected, case))
        return checks

    def prepare(self, exercise: Exercise, mode: str) -> None:
        """Compute now what a first check of `exercise` in `mode` would compute before any
        learner call (cases, reference answers, the inputs' caches and their snapshots)."""
        for check in self.plan(exercise, mode):
            arguments = self.arguments(check.gm)
            for inputs in check.calls:
                self.snapshots.protect(arguments, arguments.build(inputs)[1])

    # ------------------------------------------------------------ the loop

    def grade(self, exercise: Exercise, fn: Callable, mode: str = "full", seeds: Sequence[int] = (0,)) -> Result:
        with progress.quiet():  # a check shows its verdict, not the references' progress bars
            return self._grade(exercise, fn, mode, seeds)

    def _grade(self, exercise: Exercise, fn: Callable, mode: str, seeds: Sequence[int]) -> Result:
        """Course code (a reference or a known mistake) is graded as is; any other function
        that reads the answer code scores zero."""
        declared = self._is_declared(exercise, fn)
        trusted = declared or self.course.owns(fn)
        if not trusted and (uses := self.course.references(fn)):
            return reads_course_code(exercise.name, "; ".join(uses), mode)
        checks = self.plan(exercise, mode, seeds)
        # Summing every weight after each call (most of a call's overhead on gpt2-small) spares
        # the declared reference and mistakes, the grader's own code.
        execute = Executor(fn, self.snapshots, course=None if trusted else self.course, content=not declared)

        def call(check: Check, inputs: Mapping[str, Any]) -> Outcome:
            return execute(self.arguments(check.gm), inputs, check.limit)

        return self.verdict(exercise, checks, call, mode, execute.printed.note)

    def verdict(self, exercise: Exercise, checks: list[Check], call: Callable[[Check, Mapping[str, Any]], Outcome],
                mode: str, printed: Callable[[], Optional[str]] = lambda: None, *, escalate: bool = True) -> Result:
        """Steps 2 and 3: get each check's outcomes from `call` (a guarded call here, the
        sandboxed worker's answers in classroom grading), then judge and explain.
        `escalate`: count the failure towards this session's progressive hints (a
        learner's own session; not when grading a class)."""
        results: list[CaseResult] = []
        failures: list[tuple[Check, Any]] = []
        notes: list[str] = []
        stop = StopRule()
        answered: dict[CallKey, Outcome] = {}
        for check, asked in calls_by_check(checks):
            outcomes = []
            for inputs, key, shared in asked:
                outcome = stop(lambda: answered[key] if shared else call(check, inputs))
                answered[key] = outcome
                if outcome.kind == "stub":
                    return not_implemented(exercise.name, mode)
                if outcome.kind == "course_code":
                    return reads_course_code(exercise.name, outcome.message, mode)
                notes += [n for n in outcome.notes if n not in notes]
                outcomes.append(outcome)
            results.append(self._judge(exercise, check, outcomes, failures))
        if (note := printed()) is not None:
            notes.append(note)
        explanation = self._explain(exercise, failures)
        if explanation is None and mode == "public":  # no reference to compare with: what the answers show
            explanation = token_diagnoses.same_answer_tokens(
                [(check.gm.model, inputs, answered[call_key(check.gm, inputs)].value)
                 for check, result in zip(checks, results) if not result.passed for inputs in check.calls])
        result = _summarise(exercise, results, explanation, [gm.label for gm in self.models], notes, mode)
        result.difference = next((d for check, got in failures if (d := _difference(check, got)) is not None), None)
        if escalate:
            failures_in_a_row = self._attempts.record(exercise.name, result.passed, explanation)
            extra = hints.progressive(exercise.hint, exercise.section, exercise.chapter, failures_in_a_row)
            if extra:
                result.feedback += "\n" + "\n".join(extra)
        return result

    def _is_declared(self, exercise: Exercise, fn: Callable) -> bool:
        """The declared reference or a known mistake, by identity (a decorated reference's
        code lives in the decorator's library). Any other function written in the answer
        code (`self.course.owns`) is course code too."""
        declared = [m.fn for m in exercise.mistakes]
        try:
            declared.append(exercise.reference_fn())
        except (RuntimeError, AttributeError):  # a student release: no reference installed
            pass
        return any(fn is d for d in declared)

    def _judge(self, exercise: Exercise, check: Check, outcomes: list[Outcome],
               failures: list[tuple[Check, Any]]) -> CaseResult:
        label = check.gm.label
        broken = next((o for o in outcomes if o.kind != "answer"), None)
        if broken is not None:
            message = ("not run: an earlier case ran out of time or crashed" if broken.kind == "not_run"
                       else f"did not finish: {broken.message}" if broken.kind in ("timed_out", "crashed")
                       else broken.message)
            return CaseResult(label, check.label, False, short(message))
        answers = [o.value for o in outcomes]
        problem = self._safe(check.judge, answers)
        if check.case is not None and problem is not None:
            failures.append((check, answers[0]))
        side_effect = next((o.message or o.damage[0] for o in outcomes if o.message or o.damage), None)
        if side_effect is not None:
            return CaseResult(label, check.label, False, short(side_effect))
        cells = _cells(exercise.compare, answers[0], check.expected) if check.case is not None else None
        return CaseResult(label, check.label, problem is None, short(problem or ""), cells)

    def _safe(self, judge: Callable[[list[Any]], Optional[str]], answers: list[Any]) -> Optional[str]:
        """Judge under a time limit: the learner's values can run their own code (__eq__,
        __repr__, __torch_function__) even though the comparisons check types first."""
        guard = Guard(None, time_limit_s=self.JUDGE_TIME_LIMIT_S)
        problem: Optional[str] = "the grader could not compare what your function returned"
        with guard:
            try:
                problem = judge(answers)
            except Exception as err:
                problem = f"the grader could not compare what your function returned ({type(err).__name__}: {err})"
        if guard.timed_out:
            problem = "comparing what your function returned took too long (does it define its own __eq__?)"
        return problem

    # ------------------------------------------------------------ explaining failures

    def mistaken(self, exercise: Exercise, index: int, check: Check) -> Any:
        """What known mistake `index` answers on `check`'s case (cached; None if it crashes)."""
        key = (index, exercise.case_id(check.gm.key, check.case))
        if key not in self._mistaken:
            execute = Executor(exercise.mistakes[index].fn, self.snapshots, content=False)
            outcome = execute(self.arguments(check.gm), check.case.inputs, self.MISTAKE_TIME_LIMIT_S)
            self._mistaken[key] = outcome.value if outcome.kind == "answer" else None
        return self._mistaken[key]

    def _explain(self, exercise: Exercise, failures: list[tuple[Check, Any]]) -> Optional[str]:
        """A known mistake whose answers equal the learner's on every failed case, else a
        generic diagnosis that holds on all of them."""
        if not failures:
            return None
        mistake = self._first_mistake(exercise, failures)
        if mistake is not None:
            return f"It looks like you {mistake.description}. {mistake.fix}"
        return diagnose([Failure(c.gm.model, dict(c.case.inputs), got, c.expected) for c, got in failures])

    def _first_mistake(self, exercise: Exercise, failures: list[tuple[Check, Any]]) -> Optional[Mistake]:
        for index, mistake in enumerate(exercise.mistakes):
            if all((wrong := self.mistaken(exercise, index, check)) is not None
                   and self._safe(lambda answers, w=wrong: exercise.compare(answers[0], w), [got]) is None
                   for check, got in failures):
                return mistake
        return None


CallKey = tuple[str, str]  # (model key, the inputs' content_id)


def call_key(gm: GradingModel, inputs: Mapping[str, Any]) -> CallKey:
    """Which call a check's inputs ask for: equal inputs on one model are one call."""
    return gm.key, content_id(dict(inputs))


def calls_by_check(checks: Sequence[Check]) -> Iterator[tuple[Check, list[tuple[Mapping[str, Any], CallKey, bool]]]]:
    """Each check with its calls as (inputs, call_key, shared): `shared` when an earlier
    check asked for the same call, so its outcome is reused rather than made again (a
    check asking twice for one call, to compare two runs, gets two calls)."""
    earlier: set[CallKey] = set()
    for check in checks:
        keys = [call_key(check.gm, inputs) for inputs in check.calls]
        yield check, [(inputs, key, key in earlier and key not in keys[:i])
                      for i, (inputs, key) in enumerate(zip(check.calls, keys))]
        earlier.update(keys)


def _cells(compare: Callable, got: Any, expected: Any) -> Optional[tuple[int, int]]:
    """(matching, total) cells when the answer is a 2-D tensor (a sweep), else None."""
    if not (isinstance(expected, torch.Tensor) and expected.dim() == 2):
        return None
    if not _cellwise(got, expected):
        return (0, expected.numel())
    atol, rtol = getattr(compare, "atol", 1e-3), getattr(compare, "rtol", 1e-3)
    got_f = got.detach().to(device=expected.device, dtype=torch.float32)
    match = torch.isclose(got_f, expected.to(torch.float32), atol=atol, rtol=rtol) & torch.isfinite(got_f)
    return (int(match.sum()), expected.numel())


def _cellwise(got: Any, expected: torch.Tensor) -> bool:
    return (type(got) is torch.Tensor and got.shape == expected.shape and got.device.type != "meta"
            and torch.is_floating_point(got))


def _difference(check: Check, got: Any) -> Optional[tuple[str, torch.Tensor]]:
    """(case label, learner − reference) for a sweep, drawn as a heatmap in the feedback."""
    expected = check.expected
    if isinstance(expected, torch.Tensor) and expected.dim() == 2 and _cellwise(got, expected):
        return check.label, got.detach().float().cpu() - expected.detach().float().cpu()
    return None


def _summarise(exercise: Exercise, results: list[CaseResult], explanation: Optional[str], models: list[str],
               notes: list[str], mode: str) -> Result:
    n_passed = sum(r.passed for r in results)
    score = sum(r.credit for r in results) / len(results) if results else 0.0
    passed = bool(results) and n_passed == len(results)
    what = "public checks held" if mode == "public" else "cases passed"
    lines = [f"{n_passed}/{len(results)} {what} on {', '.join(models)}."]
    sweeps = [r.cells for r in results if r.cells is not None]
    if sweeps and not passed:
        matching, total = sum(c[0] for c in sweeps), sum(c[1] for c in sweeps)
        lines.append(f"Cells matching the reference: {matching}/{total} ({matching / total:.0%}).")
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        lines.append(f"First failure ({first.model}, {first.label}): {first.message}")
    if explanation is not None:
        lines.append(explanation)
    lines += [f"Note: {note}" for note in notes if not (failed and note in failed[0].message)]
    if mode == "public":
        lines.append("These are the public checks (no reference answers here); the autograder runs the full check, "
                     "with hidden cases, when you submit.")
    if not results:
        lines = [f"{exercise.name} has no {'public checks' if mode == 'public' else 'cases'} to run."]
    return Result(exercise.name, passed, score, "\n".join(lines), results, mode=mode)
