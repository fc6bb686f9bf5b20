"""The exact sweeps of one prompt pair given as strings, with chapters 1-2's signatures and
layouts: the graders' references for those exercises, built on the batch engine in
`circuitlab.sweeps.exact`. Each patches the corrupt run into the clean one (noising) and
reports logit(clean_answer) - logit(corrupt_answer) at the final position."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from circuitlab.sweeps.exact import BaseRun, _heads, _residual, _resid_names, _z_names

Prompt = Union[str, Tensor]  # a string, or its [1, pos] tokens


def prepare(model, clean: Prompt, corrupt: Prompt, clean_answer: str, corrupt_answer: str):
    """The clean run (a `BaseRun` of one prompt) and the corrupt run's cache."""
    base, source = (model.to_tokens(p) if isinstance(p, str) else p for p in (clean, corrupt))
    if base.shape != source.shape:
        raise ValueError("clean and corrupt prompts must have the same number of tokens "
                         f"({base.shape[-1]} and {source.shape[-1]} here)")
    answers = torch.tensor([[model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)]])
    with torch.no_grad():
        run = BaseRun(model, base, answers)
        _, source_cache = model.run_with_cache(source)
    return run, source_cache


def residual_rows(run: BaseRun, corrupt_cache, progress_bar: Optional[bool] = None) -> Tensor:
    """The residual sweep on a prepared pair; see `residual_patching_sweep`."""
    names = _resid_names(run.n_layers, final_stream=True)
    return _residual(run, [corrupt_cache[name] for name in names], progress_bar)[0]


def residual_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, progress_bar: Optional[bool] = None,
) -> Tensor:
    """[n_layers + 1, n_pos]: row 0 patches `blocks.0.hook_resid_pre`, row i + 1
    `blocks.i.hook_resid_post`, column p position p; each entry is the logit difference
    clean_answer - corrupt_answer at the final position of the patched clean run."""
    run, corrupt = prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    return residual_rows(run, corrupt, progress_bar)


def head_patching_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, progress_bar: Optional[bool] = None,
) -> Tensor:
    """[n_layers, n_heads]: the logit difference with head (layer, head)'s output
    `blocks.layer.attn.hook_z` taken from the corrupt run at every position."""
    run, corrupt = prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    return _heads(run, [corrupt[name] for name in _z_names(run.n_layers)], False, progress_bar)[0]


def head_by_position_sweep(
    model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str,
    *, progress_bar: Optional[bool] = None,
) -> Tensor:
    """[n_layers * n_heads, n_pos]: row layer * n_heads + head, column p: the logit
    difference with that head's `hook_z` taken from the corrupt run at position p only."""
    run, corrupt = prepare(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)
    result = _heads(run, [corrupt[name] for name in _z_names(run.n_layers)], True, progress_bar)[0]
    return result.reshape(run.n_layers * run.cfg.n_heads, run.n_pos)
