"""Comparisons between a learner's answer and the reference's. Each returns None when
they agree, otherwise one sentence a learner can act on."""

from __future__ import annotations

from typing import Any, Optional

import torch


def same_value(got: Any, expected: Any) -> Optional[str]:
    """Exact equality, for strings and lists of strings."""
    if type(got) is not type(expected):
        return f"returned {_kind(got)}, expected {_kind(expected)}"
    if got != expected:
        return f"returned {got!r}, expected {expected!r}"
    return None


def close_tensor(atol: float = 1e-3, rtol: float = 1e-3):
    """Tensors of the same shape whose entries agree to `atol` + `rtol` * |expected|."""

    def compare(got: Any, expected: torch.Tensor) -> Optional[str]:
        if not isinstance(got, torch.Tensor):
            return f"returned {_kind(got)}, expected a torch.Tensor of shape {tuple(expected.shape)}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if not torch.is_floating_point(got):
            return f"returned dtype {got.dtype}, expected a floating-point tensor"
        if got.device != expected.device:
            return f"returned a tensor on device {got.device}, expected one on {expected.device} (where the inputs are)"
        got_f = got.detach().to(device=expected.device, dtype=torch.float32)
        if not torch.isfinite(got_f).all():
            nan, inf = int(torch.isnan(got_f).sum()), int(torch.isinf(got_f).sum())
            return (f"returned {nan} NaN and {inf} infinite values (of {got_f.numel()}); look for a division "
                    "by zero, a log of zero, or an uninitialised tensor (torch.empty)")
        expected_f = expected.to(torch.float32)
        wrong = ~torch.isclose(got_f, expected_f, atol=atol, rtol=rtol)
        if wrong.any():
            diff = (got_f - expected_f).abs()
            worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.dim() else ()
            where = f" at index {list(worst)}" if worst else ""
            return (
                f"{int(wrong.sum())} of {wrong.numel()} values differ; largest difference "
                f"{diff.max().item():.4g}{where} (got {got_f[worst].item():.4g}, expected {expected_f[worst].item():.4g})"
            )
        return None

    compare.atol, compare.rtol = atol, rtol  # the engine counts matching cells of sweeps with these
    return compare


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
