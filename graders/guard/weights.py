"""A model's weights as the grader first saw them, and getting them back.

After every learner call `restore_weights` compares every parameter's identity,
version counter and storage pointer (microseconds) and, because edits through `.data`
bypass those, a sum per tensor with the one taken when the model was first seen (about
0.05 s for gpt2-small on one core; see `value_sums`). Damaged weights are
put back by rebuilding the model the way `circuitlab.load_model` made it.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from circuitlab_graders.guard.value_sums import sums


def _tensors_of(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))


def _slot(module: torch.nn.Module, attr: str) -> Any:
    return module._parameters[attr] if attr in module._parameters else module._buffers.get(attr)


class Weights:
    """What the grader knows about one model's parameters and buffers."""

    _all: "weakref.WeakKeyDictionary[torch.nn.Module, Weights]" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: torch.nn.Module) -> "Weights":
        if model not in cls._all:
            cls._all[model] = cls(model)
        return cls._all[model]

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        # Every name of every parameter and buffer, with where it hangs, to spot replacement.
        self.slots = [(n, model.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n, _ in _tensors_of(model)]
        self._remember()

    def _remember(self) -> None:
        self.params = [(n, _slot(m, a), _slot(m, a)._version, _slot(m, a).data_ptr()) for n, m, a in self.slots]
        self.sums = self._sums()

    def _sums(self) -> list[float]:
        """One sum per distinct tensor (tied weights appear under several names)."""
        distinct = list({id(p): p for _, p, _, _ in self.params}.values())
        totals = dict(zip((id(p) for p in distinct), sums(distinct)))
        return [totals[id(p)] for _, p, _, _ in self.params]

    def touched(self) -> list[str]:
        """Parameters replaced, or edited through anything but `.data`, since last seen."""
        return [name for (name, p, version, ptr), (_, module, attr) in zip(self.params, self.slots)
                if _slot(module, attr) is not p or p._version != version or p.data_ptr() != ptr]

    def verify(self) -> list[str]:
        """Parameters whose content changed since first seen (catches `.data` edits)."""
        now = self._sums()
        return [name for (name, *_), a, b in zip(self.params, self.sums, now) if a != b]

    def storages(self) -> dict[int, str]:
        return {p.untyped_storage().data_ptr(): f"the model parameter {n}" for n, p, _, _ in self.params}

    def put_back(self, names: list[str]) -> None:
        originals = self._original_values(names)
        for (name, p, _, _), (_, module, attr) in zip(self.params, self.slots):
            if name not in names:
                continue
            if _slot(module, attr) is not p:  # the learner replaced the Parameter object itself
                (module._parameters if isinstance(p, torch.nn.Parameter) else module._buffers)[attr] = p
            with torch.no_grad():
                if p.shape != originals[name].shape or p.dtype != originals[name].dtype:
                    p.data = torch.empty_like(originals[name])
                p.copy_(originals[name])
        self.params = [(n, p, p._version, p.data_ptr()) for n, p, _, _ in self.params]
        self.sums = self._sums()

    def _original_values(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The first-seen weights, rebuilt: a course model is reloaded the way it was made."""
        course_name = getattr(self.model, "course_name", "")
        name, _, weights = str(course_name).partition(" (")
        weights = weights.rstrip(")")
        if not name or weights not in ("random", "pretrained"):
            raise RuntimeError(
                f"the weights of {course_name or 'this model'} were changed and it was not made by "
                "circuitlab.load_model, so the grader cannot restore them: reload the model")
        from circuitlab.loading import load_model

        device = next(self.model.parameters()).device
        fresh = dict(_tensors_of(load_model(name, weights=weights, device=device)))
        return {n: fresh[n].detach() for n in names}


def weights_note(names: list[str]) -> str:
    names = list(dict.fromkeys(n.replace("._original_component", "") for n in names))  # bridge-internal paths
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"changed the model's weights ({shown}) (the grader restored them); never edit parameters in "
            "an exercise: patching changes activations, through hooks")


def restore_weights(model: torch.nn.Module, *, content: bool = True) -> list[str]:
    """Put back what changed in `model`'s weights: replaced tensors, in-place edits, and
    with `content` edits through `.data`. One sentence for the feedback, or none."""
    weights = Weights.of(model)
    changed = list(dict.fromkeys(weights.touched() + (weights.verify() if content else [])))
    if not changed:
        return []
    weights.put_back(changed)
    return [weights_note(changed)]
