"""Run once in the zygote, before any job: read the plan, load the models, build every
cache the plan's inputs name, so each forked job finds them in place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PLAN_ENV = "CIRCUITLAB_PLAN"  # the plan file's path, readable inside the sandbox

PLAN = None  # the Plan
MODELS: dict[str, Any] = {}  # grading model key -> model
ARGUMENTS: dict[str, Any] = {}  # grading model key -> graders.inputs.Arguments


def load() -> None:
    global PLAN
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are drawn, never shown
    import torch

    from circuitlab import loading, notebook
    from circuitlab_graders.guard import Weights
    from circuitlab_graders.inputs import Arguments, Cache
    from circuitlab_graders.worker.plan import Plan

    torch.set_grad_enabled(False)
    PLAN = Plan.loads(Path(os.environ[PLAN_ENV]).read_bytes())
    for key, weights in PLAN.models:
        MODELS[key] = loading.load_model(key, weights=weights)
        Weights.of(MODELS[key])  # the weights every call is held to
        ARGUMENTS[key] = Arguments(MODELS[key])
    for exercise in PLAN.exercises:
        for call in exercise.calls:
            for value in _refs(call.inputs):
                if isinstance(value, Cache):
                    ARGUMENTS[call.model].cache(value)

    # The chapters' course_model() loads the notebook model; here it is loaded once and
    # every job (a fork) gets its own copy-on-write view of it.
    name, weights = PLAN.notebook_model
    shared = loading.load_model(name, weights=weights)
    notebook.load_model = lambda *args, **kwargs: shared
    notebook.default_model = lambda: (name, weights)

    import matplotlib  # noqa: F401  (imported once here, not by every job)
    import IPython.display  # noqa: F401


def _refs(value: Any):
    if isinstance(value, dict):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs(item)
    else:
        yield value
