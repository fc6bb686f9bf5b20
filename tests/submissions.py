"""Synthetic submissions: a chapter notebook with each exercise cell's body replaced."""

from __future__ import annotations

import json
import textwrap
from typing import Mapping, Sequence

import nbformat

from circuitlab_graders.notebooks import defined_function, reference_body
from circuitlab_graders.registry import EXERCISES

HANG = "while True:\n    pass"
CRASH = "import os\nos._exit(1)"


def body_of(name: str, answer: str) -> str:
    """"ref" is the reference's body; anything else is used as the body itself."""
    return "\n".join(reference_body(EXERCISES[name].reference_fn())) if answer == "ref" else answer


def with_answers(nb: nbformat.NotebookNode, answers: Mapping[str, str], top: Sequence[str] = ()) -> nbformat.NotebookNode:
    """A copy of `nb` (a chapter or an nbgrader release) with the named exercises'
    bodies replaced and `top` code cells inserted after its first code cell; exercises
    not named keep their stub."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        name = defined_function(cell.source) if cell.cell_type == "code" else None
        if name in answers and ("exercise" in cell.metadata.get("tags", [])
                                or cell.metadata.get("nbgrader", {}).get("solution")):
            head = cell.source.split("# YOUR CODE HERE")[0].split("    raise NotImplementedError")[0].rstrip()
            cell.source = head + "\n" + textwrap.indent(body_of(name, answers[name]), "    ")
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    for offset, source in enumerate(top, 1):
        nb.cells.insert(first + offset, nbformat.v4.new_code_cell(source))
    return nb
