"""What the grader of an nbgrader course needs that students must never see.

The hidden seeds live in `circuitlab_course.json` in the course root, outside `source/`
(nbgrader would release anything there), readable by the instructor only, and are never
shown.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

COURSE_FILE = "circuitlab_course.json"


@dataclass(frozen=True)
class CourseSecrets:
    """What the grader needs that students must never see: each assignment's exercises and
    hidden seeds, and the time a notebook cell may take."""

    assignments: dict[str, dict]
    cell_timeout: float

    @classmethod
    def read(cls, root: Path) -> "CourseSecrets":
        path = Path(root) / COURSE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: this is not a course built by `python -m circuitlab_graders course` "
                                    "(it holds the hidden seeds the grader needs)")
        data = json.loads(path.read_text())
        return cls(data["assignments"], float(data["cell_timeout"]))

    def write(self, root: Path) -> None:
        path = Path(root) / COURSE_FILE
        path.write_text(json.dumps({"assignments": self.assignments, "cell_timeout": self.cell_timeout}, indent=1))
        os.chmod(path, 0o600)

    def exercises(self, assignment: str) -> list[str]:
        if assignment not in self.assignments:
            raise KeyError(f"no assignment {assignment!r} in this course; it has: {', '.join(self.assignments)}")
        return list(self.assignments[assignment]["exercises"])

    def seeds(self, assignment: str) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.assignments[assignment]["seeds"].items()}
