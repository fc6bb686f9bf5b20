"""What crosses the sandbox's wall: plain values and tensors, types kept exactly, nothing
that runs code on the way back."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from circuitlab_graders import wire
from circuitlab_graders.inputs import MODEL, Cache, Hook


def test_plain_values_round_trip_exactly():
    value = {"s": " Hart", "i": 2**70, "f": 0.1, "nan": float("nan"), "inf": -math.inf, "b": True, "n": None,
             "l": [1, "two", (3.0,)], "t": (Cache("Alex Hart"), Hook("blocks.0.hook_z", detached=True), MODEL)}
    back = wire.loads(wire.dumps(value))
    assert back["s"] == " Hart" and type(back["i"]) is int and back["i"] == 2**70
    assert back["f"] == 0.1 and math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert back["b"] is True and back["n"] is None
    assert back["l"] == [1, "two", (3.0,)] and type(back["l"][2]) is tuple
    assert back["t"] == (Cache("Alex Hart"), Hook("blocks.0.hook_z", detached=True), MODEL)


def test_tensors_keep_dtype_shape_and_values():
    value = [torch.arange(6.0).reshape(2, 3), torch.tensor(7, dtype=torch.int64), torch.ones(0, 4)]
    back = wire.loads(wire.dumps(value))
    for got, want in zip(back, value):
        assert type(got) is torch.Tensor and got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("value,name", [
    (type("Agreeable", (str,), {"__eq__": lambda s, o: True, "__hash__": str.__hash__})("x"), "Agreeable"),
    (type("Close", (float,), {})(1.0), "Close"),
    (torch.zeros(2).as_subclass(type("Sub", (torch.Tensor,), {})), "Sub"),
    (torch.nn.Parameter(torch.zeros(2)), "Parameter"),
    (torch.zeros(2, device="meta"), "Tensor"),
    (object(), "object"),
])
def test_anything_else_arrives_as_an_opaque_record(value, name):
    back = wire.loads(wire.dumps(value))
    assert type(back) is wire.Opaque and back.type_name == name
    assert back != back and back != "x"  # equals nothing, itself included
    relayed = wire.loads(wire.dumps(back))  # the worker's supervisor passes it on unchanged
    assert type(relayed) is wire.Opaque and relayed.type_name == name


def test_malformed_or_pickled_bytes_are_refused():
    with pytest.raises(ValueError):
        wire.loads(b"\x00" * 3)
    with pytest.raises(ValueError):
        wire.loads(wire.HEADER.pack(10**9) + b"{}")
    with pytest.raises(ValueError):
        wire.loads(pickle.dumps({"kind": "answer"}))
    with pytest.raises(ValueError):
        wire.loads(wire.HEADER.pack(13) + b'{"t": "exec"}')
