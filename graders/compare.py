"""Comparisons between a learner's answer and the reference's. Each returns None when
they agree, otherwise one sentence a learner can act on.

Types are checked exactly: a learner's value is data, never code the grader runs, so
a `str` or `float` subclass (whose `__eq__` could say anything) is not accepted as a
`str` or `float`, and neither is a Tensor subclass as a tensor.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from circuitlab_graders.wire import Opaque

_PLAIN = (str, int, float, bool, type(None))


def same_value(got: Any, expected: Any) -> Optional[str]:
    """Exact equality, for strings, numbers and (nested) lists of them."""
    problem = _exactly(got, expected)
    if problem is not None:
        return problem
    if not _equal(got, expected):
        return f"returned {_shown(got)}, expected {_shown(expected)}"
    return None


def _exactly(got: Any, expected: Any) -> Optional[str]:
    """None when `got` has exactly the types of `expected`, all the way down."""
    if type(got) is not type(expected):
        return f"returned {kind(got)}, expected {kind(expected)}"
    if isinstance(expected, (list, tuple)):
        if len(got) != len(expected):
            return f"returned {len(got)} items, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            if (problem := _exactly(g, e)) is not None:
                return f"item {i}: {problem}"
    elif not isinstance(expected, _PLAIN):
        raise TypeError(f"same_value compares plain values, not {type(expected).__name__}")
    return None


def _equal(got: Any, expected: Any) -> bool:
    # Both sides have the same plain types here, so these are the builtin comparisons.
    if isinstance(expected, (list, tuple)):
        return all(_equal(g, e) for g, e in zip(got, expected))
    return got == expected


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def close_float(atol: float = 1e-4, rtol: float = 1e-4):
    """A Python float (or a 0-dim tensor) within atol + rtol * |expected| of the reference."""

    def compare(got: Any, expected: float) -> Optional[str]:
        if type(got) is torch.Tensor and got.numel() == 1 and got.device.type != "meta":
            got = got.item()
        if type(got) not in (int, float):
            return f"returned {kind(got)}, expected a float"
        if not math.isfinite(got):
            return f"returned {got}, expected a finite number"
        if abs(got - expected) > atol + rtol * abs(expected):
            return f"returned {got:.6g}, expected {expected:.6g}"
        return None

    compare.atol, compare.rtol = atol, rtol
    return compare


def close_tensor(atol: float = 1e-3, rtol: float = 1e-3):
    """Tensors of the same shape whose entries agree to `atol` + `rtol` * |expected|."""

    def compare(got: Any, expected: torch.Tensor) -> Optional[str]:
        if type(got) is not torch.Tensor:
            if isinstance(got, torch.Tensor):
                return f"returned a {type_name(got)} (a Tensor subclass); return a plain torch.Tensor"
            return f"returned {kind(got)}, expected a torch.Tensor of shape {tuple(expected.shape)}"
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
            return (f"{int(wrong.sum())} of {wrong.numel()} values differ; largest difference "
                    f"{diff.max().item():.4g}{where} (got {got_f[worst].item():.4g}, expected "
                    f"{expected_f[worst].item():.4g})")
        return None

    compare.atol, compare.rtol = atol, rtol  # the engine counts matching cells of sweeps with these
    return compare


def scalar_shape(compare):
    """`compare`, but a 1-element tensor where a 0-dim one is expected is named as such."""

    def check(got: Any, expected: Any) -> Optional[str]:
        if type(got) is torch.Tensor and got.dim() != 0 and isinstance(expected, torch.Tensor) and expected.dim() == 0:
            return f"returned shape {tuple(got.shape)}; a 0-dim tensor (one number) is expected"
        return compare(got, expected)

    check.atol, check.rtol = getattr(compare, "atol", 1e-3), getattr(compare, "rtol", 1e-3)
    return check


def kind(value: Any) -> str:
    if value is None:
        return "None"
    if type(value) is torch.Tensor:
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type_name(value)}"


def type_name(value: Any) -> str:
    """The learner's type, also for a value that came through the sandbox's wall as Opaque."""
    return value.type_name if type(value) is Opaque else type(value).__name__
