"""Building blocks of public properties: small checks of a learner's answer that need no
reference. Each returns None when it holds, else what is wrong; each checks types
first, since a property sees whatever the learner returned."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch


def single_token(model, text: Any) -> Optional[str]:
    from circuitlab_graders.token_diagnoses import not_one_token  # names a token-string mistake where one explains it

    if type(text) is not str:
        return " ".join(filter(None, (f"returned {type(text).__name__}, expected a str.", not_one_token(model, text))))
    try:
        model.to_single_token(text)
    except Exception:
        return not_one_token(model, text) or f"{text!r} is not exactly one token of the model's vocabulary"
    return None


def scalar(value: Any) -> Optional[str]:
    if type(value) is not torch.Tensor:
        return f"returned {type(value).__name__}, expected a torch.Tensor"
    if value.dim() != 0:
        return f"returned shape {tuple(value.shape)}; a 0-dim tensor (one number) is expected"
    if not torch.is_floating_point(value):
        return f"returned dtype {value.dtype}, expected a floating-point tensor"
    return None


def number(value: Any) -> Optional[str]:
    """One number: a Python float or int, or a one-element floating-point tensor."""
    if type(value) in (int, float):
        return None if math.isfinite(value) else f"returned {value}, expected a finite number"
    if type(value) is torch.Tensor and value.numel() == 1 and value.device.type != "meta":
        if not torch.is_floating_point(value) or not bool(torch.isfinite(value).all()):
            return "expected one finite floating-point number"
        return None
    return f"returned {_describe(value)}, expected a float"


def shaped(value: Any, shape: tuple) -> Optional[str]:
    """A floating-point tensor of `shape` with finite entries."""
    if type(value) is not torch.Tensor or tuple(value.shape) != tuple(shape):
        return f"returned {_describe(value)}, expected a tensor of shape {tuple(shape)}"
    if not torch.is_floating_point(value) or value.device.type == "meta" or not bool(torch.isfinite(value).all()):
        return "expected finite floating-point values"
    return None


def close(got: Any, expected: torch.Tensor, what: str, atol: float = 1e-4) -> Optional[str]:
    if type(got) is not torch.Tensor or got.shape != expected.shape or got.device.type == "meta":
        return f"{what}: returned {_describe(got)}, expected shape {tuple(expected.shape)}"
    got_f, expected_f = got.detach().float().cpu(), expected.detach().float().cpu()
    if torch.allclose(got_f, expected_f, atol=atol, rtol=1e-4):
        return None
    return f"{what}: got {got_f.flatten()[:4].tolist()} where {expected_f.flatten()[:4].tolist()} is required"


def _describe(value: Any) -> str:
    if type(value) is torch.Tensor:
        return f"shape {tuple(value.shape)}"
    return type(value).__name__
