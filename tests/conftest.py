"""Shared fixtures. No test reaches the network: the hub is off for the whole session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_grad_enabled(False)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each computes on its own core, and so do the
    # kernels and subprocesses it starts (threads of two workers spinning on one core
    # waste it).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`) a test file runs on one worker, so its module
    fixtures (a built course, an installed wheel, a sandbox pool) are made once, and every
    file that reads the executed chapters runs on the same worker, so each chapter runs once.
    A file that sets SPREAD_ACROSS_WORKERS (hundreds of independent gradings) is spread instead."""
    readers = {item.module.__name__ for item in items if "executed_chapter" in item.fixturenames}
    for item in items:
        module = item.module.__name__
        if getattr(item.module, "SPREAD_ACROSS_WORKERS", False) and module not in readers:
            continue  # many independent tests with no module fixture: any worker takes any of them
        item.add_marker(pytest.mark.xdist_group("executed_chapters" if module in readers else module))


@pytest.fixture(scope="session")
def gelu_twin():
    from circuitlab_graders.models import grading_model

    return grading_model("gelu-2l").model


@pytest.fixture(scope="session")
def gpt2_twin():
    from circuitlab_graders.models import grading_model

    return grading_model("gpt2-small").model


@pytest.fixture(scope="session")
def executed_chapter():
    """Run a chapter with the references filled in, once per session (several tests read it)."""
    from circuitlab_graders.notebooks import execute, fill_with_solutions, read_notebook

    runs = {}

    def run(chapter):
        if chapter.stem not in runs:
            nb = fill_with_solutions(read_notebook(chapter), chapter)
            runs[chapter.stem] = execute(nb, workdir=chapter.parent, allow_errors=True)
        return runs[chapter.stem]

    return run
