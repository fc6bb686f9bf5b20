"""One call of learner code, guarded, and what it did as plain data.

Both sides use it: the in-process engine, and the sandboxed worker of classroom grading
(which holds no answers: this module imports none).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from graders.guard.memory import describe_memory_error, is_memory_error

MAX_MESSAGE = 600  # characters of one feedback message (a learner's repr can be huge)
KINDS = ("answer", "raised", "stub", "timeout", "course_code", "not_run", "crashed")


def short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " […]"


@dataclass
class Outcome:
    """What one learner call did. `kind` is one of KINDS; `notes`: side effects the guard
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


def guarded_call(fn: Callable, args: dict[str, Any], guard) -> Outcome:
    """Call `fn(**args)` inside `guard` (a graders.guard.Guard) and say what happened."""
    kind, value = "timeout", None
    with guard:
        kind, value = call_learner(fn, args)
    notes = [f"your function {n}" for n in guard.notes]
    if guard.course_code is not None:
        return Outcome("course_code", message=f"runs {guard.course_code}")
    if guard.timed_out:
        return Outcome("timeout", message=(
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
