"""Progress bars show in notebooks only, never in tests, checks, or when switched off."""

from __future__ import annotations

from tqdm import tqdm

from circuitlab import progress


def test_silent_outside_a_notebook():
    items = [1, 2, 3]
    assert not progress.enabled()
    assert progress.bar(items, "sweep") is items


def test_in_a_notebook_unless_switched_off(monkeypatch):
    monkeypatch.setattr(progress, "_in_notebook", lambda: True)
    assert progress.enabled()
    shown = progress.bar([1, 2], "sweep")
    assert isinstance(shown, tqdm) and list(shown) == [1, 2]
    with progress.quiet():
        assert not progress.enabled()
        assert progress.enabled(show=True)  # an explicit request wins
    monkeypatch.setenv("CIRCUITLAB_PROGRESS", "0")
    assert not progress.enabled()
