"""What learner code prints while it is checked: kept short, then summarised once."""

from __future__ import annotations

import io
from typing import Optional


class BoundedOutput(io.TextIOBase):
    """A stdout stand-in that keeps the first `keep` characters and counts the rest."""

    def __init__(self, keep: int = 2000) -> None:
        self.keep = keep
        self.head = ""
        self.chars = 0
        self.lines = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        self.chars += len(text)
        self.lines += text.count("\n")
        if len(self.head) < self.keep:
            self.head += text[: self.keep - len(self.head)]
        return len(text)

    def note(self) -> Optional[str]:
        if not self.chars:
            return None
        first = [line[:120] for line in self.head.splitlines()[:3]]
        count = f"{self.lines} line{'s' if self.lines != 1 else ''}" if self.lines else f"{self.chars} characters"
        return f"your function printed {count} while being checked (hidden); it began: " + " | ".join(first)
