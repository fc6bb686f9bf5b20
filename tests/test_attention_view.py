"""circuitsvis views render from code inlined in the notebook: no CDN, no network."""

from __future__ import annotations

import re

import nbformat

from circuitlab import attention_view
from circuitlab.course_files import chapters_dir

CDN = re.compile(r"unpkg|jsdelivr|<script[^>]*\bsrc\s*=", re.IGNORECASE)
BUNDLE_MARK = "var CircuitsVis="  # the first statement of circuitsvis's iife.js


def _html_outputs(nb) -> list[str]:
    return [
        out["data"]["text/html"]
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if "text/html" in out.get("data", {})
    ]


def test_bundle_is_inlined_once_per_kernel(monkeypatch):
    import torch

    monkeypatch.setitem(attention_view._state, "library_emitted", False)
    pattern = torch.ones(2, 3, 3).tril() / torch.arange(1, 4)[:, None]
    first = attention_view.attention_heads(pattern, ["a", "</script>", "c"])._repr_html_()
    second = attention_view.attention_heads(pattern, ["a", "b", "c"], head_names=["0.0", "0.1"])._repr_html_()
    assert first.count(BUNDLE_MARK) == 1 and BUNDLE_MARK not in second
    assert len(first) > 1_000_000 and len(second) < 10_000
    assert '"attentionHeadNames": ["0.0", "0.1"]' in second
    # Only the element's own </script> tags close elements; a token cannot.
    assert first.count("</script>") == 2 and "<\\/script>" in first
    assert not CDN.search(first) and not CDN.search(second)


def test_executed_chapter_views_carry_circuitsvis_without_a_cdn(executed_chapter):
    run = executed_chapter(chapters_dir() / "03_attention_patterns.py")
    assert not run.errors, run.errors
    html = [h for h in _html_outputs(run.notebook) if "CircuitsVis.render" in h]
    assert len(html) >= 2, "expected one view per layer"
    assert sum(h.count(BUNDLE_MARK) for h in html) == 1
    for h in html:
        assert not CDN.search(h), CDN.search(h).group(0)
        assert "CircuitsVis.AttentionHeads" in h
    assert nbformat.validate(run.notebook) is None
