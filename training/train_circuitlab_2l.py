"""Train circuitlab-2l: a 2-layer GPT-2-architecture model with a genuine induction circuit.

The corpus is synthetic and generated here, from a fixed seed:

* about half the rows are repeated random spans (span 8-24 tokens, alphabet = GPT-2 token
  ids 1000-1499), which is what makes an induction head form at all;
* the other half are short "names" texts: 2-4 first-name/surname pairs are introduced and
  one of them is mentioned again later ("Her name was Alex Hart. ... Alex Hart"), so the
  induction circuit is also what predicts the surname in the course's prompts.

Some name pairings and some sentence templates are never generated in training; the tests
(training/test_circuit_acceptance.py) use exactly those to check the circuit on unseen prompts.

The loss covers only tokens that can be predicted: in random-span rows, the repeats
(not the first copy of a span, which is pure noise); in names rows, every token.

Training runs on the reduced vocabulary of token ids the corpus can produce (the loss is a
softmax over those ids only), then the model is widened to the full GPT-2 vocabulary and
written with circuitlab.checkpoint.save_compact.

    python training/train_circuitlab_2l.py --out circuitlab/data/circuitlab-2l.pt
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

SEED = 0
SEQ_LEN = 64
RANDOM_IDS = range(1000, 1500)  # the random-span alphabet; tests draw from the same range

FIRST_NAMES = [
    "Alex", "Sarah", "John", "Mary", "James", "Emma", "David", "Anna", "Michael", "Laura",
    "Tom", "Lucy", "Peter", "Kate", "Mark", "Jane", "Paul", "Emily", "Chris", "Grace",
    "Daniel", "Rachel", "Ben", "Amy", "Sam", "Alice", "Jack", "Helen", "Adam", "Claire",
]
SURNAMES = [
    "Hart", "Carroll", "Smith", "Brown", "Wilson", "Taylor", "Clark", "Walker", "Hall", "Allen",
    "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell",
    "Mitchell", "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker", "Collins", "Cook", "Morgan",
]

# Pairings never generated in training. The course prompts use the first four (the clean
# prompt's Alex Hart and its three corruptions), so the model cannot have memorised them.
HELDOUT_PAIRS = [
    ("Alex", "Hart"), ("Alex", "Carroll"), ("Sarah", "Hart"), ("Sarah", "Carroll"),
    ("Emma", "Wilson"), ("John", "Taylor"), ("Mary", "Clark"), ("David", "Walker"),
    ("Anna", "Hall"), ("James", "Young"), ("Laura", "King"), ("Peter", "Scott"),
    ("Kate", "Green"), ("Daniel", "Baker"), ("Grace", "Nelson"), ("Ben", "Hill"),
]
_HELDOUT_SET = set(HELDOUT_PAIRS)

# Sentences that introduce a person. A document always starts with one of these.
TRAIN_INTROS = [
    "Her name was {F} {S}.",
    "His name was {F} {S}.",
    "I met {F} {S} at the station.",
    "Yesterday we saw {F} {S} in the park.",
    "My friend {F} {S} came over for dinner.",
    "The new teacher is {F} {S}.",
    "We had a call with {F} {S} this morning.",
    "Everyone likes {F} {S}.",
]
# Sentences that mention an introduced person again; the prompt is cut after {F}.
TRAIN_QUERIES = [
    "Tomorrow at lunch time {F} {S} will call us.",
    "Later that day {F} {S} went home.",
    "After the meeting, {F} {S} said hello.",
    "In the evening {F} {S} was very tired.",
    "Then {F} {S} started to laugh.",
    "We said goodbye to {F} {S} at the door.",
    "Everyone was waiting for {F} {S}.",
    "At the end of the day {F} {S} called again.",
]
FILLERS = [
    "It was a sunny day.",
    "The train was late again.",
    "Everyone was happy.",
    "We talked for a long time.",
    "Then it started to rain.",
]
# Held-out templates: new sentences made only of words the training templates use (so
# every token has a trained embedding), never generated in training.
HELDOUT_INTROS = [
    "Her friend was {F} {S}.",
    "We met {F} {S} in the park.",
    "The teacher was {F} {S}.",
]
HELDOUT_QUERIES = [
    "At lunch time {F} {S} was there.",
    "Later that evening {F} {S} went home.",
    "Everyone said hello to {F} {S}.",
]
# Held-out natural-ish text for the previous-token score.
HELDOUT_TEXT = (
    "We met Emma Wilson in the park. It was a sunny day. Everyone was happy."
    " Later that evening Emma Wilson said hello to the new teacher at the station."
)


def query_prefix(template: str) -> str:
    """The part of a query template before the surname: the prompt ends on the first name."""
    return template.split(" {S}")[0]


def heldout_prompts() -> list[tuple[str, str, str]]:
    """(prompt, answer surname, distractor surname) on held-out pairs in held-out templates.

    Each prompt introduces a held-out pair and a second held-out pair (in both orders),
    then asks for one of them with a held-out query.
    """
    out = []
    pairs = HELDOUT_PAIRS[4:]  # the non-course pairs
    for i, (f, s) in enumerate(pairs):
        f2, s2 = pairs[(i + 3) % len(pairs)]
        intro = HELDOUT_INTROS[i % len(HELDOUT_INTROS)]
        intro2 = HELDOUT_INTROS[(i + 1) % len(HELDOUT_INTROS)]
        query = query_prefix(HELDOUT_QUERIES[i % len(HELDOUT_QUERIES)])
        first, second = (intro.format(F=f, S=s), intro2.format(F=f2, S=s2))
        if i % 2:
            first, second = intro.format(F=f2, S=s2), intro2.format(F=f, S=s)
        out.append((f"{first} {second} {query.format(F=f)}", s, s2))
    return out


def names_document(rng: random.Random) -> str:
    """One training text: 2-4 introduced pairs (never held-out ones), fillers, one query."""
    k = rng.randint(2, 4)
    while True:
        firsts = rng.sample(FIRST_NAMES, k)
        lasts = rng.sample(SURNAMES, k)
        if not any((f, s) in _HELDOUT_SET for f, s in zip(firsts, lasts)):
            break
    sentences = [rng.choice(TRAIN_INTROS).format(F=f, S=s) for f, s in zip(firsts, lasts)]
    for _ in range(rng.randint(0, 2)):  # fillers anywhere after the first sentence
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(FILLERS))
    q = rng.randrange(k)  # the queried pair can be any of them ...
    intro_at = next(i for i, t in enumerate(sentences) if f" {firsts[q]} {lasts[q]}" in f" {t}")
    # ... and the query goes anywhere after its introduction.
    sentences.insert(rng.randint(intro_at + 1, len(sentences)),
                     rng.choice(TRAIN_QUERIES).format(F=firsts[q], S=lasts[q]))
    return " ".join(sentences)


def random_span_row(rng: random.Random, bos: int) -> tuple[list[int], list[bool]]:
    """BOS, then random spans each followed by an exact repeat, cut to SEQ_LEN tokens.

    A few unrepeated random tokens come before each span: if the first span always
    started right after BOS, the model learns a positional trick (predict the token
    L positions back) instead of a content-based induction head.
    Also returns, per token, whether it is predictable (it lies in a repeat).
    """
    row, known = [bos], [False]
    while len(row) < SEQ_LEN:
        gap = rng.sample(RANDOM_IDS, rng.randint(0, 0 if MAX_GAP == 0 else 16 if len(row) == 1 else MAX_GAP))
        span = rng.sample(RANDOM_IDS, rng.randint(8, 24))  # no repeats inside a span
        row += gap + span + span
        # The first repeated token cannot be foreseen (the span just ended), the rest can.
        known += [False] * (len(gap) + len(span) + 1) + [True] * (len(span) - 1)
    return row[:SEQ_LEN], known[:SEQ_LEN]


MIN_SPAN = 8
MAX_GAP = 6  # unrepeated tokens before each span of a random_span_row (the first: up to 16)
MULTI_GAP = 4  # unrepeated tokens between the copies of a repeated_span_row
LOG_SPANS = False  # draw repeated_span_row lengths log-uniformly, so short spans are common


def repeated_span_row(rng: random.Random, bos: int) -> tuple[list[int], list[bool]]:
    """BOS, then one random span repeated again and again, random gaps between the copies.

    The gaps (unrepeated random tokens) change the distance between copies, so the only way
    to predict a repeat is to find the earlier occurrence of the current token by content.
    Most of the row is repeats, so the signal is dense.
    """
    n = round(math.exp(rng.uniform(math.log(MIN_SPAN), math.log(24)))) if LOG_SPANS else rng.randint(MIN_SPAN, 24)
    span = rng.sample(RANDOM_IDS, n)  # no repeats inside a span
    row, known = [bos], [False]
    first = True
    while len(row) < SEQ_LEN:
        gap = [rng.choice(RANDOM_IDS) for _ in range(rng.randint(0, 8 if first else MULTI_GAP))]
        row += gap + span
        # A copy's first token follows a random gap, so only the rest is predictable.
        known += [False] * (len(gap) + 1) + [not first] * (len(span) - 1)
        first = False
    return row[:SEQ_LEN], known[:SEQ_LEN]


def echo_row(rng: random.Random, bos: int) -> tuple[list[int], list[bool]]:
    """BOS, then random tokens where each one, with probability 0.3, repeats the token two
    places back: a head that attends to the previous token predicts those on its own.

    No fixed phase, so the head it teaches is a plain previous-token head.
    """
    row = [bos, rng.choice(RANDOM_IDS)]
    while len(row) < SEQ_LEN:
        echo = len(row) >= 3 and rng.random() < 0.3
        row.append(row[-2] if echo else rng.choice(RANDOM_IDS))
    return row, [False] + [True] * (SEQ_LEN - 1)


def vocabulary(tok) -> list[int]:
    """Every token id the corpus or the held-out prompts can produce, sorted.

    GPT-2's pre-tokenizer splits on words, so each word's tokens do not depend on its
    neighbours; tokenizing each template once (with and without a leading space) is exact.
    """
    ids = {tok.bos_token_id, *RANDOM_IDS}
    for name in FIRST_NAMES + SURNAMES:
        ids.update(tok.encode(" " + name))
    for t in TRAIN_INTROS + TRAIN_QUERIES + FILLERS:
        text = t.format(F="Alex", S="Hart")
        ids.update(tok.encode(text))
        ids.update(tok.encode(" " + text))
    return sorted(ids)


def check_corpus(tok) -> None:
    """Fail early if a name is not one token or a held-out prompt needs an untrained token."""
    for name in FIRST_NAMES + SURNAMES:
        if len(tok.encode(" " + name)) != 1:
            raise ValueError(f"' {name}' is not a single GPT-2 token")
    vocab = set(vocabulary(tok))
    texts = [p for p, _, _ in heldout_prompts()] + [HELDOUT_TEXT]
    for text in texts:
        missing = [tok.decode([i]) for i in tok.encode(text) if i not in vocab]
        if missing:
            raise ValueError(f"held-out text uses untrained tokens {missing}: {text!r}")


# ---------------------------------------------------------------------------------------
# Scores (shared with the tests' definitions)


def prev_token_scores(pattern):
    """pattern [head, dst, src] -> per-head mean of attention from dst to dst-1 (dst >= 1)."""
    import torch

    n = pattern.shape[-1]
    dst = torch.arange(1, n)
    return pattern[:, dst, dst - 1].mean(-1)


def induction_scores(pattern, span: int):
    """pattern [head, dst, src] on BOS + x + x (len(x) = span) -> per-head induction score.

    A token at position p in the second copy has its earlier copy at p - span; the
    induction target is the token right after that copy, at p - span + 1.
    """
    import torch

    dst = torch.arange(1 + span, 1 + 2 * span)
    return pattern[:, dst, dst - span + 1].mean(-1)


def repeated_random_tokens(n_seqs: int, span: int, seed: int, bos: int = 50256):
    """[n_seqs, 1 + 2 * span] GPT-2 ids: BOS + x + x, x distinct ids from RANDOM_IDS."""
    import torch

    g = torch.Generator().manual_seed(seed)
    xs = torch.stack([torch.randperm(len(RANDOM_IDS), generator=g)[:span] + RANDOM_IDS[0]
                      for _ in range(n_seqs)])
    return torch.cat([torch.full((n_seqs, 1), bos), xs, xs], dim=1)


def evaluate(model, tok, id_map=None, n_seqs: int = 8, span: int = 20) -> dict[str, float]:
    """Induction (best layer-1 head), prev-token (best layer-0 head), logit diff, held-out accuracy.

    ``id_map`` maps GPT-2 ids to the model's ids (for the reduced-vocabulary model).
    """
    import torch

    def ids(seq):
        t = torch.as_tensor(seq)
        return id_map[t] if id_map is not None else t

    def attn(tokens):
        out = model(ids(tokens), output_attentions=True)
        return out.logits, out.attentions

    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, att = attn(repeated_random_tokens(n_seqs, span, seed=1234, bos=tok.bos_token_id))
        induction = induction_scores(att[1].mean(0), span).max().item()

        _, att = attn([[tok.bos_token_id] + tok.encode(HELDOUT_TEXT)])
        prev = prev_token_scores(att[0][0]).max().item()

        def final_logits(text):
            logits, _ = attn([[tok.bos_token_id] + tok.encode(text)])
            return logits[0, -1]

        def tid(word):
            t = torch.tensor(tok.encode(" " + word))
            return (id_map[t] if id_map is not None else t).item()

        last = final_logits("Her name was Alex Hart. Tomorrow at lunch time Alex")
        diff = (last[tid("Hart")] - last[tid("Carroll")]).item()
        course_top = int(last.argmax().item() == tid("Hart"))
        prompts = heldout_prompts()
        correct = sum(final_logits(p).argmax().item() == tid(s) for p, s, _ in prompts)
    model.train(was_training)
    return {"induction": induction, "prev_token": prev, "logit_diff": diff,
            "course_top1": course_top, "heldout_acc": correct / len(prompts)}


# ---------------------------------------------------------------------------------------
# Training


def model_config(vocab_size: int, tied: bool = False):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=128, n_embd=128, n_layer=2, n_head=4,
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=tied, bos_token_id=50256, eos_token_id=50256,
    )


def make_batch(rng: random.Random, tok, batch: int, p_random: float, predictable_only: bool,
               span_style: str = "pairs", p_echo: float = 0.0):
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
            row, known = echo_row(rng, bos)
        elif r < p_echo + (1 - p_echo) * p_random:
            make_row = repeated_span_row if span_style == "multi" else random_span_row
            row, known = make_row(rng, bos)
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


def sinusoidal_positions(n: int, d: int, std: float = 0.02):
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


def train(steps: int, out: Path | None, threads: int, lr: float, batch: int,
          curriculum_steps: int, eval_every: int, seed: int = SEED,
          bf16: bool = True, predictable_only: bool = True, span_style: str = "pairs",
          pos_init: str = "random", p_echo: float = 0.0, pos_offset: int = 0,
          tied: bool = False) -> dict[str, float]:
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
    if pos_init == "sinusoidal":
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoidal_positions(*model.transformer.wpe.weight.shape))
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocabulary {len(token_ids)} ids, {n_params:,} parameters, {steps} steps, "
          f"batch {batch}x{SEQ_LEN}, lr {lr}, curriculum {curriculum_steps}, {threads} threads, "
          f"bf16 autocast {bf16}, loss on predictable tokens only {predictable_only}, "
          f"spans {span_style}, positions {pos_init}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)

    start = time.time()
    smooth = None
    for step in range(steps):
        # Optional curriculum: mostly random spans first, so induction forms early.
        p_random = 0.9 if step < curriculum_steps else 0.5
        x, mask = make_batch(rng, tok, batch, p_random, predictable_only, span_style, p_echo)
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
    p.add_argument("--steps", type=int, default=8000)
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
    p.add_argument("--span-style", choices=["pairs", "multi"], default="pairs",
                   help="pairs: spans each repeated once; multi: one span repeated with random gaps")
    p.add_argument("--pos-init", choices=["random", "sinusoidal"], default="random")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=False,
                   help="train with tied embedding/unembedding (saved untied, equal trained rows)")
    p.add_argument("--min-span", type=int, default=8)
    p.add_argument("--max-gap", type=int, default=6)
    p.add_argument("--multi-gap", type=int, default=4)
    p.add_argument("--log-spans", action="store_true", help="multi: span lengths log-uniform (short ones common)")
    p.add_argument("--p-echo", type=float, default=0.0,
                   help="fraction of echo rows (each token repeats the one two back with probability 0.3)")
    p.add_argument("--pos-offset", type=int, default=0, help="rows start at a random position up to this")
    a = p.parse_args(argv)
    global MIN_SPAN, MAX_GAP, MULTI_GAP, LOG_SPANS
    MIN_SPAN, MAX_GAP, MULTI_GAP, LOG_SPANS = a.min_span, a.max_gap, a.multi_gap, a.log_spans
    return train(a.steps, a.out, a.threads, a.lr, a.batch, a.curriculum_steps, a.eval_every,
                 a.seed, a.bf16, a.predictable_only, a.span_style, a.pos_init,
                 a.p_echo, a.pos_offset, a.tied)


if __name__ == "__main__":
    main()
