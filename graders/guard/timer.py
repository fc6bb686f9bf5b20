"""A time limit for learner code that a learner's `except Exception:` cannot swallow.

The limit is on CPU time, so that a busy machine (a class graded on every core, a test
suite beside an editor) never stops an honest answer that is merely waiting for a core,
and an endless loop is stopped as soon as it has computed for the limit. A wall-clock
backstop, WALL_FACTOR times longer, stops code that waits instead (sleeps, blocks).
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from typing import Any, Optional

WALL_FACTOR = 4.0  # the wall-clock backstop, as a multiple of the CPU limit
REPEAT_S = 0.2  # after the first stop, how often it is raised again (for a bare `except:` in a loop)


class TimeLimitExceeded(BaseException):
    """Raised inside learner code when its time is up. A BaseException, so a learner's
    `except Exception:` does not catch it."""


def wall_seconds(cpu_seconds: float) -> float:
    """How long code under a `cpu_seconds` limit may take by the clock, waiting included:
    for whoever watches it from outside (a supervisor, a sandbox's timeout)."""
    return WALL_FACTOR * cpu_seconds


class Timer:
    """Raises TimeLimitExceeded in the calling thread once the process has used `seconds` of
    CPU time (all its threads: the limit is measured in the same units as the reference's
    own time), or after `wall_seconds(seconds)` by the clock, then again every 0.2 s until
    disarmed. `stopped_by` says which: "cpu" or "wall".

    In the main thread (where notebook kernels run cells) it uses the SIGPROF and SIGALRM
    interval timers; elsewhere a watchdog thread and an asynchronous exception, which lands
    between two bytecodes only (not inside one long `time.sleep`)."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds
        self.armed = False
        self.stopped_by: Optional[str] = None
        self._previous: dict[int, Any] = {}
        self._watchdog: Optional[threading.Thread] = None
        self._disarmed = threading.Event()
        self._target = 0

    def _fire(self, signum: int, _frame: Any = None) -> None:
        if self.armed:
            self.stopped_by = self.stopped_by or ("cpu" if signum == signal.SIGPROF else "wall")
            raise TimeLimitExceeded()

    def __enter__(self) -> "Timer":
        if not self.seconds:
            return self
        self.armed = True
        self.stopped_by = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            for signum, which, seconds, clock in ((signal.SIGPROF, signal.ITIMER_PROF, self.seconds, time.process_time),
                                                  (signal.SIGALRM, signal.ITIMER_REAL, wall_seconds(self.seconds),
                                                   time.monotonic)):
                handler = signal.signal(signum, self._fire)
                self._previous[signum] = (which, handler, signal.setitimer(which, seconds, REPEAT_S), clock, clock())
        else:
            self._disarmed.clear()
            self._target = threading.get_ident()
            self._watchdog = threading.Thread(target=self._watch, daemon=True)
            self._watchdog.start()
        return self

    def _watch(self) -> None:
        cpu, wall = time.process_time() + self.seconds, time.monotonic() + wall_seconds(self.seconds)
        while not self._disarmed.wait(0.05):
            if time.process_time() >= cpu or time.monotonic() >= wall:
                self.stopped_by = self.stopped_by or ("cpu" if time.process_time() >= cpu else "wall")
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                           ctypes.py_object(TimeLimitExceeded))
                cpu, wall = time.process_time() + REPEAT_S, time.monotonic() + REPEAT_S

    def __exit__(self, *exc: Any) -> None:
        self.armed = False
        if self._previous:
            for which, *_ in self._previous.values():
                signal.setitimer(which, 0)
            for signum, (which, handler, (delay, interval), clock, started) in self._previous.items():
                signal.signal(signum, handler)
                if delay > 0:  # an enclosing timer (a cell's, around a check): what it has left
                    signal.setitimer(which, max(delay - (clock() - started), 1e-3), interval)
            self._previous = {}
        if self._watchdog is not None:
            self._disarmed.set()
            self._watchdog.join()
            self._watchdog = None
            # An exception sent just before disarming must not surface in the grader's own code.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), None)

    def describe(self) -> str:
        """What stopped the code, for feedback."""
        if self.stopped_by == "wall":
            return f"stopped after {wall_seconds(self.seconds):.3g} s by the clock, most of it spent waiting"
        return f"stopped after {self.seconds:.3g} s of computing"
