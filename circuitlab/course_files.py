"""Where the chapter notebooks are, and copying them to where a learner works on them.

Stdlib only: `circuitlab start` and the graders both ask it, and it needs neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHAPTER_GLOB = "[0-9][0-9]_*.py"  # py:percent sources; each has a paired .ipynb
# An installed wheel or sdist carries the chapters inside the package (pyproject maps chapters/
# to circuitlab.chapters); a clone, and an editable install (which points into one), has them
# beside it. The installed place comes first: site-packages/chapters could be anyone's.
CANDIDATES = (PACKAGE / "chapters", PACKAGE.parent / "chapters")


class ChaptersNotFound(RuntimeError):
    """No chapter in any place the course keeps them; the message says what to run."""


def chapters_dir() -> Path:
    """The directory holding the course's chapters, for a clone, an editable or a wheel install."""
    for candidate in CANDIDATES:
        if any(candidate.glob(CHAPTER_GLOB)):
            return candidate
    looked = " and ".join(str(c) for c in CANDIDATES)
    raise ChaptersNotFound(
        f"No chapters found (looked in {looked}). The circuitlab wheel and sdist ship them: "
        "reinstall the package with `pip install --force-reinstall <the circuitlab wheel, sdist or git URL>`; "
        "in a clone of the course they are chapters/ (`git checkout -- chapters` restores them)."
    )


def chapter_sources() -> list[Path]:
    """The chapters' py:percent sources, in course order."""
    return sorted(chapters_dir().glob(CHAPTER_GLOB))


def chapter_files() -> list[Path]:
    """Every file a learner gets: each chapter's .ipynb. (Its paired .py is the authors' source:
    a learner's copy beside the notebook would make Jupyter refuse the notebook once it is edited
    outside JupyterLab, as "more recent than" the .py.)"""
    return [source.with_suffix(".ipynb") for source in chapter_sources()]


def learner_copy(shipped: Path) -> bytes:
    """The shipped notebook as a learner gets it: without the jupytext pairing metadata, so that
    it opens in Jupyter whatever edited it last. Written as nbformat writes a notebook."""
    nb = json.loads(shipped.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("jupytext", None)
    return (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class Copied:
    """What `copy_chapters` did with each file, by name."""

    copied: list[str] = field(default_factory=list)  # new in the directory
    replaced: list[str] = field(default_factory=list)  # edited copies overwritten (--force)
    kept: list[str] = field(default_factory=list)  # edited copies left alone
    unchanged: list[str] = field(default_factory=list)  # already identical to the shipped file


def copy_chapters(dest: Path, force: bool = False) -> Copied:
    """Copy the chapters into `dest`. A file there that differs from the shipped one is the
    learner's work: it is kept unless `force`."""
    dest.mkdir(parents=True, exist_ok=True)
    done = Copied()
    for shipped in chapter_files():
        target = dest / shipped.name
        content = learner_copy(shipped)
        if not target.exists() or target.read_bytes() == shipped.read_bytes():  # new, or an untouched older copy
            bucket = done.copied
        elif target.read_bytes() == content:
            done.unchanged.append(target.name)
            continue
        elif force:
            bucket = done.replaced
        else:
            done.kept.append(target.name)
            continue
        target.write_bytes(content)
        bucket.append(target.name)
    return done
