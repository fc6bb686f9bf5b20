"""A time limit for learner code that a learner's `except Exception:` cannot swallow."""

from __future__ import annotations

import ctypes
import signal
import threading
from typing import Any, Optional


class TimeLimitExceeded(BaseException):
    """Raised inside learner code when its time is up. A BaseException, so a learner's
    `except Exception:` does not catch it."""


class Timer:
    """Raises TimeLimitExceeded in the calling thread after `seconds`, then again every
    0.2 s until disarmed (so a bare `except:` in a loop cannot keep it going for long).

    In the main thread (where notebook kernels run cells) it uses SIGALRM; elsewhere an
    asynchronous exception from a watchdog thread."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds
        self.armed = False
        self._previous = None
        self._watchdog: Optional[threading.Timer] = None

    def _fire(self, *_: Any) -> None:
        if self.armed:
            raise TimeLimitExceeded()

    def __enter__(self) -> "Timer":
        if not self.seconds:
            return self
        self.armed = True
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.2)
        else:
            target = threading.get_ident()

            def interrupt() -> None:
                if self.armed:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(TimeLimitExceeded))

            self._watchdog = threading.Timer(self.seconds, interrupt)
            self._watchdog.daemon = True
            self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.armed = False
        if self._previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        if self._watchdog is not None:
            self._watchdog.cancel()
