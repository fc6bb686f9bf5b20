"""Shared fixtures. No test reaches the network: the hub is off for the whole session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_grad_enabled(False)


@pytest.fixture(scope="session")
def gelu_twin():
    from graders.models import grading_model

    return grading_model("gelu-2l").model


@pytest.fixture(scope="session")
def gpt2_twin():
    from graders.models import grading_model

    return grading_model("gpt2-small").model


@pytest.fixture(scope="session")
def executed_chapter():
    """Run a chapter with the references filled in, once per session (several tests read it)."""
    from graders.notebooks import execute, fill_with_solutions, read_notebook

    runs = {}

    def run(chapter):
        if chapter.stem not in runs:
            nb = fill_with_solutions(read_notebook(chapter), chapter)
            runs[chapter.stem] = execute(nb, workdir=chapter.parent, allow_errors=True)
        return runs[chapter.stem]

    return run
