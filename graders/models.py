"""The models every check runs on: gelu-2l and gpt2-small, pretrained where the weights
are cached locally, otherwise their seeded random-weight twins."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from circuitlab.loading import load_model, weights_cached
from circuitlab_graders.guard.weights import Weights

GRADING_MODELS = ("gelu-2l", "gpt2-small")


@dataclass(frozen=True)
class GradingModel:
    key: str  # "gelu-2l" or "gpt2-small"
    model: object  # a TransformerBridge
    label: str  # how feedback names it, e.g. "gelu-2l (random weights)"
    weights: str = ""  # "pretrained" or "random" for a course model (load_model's argument)


@functools.lru_cache(maxsize=None)
def grading_model(key: str) -> GradingModel:
    pretrained = weights_cached(key)
    model = load_model(key, weights="pretrained" if pretrained else "random")
    Weights.of(model)  # remember the weights as loaded, before any learner code sees the model
    weights = "pretrained" if pretrained else "random"
    return GradingModel(key, model, f"{key} ({'pretrained' if pretrained else 'random weights'})", weights)


def grading_models() -> list[GradingModel]:
    return [grading_model(key) for key in GRADING_MODELS]
