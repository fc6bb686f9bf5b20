"""Rendered chapters, opened from disk in headless Chromium with the network off: the
attention views draw, nothing logs an error, and a screenshot lands in build/."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import pytest

from circuitlab_graders.html import notebook_html
from circuitlab_graders.notebooks import chapter_paths
from tests.browser import chromium, rendered_dom, screenshot

BUILD = Path(__file__).resolve().parent.parent / "build"
CHAPTER_FILES = chapter_paths()
VIEW = re.compile(r'<div id="(circuitlab-attention-[0-9a-f]+)"')

needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="Chromium is not installed and `make test` could not install it (apt-get install chromium)",
)


def _render(chapter, executed_chapter) -> Path:
    run = executed_chapter(chapter)
    assert not run.errors, run.errors
    BUILD.mkdir(exist_ok=True)
    page = BUILD / f"{chapter.stem}.html"
    page.write_text(notebook_html(run.notebook), encoding="utf-8")
    return page


def test_rendered_pages_load_nothing_from_the_network(executed_chapter):
    for chapter in CHAPTER_FILES:
        html = _render(chapter, executed_chapter).read_text()
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html), chapter.stem
        assert "data:image/png;base64," in html or "attention" in chapter.stem, "heatmaps are embedded images"


@needs_chromium
@pytest.mark.parametrize("chapter", CHAPTER_FILES, ids=[p.stem for p in CHAPTER_FILES])
def test_chapter_renders_in_chromium(chapter, executed_chapter):
    page = _render(chapter, executed_chapter)
    dom, console = rendered_dom(page)
    assert console == [], console
    assert "</html>" in dom
    png = BUILD / f"{chapter.stem}.png"
    assert screenshot(page, png) == []
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] == 900 and pixels[..., :3].std() > 0.01  # a page, not a blank screen


@needs_chromium
def test_attention_views_draw_in_chromium(executed_chapter):
    chapter = next(p for p in CHAPTER_FILES if p.stem == "03_attention_patterns")
    page = _render(chapter, executed_chapter)
    dom, console = rendered_dom(page)
    assert console == [], console
    views = dom.split('id="circuitlab-attention-')[1:]
    assert len(views) == len(VIEW.findall(page.read_text())) >= 2
    for drawn in views:
        # circuitsvis drew its head selector and a canvas per head into the element.
        assert "Head Selector" in drawn
        assert drawn.count("<canvas") >= 2

    # The first view (it carries the library) on a page of its own, screenshotted.
    first = next(
        out["data"]["text/html"]
        for cell in executed_chapter(chapter).notebook.cells
        for out in cell.get("outputs", [])
        if "CircuitsVis.render" in out.get("data", {}).get("text/html", "")
    )
    alone = BUILD / "03_attention_view.html"
    alone.write_text(f"<!DOCTYPE html><html><body>{first}</body></html>", encoding="utf-8")
    png = BUILD / "03_attention_view.png"
    assert screenshot(alone, png, width=800, height=700) == []
    pixels = matplotlib.image.imread(png)[..., :3]
    # Coloured heads, not just black text on white.
    assert (pixels.max(-1) - pixels.min(-1)).max() > 0.3
