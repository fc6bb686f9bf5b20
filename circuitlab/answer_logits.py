"""Each prompt's logit difference at the final position, without the full unembedding.

A patching sweep only needs two logits of each prompt's final position, but a model's
forward pass unembeds every position into the whole vocabulary (50,257 columns for the
GPT-2 tokenizer): on a small model that is most of the work, and most of the memory of a
large batch. `final_logit_diffs` stops the run at the final LayerNorm's output and takes
the two answer columns of the unembedding there. It checks itself against the model's
own logits on the first prompt, so a model whose unembedding it does not reproduce raises
instead of giving other numbers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

FINAL_NORM = "ln_final.hook_normalized"


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the final residual stream is normalised."""


@torch.no_grad()
def final_logit_diffs(model, tokens: Tensor, answers: Tensor, fwd_hooks: Sequence = ()) -> Tensor:
    """[batch]: logit(answers[i, 0]) - logit(answers[i, 1]) at the final position of
    prompt i, in a run of `tokens` [batch, pos] with `fwd_hooks` (as for
    `model.run_with_hooks`). Equal to reading them from the logits, to float precision."""
    answers = torch.as_tensor(answers)
    if answers.ndim != 2 or answers.shape != (tokens.shape[0], 2):
        raise ValueError(f"answers must be [batch, 2] = [{tokens.shape[0]}, 2] token ids, got {tuple(answers.shape)}")
    final: dict[str, Tensor] = {}

    def stop(normalized: Tensor, hook) -> None:
        final["x"] = normalized[:, -1]
        raise _Stop

    try:
        model.run_with_hooks(tokens, fwd_hooks=[*fwd_hooks, (FINAL_NORM, stop)])
    except _Stop:
        pass
    x = final["x"]
    answers = answers.to(x.device)
    columns = model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]  # [d_model, batch]
    diffs = (x * columns.T).sum(-1) + model.b_U[answers[:, 0]] - model.b_U[answers[:, 1]]
    if not fwd_hooks:
        logits = model(tokens[:1])[0, -1]
        full = logits[answers[0, 0]] - logits[answers[0, 1]]
        if not torch.isclose(diffs[0], full, atol=1e-3, rtol=1e-3):
            raise NotImplementedError(
                f"final_logit_diffs does not reproduce {model.cfg.model_name}'s logits ({diffs[0].item():.5g} vs "
                f"{full.item():.5g}); read the logits of model.run_with_hooks instead")
    return diffs
