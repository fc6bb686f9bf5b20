"""Executed notebooks as self-contained HTML pages that open offline.

Heatmaps are embedded PNGs, circuitsvis views carry their inlined JavaScript, and the
page template drops the scripts nbconvert would otherwise load from a CDN.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

TEMPLATES = Path(__file__).resolve().parent / "templates"


def notebook_html(nb: nbformat.NotebookNode) -> str:
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="offline")
    body, _ = exporter.from_notebook_node(nb)
    return body
