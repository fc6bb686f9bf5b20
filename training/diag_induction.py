"""Diagnostic: does the circuitlab-2l architecture form an induction head on pure repeated spans?

Only repeated random spans (alphabet = GPT-2 ids 1000-1499, mapped to model ids 1-500; 0 is
BOS), fp32, AdamW lr 3e-3 betas (0.9, 0.98), no weight decay, 100 warm-up steps then a
constant LR, batch 32 x 48, loss on the second copy of each span. Prints the best layer-1
induction score and best layer-0 previous-token score every --eval-every steps.

--periodic trains on one span repeated to the end of the row instead (a denser signal);
rep_loss is the loss on the repeat of BOS + x + x, so a low loss without a high induction
score shows a mechanism other than the induction circuit.

    OMP_NUM_THREADS=1 python training/diag_induction.py --steps 3000
    OMP_NUM_THREADS=1 python training/diag_induction.py --periodic --steps 5500 --save /tmp/d.pt
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ALPHABET = 500
SEQ = 48


def periodic_batch(g: torch.Generator, n: int):
    """BOS, a random gap, then one span (period 6-20) repeated to the end: every repeat is predictable."""
    x = torch.randint(1, ALPHABET + 1, (n, SEQ), generator=g)
    x[:, 0] = 0
    mask = torch.zeros(n, SEQ, dtype=torch.bool)
    for i in range(n):
        span = int(torch.randint(6, 21, (1,), generator=g))
        start = 1 + int(torch.randint(0, 9, (1,), generator=g))
        s = torch.randperm(ALPHABET, generator=g)[:span] + 1
        reps = s.repeat((SEQ - start) // span + 1)[: SEQ - start]
        x[i, start:] = reps
        mask[i, start + span + 1:] = True
    return x, mask[:, 1:]


def batch(g: torch.Generator, n: int):
    """BOS, random filler, span x, x, random filler; a random offset so no positional trick works."""
    x = torch.randint(1, ALPHABET + 1, (n, SEQ), generator=g)
    x[:, 0] = 0
    mask = torch.zeros(n, SEQ, dtype=torch.bool)
    for i in range(n):
        span = int(torch.randint(8, 24, (1,), generator=g))
        start = 1 + int(torch.randint(0, SEQ - 2 * span, (1,), generator=g))
        s = torch.randperm(ALPHABET, generator=g)[:span] + 1
        x[i, start:start + span] = s
        x[i, start + span:start + 2 * span] = s
        mask[i, start + span + 1:start + 2 * span] = True  # predictable repeats
    return x, mask[:, 1:]


def scores(model, span: int = 20, n: int = 8):
    g = torch.Generator().manual_seed(1234)
    xs = torch.stack([torch.randperm(ALPHABET, generator=g)[:span] + 1 for _ in range(n)])
    rep = torch.cat([torch.zeros(n, 1, dtype=torch.long), xs, xs], 1)
    model.eval()
    with torch.no_grad():
        att = model(rep, output_attentions=True).attentions
        logits = model(rep).logits
    model.train()
    # Loss on the predictable part of the second copy: low here means the model does
    # induction on BOS + x + x, whatever its attention patterns look like.
    rep_loss = torch.nn.functional.cross_entropy(
        logits[:, 1 + span:2 * span].reshape(-1, logits.shape[-1]),
        rep[:, 2 + span:].reshape(-1)).item()
    dst = torch.arange(1 + span, 1 + 2 * span)
    ind = att[1].mean(0)[:, dst, dst - span + 1].mean(-1)
    d = torch.arange(1, rep.shape[1])
    prev = att[0].mean(0)[:, d, d - 1].mean(-1)
    causal_leak = max(a.triu(1).abs().max().item() for a in att)
    return ind.max().item(), prev.max().item(), causal_leak, rep_loss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--save", default=None, help="write the final state_dict here")
    p.add_argument("--periodic", action="store_true", help="dense repeats (see periodic_batch)")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=ALPHABET + 1, n_positions=128, n_embd=128, n_layer=2, n_head=4,
                     activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    smooth = None
    for step in range(a.steps):
        for grp in opt.param_groups:
            grp["lr"] = a.lr * min(1.0, (step + 1) / 100)
        x, m = (periodic_batch if a.periodic else batch)(g, a.batch)
        logits = model(x).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[m], x[:, 1:][m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if (step + 1) % a.eval_every == 0:
            ind, prev, leak, rep_loss = scores(model)
            print(f"step {step + 1:5d} loss {smooth:.3f} induction {ind:.3f} prev {prev:.3f} "
                  f"rep_loss {rep_loss:.3f} causal_leak {leak:.1e} {time.time() - t0:.0f}s",
                  flush=True)
    if a.save:
        torch.save(model.state_dict(), a.save)


if __name__ == "__main__":
    main()
