"""Running learner code so that nothing it does outlasts the call.

`Guard` wraps one call of a learner's function. Around the call it:

* stops it after a time limit (SIGALRM in the main thread, where notebook kernels
  run cells; an asynchronous exception from a watchdog thread elsewhere);
* captures what it prints, keeping only the start;
* notices when it runs the course's own code (solutions/, graders/);
* afterwards finds and undoes what it changed: protected tensors (case inputs that
  persist between calls, such as a corrupt cache) edited in place, model parameters
  edited or replaced, hooks left attached, training mode, model.cfg entries and the
  default dtype. Each undone change becomes one sentence for the feedback.

Weights are checked per call through their version counters and storage pointers
(microseconds); edits through `.data` bypass those, so `ModelWatch.verify` compares
a per-parameter float64 sum with the one taken when the model was first seen.
"""

from __future__ import annotations

import ctypes
import io
import signal
import sys
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

REPO = Path(__file__).resolve().parent.parent
COURSE_DIRS = tuple(str(REPO / pkg) + "/" for pkg in ("solutions", "graders"))
COURSE_PACKAGES = ("solutions", "graders")
# The harness itself runs while the learner's code does (signal handler, output writer,
# exception formatting); its frames are not "the learner reading the course's code".
HARNESS_FILES = (str(REPO / "graders" / "guard.py"), str(REPO / "graders" / "engine.py"))


class TimeLimitExceeded(BaseException):
    """Raised inside learner code when its time is up. A BaseException, so a learner's
    `except Exception:` does not swallow it."""


# ---------------------------------------------------------------- what is course code


def is_course_code(fn: Callable) -> bool:
    """A plain function defined in solutions/ or graders/: a reference or a known mistake."""
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_filename.startswith(COURSE_DIRS)


def _course_module(value: Any) -> Optional[str]:
    """The course module `value` is or comes from, if any."""
    if isinstance(value, type(sys)):
        name = value.__name__
    else:
        name = getattr(value, "__module__", None) or type(value).__module__
        if hasattr(value, "func"):  # functools.partial of a course function
            name = getattr(value.func, "__module__", None) or name
    if isinstance(name, str) and name.split(".")[0] in COURSE_PACKAGES:
        return name
    return None


def _is_library(code) -> bool:
    path = code.co_filename
    return "site-packages" in path or path.startswith((sys.prefix, sys.base_prefix)) or path.startswith("<frozen")


def course_references(fn: Callable, depth: int = 3) -> list[str]:
    """What `fn` (and learner functions it calls, `depth` deep) reads from the course's
    solutions/ or graders/: imports, globals, closure cells, defaults, module-name strings."""
    import dis

    found: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(fn, 0)]
    while stack:
        func, level = stack.pop()
        func = getattr(func, "__wrapped__", func)
        code = getattr(func, "__code__", None)
        if code is None:
            call = getattr(type(func), "__call__", None)
            code = getattr(call, "__code__", None)
        if code is None or id(code) in seen or _is_library(code) or code.co_filename.startswith(COURSE_DIRS):
            continue
        seen.add(id(code))
        scope = getattr(func, "__globals__", {})
        extras = list(getattr(func, "__defaults__", None) or ()) + list((getattr(func, "__kwdefaults__", None) or {}).values())
        extras += [cell.cell_contents for cell in getattr(func, "__closure__", None) or () if _cell_full(cell)]
        for value in extras:
            if (module := _course_module(value)) is not None:
                found.append(f"uses {getattr(value, '__qualname__', type(value).__name__)} from {module}")
            elif callable(value) and level < depth:
                stack.append((value, level + 1))
        codes = [code]
        while codes:
            current = codes.pop()
            for ins in dis.get_instructions(current):
                arg = ins.argval
                if ins.opname == "IMPORT_NAME" and str(arg).split(".")[0] in COURSE_PACKAGES:
                    found.append(f"imports {arg}")
                elif ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(arg, str) and arg in scope:
                    value = scope[arg]
                    if (module := _course_module(value)) is not None:
                        found.append(f"uses {arg} from {module}")
                    elif callable(value) and level < depth:
                        stack.append((value, level + 1))
                elif ins.opname == "LOAD_CONST":
                    if isinstance(arg, str) and arg.split(".")[0] in COURSE_PACKAGES:
                        found.append(f"names the module {arg!r}")
                    elif hasattr(arg, "co_code"):
                        codes.append(arg)
    return list(dict.fromkeys(found))


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- protected tensors


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


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


@dataclass
class Protected:
    """Inputs of one case that persist between calls (same storage in two fresh argument
    sets), with copies to check and restore them against."""

    tensors: list[tuple[list[str], torch.Tensor, torch.Tensor]] = field(default_factory=list)  # paths, live, copy
    dicts: list[tuple[str, dict, dict]] = field(default_factory=list)  # path, live, shallow copy

    @classmethod
    def of(cls, make_args: Callable[[], dict[str, Any]]) -> "Protected":
        first, second = make_args(), make_args()
        again = {_storage(t) for _, t in walk_tensors(second, "")}
        plan, seen = cls(), {}
        for name, value in first.items():
            for path, t in walk_tensors(value, name):
                if id(t) in seen:  # one tensor under several names (the bridge's hook aliases)
                    seen[id(t)].append(path)
                elif _storage(t) in again and _storage(t) != 0:
                    seen[id(t)] = [path]
                    plan.tensors.append((seen[id(t)], t, t.detach().clone()))
            holder = value if isinstance(value, dict) else getattr(value, "cache_dict", None)
            if isinstance(holder, dict) and any(p[0].startswith(name) for p, _, _ in plan.tensors):
                plan.dicts.append((name, holder, dict(holder)))
        return plan

    def storages(self) -> dict[int, str]:
        return {_storage(t): paths[0] for paths, t, _ in self.tensors}

    def restore(self) -> list[str]:
        notes = []
        for path, live, snapshot in self.dicts:
            if live.keys() != snapshot.keys() or any(live[k] is not v for k, v in snapshot.items()):
                live.clear()
                live.update(snapshot)
                notes.append(f"added, removed or replaced entries of {path} (the grader put them back)")
        for paths, live, copy in self.tensors:
            if live.shape == copy.shape and live.dtype == copy.dtype and torch.equal(live, copy):
                continue
            with torch.no_grad():
                if live.shape != copy.shape or live.dtype != copy.dtype:
                    live.set_(copy.clone())
                else:
                    live.copy_(copy)
            # Name the course's (legacy) hook name first, the bridge's hook_in/hook_out alias second.
            paths = sorted(paths, key=lambda p: (".hook_in'" in p or ".hook_out'" in p, len(p)))
            notes.append(
                f"changed {' (also named '.join(paths[:2])}{')' if len(paths) > 1 else ''} in place (the grader "
                "restored it); work on a copy, e.g. `.clone()`, never on a cache you were given"
            )
        return notes


# ---------------------------------------------------------------- models

_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks",
)


class ModelWatch:
    """What the grader knows about one model: its parameters as first seen, a content
    fingerprint, and how to get the original weights back."""

    _all: "weakref.WeakKeyDictionary[torch.nn.Module, ModelWatch]" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: torch.nn.Module) -> "ModelWatch":
        if model not in cls._all:
            cls._all[model] = cls(model)
        return cls._all[model]

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modules = list(model.named_modules())
        # Every name of every parameter and buffer, with where it hangs, to spot replacement.
        self.slots = [(n, model.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n, _ in _tensors_of(model)]
        self._remember()
        self.training = model.training

    def _remember(self) -> None:
        self.params = [(n, _slot(m, a), _slot(m, a)._version, _slot(m, a).data_ptr()) for n, m, a in self.slots]
        self.sums = self._sums()

    def _sums(self) -> list[float]:
        """One float64 sum per distinct tensor (tied weights appear under several names)."""
        with torch.no_grad():
            totals = {id(p): p for _, p, _, _ in self.params}
            totals = {key: float(p.detach().sum(dtype=torch.float64)) for key, p in totals.items()}
        return [totals[id(p)] for _, p, _, _ in self.params]

    def snapshot(self) -> "ModelState":
        hooks = {
            (i, attr): set(getattr(m, attr).keys())
            for i, (_, m) in enumerate(self.modules)
            for attr in _HOOK_DICTS
            if getattr(m, attr, None)
        }
        cfg = getattr(self.model, "cfg", None)
        return ModelState(hooks, _global_hook_keys(), dict(vars(cfg)) if cfg is not None else {})

    def restore(self, before: "ModelState") -> list[str]:
        """Undo what a call changed since `before`; one sentence per kind of change."""
        notes = self._remove_hooks(before)
        if self.model.training != self.training:
            self.model.train(self.training)
            notes.append("switched the model's training mode (the grader set it back to eval mode)")
        cfg = getattr(self.model, "cfg", None)
        if cfg is not None:
            changed = [k for k, v in before.cfg.items() if not _same(getattr(cfg, k, _MISSING), v)]
            for key in changed:
                setattr(cfg, key, before.cfg[key])
            if changed:
                notes.append(f"changed model.cfg.{', model.cfg.'.join(changed)} (the grader put it back)")
        touched = self._touched()
        if touched:
            self._put_back(touched)
            notes.append(_weights_note(touched))
        return notes

    def verify(self) -> list[str]:
        """Compare every parameter's content with when the model was first seen (catches
        edits through `.data`, which version counters miss); restore and say so."""
        now = self._sums()
        touched = [name for (name, *_), a, b in zip(self.params, self.sums, now) if a != b]
        if touched:
            self._put_back(touched)
            return [_weights_note(touched)]
        return []

    def _touched(self) -> list[str]:
        return [
            name
            for (name, p, version, ptr), (_, module, attr) in zip(self.params, self.slots)
            if _slot(module, attr) is not p or p._version != version or p.data_ptr() != ptr
        ]

    def _put_back(self, names: list[str]) -> None:
        originals = self._original_values(names)
        for (name, p, _, _), (_, module, attr) in zip(self.params, self.slots):
            if name not in names:
                continue
            if _slot(module, attr) is not p:  # the learner replaced the Parameter object itself
                if isinstance(p, torch.nn.Parameter):
                    module._parameters[attr] = p
                else:
                    module._buffers[attr] = p
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
                "circuitlab.load_model, so the grader cannot restore them: reload the model"
            )
        from circuitlab.loading import load_model

        device = next(self.model.parameters()).device
        fresh = dict(_tensors_of(load_model(name, weights=weights, device=device)))
        return {n: fresh[n].detach() for n in names}

    def _remove_hooks(self, before: "ModelState") -> list[str]:
        left = []
        for i, (path, module) in enumerate(self.modules):
            for attr in _HOOK_DICTS:
                hooks = getattr(module, attr, None)
                if not hooks:
                    continue
                new = {k for k in set(hooks) - before.hooks.get((i, attr), set()) if not _bridge_wiring(hooks[k])}
                for key in new:
                    del hooks[key]
                    for side in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                                 "_forward_pre_hooks_with_kwargs"):
                        getattr(module, side, {}).pop(key, None)
                if new:
                    left.append(getattr(module, "name", None) or path or "the model")
                for lens in ("fwd_hooks", "bwd_hooks"):  # TransformerLens's own list of handles
                    handles = getattr(module, lens, None)
                    if isinstance(handles, list) and new:
                        setattr(module, lens, [h for h in handles if getattr(h.hook, "id", None) not in new])
        for attr, keys in before.global_hooks.items():
            hooks = getattr(torch.nn.modules.module, attr)
            for key in set(hooks) - keys:
                del hooks[key]
                left.append("every module (a global hook)")
        if not left:
            return []
        where = ", ".join(dict.fromkeys(left))
        return [
            f"left hooks attached to {where} (the grader removed them); use model.run_with_hooks(...) "
            "or `with model.hooks(...)`, which take hooks off after the run"
        ]


@dataclass
class ModelState:
    hooks: dict[tuple[int, str], set]
    global_hooks: dict[str, set]
    cfg: dict[str, Any]


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(b, (int, float, str, bool, type(None), torch.dtype, torch.device)):
        try:
            return type(a) is type(b) and bool(a == b)
        except Exception:
            return False
    return False


def _bridge_wiring(hook: Any) -> bool:
    """A hook TransformerLens's bridge adds to itself (it wires some lazily, on the first
    forward or run_with_cache), as opposed to one added through HookPoint.add_hook."""
    fn = getattr(hook, "func", hook)
    module = getattr(fn, "__module__", "") or ""
    return module.startswith("transformer_lens") and "add_hook" not in getattr(fn, "__qualname__", "")


def _global_hook_keys() -> dict[str, set]:
    return {attr: set(getattr(torch.nn.modules.module, attr, {})) for attr in _GLOBAL_HOOKS}


def _slot(module: torch.nn.Module, attr: str) -> Any:
    return module._parameters[attr] if attr in module._parameters else module._buffers.get(attr)


def _tensors_of(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))


def _weights_note(names: list[str]) -> str:
    names = list(dict.fromkeys(n.replace("._original_component", "") for n in names))  # bridge-internal paths
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"changed the model's weights ({shown}) (the grader restored them); never edit parameters in "
        "an exercise: patching changes activations, through hooks"
    )


# ---------------------------------------------------------------- printing


class BoundedOutput(io.TextIOBase):
    """A stdout stand-in that keeps the first `keep` characters and counts the rest."""

    def __init__(self, keep: int = 2000) -> None:
        self.keep = keep
        self.head = ""
        self.chars = 0
        self.lines = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        self.chars += len(text)
        self.lines += text.count("\n")
        if len(self.head) < self.keep:
            self.head += text[: self.keep - len(self.head)]
        return len(text)

    def note(self) -> Optional[str]:
        if not self.chars:
            return None
        first = [line[:120] for line in self.head.splitlines()[:3]]
        count = f"{self.lines} line{'s' if self.lines != 1 else ''}" if self.lines else f"{self.chars} characters"
        return f"your function printed {count} while being checked (hidden); it began: " + " | ".join(first)


# ---------------------------------------------------------------- time limit


class _Timer:
    """Raises TimeLimitExceeded in the calling thread after `seconds`, then again every
    0.2 s until disarmed (so a bare `except:` in the learner's loop cannot keep it going
    for long)."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds
        self.armed = False
        self._previous = None
        self._watchdog: Optional[threading.Timer] = None

    def _fire(self, *_: Any) -> None:
        if self.armed:
            raise TimeLimitExceeded()

    def __enter__(self) -> "_Timer":
        if not self.seconds:
            return self
        self.armed = True
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.2)
        else:
            target = threading.get_ident()

            def interrupt() -> None:
                if self.armed:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(TimeLimitExceeded))

            self._watchdog = threading.Timer(self.seconds, interrupt)
            self._watchdog.daemon = True
            self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.armed = False
        if self._previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        if self._watchdog is not None:
            self._watchdog.cancel()


# ---------------------------------------------------------------- the guard


class Guard:
    """Context manager around one learner call. After it exits, `notes` lists every
    side effect it undid, `output` what was printed, `course_code` the course function
    the call ran (when `watch_course_code`), `timed_out` whether time ran out."""

    def __init__(
        self,
        model: Optional[torch.nn.Module],
        protected: Optional[Protected] = None,
        time_limit_s: Optional[float] = None,
        watch_course_code: bool = False,
        output: Optional[BoundedOutput] = None,
    ) -> None:
        self.watch = ModelWatch.of(model) if model is not None else None
        self.protected = protected or Protected()
        self.timer = _Timer(time_limit_s)
        self.watch_course_code = watch_course_code
        self.output = output if output is not None else BoundedOutput()  # may be shared by several calls
        self.notes: list[str] = []
        self.course_code: Optional[str] = None
        self.timed_out = False

    def _trace(self, frame, event, arg):
        path = frame.f_code.co_filename
        if path.startswith(COURSE_DIRS) and not path.startswith(HARNESS_FILES) and self.course_code is None:
            self.course_code = f"{Path(path).relative_to(REPO)}:{frame.f_code.co_name}"
        return None

    def __enter__(self) -> "Guard":
        self._state = self.watch.snapshot() if self.watch else None
        self._dtype = torch.get_default_dtype()
        self._streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.output
        self._tracer = sys.gettrace()
        if self.watch_course_code:
            sys.settrace(self._trace)
        self.timer.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.timer.__exit__()
        if self.watch_course_code:
            sys.settrace(self._tracer)
        sys.stdout, sys.stderr = self._streams
        if torch.get_default_dtype() != self._dtype:
            torch.set_default_dtype(self._dtype)
            self.notes.append(f"changed torch's default dtype (the grader set it back to {self._dtype})")
        if self.watch is not None:
            self.notes += self.watch.restore(self._state)
        self.notes += self.protected.restore()
        if exc_type is TimeLimitExceeded:
            self.timed_out = True
            return True
        return False

    def aliases(self, value: Any) -> Optional[str]:
        """The protected tensor or model parameter that `value` shares memory with, if any."""
        owned = self.protected.storages()
        if self.watch is not None:
            owned.update({_storage(p): f"the model parameter {n}" for n, p, _, _ in self.watch.params})
        owned.pop(0, None)
        for path, t in walk_tensors(value, "the result"):
            if (hit := owned.get(_storage(t))) is not None:
                return hit
        return None
