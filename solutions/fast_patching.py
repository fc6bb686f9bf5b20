"""Exact activation-patching sweeps, many times faster than one forward pass per cell.

A sweep reruns the clean prompt once per cell with one activation taken from the
corrupt run, and records the logit difference at the final position. Three facts let
us skip most of that work without changing the numbers:

1. Layers. A patch at layer L leaves everything before L as in the clean run, so each
   patched run starts from the clean run's residual stream at L.
2. Positions. Attention is causal, so a patch that first differs from the clean run at
   position p leaves every position before p as in the clean run. Only positions p, p+1,
   ... are recomputed, attending to the clean run's keys and values before p. A patch
   equal to the clean activation (the prompts still agree there) changes nothing at all.
3. Outputs. Only the final position's logit difference is needed: the last layer
   computes that position alone, and the unembedding only the two answer columns.

The patched runs of one layer go through together: all their recomputed positions are
stacked into one matrix. The forward pass is written out from the weights a
TransformerLens 4 bridge exposes in HookedTransformer names (W_Q ... W_U), the same for
HF-architecture bridges and native ones (real gelu-2l). `CleanRun` checks it against
the model's own clean run first, so an architecture it does not cover raises instead of
giving wrong numbers. tests/test_fast_patching.py checks every sweep against
transformer_lens.patching.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitlab import progress
from circuitlab.plotting import residual_labels

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
MAX_ROWS = 8192  # recomputed positions per batch; bounds memory on long prompts


class UnsupportedModelError(NotImplementedError):
    """The fast path cannot reproduce this model's forward pass."""


def _ln(x: Tensor, module, eps: float) -> Tensor:
    # Compatibility mode folds LayerNorm weights into the next layer (w = 1, b = 0);
    # apply w and b anyway, for a model loaded without folding.
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    weight = getattr(module, "w", None)
    return x if weight is None else x * weight + module.b


class CleanRun:
    """The clean run of one prompt, cached so patched runs can resume from any layer.

    `patch_resid(layer, values)` and `patch_z(layer, values)` take a batch of patched
    activations (each the full [pos, ...] tensor at that hook point) and return the
    logit difference at the final position for each.
    """

    def __init__(self, model, tokens: Tensor, answers: tuple[int, int]) -> None:
        cfg = model.cfg
        _check_supported(cfg)
        if tokens.ndim != 2 or tokens.shape[0] != 1:
            raise ValueError(f"expected tokens of shape [1, pos], got {tuple(tokens.shape)}")
        self.model, self.cfg = model, cfg
        self.n_layers, self.n_pos = cfg.n_layers, tokens.shape[1]
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.scale = math.sqrt(cfg.d_head) if getattr(cfg, "use_attn_scale", True) else 1.0
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens)
        self.device = logits.device
        # resid[L] enters block L; resid[n_layers] is the final residual stream.
        self.resid = [cache[f"blocks.{layer}.hook_resid_pre"][0] for layer in range(self.n_layers)]
        self.resid.append(cache[f"blocks.{self.n_layers - 1}.hook_resid_post"][0])
        self.k, self.v, self.z = (
            [cache[f"blocks.{layer}.attn.hook_{name}"][0] for layer in range(self.n_layers)] for name in "kvz"
        )
        good, bad = answers
        self.direction = model.W_U[:, good] - model.W_U[:, bad]
        self.offset = model.b_U[good] - model.b_U[bad]
        self.baseline = logits[0, -1, good] - logits[0, -1, bad]
        self._verify()

    # -- the forward pass, on the recomputed rows only -------------------------------

    def _attend(self, layer: int, x: Tensor, var: Tensor, pos: Tensor, n_var: int, final_only: bool):
        """Attention of block `layer` for rows (var[i], pos[i]) of `n_var` patched runs.
        Positions not in the rows keep the clean run's keys and values."""
        block = self.model.blocks[layer]
        attn = block.attn
        h = _ln(x, block.ln1, self.cfg.eps)
        keys = self.k[layer].expand(n_var, *self.k[layer].shape).clone()
        values = self.v[layer].expand(n_var, *self.v[layer].shape).clone()
        keys[var, pos] = torch.einsum("td,hde->the", h, attn.W_K) + attn.b_K
        values[var, pos] = torch.einsum("td,hde->the", h, attn.W_V) + attn.b_V
        if final_only:  # the last layer: only the final position matters downstream
            keep = pos == self.n_pos - 1
            x, var, pos, h = x[keep], var[keep], pos[keep], h[keep]
        queries = torch.zeros_like(keys)
        queries[var, pos] = torch.einsum("td,hde->the", h, attn.W_Q) + attn.b_Q
        scores = torch.einsum("bqhe,bkhe->bhqk", queries, keys) / self.scale
        future = torch.ones(self.n_pos, self.n_pos, dtype=torch.bool, device=self.device).triu(1)
        pattern = scores.masked_fill(future, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, values)[var, pos]
        return x, var, pos, z

    def _finish_block(self, layer: int, x: Tensor, z: Tensor) -> Tensor:
        """Residual stream after block `layer`, from its input `x` and its heads' outputs `z`."""
        block = self.model.blocks[layer]
        x = x + torch.einsum("the,hed->td", z, block.attn.W_O) + block.attn.b_O
        if getattr(self.cfg, "attn_only", False):
            return x
        mlp = block.mlp
        hidden = self.act(_ln(x, block.ln2, self.cfg.eps) @ mlp.W_in + mlp.b_in)
        return x + hidden @ mlp.W_out + mlp.b_out

    def _resume(self, layer: int, x: Tensor, var: Tensor, pos: Tensor, n_var: int, z: Optional[Tensor] = None):
        """Logit differences of `n_var` patched runs whose residual rows (var, pos) enter
        block `layer` as `x` (or, given `z`, whose block `layer` has head outputs `z`)."""
        for current in range(layer, self.n_layers):
            final_only = current == self.n_layers - 1
            if z is None:
                x, var, pos, z = self._attend(current, x, var, pos, n_var, final_only)
            elif final_only:
                keep = pos == self.n_pos - 1
                x, var, pos, z = x[keep], var[keep], pos[keep], z[keep]
            x = self._finish_block(current, x, z)
            z = None
        keep = pos == self.n_pos - 1
        final = _ln(x[keep], self.model.ln_final, self.cfg.eps)
        out = torch.empty(n_var, dtype=final.dtype, device=self.device)
        out[var[keep]] = final @ self.direction + self.offset
        return out

    # -- patching ---------------------------------------------------------------------

    @torch.no_grad()
    def _patch(self, layer: int, values: Tensor, clean: Tensor, is_z: bool) -> Tensor:
        values = values.to(self.device)
        out = self.baseline.expand(values.shape[0]).clone()
        differs = (values != clean).reshape(values.shape[0], self.n_pos, -1).any(-1)
        changed = differs.any(-1).nonzero().flatten()
        per_batch = max(1, MAX_ROWS // self.n_pos)
        for chunk in changed.split(per_batch):
            # Rows to recompute: from each run's first differing position to the end.
            start = differs[chunk].int().argmax(-1)
            columns = torch.arange(self.n_pos, device=self.device)
            var, pos = (columns[None, :] >= start[:, None]).nonzero(as_tuple=True)
            patched = values[chunk][var, pos]
            if is_z:
                out[chunk] = self._resume(layer, self.resid[layer][pos], var, pos, len(chunk), z=patched)
            else:
                out[chunk] = self._resume(layer, patched, var, pos, len(chunk))
        return out

    def patch_resid(self, layer: int, values: Tensor) -> Tensor:
        """Logit differences with the residual stream entering block `layer` replaced by
        each of `values` [batch, pos, d_model]; `layer = n_layers` is the final stream."""
        return self._patch(layer, values, self.resid[layer], is_z=False)

    def patch_z(self, layer: int, values: Tensor) -> Tensor:
        """Logit differences with `blocks.{layer}.attn.hook_z` replaced by each of
        `values` [batch, pos, head, d_head]."""
        return self._patch(layer, values, self.z[layer], is_z=True)

    @torch.no_grad()
    def _verify(self) -> None:
        """Recompute the whole clean run on the fast path; it must match the model's."""
        every = torch.arange(self.n_pos, device=self.device)
        ours = self._resume(0, self.resid[0], torch.zeros_like(every), every, 1)[0]
        if not torch.isclose(ours, self.baseline, atol=1e-3, rtol=1e-3):
            raise UnsupportedModelError(
                f"the fast patching path does not reproduce {type(self.model).__name__} "
                f"({self.cfg.model_name}): logit difference {ours.item():.5g} vs the model's "
                f"{self.baseline.item():.5g}. Use transformer_lens.patching for this model."
            )


def _check_supported(cfg) -> None:
    problems = []
    if cfg.act_fn not in _ACTIVATIONS:
        problems.append(f"activation {cfg.act_fn!r}")
    if getattr(cfg, "normalization_type", "LN") not in ("LN", "LNPre"):
        problems.append(f"normalization {cfg.normalization_type!r}")
    if getattr(cfg, "positional_embedding_type", "standard") != "standard":
        problems.append(f"positional embedding {cfg.positional_embedding_type!r}")
    if getattr(cfg, "parallel_attn_mlp", False):
        problems.append("parallel attention and MLP")
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        problems.append("grouped-query attention")
    if problems:
        raise UnsupportedModelError(
            "the fast patching path covers GPT-2-style models; this one has " + ", ".join(problems)
        )


# -- the course's sweeps --------------------------------------------------------------


def prepare(model, clean, corrupt, clean_answer: str, corrupt_answer: str):
    """The clean run and the corrupt run's cache for a prompt pair (strings or [1, pos] tokens)."""
    clean_tokens = model.to_tokens(clean) if isinstance(clean, str) else clean
    corrupt_tokens = model.to_tokens(corrupt) if isinstance(corrupt, str) else corrupt
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    answers = (model.to_single_token(clean_answer), model.to_single_token(corrupt_answer))
    with torch.no_grad():
        run = CleanRun(model, clean_tokens, answers)
        _, corrupt_cache = model.run_with_cache(corrupt_tokens)
    return run, corrupt_cache


@torch.no_grad()
def residual_rows(run: CleanRun, corrupt, progress_bar: Optional[bool] = None) -> Tensor:
    """The residual sweep on a prepared pair; see `residual_patching_sweep`."""
    n, diagonal = run.n_pos, torch.arange(run.n_pos, device=run.device)
    names = residual_labels(run.n_layers)  # the sweep's rows, as the runtime names them
    result = torch.empty(len(names), n, device=run.device)
    for row in progress.bar(range(len(names)), "residual sweep", show=progress_bar):
        # Patched run p takes position p from the corrupt run; row r resumes at block r.
        values = run.resid[row].expand(n, *run.resid[row].shape).clone()
        values[diagonal, diagonal] = corrupt[names[row]][0, diagonal].to(values.dtype)
        result[row] = run.patch_resid(row, values)
    return result


def residual_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, progress_bar: Optional[bool] = None,
) -> Tensor:
    """[n_layers + 1, n_pos]: row 0 patches `blocks.0.hook_resid_pre`, row i + 1
    `blocks.i.hook_resid_post`, column p position p; each entry is the logit difference
    clean_answer - corrupt_answer at the final position of the patched clean run."""
    run, corrupt = prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    return residual_rows(run, corrupt, progress_bar)


@torch.no_grad()
def head_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, progress_bar: Optional[bool] = None,
) -> Tensor:
    """[n_layers, n_heads]: the logit difference with head (layer, head)'s output
    `blocks.layer.attn.hook_z` taken from the corrupt run at every position."""
    run, corrupt = prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    n_heads = model.cfg.n_heads
    heads = torch.arange(n_heads, device=run.device)
    result = torch.empty(run.n_layers, n_heads, device=run.device)
    for layer in progress.bar(range(run.n_layers), "head sweep", show=progress_bar):
        clean_z = run.z[layer]
        values = clean_z.expand(n_heads, *clean_z.shape).clone()  # [run, pos, head, d_head]
        values[heads, :, heads] = corrupt[f"blocks.{layer}.attn.hook_z"][0].transpose(0, 1).to(values.dtype)
        result[layer] = run.patch_z(layer, values)
    return result


@torch.no_grad()
def head_by_position_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, progress_bar: Optional[bool] = None,
) -> Tensor:
    """[n_layers * n_heads, n_pos]: row layer * n_heads + head, column p: the logit
    difference with that head's `hook_z` taken from the corrupt run at position p only."""
    run, corrupt = prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    n_heads, n = model.cfg.n_heads, run.n_pos
    # Patched run number h * n + p takes head h at position p from the corrupt run.
    head = torch.arange(n_heads, device=run.device).repeat_interleave(n)
    pos = torch.arange(n, device=run.device).repeat(n_heads)
    runs = torch.arange(n_heads * n, device=run.device)
    result = torch.empty(run.n_layers, n_heads * n, device=run.device)
    for layer in progress.bar(range(run.n_layers), "head × position sweep", show=progress_bar):
        clean_z = run.z[layer]
        values = clean_z.expand(n_heads * n, *clean_z.shape).clone()
        values[runs, pos, head] = corrupt[f"blocks.{layer}.attn.hook_z"][0][pos, head].to(values.dtype)
        result[layer] = run.patch_z(layer, values)
    return result.reshape(run.n_layers * n_heads, n)
