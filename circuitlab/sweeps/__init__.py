"""Exact activation-patching sweeps over batches of prompt pairs (the engine behind the
graders' references, chapter 6 and the patching explorer).

This is answer code: a learner's function that imports, reaches or calls anything here
scores zero, and the classroom sandbox hides this folder. It lives in `circuitlab` rather
than `solutions/` because the explorer needs it where `solutions/` is absent (a student
release). `exact` holds the batch API below; `one_pair` the single-pair string functions of
chapters 1-2 (`residual_patching_sweep`, `head_patching_sweep`, `head_by_position_sweep`).
"""

from circuitlab.sweeps.exact import (
    BaseRun,
    UnsupportedModelError,
    head_by_position_sweep,
    head_sweep,
    logit_diffs,
    residual_sweep,
)

__all__ = ["BaseRun", "UnsupportedModelError", "head_by_position_sweep", "head_sweep", "logit_diffs", "residual_sweep"]
