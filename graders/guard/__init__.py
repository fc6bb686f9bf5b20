"""Running learner code so that nothing it does outlasts the call.

`Guard` wraps one call of a learner's function and composes the protections, each in
its own module:

* `memory`: a memory budget (an allocation past it raises in the call, instead of the
  OOM killer ending the process);
* `timer`: a time limit, by the clock or (in the one-thread sandbox, `cpu_time`) on CPU
  time (TimeLimitExceeded, which `except Exception` cannot swallow);
* `output`: what the call prints is captured, and only its start kept;
* `course_code`: which answer-code function, if any, the call ran;
* `protected`: shared inputs (caches) edited in place are put back;
* `weights`: parameters replaced or edited are put back;
* `model_state`: hooks, training mode, cfg, gradient state, default dtype are put back.

After the call, `notes` has one sentence per kind of change undone. The guard knows
nothing of the engine that uses it: the caller says which model, inputs and answer
code to watch.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import torch

from circuitlab_graders import limits
from circuitlab_graders.guard.course_code import CourseCode, Watch
from circuitlab_graders.guard.memory import MemoryBudget
from circuitlab_graders.guard.model_state import State
from circuitlab_graders.guard.output import BoundedOutput
from circuitlab_graders.guard.protected import Protected, Snapshot, walk_tensors
from circuitlab_graders.guard.timer import TimeLimitExceeded, Timer
from circuitlab_graders.guard.weights import Weights, restore_weights

__all__ = ["BoundedOutput", "CourseCode", "Guard", "Protected", "Snapshot", "TimeLimitExceeded", "Weights",
           "restore_weights", "walk_tensors"]


class Guard:
    """Context manager around one learner call. Afterwards: `notes` (side effects
    undone), `damage` (those of them that edited the inputs or the weights),
    `course_code` (the answer-code function it ran, when `course` is given), `timed_out`."""

    def __init__(
        self,
        model: Optional[torch.nn.Module] = None,
        protected: Optional[Protected] = None,
        time_limit_s: Optional[float] = None,
        course: Optional[CourseCode] = None,
        output: Optional[BoundedOutput] = None,
        *,
        content: bool = True,
        cpu_time: bool = False,
        memory: Optional[int] = limits.CALL_MEMORY_BYTES,
    ) -> None:
        self.model = model
        self.protected = protected or Protected()
        self.timer = Timer(time_limit_s, cpu=cpu_time)  # CPU time where torch runs one thread (the sandbox)
        self.memory = MemoryBudget(memory)  # bytes the call may add to the process's address space
        self.watch = Watch(course) if course is not None else None
        self.output = output if output is not None else BoundedOutput()  # may be shared by several calls
        self.content = content  # also verify the weights' content after the call (edits through `.data`)
        self.grad_mode = torch.no_grad()  # learner code runs as in the chapters; it may enable grad inside
        self.notes: list[str] = []
        self.damage: list[str] = []  # the notes about edits to what the call was given (inputs, weights)
        self.timed_out = False

    @property
    def course_code(self) -> Optional[str]:
        return self.watch.found if self.watch is not None else None

    def __enter__(self) -> "Guard":
        if self.model is not None:
            Weights.of(self.model)  # the first sight of a model is the state every later call is held to
        self.grad_mode.__enter__()
        self._state = State.take(self.model)
        self._streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.output
        if self.watch is not None:
            self.watch.__enter__()
        self.memory.__enter__()
        self.timer.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.timer.__exit__()
        finally:
            self.memory.__exit__()
        if self.watch is not None:
            self.watch.__exit__()
        sys.stdout, sys.stderr = self._streams
        self.notes += self._state.restore()
        if self.model is not None:
            self.damage += restore_weights(self.model, content=self.content)
        self.damage += self.protected.restore()
        self.notes += self.damage
        self.grad_mode.__exit__(None, None, None)
        if exc_type is TimeLimitExceeded:
            self.timed_out = True
            return True
        return False

    def aliases(self, value: Any) -> Optional[str]:
        """The protected tensor or model parameter that `value` shares memory with, if any."""
        extra = Weights.of(self.model).storages() if self.model is not None else {}
        return self.protected.aliases(value, extra)
