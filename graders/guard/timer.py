"""A time limit for learner code that a learner's `except Exception:` cannot swallow.

Two clocks. By default the wall clock: a notebook's check, where torch computes on
several threads. With `cpu=True`, CPU time, for a process that computes on one thread (the
classroom sandbox): there a busy machine (a class graded on every core) stretches an
honest answer's wall time but not its CPU time, so the limit can be tight and an endless
loop stops as soon as it has computed for it. (With several torch threads on shared cores
CPU time is no measure of work: waiting threads spin, and an honest sweep used three
times the CPU time of the same sweep on one thread.) A wall-clock backstop, WALL_FACTOR
times longer, stops code that waits instead of computing (sleeps, blocks).
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from typing import Any, Optional

WALL_FACTOR = 4.0  # the wall-clock backstop of a CPU-time limit, as a multiple of it
REPEAT_S = 0.2  # after the first stop, how often it is raised again (for a bare `except:` in a loop)


class TimeLimitExceeded(BaseException):
    """Raised inside learner code when its time is up. A BaseException, so a learner's
    `except Exception:` does not catch it."""


def wall_seconds(cpu_seconds: float) -> float:
    """How long code under a `cpu_seconds` CPU-time limit may take by the clock, waiting
    included: for whoever watches it from outside (a supervisor, a sandbox's timeout)."""
    return WALL_FACTOR * cpu_seconds


class Timer:
    """Raises TimeLimitExceeded in the calling thread after `seconds` by the clock, or, with
    `cpu`, once the process has used `seconds` of CPU time or `wall_seconds(seconds)` have
    passed by the clock; then again every 0.2 s until disarmed. `stopped_by` says which
    clock stopped it: "cpu" or "wall".

    In the main thread (where notebook kernels run cells) it uses interval timers (SIGPROF,
    SIGALRM); elsewhere a watchdog thread and an asynchronous exception, which lands
    between two bytecodes only (not inside one long `time.sleep`)."""

    def __init__(self, seconds: Optional[float], *, cpu: bool = False) -> None:
        self.seconds = seconds
        self.cpu = cpu
        self.armed = False
        self.stopped_by: Optional[str] = None
        self._previous: dict[int, Any] = {}
        self._watchdog: Optional[threading.Thread] = None
        self._disarmed = threading.Event()
        self._lock = threading.Lock()
        self._target = 0

    @property
    def wall_limit(self) -> float:
        return wall_seconds(self.seconds) if self.cpu else self.seconds

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
            clocks = [(signal.SIGALRM, signal.ITIMER_REAL, self.wall_limit, time.monotonic)]
            if self.cpu:
                clocks.append((signal.SIGPROF, signal.ITIMER_PROF, self.seconds, time.process_time))
            for signum, which, seconds, clock in clocks:
                handler = signal.signal(signum, self._fire)
                self._previous[signum] = (which, handler, signal.setitimer(which, seconds, REPEAT_S), clock, clock())
        else:
            self._disarmed.clear()
            self._target = threading.get_ident()
            self._watchdog = threading.Thread(target=self._watch, daemon=True)
            self._watchdog.start()
        return self

    def _watch(self) -> None:
        cpu_left, wall_left = self.seconds, self.wall_limit
        while True:
            cpu_at, wall_at = time.process_time() + cpu_left, time.monotonic() + wall_left
            over = None
            while over is None:
                if self._disarmed.wait(0.05):
                    return
                over = ("cpu" if self.cpu and time.process_time() >= cpu_at
                        else "wall" if time.monotonic() >= wall_at else None)
            with self._lock:  # never after __exit__ has disarmed
                if not self.armed:
                    return
                self.stopped_by = self.stopped_by or over
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                           ctypes.py_object(TimeLimitExceeded))
            cpu_left = wall_left = REPEAT_S

    def __exit__(self, *exc: Any) -> None:
        while True:
            try:
                self._disarm()
                return
            except TimeLimitExceeded:
                continue  # a stop sent just before disarming landed here; disarming again is harmless

    def _disarm(self) -> None:
        with self._lock:  # after this, the watchdog sends nothing more
            self.armed = False
            self._disarmed.set()
        if self._previous:
            for which, *_ in self._previous.values():
                signal.setitimer(which, 0)
            for signum, (which, handler, (delay, interval), clock, started) in self._previous.items():
                if signum == signal.SIGPROF and handler in (signal.SIG_DFL, None):
                    handler = signal.SIG_IGN  # a SIGPROF still in flight must not end the process (the default)
                signal.signal(signum, handler)
                if delay > 0:  # an enclosing timer (a cell's, around a check): what it has left
                    signal.setitimer(which, max(delay - (clock() - started), 1e-3), interval)
            self._previous = {}
        if self._watchdog is not None:
            # A stop already sent lands at a loop's jump: let it land here, in this thread, now.
            # (Clearing it through the C API instead leaves CPython's eval breaker set, which
            # slowed every later line of the process a thousandfold.)
            for _ in range(1000):
                pass
            self._watchdog.join()
            self._watchdog = None

    def describe(self) -> str:
        """What stopped the code, for feedback."""
        if not self.cpu:
            return f"stopped after {self.seconds:.3g} s"
        if self.stopped_by == "wall":
            return f"stopped after {self.wall_limit:.3g} s by the clock, most of it spent waiting"
        return f"stopped after {self.seconds:.3g} s of computing"
