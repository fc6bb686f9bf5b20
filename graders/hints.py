"""Progressive hints: the more often an exercise fails in one session with the same
mistake, the more the feedback says. First failure: what is wrong. Second: plus a hint.
Third and later: plus the chapter section to reread. A learner who fixes one mistake and
makes another starts the new one's ladder from its first rung."""

from __future__ import annotations

from collections import Counter
from typing import Optional

GENERIC_HINT = (  # for exercises declared without a hint (tests' own)
    "Run your function by hand on one input, print the shapes of what goes in and what comes "
    "out, and compare a few values with what the exercise text asks for."
)


class Attempts:
    """Failed checks per exercise and mistake in this session (a pass starts every count again)."""

    def __init__(self) -> None:
        self._failures: dict[str, Counter[Optional[str]]] = {}

    def record(self, exercise: str, passed: bool, mistake: Optional[str] = None) -> int:
        """Record one graded attempt; return how many times it has now failed with `mistake`
        (what the feedback named; None: failures no diagnosis named, which share one count)."""
        if passed:
            self._failures.pop(exercise, None)
            return 0
        counts = self._failures.setdefault(exercise, Counter())
        counts[mistake] += 1
        return counts[mistake]


SESSION = Attempts()  # shared by every Grader unless one is given its own


def progressive(hint: str, section: str, chapter: str, failures: int) -> list[str]:
    """The extra lines for the `failures`-th failure in a row."""
    lines = []
    if failures >= 2:
        lines.append(f"Hint: {hint or GENERIC_HINT}")
    if failures >= 3:
        lines.append(f"Reread the section '{section}' of {chapter}.ipynb, then try again.")
    return lines
