"""Mistakes about token strings, named in every exercise that returns or takes them, in
every mode: a leading space stripped (' should' -> 'should'), the BOS token included
('<|endoftext|> Turing'), a token id where a string belongs, and answer tokens that are
all BOS because `tokenizer.encode(' Hart')[0]` is the BOS token in TransformerLens 4.

Three places use them: `circuitlab_graders.diagnoses` (full and hidden mode: the learner's strings
against the reference's), `circuitlab_graders.properties.single_token` (public mode: a returned
string that is not one token) and the engine's public verdict (answers that are all zero
where the call took answer tokens). Each needs only the model's tokenizer.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

BOS_ADVICE = ("In TransformerLens 4 `model.tokenizer.encode(' Hart')[0]` and `model.to_tokens(' Hart')[0, 0]` are the "
              "BOS token, not ' Hart': use `model.to_single_token(' Hart')`.")
STRIPPED = ("It looks like you stripped the leading space from a token: ' should' and 'should' are different tokens. "
            "Return each token exactly as model.to_string(token_id) decodes it.")
IDS = ("You returned token ids, not token strings: decode each id with model.to_string(token_id).")


def bos_string(model) -> Optional[str]:
    tokenizer = getattr(model, "tokenizer", None)
    bos = getattr(tokenizer, "bos_token", None)
    return bos if isinstance(bos, str) and bos else None


def with_bos(model) -> str:
    return (f"Your token strings include the BOS token {bos_string(model)!r}: it is position 0 of model.to_tokens(...) "
            "and what tokenizer.encode(...) puts first in TransformerLens 4. Decode the token alone: "
            "model.to_string(token_id).")


def _token_id(model, text: str) -> Optional[int]:
    try:
        return int(model.to_single_token(text))
    except Exception:  # not exactly one token of this vocabulary
        return None


def _as_int(value: Any) -> Optional[int]:
    if type(value) is int:
        return value
    if type(value) is torch.Tensor and value.numel() == 1 and not value.is_floating_point() and value.dtype != torch.bool:
        return int(value)
    return None


def _strings(value: Any) -> Optional[list]:
    """A str or a list/tuple as a list of its items; None for anything else."""
    if type(value) is str:
        return [value]
    if type(value) in (list, tuple):
        return list(value)
    return None


def relation(model, got: Any, expected: Any) -> Optional[str]:
    """The token-string mistake that turns every expected string into the one the learner
    returned (a str or a list of them, compared item by item), if one does."""
    wanted = _strings(expected)
    if not wanted or not all(type(w) is str for w in wanted):
        return None
    answers = [got] if type(expected) is str else (list(got) if type(got) in (list, tuple) else None)
    if answers is None and type(got) is torch.Tensor and got.dim() == 1:
        answers = list(got)
    if answers is None or len(answers) != len(wanted):
        return None
    pairs = [(a, w) for a, w in zip(answers, wanted) if not (type(a) is str and a == w)]
    if not pairs:
        return None
    bos = bos_string(model)
    if all((i := _as_int(a)) is not None and i == _token_id(model, w) for a, w in pairs):
        return IDS
    if all(type(a) is str for a, _ in pairs):
        if all(w.startswith(" ") and a == w.lstrip(" ") for a, w in pairs):
            return STRIPPED
        if bos and all(bos in a and a.replace(bos, "") == w for a, w in pairs):
            return with_bos(model)
    return None


def not_one_token(model, text: Any) -> Optional[str]:
    """Why a value that should be one token string is not, where a token-string mistake explains it."""
    if _as_int(text) is not None:
        return IDS
    if type(text) is not str:
        return None
    bos = bos_string(model)
    if bos and bos in text and text != bos and _token_id(model, text.replace(bos, "")) is not None:
        return with_bos(model)
    if text and not text.startswith(" ") and _token_id(model, " " + text) is not None:
        return (f"{text!r} is not one token, but {' ' + text!r} is: it looks like you stripped the leading space. "
                "Return the token exactly as model.to_string(token_id) decodes it.")
    return None


def takes_tokens(model, inputs: dict) -> bool:
    """Whether a call's inputs hold token strings (single tokens of `model`, alone or in a list)."""
    for value in inputs.values():
        items = _strings(value)
        if items and all(type(i) is str and i.strip() and _token_id(model, i) is not None for i in items):
            return True
    return False


def all_zero(value: Any) -> bool:
    if type(value) in (int, float):
        return value == 0
    return (type(value) is torch.Tensor and value.is_floating_point() and value.numel() > 0
            and value.device.type != "meta" and not bool(value.any()))


def same_answer_tokens(calls: list[tuple[Any, dict, Any]]) -> Optional[str]:
    """Public mode: every failed call (model, inputs, answer) took answer tokens and answered 0 everywhere."""
    if calls and all(takes_tokens(model, inputs) and all_zero(answer) for model, inputs, answer in calls):
        return f"Every entry of your answer is 0, as if both answers were the same token. {BOS_ADVICE}"
    return None
