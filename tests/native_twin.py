"""A native TransformerLens bridge with gelu-2l's architecture and random weights, built
in memory the way `TransformerBridge.boot_tl_legacy` builds the real gelu-2l (which
needs its weights in the Hugging Face cache). Real gelu-2l is a native bridge, unlike
the random twins, which are HF GPT-2 bridges; tests use this to cover that code path."""

from __future__ import annotations

import torch

from circuitlab.loading import MODELS
from circuitlab.tokenizer import gpt2_tokenizer
from tests.test_loading import _gelu_2l_state_dict


def native_gelu_2l(seed: int = 3):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot as boot_native
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    spec = MODELS["gelu-2l"]
    tokenizer = gpt2_tokenizer()
    shape = dict(d_model=spec.d_model, n_layers=spec.n_layers, d_mlp=spec.d_mlp, d_head=spec.d_head,
                 n_heads=spec.n_heads, n_ctx=1024, d_vocab=len(tokenizer))
    cfg = TransformerBridgeConfig(**shape, act_fn="gelu", attn_only=False, normalization_type="LN",
                                  positional_embedding_type="standard", architecture="TransformerLensNative")
    cfg.original_architecture = "neel"
    bridge = boot_native(cfg, tokenizer=tokenizer, device="cpu", dtype=torch.float32, model_name="native-gelu-2l")
    converted = convert_tl_checkpoint(_gelu_2l_state_dict(shape, seed=seed), cfg)
    loaded = bridge.load_state_dict(converted, strict=True)
    assert not loaded.missing_keys and not loaded.unexpected_keys
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    bridge.course_name = "gelu-2l (native, random)"
    return bridge
