"""What a check returns: per-case verdicts and one Result with the learner's feedback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class CaseResult:
    model: str
    label: str
    passed: bool
    message: str = ""
    cells: Optional[tuple[int, int]] = None  # (matching, total) for 2-D outputs

    @property
    def credit(self) -> float:
        if self.passed:
            return 1.0
        return self.cells[0] / self.cells[1] if self.cells and self.cells[1] else 0.0


@dataclass(repr=False)
class Result:
    exercise: str
    passed: bool
    score: float
    feedback: str
    cases: list[CaseResult] = field(default_factory=list)
    difference: Optional[tuple[str, torch.Tensor]] = None  # (case label, learner − reference) of a sweep
    mode: str = "full"
    implemented: bool = True  # False: the function is still the chapter's stub

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.exercise} (score {self.score:.2f})\n{self.feedback}"

    __repr__ = __str__

    def _image(self) -> Optional[str]:
        if self.difference is None:
            return None
        from circuitlab_graders.heatmap import difference_png

        label, diff = self.difference
        return difference_png(diff, f"your answer − reference ({label})")

    def _repr_markdown_(self) -> str:
        mark = "✅" if self.passed else "❌"
        body = self.feedback.replace("\n", "  \n")
        return f"{mark} **{self.exercise}** — score {self.score:.2f}  \n{body}"

    def _repr_html_(self) -> str:
        import html

        mark = "✅" if self.passed else "❌"
        body = "<br>".join(html.escape(line) for line in self.feedback.splitlines())
        image = self._image()
        figure = f'<br><img alt="difference heatmap" src="data:image/png;base64,{image}">' if image else ""
        return f"<div>{mark} <b>{html.escape(self.exercise)}</b> — score {self.score:.2f}<br>{body}{figure}</div>"


def not_implemented(name: str, mode: str = "full") -> Result:
    return Result(name, False, 0.0, f"not implemented yet: replace `raise NotImplementedError` in `{name}` "
                  "with your code, run that cell, then run this check again.", mode=mode, implemented=False)


def reads_course_code(name: str, what: str, mode: str = "full") -> Result:
    return Result(name, False, 0.0, f"Scored zero: your function reads the course's own code ({what}). The check "
                  "compares your implementation with the reference, so it must not use solutions/, graders/ or "
                  "circuitlab.sweeps. Write it yourself.", mode=mode)
