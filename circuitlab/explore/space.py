"""A Hugging Face Space folder for the explorer: `python -m circuitlab.explore.space OUTDIR`.

The folder holds what a Gradio Space needs: README.md (the Space's settings), app.py (its
entry point: the same server `circuitlab explore` runs, on 0.0.0.0:7860),
requirements.txt (CPU torch and the course's libraries) and a copy of the `circuitlab`
package with its chapters (the panels link to them) and circuitlab-2l's weights. It
carries no solutions/ and no graders/: the head-role panel says so (README, "The patching
explorer").
"""

from __future__ import annotations

import shutil
import sys

from pathlib import Path

from circuitlab.course_files import chapter_sources

PACKAGE = Path(__file__).resolve().parent.parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"

APP = '''"""Hugging Face Space entry point: the circuitlab patching explorer."""

import os

import uvicorn

from circuitlab.explore import server_app

app = server_app()

if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "7860")))
'''

README = """---
title: circuitlab patching explorer
emoji: 🔬
colorFrom: blue
colorTo: red
sdk: gradio
sdk_version: {gradio}
app_file: app.py
python_version: "3.11"
pinned: false
---

Activation patching on your own prompts: the circuitlab course's exact sweeps and attribution
estimates on circuitlab-2l (and random-weight twins of gelu-2l and gpt2-small).
"""

# Libraries the course needs that the explorer never imports (grading, notebooks) are left out.
NOT_NEEDED = ("jupytext", "nbgrader", "nbclient", "nbconvert", "ipykernel")


def requirements() -> list[str]:
    import tomllib  # Python 3.11+: building a Space folder is a maintainer's step

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    needed = [d for d in project["dependencies"] if not d.startswith(NOT_NEEDED)]
    return ["--extra-index-url https://download.pytorch.org/whl/cpu", *needed,
            *project["optional-dependencies"]["explore"]]


def build_space(out: Path) -> Path:
    import gradio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, out / "circuitlab", ignore=ignore, dirs_exist_ok=True)
    chapters = out / "circuitlab" / "chapters"
    chapters.mkdir(exist_ok=True)
    for source in chapter_sources():  # the .py is how circuitlab finds its chapters; the page links the .ipynb
        for path in (source, source.with_suffix(".ipynb")):
            shutil.copy2(path, chapters / path.name)
    (out / "app.py").write_text(APP, encoding="utf-8")
    (out / "README.md").write_text(README.format(gradio=gradio.__version__), encoding="utf-8")
    (out / "requirements.txt").write_text("\n".join(requirements()) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m circuitlab.explore.space OUTDIR")
    print(f"Space folder written to {build_space(Path(sys.argv[1]))}")
