"""Everything about a model and torch, besides weights, that learner code can leave
changed: hooks (on any module, TransformerLens's own handle lists, torch's global hooks),
training mode, `model.cfg` entries, gradient state of the parameters, torch's default
dtype and grad mode. `State.take` before a call, `State.restore` after it: each kind
of change is undone and named in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_HOOK_SIDE_TABLES = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
_MISSING = object()


@dataclass
class State:
    model: Optional[torch.nn.Module]
    modules: list
    hooks: dict[tuple[int, str], set]
    global_hooks: dict[str, set]
    cfg: dict[str, Any]
    training: bool
    grads: list[tuple[torch.nn.Parameter, bool, Optional[torch.Tensor]]]  # requires_grad, .grad
    dtype: torch.dtype
    grad_enabled: bool

    @classmethod
    def take(cls, model: Optional[torch.nn.Module]) -> "State":
        modules = list(model.named_modules()) if model is not None else []
        hooks = {(i, attr): set(getattr(m, attr).keys())
                 for i, (_, m) in enumerate(modules) for attr in _HOOK_DICTS if getattr(m, attr, None)}
        cfg = getattr(model, "cfg", None)
        grads = [(p, p.requires_grad, p.grad) for p in model.parameters()] if model is not None else []
        return cls(model, modules, hooks, _global_hook_keys(), dict(vars(cfg)) if cfg is not None else {},
                   bool(model is not None and model.training), grads, torch.get_default_dtype(),
                   torch.is_grad_enabled())

    def restore(self) -> list[str]:
        notes = []
        if torch.get_default_dtype() != self.dtype:
            torch.set_default_dtype(self.dtype)
            notes.append(f"changed torch's default dtype (the grader set it back to {self.dtype})")
        if torch.is_grad_enabled() != self.grad_enabled:
            torch.set_grad_enabled(self.grad_enabled)
            notes.append("switched torch's gradient mode globally (the grader switched it back); use "
                         "`with torch.enable_grad():` or `with torch.no_grad():` inside your function")
        notes += self._remove_hooks()
        if self.model is None:
            return notes
        if self.model.training != self.training:
            self.model.train(self.training)
            notes.append("switched the model's training mode (the grader set it back to eval mode)")
        cfg = getattr(self.model, "cfg", None)
        if cfg is not None:
            changed = [k for k, v in self.cfg.items() if not _same(getattr(cfg, k, _MISSING), v)]
            for key in changed:
                setattr(cfg, key, self.cfg[key])
            if changed:
                notes.append(f"changed model.cfg.{', model.cfg.'.join(changed)} (the grader put it back)")
        notes += self._restore_grads()
        return notes

    def _restore_grads(self) -> list[str]:
        flags = grads = 0
        for p, requires_grad, grad in self.grads:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
                flags += 1
            if p.grad is not grad:
                p.grad = grad
                grads += 1
        notes = []
        if flags:
            notes.append(f"changed requires_grad on {flags} of the model's parameters (the grader put it back)")
        if grads:
            notes.append(f"left gradients in .grad of {grads} of the model's parameters (the grader cleared "
                         "them); take gradients of activations, e.g. with torch.autograd.grad, not of weights")
        return notes

    def _remove_hooks(self) -> list[str]:
        left = []
        for i, (path, module) in enumerate(self.modules):
            for attr in _HOOK_DICTS:
                hooks = getattr(module, attr, None)
                if not hooks:
                    continue
                new = {k for k in set(hooks) - self.hooks.get((i, attr), set()) if not _framework_wiring(hooks[k])}
                for key in new:
                    del hooks[key]
                    for side in _HOOK_SIDE_TABLES:
                        getattr(module, side, {}).pop(key, None)
                if new:
                    left.append(getattr(module, "name", None) or path or "the model")
                for lens in ("fwd_hooks", "bwd_hooks"):  # TransformerLens's own list of handles
                    handles = getattr(module, lens, None)
                    if isinstance(handles, list) and new:
                        setattr(module, lens, [h for h in handles if getattr(h.hook, "id", None) not in new])
        for attr, keys in self.global_hooks.items():
            hooks = getattr(torch.nn.modules.module, attr)
            for key in set(hooks) - keys:
                del hooks[key]
                left.append("every module (a global hook)")
        if not left:
            return []
        where = ", ".join(dict.fromkeys(left))
        return [f"left hooks attached to {where} (the grader removed them); use model.run_with_hooks(...) "
                "or `with model.hooks(...)`, which take hooks off after the run"]


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(b, (int, float, str, bool, type(None), torch.dtype, torch.device)):
        try:
            return type(a) is type(b) and bool(a == b)
        except Exception:
            return False
    return False


_FRAMEWORKS = ("transformer_lens", "transformers")


def _framework_wiring(hook: Any) -> bool:
    """A hook the libraries add to the model themselves, lazily, as opposed to one added
    through HookPoint.add_hook or by learner code: TransformerLens's bridge wires some on the
    first forward or run_with_cache, and Hugging Face transformers adds its output-capturing
    hooks the first time a run asks for hidden states or attentions, once per model (it
    marks the model as hooked, so removing them would silently break that capture). Which
    call first triggers them depends on what ran before, so it may be an honest learner's."""
    fn = getattr(hook, "func", hook)
    package = (getattr(fn, "__module__", "") or "").split(".")[0]
    return package in _FRAMEWORKS and "add_hook" not in getattr(fn, "__qualname__", "")


def _global_hook_keys() -> dict[str, set]:
    return {attr: set(getattr(torch.nn.modules.module, attr, {})) for attr in _GLOBAL_HOOKS}
