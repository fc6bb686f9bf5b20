"""Preloads and handlers for tests/test_sandbox.py; staged into the sandbox (the real tests/ is hidden there)."""

from __future__ import annotations

import os

PRELOADED_BY = None  # the zygote's pid, set by the preload
LOADS = 0  # how many times a model was loaded in this process


def preload_nothing() -> None:
    global PRELOADED_BY
    PRELOADED_BY = os.getpid()


def run_code(job: bytes) -> bytes:
    """Execute the job as Python; its answer is the `answer` it leaves behind (bytes)."""
    namespace: dict = {}
    exec(job.decode(), namespace)
    return namespace.get("answer", b"")


MODEL = None


def preload_model() -> None:
    """Import torch, load circuitlab-2l and run it once, as a grading worker would."""
    global MODEL, LOADS
    import torch

    import circuitlab

    torch.set_grad_enabled(False)
    MODEL = circuitlab.load_model("circuitlab-2l")
    LOADS += 1
    MODEL(torch.zeros(1, 8, dtype=torch.long))


def preload_failing() -> None:
    raise RuntimeError("the preload could not find its models")


def preload_corrupt_results() -> None:
    """Simulate a subverted zygote: its RESULT frames claim a terabyte of payload."""
    import sys

    from circuitlab_graders.sandbox import frames

    zygote = sys.modules["__main__"]  # the zygote runs as `python -m circuitlab_graders.sandbox.zygote`
    honest = zygote.send

    def send(fd: int, kind: int, payload: bytes = b"") -> None:
        if kind != frames.RESULT:
            return honest(fd, kind, payload)
        frames.write_all(fd, frames.HEADER.pack(kind, 1 << 40))

    zygote.send = send
