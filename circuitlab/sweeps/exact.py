"""Exact activation-patching sweeps over a batch of prompt pairs, many times faster than
one forward pass per patched cell.

A sweep reruns each base prompt once per cell with one activation taken from its source
prompt (row i of `base` and row i of `source` are one aligned pair), and records the logit
difference of that row's two answers at the final position. Three facts let us skip most
of that work without changing the numbers:

1. Layers. A patch at layer L leaves everything before L as in the base run, so each
   patched run starts from the base run's residual stream at L.
2. Positions. Attention is causal, so a patch that first differs from the base run at
   position p leaves every position before p as in the base run. Only positions p, p+1,
   ... are recomputed, attending to the base run's keys and values before p. A patch
   equal to the base activation (the prompts still agree there) changes nothing at all.
3. Outputs. Only the final position's logit difference is needed: the last layer
   computes that position alone, and the unembedding only each row's two answer columns.

The patched runs of one layer go through together, across the whole batch: all their
recomputed positions are stacked into one matrix. The forward pass is written out from the
weights a TransformerLens 4 bridge exposes in HookedTransformer names (W_Q ... W_U), the
same for HF-architecture bridges and native ones (real gelu-2l). `BaseRun` checks it
against the model's own run first, so an architecture it does not cover raises instead of
giving wrong numbers. tests/test_exact_sweeps.py checks every sweep against
transformer_lens.patching on batches.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitlab import progress

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
MAX_ROWS = 8192  # recomputed positions per chunk; bounds memory on long prompts and big batches


class UnsupportedModelError(NotImplementedError):
    """The fast path cannot reproduce this model's forward pass."""


def _ln(x: Tensor, module, eps: float) -> Tensor:
    # Compatibility mode folds LayerNorm weights into the next layer (w = 1, b = 0);
    # apply w and b anyway, for a model loaded without folding.
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    weight = getattr(module, "w", None)
    return x if weight is None else x * weight + module.b


def _resid_names(n_layers: int, final_stream: bool = False) -> list[str]:
    """The hook entering each block; with `final_stream`, the last block's output too."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    return names + [f"blocks.{n_layers - 1}.hook_resid_post"] if final_stream else names


def _z_names(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]


class BaseRun:
    """The runs of a batch of base prompts, cached so patched runs can resume from any layer.

    tokens [batch, pos]; answers [batch, 2]: row i's logit difference is
    logit(answers[i, 0]) - logit(answers[i, 1]) at the final position.
    `patch_resid(layer, values, rows)` and `patch_z(layer, values, rows)` take patched
    activations (each the full [pos, ...] tensor of one run at that hook point) and the
    base row each patched run starts from, and return each one's logit difference.
    """

    def __init__(self, model, tokens: Tensor, answers: Tensor) -> None:
        cfg = model.cfg
        _check_supported(cfg)
        tokens, answers = _check_tokens(model, tokens, "tokens"), _check_answers(model, answers, tokens)
        self.model, self.cfg = model, cfg
        self.n_layers, self.n_batch, self.n_pos = cfg.n_layers, tokens.shape[0], tokens.shape[1]
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.scale = math.sqrt(cfg.d_head) if getattr(cfg, "use_attn_scale", True) else 1.0
        names = set(_resid_names(self.n_layers, final_stream=True))
        names |= {f"blocks.{layer}.attn.hook_{kind}" for layer in range(self.n_layers) for kind in "kvz"}
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        self.device = logits.device
        # resid[L] [batch, pos, d_model] enters block L; resid[n_layers] is the final stream.
        self.resid = [cache[name] for name in _resid_names(self.n_layers, final_stream=True)]
        self.k, self.v, self.z = (
            [cache[f"blocks.{layer}.attn.hook_{kind}"] for layer in range(self.n_layers)] for kind in "kvz"
        )
        good, bad = answers[:, 0], answers[:, 1]
        self.direction = (model.W_U[:, good] - model.W_U[:, bad]).T  # [batch, d_model]
        self.offset = model.b_U[good] - model.b_U[bad]
        every = torch.arange(self.n_batch, device=self.device)
        self.baseline = logits[every, -1, good] - logits[every, -1, bad]
        self._verify()

    # -- the forward pass, on the recomputed rows only -------------------------------

    def _attend(self, layer: int, x: Tensor, var: Tensor, pos: Tensor, owner: Tensor, final_only: bool):
        """Attention of block `layer` for rows (var[i], pos[i]) of patched runs whose base
        rows are `owner`. Positions not in the rows keep the base run's keys and values."""
        block = self.model.blocks[layer]
        attn = block.attn
        h = _ln(x, block.ln1, self.cfg.eps)
        keys = self.k[layer][owner]  # indexing copies: [run, pos, head, d_head]
        values = self.v[layer][owner]
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

    def _resume(self, layer: int, x: Tensor, var: Tensor, pos: Tensor, owner: Tensor, z: Optional[Tensor] = None):
        """Logit differences of the patched runs (base rows `owner`) whose residual rows
        (var, pos) enter block `layer` as `x` (or, given `z`, whose block `layer` has head
        outputs `z`)."""
        for current in range(layer, self.n_layers):
            final_only = current == self.n_layers - 1
            if z is None:
                x, var, pos, z = self._attend(current, x, var, pos, owner, final_only)
            elif final_only:
                keep = pos == self.n_pos - 1
                x, var, pos, z = x[keep], var[keep], pos[keep], z[keep]
            x = self._finish_block(current, x, z)
            z = None
        keep = pos == self.n_pos - 1
        final = _ln(x[keep], self.model.ln_final, self.cfg.eps)
        base_rows = owner[var[keep]]
        out = torch.empty(len(owner), dtype=final.dtype, device=self.device)
        out[var[keep]] = (final * self.direction[base_rows]).sum(-1) + self.offset[base_rows]
        return out

    # -- patching ---------------------------------------------------------------------

    @torch.no_grad()
    def _patch(self, layer: int, values: Tensor, rows: Optional[Tensor], is_z: bool) -> Tensor:
        values = values.to(self.device)
        if rows is None:
            if self.n_batch != 1:
                raise ValueError(f"this base run holds {self.n_batch} prompts: pass `rows`, the base row of "
                                 "each patched run")
            rows = torch.zeros(values.shape[0], dtype=torch.long, device=self.device)
        rows = rows.to(self.device)
        base = (self.z if is_z else self.resid)[layer][rows]
        out = self.baseline[rows].clone()
        differs = (values != base).reshape(values.shape[0], self.n_pos, -1).any(-1)
        changed = differs.any(-1).nonzero().flatten()
        per_chunk = max(1, MAX_ROWS // self.n_pos)
        columns = torch.arange(self.n_pos, device=self.device)
        for chunk in changed.split(per_chunk):
            # Rows to recompute: from each run's first differing position to the end.
            start = differs[chunk].int().argmax(-1)
            var, pos = (columns[None, :] >= start[:, None]).nonzero(as_tuple=True)
            owner = rows[chunk]
            patched = values[chunk][var, pos]
            if is_z:
                out[chunk] = self._resume(layer, self.resid[layer][owner[var], pos], var, pos, owner, z=patched)
            else:
                out[chunk] = self._resume(layer, patched, var, pos, owner)
        return out

    def patch_resid(self, layer: int, values: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        """Logit differences with the residual stream entering block `layer` replaced by
        each of `values` [run, pos, d_model]; `layer = n_layers` is the final stream.
        `rows` [run]: the base row each run starts from (may be left out for one prompt)."""
        return self._patch(layer, values, rows, is_z=False)

    def patch_z(self, layer: int, values: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        """Logit differences with `blocks.{layer}.attn.hook_z` replaced by each of
        `values` [run, pos, head, d_head]; `rows` as in `patch_resid`."""
        return self._patch(layer, values, rows, is_z=True)

    @torch.no_grad()
    def _verify(self) -> None:
        """Recompute the whole base run on the fast path; it must match the model's."""
        owner = torch.arange(self.n_batch, device=self.device)
        var = owner.repeat_interleave(self.n_pos)
        pos = torch.arange(self.n_pos, device=self.device).repeat(self.n_batch)
        ours = self._resume(0, self.resid[0][var, pos], var, pos, owner)
        if not torch.allclose(ours, self.baseline, atol=1e-3, rtol=1e-3):
            worst = (ours - self.baseline).abs().argmax()
            raise UnsupportedModelError(
                f"the fast patching path does not reproduce {type(self.model).__name__} "
                f"({self.cfg.model_name}): logit difference {ours[worst].item():.5g} vs the model's "
                f"{self.baseline[worst].item():.5g}. Use transformer_lens.patching for this model."
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


# -- checking the caller's tensors ------------------------------------------------------


def _device(model) -> torch.device:
    return model.W_U.device


def _check_tokens(model, tokens, name: str) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point() or tokens.numel() == 0:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(
            f"{name} must be a [batch, pos] tensor of token ids, got {shape}; tokenize prompts with "
            "model.to_tokens (one prompt gives [1, pos]; prompts of one length stack into [batch, pos])")
    return tokens.to(_device(model))


def _check_answers(model, answers, tokens: Tensor) -> Tensor:
    answers = torch.as_tensor(answers)
    if answers.shape != (tokens.shape[0], 2) or answers.is_floating_point():
        raise ValueError(
            f"answers must be [batch, 2] token ids, one row per prompt (the answer counted +, the one counted "
            f"-), here [{tokens.shape[0]}, 2]; got {tuple(answers.shape)} {answers.dtype}. Build it with "
            "torch.tensor([[model.to_single_token(good), model.to_single_token(bad)], ...])")
    if (answers < 0).any() or (answers >= model.cfg.d_vocab).any():
        raise ValueError(f"answers must be token ids in [0, {model.cfg.d_vocab}); got {answers.tolist()}")
    return answers.long().to(_device(model))


def _check_pair(model, base, source) -> tuple[Tensor, Tensor]:
    base, source = _check_tokens(model, base, "base"), _check_tokens(model, source, "source")
    if base.shape != source.shape:
        raise ValueError(
            f"base and source must have the same shape [batch, pos] (row i of each is one aligned prompt "
            f"pair), got {tuple(base.shape)} and {tuple(source.shape)}; group the pairs by token length "
            "and sweep each group on its own")
    return base, source


def _prepare(model, base, source, answers, names: Sequence[str]) -> tuple[BaseRun, list[Tensor]]:
    """The base run and the source run's activations at `names` (each [batch, pos, ...])."""
    base, source = _check_pair(model, base, source)
    run = BaseRun(model, base, answers)
    wanted = set(names)
    with torch.no_grad():
        _, cache = model.run_with_cache(source, names_filter=lambda name: name in wanted)
    return run, [cache[name] for name in names]


# -- the sweeps ------------------------------------------------------------------------


@torch.no_grad()
def logit_diffs(model, tokens: Tensor, answers: Tensor) -> Tensor:
    """[batch]: logit(answers[:, 0]) - logit(answers[:, 1]) at the final position, unpatched."""
    tokens = _check_tokens(model, tokens, "tokens")
    answers = _check_answers(model, answers, tokens)
    logits = model(tokens)[:, -1]
    every = torch.arange(tokens.shape[0], device=logits.device)
    return logits[every, answers[:, 0]] - logits[every, answers[:, 1]]


def _chunks(run: BaseRun, runs_per_row: int) -> list[Tensor]:
    """Base rows in groups whose patched runs fill about one chunk of `BaseRun._patch`."""
    per_group = max(1, MAX_ROWS // run.n_pos // runs_per_row)
    return list(torch.arange(run.n_batch, device=run.device).split(per_group))


@torch.no_grad()
def _residual(run: BaseRun, source: list[Tensor], progress_bar: Optional[bool] = None) -> Tensor:
    """[batch, len(source), pos]: row L patches the stream entering block L (the final
    stream when L = n_layers) at one position with source[L] [batch, pos, d_model]."""
    n = run.n_pos
    result = torch.empty(run.n_batch, len(source), n, device=run.device)
    for layer in progress.bar(range(len(source)), "residual sweep", show=progress_bar):
        for group in _chunks(run, n):
            # Patched run (b, p) takes position p of base row b from source row b.
            owner = group.repeat_interleave(n)
            pos = torch.arange(n, device=run.device).repeat(len(group))
            values = run.resid[layer][owner]
            values[torch.arange(len(owner), device=run.device), pos] = source[layer][owner, pos].to(values.dtype)
            result[group, layer] = run.patch_resid(layer, values, owner).reshape(len(group), n)
    return result


@torch.no_grad()
def _heads(run: BaseRun, source: list[Tensor], by_position: bool, progress_bar: Optional[bool] = None) -> Tensor:
    """[batch, n_layers, n_heads] (each head at every position), or with `by_position`
    [batch, n_layers, n_heads, pos] (each head at one position), from source[L] = hook_z."""
    n_heads, n = run.cfg.n_heads, run.n_pos
    cells = n_heads * n if by_position else n_heads
    result = torch.empty(run.n_batch, run.n_layers, cells, device=run.device)
    label = "head × position sweep" if by_position else "head sweep"
    for layer in progress.bar(range(run.n_layers), label, show=progress_bar):
        for group in _chunks(run, cells):
            owner = group.repeat_interleave(cells)
            runs = torch.arange(len(owner), device=run.device)
            values = run.z[layer][owner]  # [run, pos, head, d_head]
            if by_position:  # run (b, h * n + p): head h at position p
                head = torch.arange(n_heads, device=run.device).repeat_interleave(n).repeat(len(group))
                pos = torch.arange(n, device=run.device).repeat(n_heads * len(group))
                values[runs, pos, head] = source[layer][owner, pos, head].to(values.dtype)
            else:  # run (b, h): head h at every position
                head = torch.arange(n_heads, device=run.device).repeat(len(group))
                values[runs, :, head] = source[layer][owner, :, head].to(values.dtype)
            result[group, layer] = run.patch_z(layer, values, owner).reshape(len(group), cells)
    return result.reshape(run.n_batch, run.n_layers, n_heads, n) if by_position else result


def residual_sweep(model, base: Tensor, source: Tensor, answers: Tensor, *,
                   progress_bar: Optional[bool] = None) -> Tensor:
    """[batch, n_layers, pos]: base prompt i's final-position logit difference with
    blocks.L.hook_resid_pre at position p taken from source prompt i.

    base, source [batch, pos] (row i of each is one aligned pair); answers [batch, 2].
    Noising: base=clean, source=corrupt; denoising: base=corrupt, source=clean."""
    run, src = _prepare(model, base, source, answers, _resid_names(model.cfg.n_layers))
    return _residual(run, src, progress_bar)


def head_sweep(model, base: Tensor, source: Tensor, answers: Tensor, *,
               progress_bar: Optional[bool] = None) -> Tensor:
    """[batch, n_layers, n_heads]: as `residual_sweep`, with blocks.L.attn.hook_z of one
    head taken from source prompt i at every position."""
    run, src = _prepare(model, base, source, answers, _z_names(model.cfg.n_layers))
    return _heads(run, src, by_position=False, progress_bar=progress_bar)


def head_by_position_sweep(model, base: Tensor, source: Tensor, answers: Tensor, *,
                           progress_bar: Optional[bool] = None) -> Tensor:
    """[batch, n_layers, n_heads, pos]: as `head_sweep`, with one head's hook_z taken
    from source prompt i at one position."""
    run, src = _prepare(model, base, source, answers, _z_names(model.cfg.n_layers))
    return _heads(run, src, by_position=True, progress_bar=progress_bar)
