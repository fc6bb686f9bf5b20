"""A self-study scorecard read from the learner's saved notebooks (`circuitlab progress`).

`circuitlab_graders.check` shows each Result with a machine-readable part, RESULT_MIME, holding
{"exercise", "passed", "score", "implemented"} ("implemented" false: the check ran on the stub). Jupyter saves it with the cell's outputs, so the last one
per exercise in a saved .ipynb is where the learner stands, without running anything.
Stdlib only: reading progress starts no kernel and imports no graders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from circuitlab.course_files import chapter_sources

RESULT_MIME = "application/vnd.circuitlab.result+json"
CHECK_CALL = re.compile(r"^\s*(?:assert\s+)?check\((\w+)", re.MULTILINE)


def checked_exercises(sources: Iterable[str]) -> list[str]:
    """Exercises that code cells with these sources check, in order, from their `check(name)` calls."""
    names: list[str] = []
    for source in sources:
        names += [n for n in CHECK_CALL.findall(source) if n not in names]
    return names


def _code_cells(path: Path) -> list[dict]:
    """The code cells of the notebook at `path`; none when it is not a readable notebook."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (ValueError, AttributeError):  # not JSON, or JSON that is not a notebook
        return []
    return [cell for cell in cells if isinstance(cell, dict) and cell.get("cell_type") == "code"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def saved_results(path: Path) -> dict[str, dict]:
    """exercise -> {"passed", "score", "implemented"} from the last check output saved in the notebook at `path`."""
    results: dict[str, dict] = {}
    for cell in _code_cells(path):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            entry = data.get(RESULT_MIME)
            if isinstance(entry, dict) and "exercise" in entry:
                # Saved before "implemented" was recorded: the stub's verdict says so in its text.
                stub = "not implemented yet" in _source({"source": data.get("text/plain", "")})
                results[entry["exercise"]] = {"passed": bool(entry.get("passed")), "score": entry.get("score"),
                                              "implemented": bool(entry.get("implemented", not stub))}
    return results


@dataclass
class ChapterProgress:
    chapter: str  # e.g. "00_setup"
    notebook: Optional[Path]  # the learner's .ipynb, None when it is not in the directory
    exercises: dict[str, Optional[dict]]  # exercise -> its last saved result, None if never checked


def progress(workdir: Path) -> list[ChapterProgress]:
    """Every chapter's exercises, each with what the learner's saved notebook in `workdir` says."""
    chapters = []
    for source in chapter_sources():
        shipped = source.with_suffix(".ipynb")
        names = checked_exercises(_source(c) for c in _code_cells(shipped))
        mine = workdir / shipped.name
        saved = saved_results(mine) if mine.exists() else {}
        chapters.append(ChapterProgress(source.stem, mine if mine.exists() else None,
                                        {name: saved.get(name) for name in names}))
    return chapters


STATES = ("passed", "failed", "not implemented", "not tried")


def status(result: Optional[dict]) -> str:
    """passed / failed / not implemented (checked on the untouched stub) / not tried (never checked)."""
    if result is None:
        return "not tried"
    if result["passed"]:
        return "passed"
    return "failed" if result.get("implemented", True) else "not implemented"


def progress_report(workdir: Path, chapters: list[ChapterProgress]) -> str:
    """Every chapter and exercise with its state (STATES), and the totals."""
    lines = [f"Progress in {workdir} (read from the check results saved in the notebooks: "
             "save a notebook after running its checks)"]
    counts = dict.fromkeys(STATES, 0)
    for chapter in chapters:
        missing = "" if chapter.notebook else f"  ({chapter.chapter}.ipynb is not here: `circuitlab start` copies it)"
        lines.append(f"{chapter.chapter}{missing}")
        for name, result in chapter.exercises.items():
            state = status(result)
            counts[state] += 1
            scored = state in ("passed", "failed") and isinstance(result.get("score"), (int, float))
            score = f"score {result['score']:.2f}" if scored else ""
            lines.append(f"  {state:15s}  {name:38s} {score}".rstrip())
    total = sum(counts.values())
    stubs = f", {counts['not implemented']} not implemented yet" if counts["not implemented"] else ""
    lines.append(f"{counts['passed']} of {total} exercises passed, {counts['failed']} failed{stubs}, "
                 f"{counts['not tried']} not tried.")
    return "\n".join(lines)
