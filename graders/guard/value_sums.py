"""One number per tensor that changes when its values do: a float32 sum, taken on one
thread so that the order of additions, and so the rounding, is the same every time
(an untouched tensor never looks changed)."""

from __future__ import annotations

from typing import Iterable

import torch


def sums(tensors: Iterable[torch.Tensor]) -> list[float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return [float(t.detach().sum()) if t.is_floating_point() else float(t.detach().double().sum())
                    for t in tensors]
    finally:
        torch.set_num_threads(threads)
