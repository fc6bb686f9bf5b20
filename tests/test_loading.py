"""The loader: real TL 4 loading paths against a fabricated offline hub cache, the
random-weight twins, and the error when no weights can be had."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuitlab.loading import MODELS, WeightsUnavailableError, load_model, random_hf_model
from circuitlab.tokenizer import _bpe_files, gpt2_tokenizer_dir
from tests.hub_cache import directory_files, json_bytes, torch_bytes, write_repo

PROMPT = "Her name was Alex Hart. Tomorrow at lunch time Alex"

# Runs in a fresh interpreter so HF_HOME / HF_HUB_OFFLINE take effect from import time.
LOAD_SCRIPT = """
import sys, torch
import circuitlab
model = circuitlab.load_model(sys.argv[1], weights="pretrained", device="cpu")
assert not model.training, "loaded model must be in eval mode"
with torch.no_grad():
    tokens = model.to_tokens(sys.argv[2])
    logits = model(tokens)
torch.save({"tokens": tokens, "log_probs": logits.log_softmax(-1), "name": model.course_name}, sys.argv[3])
"""


def load_offline(hf_home: Path, name: str, out: Path) -> dict:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, name, PROMPT, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


def test_gpt2_small_loads_from_offline_cache(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128)).eval()
    with torch.no_grad():
        hf.transformer.ln_f.bias.normal_()
    hf.save_pretrained(tmp_path / "model")
    vocab, merges = _bpe_files()
    files = directory_files(tmp_path / "model") | directory_files(gpt2_tokenizer_dir())
    files |= {"vocab.json": vocab.read_bytes(), "merges.txt": merges.read_bytes()}
    write_repo(tmp_path / "hf", "gpt2", files)

    loaded = load_offline(tmp_path / "hf", "gpt2-small", tmp_path / "out.pt")
    with torch.no_grad():
        expected = hf(loaded["tokens"]).logits.log_softmax(-1)
    assert loaded["name"] == "gpt2-small (pretrained)"
    assert loaded["tokens"].shape == (1, 12)
    torch.testing.assert_close(loaded["log_probs"], expected, atol=1e-4, rtol=1e-4)


def _gelu_2l_state_dict(cfg: dict, seed: int = 2) -> dict[str, torch.Tensor]:
    """A HookedTransformer-format state dict (as gelu-2l's model_final.pth) with random weights."""
    g = torch.Generator().manual_seed(seed)
    d, h, e, m, v = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"], cfg["d_vocab"]

    def rand(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    sd = {"embed.W_E": rand(v, d, scale=0.5), "pos_embed.W_pos": rand(cfg["n_ctx"], d, scale=0.5)}
    for layer in range(cfg["n_layers"]):
        p = f"blocks.{layer}."
        sd |= {
            p + "ln1.w": 1 + rand(d), p + "ln1.b": rand(d), p + "ln2.w": 1 + rand(d), p + "ln2.b": rand(d),
            p + "attn.W_Q": rand(h, d, e), p + "attn.W_K": rand(h, d, e), p + "attn.W_V": rand(h, d, e),
            p + "attn.W_O": rand(h, e, d), p + "attn.b_Q": rand(h, e), p + "attn.b_K": rand(h, e),
            p + "attn.b_V": rand(h, e), p + "attn.b_O": rand(d),
            # Old HookedTransformer checkpoints carry these buffers too.
            p + "attn.mask": torch.tril(torch.ones(cfg["n_ctx"], cfg["n_ctx"])).bool(),
            p + "attn.IGNORE": torch.tensor(-1e5),
            p + "mlp.W_in": rand(d, m), p + "mlp.b_in": rand(m), p + "mlp.W_out": rand(m, d), p + "mlp.b_out": rand(d),
        }
    return sd | {"ln_final.w": 1 + rand(d), "ln_final.b": rand(d), "unembed.W_U": rand(d, v), "unembed.b_U": rand(v)}


def _reference_forward(sd: dict, cfg: dict, tokens: torch.Tensor) -> torch.Tensor:
    """gelu-2l's forward pass written out from its state dict, independent of TransformerLens."""

    def ln(x, w, b):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b

    n = tokens.shape[-1]
    x = sd["embed.W_E"][tokens[0]] + sd["pos_embed.W_pos"][:n]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for layer in range(cfg["n_layers"]):
        p = f"blocks.{layer}."
        h = ln(x, sd[p + "ln1.w"], sd[p + "ln1.b"])
        q, k, v = (torch.einsum("pd,hde->phe", h, sd[p + f"attn.W_{c}"]) + sd[p + f"attn.b_{c}"] for c in "QKV")
        scores = torch.einsum("qhe,khe->hqk", q, k) / math.sqrt(cfg["d_head"])
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = torch.einsum("hqk,khe->qhe", pattern, v)
        x = x + torch.einsum("qhe,hed->qd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        h = ln(x, sd[p + "ln2.w"], sd[p + "ln2.b"])
        x = x + torch.nn.functional.gelu(h @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"]) @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    x = ln(x, sd["ln_final.w"], sd["ln_final.b"])
    return (x @ sd["unembed.W_U"] + sd["unembed.b_U"]).unsqueeze(0)


def _neox_digits_stand_in(tmp_path: Path, d_vocab: int) -> dict[str, bytes]:
    """A tokenizer with gelu-2l's vocabulary size: GPT-2's BPE cut to the first ids."""
    from transformers import GPT2TokenizerFast

    encoder, merges = _bpe_files()
    vocab = {tok: i for tok, i in json.loads(encoder.read_text()).items() if i < d_vocab - 1}
    vocab["<|endoftext|>"] = d_vocab - 1
    kept = [m for m in merges.read_text().splitlines()[1:] if len(m.split()) == 2
            and all(part in vocab for part in m.split()) and "".join(m.split()) in vocab]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(kept) + "\n")
    tok = GPT2TokenizerFast(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    tok.save_pretrained(tmp_path / "tokenizer")
    return directory_files(tmp_path / "tokenizer")


def test_gelu_2l_loads_from_offline_cache(tmp_path):
    spec = MODELS["gelu-2l"]
    cfg = {
        "d_model": spec.d_model, "n_layers": spec.n_layers, "d_mlp": spec.d_mlp, "d_head": spec.d_head,
        "n_heads": spec.n_heads, "n_ctx": 1024, "d_vocab": 48262, "act_fn": "gelu", "attn_only": False,
        "normalization": "LN", "positional_embedding_type": "standard",
        "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits", "model_name": "GELU_2L512W_C4_Code",
    }
    sd = _gelu_2l_state_dict(cfg)
    write_repo(tmp_path / "hf", spec.repo, {"config.json": json_bytes(cfg), "model_final.pth": torch_bytes(sd)})
    write_repo(tmp_path / "hf", cfg["tokenizer_name"], _neox_digits_stand_in(tmp_path, cfg["d_vocab"]))

    loaded = load_offline(tmp_path / "hf", "gelu-2l", tmp_path / "out.pt")
    expected = _reference_forward(sd, cfg, loaded["tokens"]).log_softmax(-1)
    assert loaded["name"] == "gelu-2l (pretrained)"
    assert loaded["log_probs"].shape == (1, 12, 48262)
    torch.testing.assert_close(loaded["log_probs"], expected, atol=2e-3, rtol=1e-3)


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("gpt2-small", "gelu-2l"):
        with pytest.raises(WeightsUnavailableError) as info:
            load_model(name)
        message = str(info.value)
        assert f"load_model('{name}')" in message  # how to fetch them
        assert "weights='random'" in message  # the offline alternative


def test_unknown_model_and_weights_are_rejected():
    with pytest.raises(ValueError, match="gelu-2l, gpt2-small"):
        load_model("gpt-5")
    with pytest.raises(ValueError, match="'pretrained' or 'random'"):
        load_model("gelu-2l", weights="trained")


@pytest.mark.parametrize("name", ["gelu-2l", "gpt2-small"])
def test_random_twin_has_the_model_shape(name, gelu_twin, gpt2_twin):
    spec = MODELS[name]
    model = gelu_twin if name == "gelu-2l" else gpt2_twin
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (
        spec.n_layers, spec.d_model, spec.n_heads, spec.d_model // spec.n_heads, spec.d_mlp)
    assert not model.training
    assert model.course_name == f"{name} (random)"
    assert "blocks.0.attn.hook_z" in model.hook_dict


def test_random_twin_is_seeded_and_non_degenerate(gelu_twin):
    again = load_model("gelu-2l", weights="random", device="cpu")
    tokens = gelu_twin.to_tokens(PROMPT)
    torch.testing.assert_close(gelu_twin(tokens), again(tokens))
    # Distinct unembedding biases, so "top tokens by bias" has one right answer.
    top = gelu_twin.b_U.topk(20).values
    assert (top[:-1] - top[1:]).min() > 0
    assert gelu_twin.b_U.std() > 0.1


def test_random_hf_model_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    random_hf_model(MODELS["gelu-2l"])
    torch.testing.assert_close(torch.rand(3), expected)


def _empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_packaged_model_loads_its_checkpoint_and_becomes_the_default(tmp_path, monkeypatch):
    from circuitlab import loading
    from circuitlab.checkpoint import save_compact

    spec = MODELS["circuitlab-2l"]
    hf = random_hf_model(spec, seed=7)
    path = tmp_path / "circuitlab-2l.pt"
    save_compact(hf, range(1000, 1500), path)
    monkeypatch.setattr(loading, "packaged_weights", lambda _spec: path)
    _empty_hub_cache(tmp_path, monkeypatch)  # no gelu-2l here, so the packaged model is the default

    assert loading.default_model() == ("circuitlab-2l", "pretrained")
    model = load_model(device="cpu")
    assert model.course_name == "circuitlab-2l (pretrained)"
    assert not model.training
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads, model.cfg.d_mlp) == (2, 128, 4, 512)
    tokens = torch.arange(1000, 1020)[None]  # trained rows only: the others are regenerated
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)[..., 1000:1500]
        theirs = hf(tokens).logits.log_softmax(-1)[..., 1000:1500]
    # Log-probs over the whole vocabulary differ only through the regenerated rows' logits,
    # so compare the trained block after renormalising it.
    torch.testing.assert_close(ours - ours.logsumexp(-1, keepdim=True),
                               theirs - theirs.logsumexp(-1, keepdim=True), atol=1e-4, rtol=1e-4)


def test_missing_packaged_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    from circuitlab import loading

    monkeypatch.setattr(loading, "packaged_weights", lambda _spec: tmp_path / "absent.pt")
    _empty_hub_cache(tmp_path, monkeypatch)
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("circuitlab-2l")
    assert "training/train_circuitlab_2l.py" in str(info.value)
    assert "weights='random'" in str(info.value)
    # With neither gelu-2l's weights nor the packaged checkpoint, the default is gelu-2l's twin.
    assert loading.default_model() == ("gelu-2l", "random")
