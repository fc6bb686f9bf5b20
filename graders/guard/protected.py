"""Inputs that persist between calls (a cache handed to every case), kept as they were.

A `Snapshot` remembers every tensor of one shared object (an ActivationCache, a dict or
list of tensors) and its dict of entries; after each call `restore` puts back any tensor
edited in place (through `.data` too) and any entry added, removed or replaced, and says
what it did.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch

from circuitlab_graders.guard.value_sums import sums


def walk_tensors(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in `value`: tensors, dicts, lists, tuples and
    anything holding a `cache_dict` (an ActivationCache). Modules are not entered."""
    if depth > 4:
        return
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from walk_tensors(item, f"{path}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from walk_tensors(item, f"{path}[{i}]", depth + 1)
    elif isinstance(getattr(value, "cache_dict", None), dict):
        for key, item in value.cache_dict.items():
            yield from walk_tensors(item, f"{path}[{key!r}]", depth + 1)


def storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


class Snapshot:
    """What one shared object (paths relative to it) looked like before any call: each
    tensor's identity, version counter and sum, and its dict of entries. Restoring needs
    the original values, which `rebuild` recomputes (a cache is rebuilt from its source)
    only when something changed; without `rebuild` the snapshot keeps copies."""

    def __init__(self, value: Any, rebuild: Optional[Callable[[], Any]] = None, *, content: bool = True) -> None:
        self.value = value
        self.rebuild = rebuild
        self.content = content  # also compare sums (edits through `.data`); off: identity and version only
        seen: dict[int, list[str]] = {}
        self.tensors: list[tuple[list[str], torch.Tensor]] = []  # paths, live
        for path, t in walk_tensors(value, ""):
            if id(t) in seen:  # one tensor under several names (the bridge's hook aliases)
                seen[id(t)].append(path)
            else:
                seen[id(t)] = [path]
                self.tensors.append((seen[id(t)], t))
        self.marks = self._marks()
        self.copies = None if rebuild is not None else [t.detach().clone() for _, t in self.tensors]
        holder = value if isinstance(value, dict) else getattr(value, "cache_dict", None)
        self.holder = holder if isinstance(holder, dict) else None
        self.entries = dict(holder) if self.holder is not None else None

    def _marks(self) -> list[tuple]:
        live = [t for _, t in self.tensors]
        totals = sums(live) if self.content else [None] * len(live)
        return [(t._version, storage(t), t.shape, t.dtype, s) for t, s in zip(live, totals)]

    def _originals(self) -> list[torch.Tensor]:
        if self.copies is not None:
            return self.copies
        fresh = dict(walk_tensors(self.rebuild(), ""))
        return [fresh[paths[0]] for paths, _ in self.tensors]

    def restore(self, name: str) -> list[str]:
        """Undo in-place edits; one sentence per change, naming the object `name`."""
        notes = []
        if self.holder is not None and (self.holder.keys() != self.entries.keys()
                                        or any(self.holder[k] is not v for k, v in self.entries.items())):
            self.holder.clear()
            self.holder.update(self.entries)
            notes.append(f"added, removed or replaced entries of {name} (the grader put them back)")
        changed = [i for i, (now, before) in enumerate(zip(self._marks(), self.marks)) if now != before]
        if not changed:
            return notes
        originals = self._originals()
        for i in changed:
            paths, live = self.tensors[i]
            with torch.no_grad():
                if live.shape != originals[i].shape or live.dtype != originals[i].dtype:
                    live.set_(originals[i].clone())
                else:
                    live.copy_(originals[i])
            # Name the course's (legacy) hook name first, the bridge's hook_in/hook_out alias second.
            shown = [name + p for p in sorted(paths, key=lambda p: (".hook_in'" in p or ".hook_out'" in p, len(p)))]
            also = f" (also named {shown[1]})" if len(shown) > 1 else ""
            notes.append(f"changed {shown[0]}{also} in place (the grader restored it); work on a copy, "
                         "e.g. `.clone()`, never on a cache you were given")
        self.marks = self._marks()
        return notes

    def storages(self, name: str) -> dict[int, str]:
        return {storage(t): name + paths[0] for paths, t in self.tensors}


class Protected:
    """The shared objects of one call, by the argument path they were passed under."""

    def __init__(self, named: list[tuple[str, Snapshot]] = ()) -> None:
        self.named = list(named)

    def restore(self) -> list[str]:
        return [note for name, snap in self.named for note in snap.restore(name)]

    def aliases(self, value: Any, extra: Optional[dict[int, str]] = None) -> Optional[str]:
        """The protected tensor (or one of `extra`'s storages) that `value` shares memory with."""
        owned = dict(extra or {})
        for name, snap in self.named:
            owned.update(snap.storages(name))
        owned.pop(0, None)
        for _, t in walk_tensors(value, "the result"):
            if (hit := owned.get(storage(t))) is not None:
                return hit
        return None
