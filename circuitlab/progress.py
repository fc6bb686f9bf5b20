"""Progress bars for long sweeps: shown in a notebook, silent everywhere else.

A bar appears only in a Jupyter kernel, and not while `quiet()` is active (the graders
use it so a check does not flash the reference's bars) or when CIRCUITLAB_PROGRESS=0
is set (tqdm's own TQDM_DISABLE=1 also works).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
_QUIET = contextvars.ContextVar("circuitlab_quiet", default=False)
PROGRESS_ENV = "CIRCUITLAB_PROGRESS"  # "0" turns bars off


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def enabled(show: Optional[bool] = None) -> bool:
    """Whether a bar should show; `show` overrides the automatic choice."""
    if show is not None:
        return show
    if _QUIET.get() or os.environ.get(PROGRESS_ENV, "").strip() in {"0", "false", "no", "off"}:
        return False
    return _in_notebook()


def bar(items: Iterable[T], desc: str, total: Optional[int] = None, show: Optional[bool] = None) -> Iterable[T]:
    """`items`, wrapped in a tqdm bar when one should show."""
    if not enabled(show):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No progress bars inside this block."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)
