"""Diagnoses that hold for any exercise, read from how a wrong answer relates to the
reference: all zeros or constant, negated, the clean logit difference subtracted,
transposed, rows or columns shifted or reordered, off by a constant factor such as
√d_head, a masked (-inf) attention cell read, a softmax taken before the causal mask; and
the token-string mistakes of graders.token_diagnoses.

They run on the trusted side after every learner call, on the failed cases only, and
only name a relation that holds on every failed case. An exercise's own known
mistakes are tried first; these catch what its library does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from circuitlab.prompts import PatchingCase
from circuitlab_graders import token_diagnoses
from circuitlab_graders.inputs import MODEL
from circuitlab_graders.token_diagnoses import BOS_ADVICE

PATCHING_KEYS = ("clean_prompt", "corrupt_prompt", "clean_answer", "corrupt_answer")


@dataclass
class Failure:
    model: Any  # the grading model (a TransformerBridge)
    inputs: dict  # the case's inputs
    got: Any
    expected: Any
    _patching: Optional[tuple[float, float]] = None

    def patching(self) -> Optional[tuple[float, float]]:
        """(clean, corrupt) logit differences when the case is a patching sweep's."""
        if self.inputs.get("model") is not MODEL or not all(k in self.inputs for k in PATCHING_KEYS):
            return None
        if self._patching is None:
            case = PatchingCase("", *(self.inputs[k] for k in PATCHING_KEYS))
            self._patching = (case.logit_diff(self.model, case.clean_prompt), case.logit_diff(self.model, case.corrupt_prompt))
        return self._patching


def diagnose(failures: list[Failure]) -> Optional[str]:
    """The first relation that every failure shows, as one sentence; None if none does."""
    named = {token_diagnoses.relation(f.model, f.got, f.expected) for f in failures}  # token strings first
    if len(named) == 1 and None not in named:
        return named.pop()
    for rule in RULES:
        sentences = set()
        for failure in failures:
            got, expected = _numbers(failure.got), _numbers(failure.expected)
            sentence = rule(failure, got, expected) if got is not None and expected is not None else None
            if sentence is None:
                break
            sentences.add(sentence)
        else:
            if len(sentences) == 1:
                return sentences.pop()
    return None


def _numbers(value: Any) -> Optional[torch.Tensor]:
    """`value` as a float64 CPU tensor, when it is a plain tensor or number."""
    if type(value) is torch.Tensor and value.device.type != "meta" and (value.is_floating_point() or value.dim() == 0):
        return value.detach().to("cpu", torch.float64)
    if type(value) in (int, float):
        return torch.tensor(float(value), dtype=torch.float64)
    return None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a, b, atol=2e-3, rtol=1e-2)


def _varies(t: torch.Tensor) -> bool:
    return t.numel() > 1 and float(t.max() - t.min()) > 1e-3


Rule = Callable[[Failure, torch.Tensor, torch.Tensor], Optional[str]]


def masked_cell(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    low = got.isneginf() | (got <= -1e4)
    if bool(low.any()) and not bool((expected <= -1e4).any()):
        return ("Your answer holds -inf (or about -1e5) where the reference is finite: that is a masked attention "
                "score, a key after its query. Scores and patterns are [batch, head, query, key]: check the order "
                "of the query and key indices.")
    return None


def all_zero(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if got.shape != expected.shape or bool(got.any()) or not bool(expected.any()):
        return None
    if f.patching() is not None or token_diagnoses.takes_tokens(f.model, f.inputs):
        return f"Every entry of your answer is 0, as if both answers were the same token. {BOS_ADVICE}"
    return ("Your answer is all zeros: did you return a tensor you created (e.g. torch.zeros) without "
            "filling it in?")


def constant(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if got.shape != expected.shape or _varies(got) or not _varies(expected):
        return None
    value = float(got.flatten()[0])
    if (runs := f.patching()) is not None:
        clean, corrupt = runs
        if math.isclose(value, clean, abs_tol=2e-3, rel_tol=1e-2):
            return ("Every entry equals the clean run's logit difference, so none of your patches changed "
                    "anything: check that your hook writes the corrupt activations into `activations` and returns "
                    "them, at the hook name of that row, in a run of the clean prompt.")
        if math.isclose(value, corrupt, abs_tol=2e-3, rel_tol=1e-2):
            return ("Every entry equals the corrupt run's logit difference: you ran the corrupt prompt. Run the "
                    "clean prompt, with activations patched in from the corrupt run's cache.")
    return "Your answer has the same value everywhere; the reference's values differ from cell to cell."


def negated(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if expected.abs().max() > 1e-3 and _close(got, -expected):
        return ("Your answer is the reference with its sign flipped: check the order of a subtraction "
                "(correct − wrong, clean − corrupt).")
    return None


def minus_clean(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    runs = f.patching()
    if runs is not None and abs(runs[0]) > 1e-3 and _close(got, expected - runs[0]):
        return ("Your answer is the patched logit difference minus the clean run's: that change is what the plots "
                "show (the logit-diff difference), but the exercise returns the patched logit difference itself.")
    return None


def softmax_before_mask(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if got.dim() == 0 or got.shape != expected.shape or bool((expected < 0).any()):
        return None
    if not torch.allclose(expected.sum(-1), torch.ones(()).double(), atol=1e-4):
        return None  # the reference is not a distribution over keys
    total = got.sum(-1, keepdim=True)
    if bool((total <= 0).any()) or bool((total > 1 - 1e-3).any()):
        return None
    if _close(got / total, expected) and bool((got[expected == 0] == 0).all()):
        return ("Your pattern is the reference scaled down: it sums to less than 1. You took the softmax before "
                "masking the later keys. Set their scores to -inf first, then take the softmax.")
    return None


def transposed(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if expected.dim() == 2 and got.shape != expected.shape and _close(got, expected.T):
        return "Your answer is the reference transposed: its rows and columns are swapped."
    return None


def shifted(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if expected.dim() != 2 or got.shape != expected.shape:
        return None
    for axis, what in ((0, "rows"), (1, "columns")):
        if expected.shape[axis] < 2:
            continue
        head, tail = got.narrow(axis, 0, expected.shape[axis] - 1), got.narrow(axis, 1, expected.shape[axis] - 1)
        early, late = expected.narrow(axis, 0, expected.shape[axis] - 1), expected.narrow(axis, 1, expected.shape[axis] - 1)
        if (_close(tail, early) or _close(head, late)) and _varies(expected):
            detail = ("for a residual sweep, row 0 is blocks.0.hook_resid_pre and row i + 1 is blocks.i.hook_resid_post"
                      if what == "rows" else "position p is column p, counting the BOS token as position 0")
            return f"Your {what} are the reference's shifted by one: an off-by-one in the index ({detail})."
    return None


def reordered(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if expected.dim() != 2 or got.shape != expected.shape or expected.shape[0] < 2:
        return None
    unused = list(range(expected.shape[0]))
    for row in got:
        match = next((i for i in unused if _close(row, expected[i])), None)
        if match is None:
            return None
        unused.remove(match)
    return ("Your answer has the reference's rows in another order: check how you index or flatten them "
            "(e.g. row layer * n_heads + head).")


def scaled(f: Failure, got: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    if got.shape != expected.shape or float((expected * expected).sum()) < 1e-12:
        return None
    factor = float((got * expected).sum() / (expected * expected).sum())
    if abs(factor - 1) < 1e-2 or not _close(got, factor * expected):
        return None
    root = math.sqrt(getattr(getattr(f.model, "cfg", None), "d_head", 0) or 0)
    if root and math.isclose(factor, root, rel_tol=1e-2):
        return "Your answer is the reference times √d_head: you left out the division by √d_head."
    if root and math.isclose(factor, 1 / root, rel_tol=1e-2):
        return "Your answer is the reference divided by √d_head once more: divide by √d_head only once."
    return f"Your answer is the reference times {factor:.3g}: look for a missing or extra scale factor."


RULES: tuple[Rule, ...] = (masked_cell, all_zero, constant, negated, minus_clean, softmax_before_mask, transposed,
                           shifted, reordered, scaled)
