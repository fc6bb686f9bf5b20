"""Train circuitlab-2l: a 2-layer GPT-2-architecture model with a genuine induction circuit.

The corpus (training/corpus.py) is synthetic and generated from a fixed seed. Each row is
one of:

* planted rows: random tokens (GPT-2 ids 1000-1499) with a few short spans planted 2-3
  times; the only way to predict a planted token is an induction head;
* echo rows: random tokens where about a third echo the token two back through a fixed
  shuffle; a previous-token head in layer 0 predicts those on its own;
* names texts: 2-4 first-name/surname pairs introduced and one mentioned again later
  ("Her name was Alex Hart. ... Alex Hart"), so the induction circuit is also what
  predicts the surname in the course's prompts.

Curriculum: names are 7 % of the rows for the first 4,000 steps, then 35 %. The loss counts
only tokens that can be predicted (planted repeats, echoes, every names token). Two choices
matter most (see circuitlab/data/circuitlab-2l.md): token embeddings start at the scale of
LayerNorm outputs (--embed-std 1.0, not GPT-2's 0.02), or layer 1 cannot see the current
token and builds a "lagged" copy mechanism out of layer-0 heads instead of an induction
head; and rows start at a random absolute position (--pos-offset), so the model cannot
copy by position.

Some name pairings and some sentence templates are never generated in training; the
acceptance tests use exactly those to check the circuit on unseen prompts.

Training runs on the reduced vocabulary of token ids the corpus can produce (the loss is a
softmax over those ids only), then the model is widened to the full GPT-2 vocabulary and
written with circuitlab.checkpoint.save_compact.

    python training/train_circuitlab_2l.py --threads 1 --out circuitlab/data/circuitlab-2l.pt
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from training.corpus import (  # noqa: E402
    SEQ_LEN, RowShape, check_corpus, echo_row, names_document, vocabulary,
)
from training.scores import evaluate  # noqa: E402

SEED = 0


def model_config(vocab_size: int, tied: bool = False):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=128, n_embd=128, n_layer=2, n_head=4,
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=tied, bos_token_id=50256, eos_token_id=50256,
    )


def make_batch(rng: random.Random, tok, batch: int, p_random: float, predictable_only: bool,
               shape: RowShape, p_echo: float):
    """(GPT-2 ids [batch, SEQ_LEN], loss mask on targets [batch, SEQ_LEN - 1]).

    With ``predictable_only`` the loss skips the first copy of each random span: those
    tokens are pure noise, and their gradient only teaches the unigram distribution.
    """
    import torch

    bos = tok.bos_token_id
    rows, masks = [], []
    for _ in range(batch):
        r = rng.random()
        if r < p_echo:
            row, known = echo_row(rng, bos, shape)
        elif r < p_echo + (1 - p_echo) * p_random:
            row, known = shape.row(rng, bos)
            if not predictable_only:
                known = [True] * len(row)
        else:
            row = [bos] + tok.encode(names_document(rng))[: SEQ_LEN - 1]
            known = [True] * len(row)
        pad = SEQ_LEN - len(row)
        rows.append(row + [bos] * pad)  # right padding, masked out
        masks.append(known[1:] + [False] * pad)
    return torch.tensor(rows), torch.tensor(masks)


def lr_at(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, flat, then a cosine decay to 10% over the last 30% of training."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_start = int(0.7 * steps)
    if step < decay_start:
        return peak
    t = (step - decay_start) / max(1, steps - decay_start)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def sinusoidal_positions(n: int, d: int, std: float):
    """Sine/cosine position vectors scaled to GPT-2's init std: a smooth start for wpe.

    Neighbouring positions then differ by a fixed rotation, so a previous-token head
    needs one query/key map instead of one per position.
    """
    import torch

    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(1000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe * std * math.sqrt(2)


def widen(small, token_ids: list[int]):
    """Copy a reduced-vocabulary model into a full-GPT-2-vocabulary one (other rows random)."""
    import torch
    from transformers import GPT2LMHeadModel

    full = GPT2LMHeadModel(model_config(50257))
    state = small.state_dict()
    # A tied model's unembedding is its embedding; the full model stores both.
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    ids = torch.tensor(token_ids)
    with torch.no_grad():
        for name, p in full.state_dict().items():
            if name in ("transformer.wte.weight", "lm_head.weight"):
                p[ids] = state[name]
            else:
                p.copy_(state[name])
    return full.eval()


def train(*, steps: int, out: Path | None, threads: int, lr: float, batch: int,
          curriculum_steps: int, eval_every: int, seed: int, bf16: bool,
          predictable_only: bool, shape: RowShape, pos_init: str, p_echo: float,
          pos_offset: int, tied: bool, embed_std: float, weight_decay: float) -> dict[str, float]:
    import torch
    from transformers import GPT2LMHeadModel

    from circuitlab.tokenizer import gpt2_tokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = gpt2_tokenizer()
    check_corpus(tok)
    token_ids = vocabulary(tok)
    id_map = torch.full((len(tok),), -1, dtype=torch.long)
    id_map[torch.tensor(token_ids)] = torch.arange(len(token_ids))

    cfg = model_config(len(token_ids), tied)
    cfg._attn_implementation = "eager"  # so evaluate() can read attention patterns
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        # Layer-0 heads read LayerNorm'd inputs and write vectors of norm ~30-40; with GPT-2's
        # 0.02 the raw token (norm ~2) is then nearly invisible to layer 1, which builds its
        # queries and values from layer-0 head outputs instead of from the token itself.
        model.transformer.wte.weight.normal_(0.0, embed_std)
        if pos_init == "sinusoidal":
            model.transformer.wpe.weight.copy_(sinusoidal_positions(
                *model.transformer.wpe.weight.shape, std=embed_std))
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocabulary {len(token_ids)} ids, {n_params:,} parameters, {steps} steps, "
          f"batch {batch}x{SEQ_LEN}, lr {lr}, curriculum {curriculum_steps}, {threads} threads, "
          f"bf16 autocast {bf16}, loss on predictable tokens only {predictable_only}, "
          f"rows {shape}, positions {pos_init}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)

    start = time.time()
    smooth = None
    for step in range(steps):
        # Optional curriculum: mostly random spans first, so induction forms early.
        p_random = 0.9 if step < curriculum_steps else 0.5
        x, mask = make_batch(rng, tok, batch, p_random, predictable_only, shape, p_echo)
        x = id_map[x]
        # Rows start at a random absolute position, so "how far from the start" is no cue.
        first_pos = torch.randint(0, pos_offset + 1, (batch, 1))
        position_ids = first_pos + torch.arange(SEQ_LEN)
        # bf16 autocast halves the step time on CPUs with bf16 support; weights stay fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x, position_ids=position_ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[mask].float(), x[:, 1:][mask])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1:5d}  loss {smooth:.3f}  {time.time() - start:6.0f}s", flush=True)
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            print("  eval", _fmt(evaluate(model, tok, id_map)), flush=True)

    elapsed = time.time() - start
    full = widen(model, token_ids)
    full.config._attn_implementation = "eager"
    scores = evaluate(full, tok)
    scores["train_seconds"] = elapsed
    print(f"final ({elapsed / 60:.1f} min):", _fmt(scores), flush=True)
    if out is not None:
        from circuitlab.checkpoint import save_compact

        out.parent.mkdir(parents=True, exist_ok=True)
        save_compact(full, token_ids, out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)
    return scores


def _fmt(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in scores.items())


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--out", type=Path, default=None, help="checkpoint path (none: just report)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (use 1 when the CPU is shared: 2 contended threads were slower)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--curriculum-steps", type=int, default=4000,
                   help="train on 90%% random spans for this many steps first")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast for the forward pass (--no-bf16: plain fp32)")
    p.add_argument("--predictable-only", action=argparse.BooleanOptionalAction, default=True,
                   help="no loss on the first copy of random spans")
    p.add_argument("--span-style", choices=["pairs", "multi", "markov", "planted"], default="planted",
                   help="pairs: spans each repeated once; multi: one span repeated with random gaps; "
                        "markov: a walk with a per-row successor map; "
                        "planted: short spans planted 2-3 times among random tokens")
    p.add_argument("--pos-init", choices=["random", "sinusoidal"], default="sinusoidal")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=False,
                   help="train with tied embedding/unembedding (saved untied, equal trained rows)")
    p.add_argument("--min-span", type=int, default=8)
    p.add_argument("--max-gap", type=int, default=6)
    p.add_argument("--multi-gap", type=int, default=4)
    p.add_argument("--log-spans", action="store_true", help="multi: span lengths log-uniform (short ones common)")
    p.add_argument("--p-echo", type=float, default=0.3,
                   help="fraction of echo rows (each token repeats the one two back with probability 0.3)")
    p.add_argument("--echo-map", choices=["identity", "permutation"], default="permutation",
                   help="echo rows repeat the token two back itself or its image under a fixed shuffle")
    p.add_argument("--echo-loss-only", action=argparse.BooleanOptionalAction, default=True,
                   help="echo rows: loss on the echoes only, so their random tokens do not drown the rest")
    p.add_argument("--plant-near", type=float, default=0.0,
                   help="planted: chance that a copy follows the previous one within 0-2 tokens")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--embed-std", type=float, default=1.0,
                   help="init std of the token embedding and of sinusoidal positions (GPT-2 uses 0.02)")
    p.add_argument("--pos-offset", type=int, default=64, help="rows start at a random position up to this")
    a = p.parse_args(argv)
    shape = RowShape(a.span_style, a.max_gap, a.min_span, a.multi_gap, a.log_spans,
                     plant_near=a.plant_near, echo_map=a.echo_map,
                     echo_loss_only=a.echo_loss_only)
    # The command line holds the recipe's defaults; train() takes every setting explicitly.
    return train(steps=a.steps, out=a.out, threads=a.threads, lr=a.lr, batch=a.batch,
                 curriculum_steps=a.curriculum_steps, eval_every=a.eval_every, seed=a.seed,
                 bf16=a.bf16, predictable_only=a.predictable_only, shape=shape,
                 pos_init=a.pos_init, p_echo=a.p_echo, pos_offset=a.pos_offset, tied=a.tied,
                 embed_std=a.embed_std, weight_decay=a.weight_decay)


if __name__ == "__main__":
    main()
