"""The compact checkpoint format keeps trained vocabulary rows exactly and regenerates
the rest the same way on every load."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from circuitlab.checkpoint import load_compact, save_compact


def test_round_trip_keeps_trained_rows_and_everything_else(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=1000, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                        tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).eval()
    trained = [3, 17, 500, 999]
    path = tmp_path / "m.pt"
    save_compact(model, trained + [17], path)  # duplicates are harmless
    a, b = load_compact(path), load_compact(path)
    assert not a.training
    original = model.state_dict()
    for name, tensor in a.state_dict().items():
        if name in ("transformer.wte.weight", "lm_head.weight"):
            torch.testing.assert_close(tensor[trained], original[name][trained], rtol=0, atol=0)
            # Untrained rows are regenerated, not copied, and identically on every load.
            assert not torch.equal(tensor[4], original[name][4])
            assert torch.equal(tensor, b.state_dict()[name])
        else:
            torch.testing.assert_close(tensor, original[name], rtol=0, atol=0)
    tokens = torch.tensor([trained])
    # On trained tokens the rebuilt model computes exactly what the original did.
    torch.testing.assert_close(a(tokens).logits[..., trained], model(tokens).logits[..., trained])
    # Far fewer bytes than the two full vocabulary matrices alone.
    assert path.stat().st_size < 2 * 1000 * 16 * 4


def test_other_files_are_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": "something else"}, path)
    try:
        load_compact(path)
    except ValueError as err:
        assert "circuitlab-compact-v1" in str(err)
    else:
        raise AssertionError("expected a ValueError")
