"""A case's inputs as plain data, and the call arguments they become on a model.

Inputs are written so that a case can be named by its content (two cases are the same
case exactly when their inputs are) and sent to a sandboxed worker as data: plain
values (str, int, float, bool, None, and lists, tuples and dicts of them), tensors, and
three references to things that live on the grading model:

* `MODEL`: the model itself;
* `Cache(source)`: `model.run_with_cache(source)[1]`, for a prompt or a token tensor;
* `Hook(name)`: the model's hook point `name`; `Hook(name, detached=True)` is a fresh
  HookPoint carrying only that name (a `hook_result`-shaped case on a bridge without
  per-head results).

Every call gets fresh copies of the tensors, so an in-place edit cannot reach the next
call. Caches are built once per source and shared between calls (they are the inputs
a guard must protect); `Arguments.build` says which they are.

This module holds no answers: the sandboxed worker imports it to rebuild arguments.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Union

import torch


class _Model:
    def __repr__(self) -> str:
        return "MODEL"


MODEL = _Model()


@dataclass(frozen=True)
class Cache:
    source: Union[str, torch.Tensor]  # a prompt, or tokens [batch, pos]

    def __repr__(self) -> str:
        shown = repr(self.source) if isinstance(self.source, str) else f"tokens {tuple(self.source.shape)}"
        return f"Cache({shown})"


@dataclass(frozen=True)
class Hook:
    name: str
    detached: bool = False


def content_id(value: Any) -> str:
    """A hex digest that two inputs share exactly when they are equal (tensors by dtype,
    shape and bytes; floats bit for bit)."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if value is MODEL:
        digest.update(b"M")
    elif isinstance(value, Cache):
        digest.update(b"C")
        _feed(digest, value.source)
    elif isinstance(value, Hook):
        digest.update(b"H" + struct.pack("?", value.detached))
        _feed(digest, value.name)
    elif isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        digest.update(f"T{data.dtype}{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    elif isinstance(value, bool) or value is None:
        digest.update(f"B{value!r}".encode())
    elif isinstance(value, int):
        digest.update(f"I{value}".encode())
    elif isinstance(value, float):
        digest.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, str):
        encoded = value.encode()
        digest.update(b"S" + struct.pack("<Q", len(encoded)) + encoded)
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    else:
        raise TypeError(f"case inputs must be plain data, tensors, MODEL, Cache or Hook; got {type(value).__name__}")


class Arguments:
    """Builds call arguments from inputs on one model, keeping each cache it builds."""

    def __init__(self, model) -> None:
        self.model = model
        self._caches: dict[str, Any] = {}

    def build(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any, Cache]]]:
        """Fresh arguments for one call, and the shared objects among them as (argument
        path, object, its Cache input): the caches, which persist between calls."""
        shared: list[tuple[str, Any]] = []
        args = {name: self._build(value, name, shared) for name, value in inputs.items()}
        return args, shared

    def _build(self, value: Any, path: str, shared: list) -> Any:
        if value is MODEL:
            return self.model
        if isinstance(value, Cache):
            cache = self.cache(value)
            shared.append((path, cache, value))
            return cache
        if isinstance(value, Hook):
            return self.hook(value)
        if isinstance(value, torch.Tensor):
            return value.clone()
        if isinstance(value, list):
            return [self._build(v, f"{path}[{i}]", shared) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return tuple(self._build(v, f"{path}[{i}]", shared) for i, v in enumerate(value))
        if isinstance(value, Mapping):
            return {k: self._build(v, f"{path}[{k!r}]", shared) for k, v in value.items()}
        return value

    def cache(self, ref: Cache):
        key = content_id(ref)
        if key not in self._caches:
            self._caches[key] = self.fresh_cache(ref)
        return self._caches[key]

    def fresh_cache(self, ref: Cache):
        """The cache of `ref.source`, computed anew (deterministic: the same numbers each time)."""
        source = ref.source.to(self.model.cfg.device) if isinstance(ref.source, torch.Tensor) else ref.source
        with torch.no_grad():
            return self.model.run_with_cache(source)[1]

    def hook(self, ref: Hook):
        from transformer_lens.hook_points import HookPoint

        if ref.detached:
            point = HookPoint()
            point.name = ref.name
            return point
        return self.model.hook_dict[ref.name]
