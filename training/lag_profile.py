"""Which earlier token does each head of a circuitlab-2l checkpoint attend to, and which
layer-0 heads does the copying depend on?

On BOS + x + x (x: 20 distinct ids from the random-span alphabet), for a token in the second
copy whose first occurrence is at position j, prints each head's mean attention to j + k for
k = 0..5 ("lag k"; k = 1 is an induction head) and to the tokens 0..3 places back
("offset"; 1 is a previous-token head). Low loss with little weight on lag 1 means the
model copies with some other mechanism. Then, for each layer-0 head, the loss on the second
copy and the layer-1 lags with that head's output zeroed: the heads whose loss shoots up
are the ones the copying reads.

    python training/lag_profile.py circuitlab/data/circuitlab-2l.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuitlab.checkpoint import load_compact  # noqa: E402
from training.corpus import repeated_random_tokens  # noqa: E402
from training.scores import lag_attention  # noqa: E402

SPAN, N_SEQS = 20, 8


def run(model, tokens, ablate: int | None = None):
    """(loss on the second copy, attention patterns) with layer-0 head ``ablate`` zeroed."""
    d_head = model.config.n_embd // model.config.n_head

    def zero_head(_module, args):
        z = args[0].clone()  # merged heads, [batch, pos, n_heads * d_head]
        z[..., ablate * d_head:(ablate + 1) * d_head] = 0
        return (z,)

    proj = model.transformer.h[0].attn.c_proj
    hook = proj.register_forward_pre_hook(zero_head) if ablate is not None else None
    try:
        with torch.no_grad():
            out = model(tokens, output_attentions=True)
    finally:
        if hook is not None:
            hook.remove()
    logp = out.logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    return -logp[:, SPAN + 1:].mean().item(), [a.mean(0) for a in out.attentions]


def lags(pattern) -> torch.Tensor:
    """[head, lag 0-5] mean attention at each lag (see scores.lag_attention)."""
    return torch.stack([lag_attention(pattern, SPAN, k) for k in range(6)], dim=-1)


def lag_profile(path: str) -> None:
    model = load_compact(path)
    model.config._attn_implementation = "eager"  # so attention patterns are returned
    tokens = repeated_random_tokens(N_SEQS, SPAN, seed=5)
    loss, patterns = run(model, tokens)
    print(f"loss on the second copy: {loss:.3f}")
    dst = torch.arange(1 + SPAN, 1 + 2 * SPAN)
    for layer, pattern in enumerate(patterns):
        for head in range(pattern.shape[0]):
            back = [pattern[head, dst, dst - k].mean().item() for k in range(4)]
            print(f"L{layer}H{head}  lag 0-5: " + " ".join(f"{v:.2f}" for v in lags(pattern)[head].tolist())
                  + "   offset 0-3: " + " ".join(f"{v:.2f}" for v in back))
    print("layer-0 head zeroed -> loss on the second copy, best layer-1 lag 0-5")
    for head in range(model.config.n_head):
        loss, patterns = run(model, tokens, ablate=head)
        best = lags(patterns[1]).max(0).values
        print(f"L0H{head}  loss {loss:6.2f}   lag 0-5: " + " ".join(f"{v:.2f}" for v in best.tolist()))


if __name__ == "__main__":
    lag_profile(sys.argv[1])
