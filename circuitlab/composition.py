"""A baseline for composition scores: what unrelated matrices of a head's shape score.

A head's OV and QK circuits are [d_model, d_model] matrices of rank d_head, products of
a [d_model, d_head] and a [d_head, d_model] factor. Two such matrices drawn at random
(Gaussian factors) still share some directions by chance, and how much depends only on
d_model and d_head, so a score means something only next to this baseline.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def random_circuits(n: int, d_model: int, d_head: int, generator: torch.Generator) -> Tensor:
    """[n, d_model, d_model]: products of Gaussian [d_model, d_head] and [d_head, d_model] factors."""
    return torch.randn(n, d_model, d_head, generator=generator) @ torch.randn(n, d_head, d_model, generator=generator)


def composition_baseline(score: Callable[[Tensor, Tensor], Tensor], d_model: int, d_head: int,
                         n: int = 200, seed: int = 0) -> Tensor:
    """`score` (a composition score function) on `n` independent pairs of random
    circuits: [n] scores, whose mean and spread say what "high" means at this shape."""
    generator = torch.Generator().manual_seed(seed)
    left = random_circuits(n, d_model, d_head, generator)
    right = random_circuits(n, d_model, d_head, generator)
    return score(left, right)
