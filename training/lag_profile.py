"""Which earlier token does each head of a circuitlab-2l checkpoint attend to?

On BOS + x + x (x: 20 distinct ids from the random-span alphabet), for a token in the second
copy whose first occurrence is at position j, prints each head's mean attention to j + k for
k = 0..5 ("lag k"; k = 1 is an induction head) and to the tokens 0..3 places back
("offset"; 1 is a previous-token head). Low loss with little weight on lag 1 means the
model copies with some other mechanism.

    python training/lag_profile.py circuitlab/data/circuitlab-2l.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuitlab.checkpoint import load_compact  # noqa: E402
from training.corpus import repeated_random_tokens  # noqa: E402

SPAN, N_SEQS = 20, 8


def lag_profile(path: str) -> None:
    model = load_compact(path)
    model.config._attn_implementation = "eager"  # so attention patterns are returned
    tokens = repeated_random_tokens(N_SEQS, SPAN, seed=5)
    with torch.no_grad():
        out = model(tokens, output_attentions=True)
    logp = out.logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    print(f"loss on the second copy: {-logp[:, SPAN + 1:].mean().item():.3f}")
    dst = torch.arange(1 + SPAN, 1 + 2 * SPAN)
    for layer, pattern in enumerate(out.attentions):
        pattern = pattern.mean(0)
        for head in range(pattern.shape[0]):
            lags = [pattern[head, dst, dst - SPAN + k].mean().item() for k in range(6)]
            back = [pattern[head, dst, dst - k].mean().item() for k in range(4)]
            print(f"L{layer}H{head}  lag 0-5: " + " ".join(f"{v:.2f}" for v in lags)
                  + "   offset 0-3: " + " ".join(f"{v:.2f}" for v in back))


if __name__ == "__main__":
    lag_profile(sys.argv[1])
