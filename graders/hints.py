"""Progressive hints: the more often an exercise fails in one session, the more the
feedback says. First failure: what is wrong. Second: plus a hint. Third and later:
plus the chapter section to reread."""

from __future__ import annotations

from collections import Counter

GENERIC_HINT = (  # for exercises declared without a hint (tests' own)
    "Run your function by hand on one input, print the shapes of what goes in and what comes "
    "out, and compare a few values with what the exercise text asks for."
)


class Attempts:
    """Failed checks per exercise in this session (a pass starts the count again)."""

    def __init__(self) -> None:
        self._failures: Counter[str] = Counter()

    def record(self, exercise: str, passed: bool) -> int:
        """Record one graded attempt; return how many times in a row it has now failed."""
        if passed:
            self._failures.pop(exercise, None)
            return 0
        self._failures[exercise] += 1
        return self._failures[exercise]


SESSION = Attempts()  # shared by every Grader unless one is given its own


def progressive(hint: str, section: str, chapter: str, failures: int) -> list[str]:
    """The extra lines for the `failures`-th failure in a row."""
    lines = []
    if failures >= 2:
        lines.append(f"Hint: {hint or GENERIC_HINT}")
    if failures >= 3:
        lines.append(f"Reread the section '{section}' of {chapter}.ipynb, then try again.")
    return lines
