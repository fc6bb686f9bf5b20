"""Plain data across the sandbox's wall: values as JSON plus tensors as safetensors.

Both directions use it: case inputs go into the sandbox, a learner's answers come out.
Nothing that is decoded can run code: JSON and safetensors are data formats (no pickle),
and types are kept exactly. A value of any other type, a subclass included (a `str`
whose `__eq__` always says True, a Tensor subclass), arrives as an `Opaque` record that
names the type and equals nothing, so the comparison that follows says what it was.

Layout: 8 bytes (big-endian length of the JSON), the JSON, then a safetensors blob.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from circuitlab_graders.inputs import MODEL, Cache, Hook

HEADER = struct.Struct("!Q")
MAX_JSON = 64 * 1024 * 1024


@dataclass(frozen=True)
class Opaque:
    """A value the wire does not carry: its type's name and a short repr."""

    type_name: str
    text: str

    def __eq__(self, other: Any) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<a {self.type_name}: {self.text}>"


def dumps(value: Any, device_of_model: str = "cpu") -> bytes:
    """Encode `value`. Tensors on `device_of_model` (where the worker's model is) are marked
    as such, so the reader can put them on its own model's device."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(value, tensors, device_of_model, 0)
    header = json.dumps(tree, allow_nan=False).encode()
    blob = save_tensors(tensors) if tensors else b""
    return HEADER.pack(len(header)) + header + blob


def loads(data: bytes, model_device: str = "cpu") -> Any:
    """Decode bytes from `dumps`; tensors that were on the writer's model device move to
    `model_device`. Raises ValueError on anything malformed."""
    if len(data) < HEADER.size:
        raise ValueError("truncated data")
    (size,) = HEADER.unpack_from(data)
    if size > MAX_JSON or HEADER.size + size > len(data):
        raise ValueError("bad header length")
    try:
        tree = json.loads(data[HEADER.size:HEADER.size + size])
        blob = data[HEADER.size + size:]
        tensors = load_tensors(bytes(blob)) if blob else {}
        return _decode(tree, tensors, model_device, 0)
    except Exception as err:  # whatever a malformed blob makes json, safetensors or _decode raise
        if isinstance(err, ValueError):
            raise
        raise ValueError(f"malformed data ({type(err).__name__})") from None


def _encode(value: Any, tensors: dict, model_device: str, depth: int) -> Any:
    if depth > 20:
        return _opaque(value, "nested too deeply")
    kind = type(value)
    if value is None:
        return {"t": "none"}
    if value is MODEL:
        return {"t": "model"}
    if kind is Cache:
        return {"t": "cache", "v": _encode(value.source, tensors, model_device, depth + 1)}
    if kind is Hook:
        return {"t": "hook", "name": value.name, "detached": value.detached}
    if kind is bool:
        return {"t": "bool", "v": value}
    if kind is int:
        return {"t": "int", "v": str(value)}  # any size, exactly
    if kind is float:
        return {"t": "float", "v": value if math.isfinite(value) else repr(value)}
    if kind is str:
        return {"t": "str", "v": value}
    if kind is Opaque:  # passed on (the worker's supervisor relays what its runners sent)
        return {"t": "opaque", "type": value.type_name, "v": value.text}
    if kind in (list, tuple):
        return {"t": kind.__name__, "v": [_encode(v, tensors, model_device, depth + 1) for v in value]}
    if kind is dict:
        return {"t": "dict", "v": [[_encode(k, tensors, model_device, depth + 1),
                                    _encode(v, tensors, model_device, depth + 1)] for k, v in value.items()]}
    if kind is torch.Tensor and value.device.type != "meta" and not value.is_complex() and not value.is_sparse:
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"t": "tensor", "k": key, "model_device": value.device.type == torch.device(model_device).type,
                "device": str(value.device)}
    return _opaque(value, "")


def _opaque(value: Any, why: str) -> dict:
    try:
        text = repr(value)[:80]
    except Exception:
        text = "?"
    return {"t": "opaque", "type": type(value).__name__[:80], "v": why or text}


def _decode(tree: Any, tensors: dict, model_device: str, depth: int) -> Any:
    if depth > 21 or not isinstance(tree, dict) or not isinstance(tree.get("t"), str):
        raise ValueError("malformed value")
    kind, v = tree["t"], tree.get("v")
    if kind == "none":
        return None
    if kind == "model":
        return MODEL
    if kind == "cache":
        return Cache(_decode(v, tensors, model_device, depth + 1))
    if kind == "hook":
        return Hook(str(tree["name"]), bool(tree["detached"]))
    if kind == "bool":
        return bool(v)
    if kind == "int":
        return int(str(v))
    if kind == "float":
        return float(v)
    if kind == "str":
        return str(v)
    if kind in ("list", "tuple"):
        items = [_decode(item, tensors, model_device, depth + 1) for item in v]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {_decode(k, tensors, model_device, depth + 1): _decode(x, tensors, model_device, depth + 1)
                for k, x in v}
    if kind == "tensor":
        tensor = tensors[str(tree["k"])]
        return tensor.to(model_device if tree.get("model_device") else "cpu")
    if kind == "opaque":
        return Opaque(str(tree.get("type")), str(v))
    raise ValueError(f"unknown kind {kind!r}")
