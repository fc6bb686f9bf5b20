"""Helpers the chapter notebooks call: choosing the model and saying which one it is."""

from __future__ import annotations

import os

from circuitlab.loading import default_model, load_model

MODEL_ENV = "CIRCUITLAB_MODEL"  # e.g. "gpt2-small" or "gelu-2l:random" to override the default


def course_model():
    """The model a chapter runs on, announced in a visible line.

    Pretrained gelu-2l when its weights are in the local Hugging Face cache,
    otherwise the offline default. Set CIRCUITLAB_MODEL=name[:weights] to choose.
    """
    choice = os.environ.get(MODEL_ENV)
    if choice:
        name, _, weights = choice.partition(":")
        weights = weights or "pretrained"
    else:
        name, weights = default_model()
    model = load_model(name, weights=weights)
    print(f"This notebook runs on {model.course_name}.")
    if weights == "random":
        print(
            "These are random weights: every exercise and check works, but the plots will not show "
            "the circuit the text describes. See the README for getting the real gelu-2l weights."
        )
    return model
