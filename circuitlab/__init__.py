"""circuitlab: the runtime of a hands-on activation-patching course."""

from circuitlab.loading import MODELS, WeightsUnavailableError, load_model, weights_cached
from circuitlab.notebook import course_model
from circuitlab.plotting import head_labels, patching_heatmap, position_labels, residual_labels

__all__ = [
    "MODELS",
    "WeightsUnavailableError",
    "course_model",
    "head_labels",
    "load_model",
    "patching_heatmap",
    "position_labels",
    "residual_labels",
    "weights_cached",
]
