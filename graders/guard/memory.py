"""A memory budget for learner code: an allocation past it fails inside the call, as an
exception the guard reports, instead of the kernel's OOM killer ending the process (a
notebook kernel, the grading process, a classroom worker).

How: a soft RLIMIT_AS of the process's address space now plus the budget, set for the
call and put back afterwards. Past it torch's allocator raises "can't allocate memory"
(a RuntimeError) and Python raises MemoryError, both at the allocation that asked, before
any page is touched. (A TorchDispatchMode that checks each op's size was the alternative:
it adds Python to every op of every call and sees a matmul's broadcast copy only inside
the op; the limit costs two system calls per call.)

The limit is process-wide: other threads share it while a call runs. They only meet it
once the call has used up its budget in small pieces (one big request fails alone and
frees nothing). Only one guarded call runs at a time in a process (graders.__init__ stops
prepare()'s thread first; the sandbox runs one job per process), and nested guards only
ever lower the limit and put back what they found, innermost first.
"""

from __future__ import annotations

import os
import re
from typing import Optional

try:
    import resource
except ImportError:  # Windows: no budget there (nor on macOS, which has no /proc/self/statm)
    resource = None

GB = 1e9
_WARM = False


def address_space() -> int:
    """This process's address space now, in bytes (VmSize)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _warm_threads() -> None:
    """Start torch's thread pool before the first budget: each new thread maps its stack
    and a malloc arena (about 70 MB of address space), and an OpenMP thread that cannot
    start aborts the process instead of raising."""
    global _WARM
    if not _WARM:
        import torch

        torch.zeros(1 << 20).add_(1)  # large enough to run on every intra-op thread
        _WARM = True


class MemoryBudget:
    """Context manager: while inside, the process may map at most `budget` bytes more than
    on entry (less where an enclosing limit, e.g. the classroom sandbox's, is tighter).
    `room` says how much it had, for the message when an allocation failed."""

    def __init__(self, budget: Optional[int]) -> None:
        self.budget = budget
        self.room: Optional[int] = None
        self._previous: Optional[tuple[int, int]] = None

    def __enter__(self) -> "MemoryBudget":
        self.room, self._previous = None, None
        if not self.budget or resource is None or not os.path.exists("/proc/self/statm"):
            return self
        _warm_threads()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        now = address_space()
        limit = now + self.budget
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft != resource.RLIM_INFINITY and soft <= limit:  # an enclosing limit is already tighter
            self.room = max(soft - now, 0)
            return self
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        self._previous = (soft, hard)
        self.room = limit - now
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            resource.setrlimit(resource.RLIMIT_AS, self._previous)  # raising a soft limit up to the hard one is allowed
            self._previous = None


_MEMORY_ERRORS = ("can't allocate memory", "out of memory", "Cannot allocate memory")


def is_memory_error(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    try:
        text = str(err)
    except Exception:  # an exception whose str() fails
        return False
    return isinstance(err, RuntimeError) and any(n in text for n in _MEMORY_ERRORS)


def describe_memory_error(err: BaseException, room: Optional[int]) -> str:
    """What a failed allocation says to a learner: how much, and what to look for."""
    on_gpu = re.search(r"out of memory\. Tried to allocate ([\d.]+ [KMGT]iB)", str(err))
    if on_gpu:  # the GPU's own memory ran out (torch.OutOfMemoryError): the budget is the host's
        return (f"your function tried to allocate {on_gpu.group(1)} on the GPU, more than it has free. Check the "
                "shapes your code builds: a transpose or broadcast that keeps a dimension too many multiplies the "
                "size (e.g. `.T` on a stack of matrices reverses every dimension; `.mT` transposes the last two)")
    asked = re.search(r"tried to allocate (\d+) bytes", str(err))
    size = int(asked.group(1)) if asked else None
    budget = f"the {room / GB:.3g} GB of memory one call may use here" if room else "the memory it may use"
    if size is not None and (room is None or size > room):
        what = f"tried to allocate a tensor of {size / GB:.3g} GB, more than {budget}"
    else:
        last = f" (its last request: {size / GB:.3g} GB)" if size is not None else ""
        what = f"used up {budget}{last}"
    return (f"your function {what}, and was stopped before it could exhaust the machine. Check the shapes your "
            "code builds: a transpose or broadcast that keeps a dimension too many multiplies the size (e.g. `.T` "
            "on a stack of matrices reverses every dimension; `.mT` transposes the last two), and so does a list of "
            "tensors that grows in a loop")
