"""A compact checkpoint format for small GPT-2-architecture models.

A model trained on a few hundred token ids still carries two 50,257-row matrices (the
token embedding and the unembedding), almost all of them untouched random rows. The
compact file stores only the rows of the token ids that training used, plus everything
else as usual; on load the remaining rows are regenerated from a fixed seed with GPT-2's
initialisation (normal, std ``initializer_range``), so every load gives the same model.

Only tensors, plain dicts, lists, strings and numbers go into the file, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import GPT2Config, GPT2LMHeadModel

FORMAT = "circuitlab-compact-v1"
VOCAB_ROWS = ("transformer.wte.weight", "lm_head.weight")
ROW_SEED = 0  # seeds the regenerated (never trained) rows


def save_compact(hf_model: GPT2LMHeadModel, token_ids: Sequence[int], path: str | Path) -> None:
    """Write ``hf_model`` to ``path``, keeping embedding/unembedding rows only for ``token_ids``.

    The model must have untied embeddings (``tie_word_embeddings=False``) and the full
    vocabulary; tensors are stored in float32.
    """
    ids = torch.tensor(sorted(set(int(i) for i in token_ids)), dtype=torch.long)
    state = {}
    for name, tensor in hf_model.state_dict().items():
        t = tensor.detach().to("cpu", torch.float32)
        state[name] = t[ids].clone() if name in VOCAB_ROWS else t.clone()
    config = hf_model.config.to_dict()
    # Runtime-only settings (attention backend, dtype) are not part of the model.
    for key in ("_attn_implementation", "_attn_implementation_internal", "torch_dtype", "dtype"):
        config.pop(key, None)
    torch.save({"format": FORMAT, "config": config, "token_ids": ids, "row_seed": ROW_SEED,
                "state_dict": state}, Path(path))


def load_compact(path: str | Path) -> GPT2LMHeadModel:
    """Rebuild the full model saved by :func:`save_compact`, in eval mode, on the CPU."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    config = GPT2Config.from_dict(blob["config"])
    model = GPT2LMHeadModel(config)
    ids = blob["token_ids"]
    g = torch.Generator().manual_seed(int(blob["row_seed"]))
    state = {}
    for name, tensor in blob["state_dict"].items():
        if name in VOCAB_ROWS:
            # The same generator, in a fixed order, makes the untrained rows reproducible.
            full = torch.empty(config.vocab_size, tensor.shape[1])
            full.normal_(0.0, config.initializer_range, generator=g)
            full[ids] = tensor
            tensor = full
        state[name] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers (e.g. attention masks) may legitimately be absent.
    real_missing = [k for k in missing if k in dict(model.named_parameters())]
    if real_missing or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {real_missing}, unexpected {unexpected}")
    return model.eval()
