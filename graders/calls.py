"""Calls of learner code, guarded, and what each did as plain data.

`Executor` is the one way the learner's function is called: by the in-process engine and
by the sandboxed worker of classroom grading (which holds no answers: this module imports
none). `StopRule` is the one rule for when an exercise's remaining calls are not made.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from circuitlab_graders.guard import BoundedOutput, CourseCode, Guard, Protected, Snapshot
from circuitlab_graders.guard.memory import describe_memory_error, is_memory_error
from circuitlab_graders.inputs import Arguments

MAX_MESSAGE = 600  # characters of one feedback message (a learner's repr can be huge)
KINDS = ("answer", "raised", "stub", "timed_out", "course_code", "not_run", "crashed")


def short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " […]"


@dataclass
class Outcome:
    """What one learner call did (what a sandbox job did is graders.sandbox.Outcome; the
    kinds both have are spelled the same). `kind` is one of KINDS ("crashed" only comes
    from classroom grading: the worker process died); `notes`: side effects the guard
    undid. An answer is judged on its value; of the side effects, only edits to what the
    call was given (a cache, the weights) fail it."""

    kind: str
    value: Any = None
    message: str = ""
    notes: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # the notes that fail the case: inputs or weights edited


def call_learner(fn: Callable, args: dict[str, Any]) -> tuple[str, Any]:
    """Call learner code: ("answer", value), ("stub", None) for the unchanged stub, or
    ("raised", exception). Described afterwards, outside the guard's watch."""
    try:
        return "answer", fn(**args)
    except NotImplementedError as err:
        frames = traceback.extract_tb(err.__traceback__)
        # Raised by the learner's own function body: that is the stub, not a library limit.
        if frames and getattr(fn, "__code__", None) and frames[-1].filename == fn.__code__.co_filename:
            return "stub", None
        return "raised", err
    except (Exception, SystemExit) as err:  # learner code can raise anything
        return "raised", err


class Snapshots:
    """Snapshots of the shared inputs (caches) calls are given, taken once per object and
    kept, so every call starts from the state the grader's numbers were computed on.
    `content`: also compare the tensors' values after each call (see `Executor`)."""

    def __init__(self, content: bool = True) -> None:
        self.content = content
        self._taken: dict[int, Snapshot] = {}

    def protect(self, arguments: Arguments, shared: list[tuple[str, Any, Any]]) -> Protected:
        for _, value, ref in shared:
            if id(value) not in self._taken:
                self._taken[id(value)] = Snapshot(value, lambda ref=ref: arguments.fresh_cache(ref),
                                                  content=self.content)
        return Protected([(path, self._taken[id(value)]) for path, value, _ in shared])


class Executor:
    """Calls one function on one case at a time, each call inside a fresh `Guard` over the
    case's model and inputs, and returns what it did as an Outcome.

    `course`: the answer code to watch for (None: not watched, as for course code itself);
    `printed`: where the calls' output goes, shared so it is summarised once; `content`:
    after each call also sum every weight, to catch edits through `.data` (needed where a
    model outlives the learner's calls, as in a notebook; the worker's exercise process
    does not); `cpu_time`: limits count CPU time (the one-thread sandbox)."""

    def __init__(self, fn: Callable, snapshots: Snapshots, *, course: Optional[CourseCode] = None,
                 printed: Optional[BoundedOutput] = None, content: bool = True, cpu_time: bool = False) -> None:
        self.fn = fn
        self.snapshots = snapshots
        self.course = course
        self.printed = printed if printed is not None else BoundedOutput()
        self.content = content
        self.cpu_time = cpu_time

    def __call__(self, arguments: Arguments, inputs: dict[str, Any], limit: float) -> Outcome:
        args, shared = arguments.build(inputs)
        guard = Guard(arguments.model, self.snapshots.protect(arguments, shared), limit, self.course, self.printed,
                      content=self.content, cpu_time=self.cpu_time)
        return guarded_call(self.fn, args, guard)


# After a call ran out of time, the rest of its exercise would only wait out their limits
# too; after a crash (a classroom worker's process died), there is no function left to call.
STOP_AFTER = ("timed_out", "crashed")


class StopRule:
    """Once one of an exercise's calls ends in a kind of `after`, its later calls are not
    made: each is answered "not_run". Used where calls are made or their outcomes read
    (the engine's verdict, the worker's exercise runner), one instance per exercise. One
    rule serves both: the worker stopped after a time-out only, but its guarded calls never
    end "crashed" (that is its process dying, which the trusted side reads)."""

    def __init__(self, after: tuple[str, ...] = STOP_AFTER) -> None:
        self.after = after
        self.stopped = False

    def __call__(self, make: Callable[[], Outcome]) -> Outcome:
        if self.stopped:
            return Outcome("not_run")
        outcome = make()
        self.stopped = outcome.kind in self.after
        return outcome


def guarded_call(fn: Callable, args: dict[str, Any], guard: Guard) -> Outcome:
    """Call `fn(**args)` inside `guard` and say what happened (`Executor` builds the guard)."""
    kind, value = "timed_out", None
    with guard:
        kind, value = call_learner(fn, args)
    notes = [f"your function {n}" for n in guard.notes]
    if guard.course_code is not None:
        return Outcome("course_code", message=f"runs {guard.course_code}")
    if guard.timed_out:
        return Outcome("timed_out", message=(
            f"{guard.timer.describe()}: look for an endless loop, or a loop over something the "
            "exercise lets you do in one batched call"), notes=notes)
    outcome = (Outcome(kind, value) if kind != "raised"
               else Outcome(kind, message=describe_exception(value, fn, guard.memory.room)))
    outcome.notes, outcome.damage = notes, [f"your function {n}" for n in guard.damage]
    if outcome.kind == "answer" and (shared_with := guard.aliases(outcome.value)) is not None:
        outcome.message = (f"returned a tensor that shares memory with {shared_with}; return a new tensor "
                           "(e.g. `.clone()`), so later edits cannot change the original")
        outcome.value = value.detach().clone() if type(value) is torch.Tensor else value
    return outcome


def describe_exception(err: BaseException, fn: Callable, memory_room: Optional[int] = None) -> str:
    """`memory_room`: the bytes the call was allowed to allocate, when a budget was set."""
    if isinstance(err, SystemExit):
        return "your function called exit(); return a value instead"
    code = getattr(fn, "__code__", None)
    own = [f for f in traceback.extract_tb(err.__traceback__) if code is not None and f.filename == code.co_filename]
    if is_memory_error(err):
        where = f"\n  at line {own[-1].lineno} in {own[-1].name}: {(own[-1].line or '').strip()}" if own else ""
        return describe_memory_error(err, memory_room) + where
    try:
        message = f"{type(err).__name__}: {short(str(err))}"
    except Exception:  # an exception whose str() fails
        message = type(err).__name__
    advice = exception_advice(message)
    advice = f"\n  {advice}" if advice else ""
    if not own:
        return f"your function raised {message}{advice}"
    where = own[-1]
    return (f"your function raised {message}\n  at line {where.lineno} in {where.name}: "
            f"{(where.line or '').strip()}{advice}")


_EXCEPTION_ADVICE = (
    ("HookedTransformer", "TransformerLens 4 has no HookedTransformer; the model you are given is a TransformerBridge "
                          "with the same methods (run_with_hooks, run_with_cache, to_tokens, to_single_token)."),
    ("transformer_lens.utils", "In TransformerLens 4, transformer_lens.utils is transformer_lens.utilities "
                               "(e.g. transformer_lens.utilities.get_act_name)."),
    ("cannot import name 'utils'", "In TransformerLens 4, transformer_lens.utils is transformer_lens.utilities "
                                   "(e.g. transformer_lens.utilities.get_act_name)."),
    ("hook_result", "This model has no per-head hook_result (a native bridge, like real gelu-2l's): patch "
                    "blocks.L.attn.hook_z instead, as chapter 2 explains."),
    ("attn_result", "This model has no per-head hook_result (a native bridge, like real gelu-2l's): patch "
                    "blocks.L.attn.hook_z instead, as chapter 2 explains."),
    ("appears to not have been used in the graph",
     "An activation you differentiate does not reach the logit difference in the graph: a hook that returns "
     "`activations.detach().requires_grad_()` starts a new graph there and cuts every earlier hook off. Keep "
     "what each hook sees and return it unchanged (the weights require grad, so it is already in the graph)."),
    ("does not require grad", "The chapters and the grader run with autograd switched off "
                              "(torch.set_grad_enabled(False)): switch it on inside your function, around the "
                              "forward pass and the gradient, with `with torch.enable_grad():`."),
)


def exception_advice(message: str) -> Optional[str]:
    """What to do about an exception a TransformerLens 3 habit (or a gradient taken with
    autograd off) raises here."""
    return next((advice for needle, advice in _EXCEPTION_ADVICE if needle in message), None)
