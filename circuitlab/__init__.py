"""circuitlab: the runtime of a hands-on activation-patching course."""

from circuitlab.loading import MODELS, WeightsUnavailableError, load_model, weights_cached
from circuitlab.notebook import course_model
from circuitlab.plotting import (
    composition_figure,
    head_by_position_figure,
    head_labels,
    head_patching_figure,
    patching_heatmap,
    position_labels,
    residual_labels,
    residual_patching_figure,
)

__all__ = [
    "MODELS",
    "WeightsUnavailableError",
    "composition_figure",
    "course_model",
    "head_by_position_figure",
    "head_patching_figure",
    "head_labels",
    "load_model",
    "patching_heatmap",
    "position_labels",
    "residual_labels",
    "residual_patching_figure",
    "weights_cached",
]
