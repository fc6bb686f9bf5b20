"""Chapter 6's exact sweeps: the graders' references for `dataset_patching_sweep` and
`per_prompt_head_patching`, with the numbers of the readable references in
solutions/ch06_dataset_patching.py, from `circuitlab.sweeps`, the batched exact engine
(a patch at layer L resumes from the base run there, recomputes only the positions it
changes, and unembeds only the two answers). Kept apart from the readable references,
whose source learners read and the filled-in chapter runs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from circuitlab.answer_logits import final_logit_diffs
from circuitlab.sweeps import head_sweep, residual_sweep
from circuitlab_solutions.ch06_dataset_patching import normalised_patching_metric

DIRECTIONS = ("noising", "denoising")
COMPONENTS = ("q", "k", "v", "pattern")


def _runs(clean: Tensor, corrupt: Tensor, direction: str) -> tuple[Tensor, Tensor]:
    """(base, source): the run that is patched and the run the patches come from."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    return (clean, corrupt) if direction == "noising" else (corrupt, clean)


def baselines(model, clean: Tensor, corrupt: Tensor, answers: Tensor) -> tuple[Tensor, Tensor]:
    """[batch] clean and corrupt logit differences of each prompt."""
    return final_logit_diffs(model, clean, answers), final_logit_diffs(model, corrupt, answers)


@torch.no_grad()
def exact_residual_effects(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                           direction: str = "noising") -> Tensor:
    """[batch, n_layers, pos]: each prompt's normalised metric in `dataset_patching_sweep`,
    from the exact batched engine."""
    base, source = _runs(clean, corrupt, direction)
    clean_diff, corrupt_diff = baselines(model, clean, corrupt, answers)
    patched = residual_sweep(model, base, source, answers)
    return normalised_patching_metric(patched, clean_diff[:, None, None], corrupt_diff[:, None, None])


def exact_dataset_patching_sweep(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                                 direction: str = "noising") -> Tensor:
    """`dataset_patching_sweep`'s numbers from the exact batched engine."""
    return exact_residual_effects(model, clean, corrupt, answers, direction).mean(0)


@torch.no_grad()
def exact_head_effects(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                       direction: str = "noising") -> Tensor:
    """[batch, n_layers, n_heads]: each prompt's normalised metric with one head's output
    (hook_z, every position) patched, from the exact batched engine."""
    base, source = _runs(clean, corrupt, direction)
    clean_diff, corrupt_diff = baselines(model, clean, corrupt, answers)
    patched = head_sweep(model, base, source, answers)
    return normalised_patching_metric(patched, clean_diff[:, None, None], corrupt_diff[:, None, None])


def exact_per_prompt_head_patching(model, clean: Tensor, corrupt: Tensor, answers: Tensor,
                                   heads: Sequence[Sequence[int]], direction: str = "noising") -> Tensor:
    """`per_prompt_head_patching`'s numbers from the exact batched engine."""
    every = exact_head_effects(model, clean, corrupt, answers, direction)
    return every[:, [int(layer) for layer, _ in heads], [int(head) for _, head in heads]]
