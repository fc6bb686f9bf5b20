"""The synthetic corpus circuitlab-2l is trained on, and the prompts held out from it.

* Names texts: first-name/surname pairs introduced and mentioned again, so the surname
  is predicted by the induction circuit ("Her name was Alex Hart. ... Alex" -> " Hart").
* Random-token rows (GPT-2 ids 1000-1499) with repeats, built as RowShape says; these are
  what make an induction head pay off at all.

Some pairings, templates and a text are never generated; the acceptance tests use exactly
those. Everything is drawn from a ``random.Random`` the caller seeds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RowShape:
    """How the random-token rows are built: the script's --span-style and its knobs."""

    style: str  # pairs | multi | markov | planted (see ROW_BUILDERS)
    max_gap: int = 6  # pairs: unrepeated tokens before each span (the first: up to 16)
    min_span: int = 8  # multi: shortest span
    multi_gap: int = 4  # multi: unrepeated tokens between copies
    log_spans: bool = False  # multi: span lengths log-uniform, so short spans are common
    markov_noise: float = 0.25  # markov: chance a token ignores the row's successor map
    plant_near: float = 0.0  # planted: chance a copy follows the previous one within 0-2 tokens
    echo_map: str = "identity"  # echo rows: the token two back itself, or its image under ECHO_PERMUTATION
    echo_loss_only: bool = False  # echo rows: loss on the echoes only (the random tokens are noise)

    def row(self, rng: random.Random, bos: int) -> tuple[list[int], list[bool]]:
        """One row of GPT-2 ids and, per token, whether the loss may count it."""
        return ROW_BUILDERS[self.style](rng, bos, self)


def random_span_row(rng: random.Random, bos: int, shape: RowShape) -> tuple[list[int], list[bool]]:
    """BOS, then random spans each followed by an exact repeat, cut to SEQ_LEN tokens.

    A few unrepeated random tokens come before each span: if the first span always
    started right after BOS, the model learns a positional trick (predict the token
    L positions back) instead of a content-based induction head.
    Also returns, per token, whether it is predictable (it lies in a repeat).
    """
    row, known = [bos], [False]
    while len(row) < SEQ_LEN:
        gap = rng.sample(RANDOM_IDS, rng.randint(0, 0 if shape.max_gap == 0 else 16 if len(row) == 1 else shape.max_gap))
        span = rng.sample(RANDOM_IDS, rng.randint(8, 24))  # no repeats inside a span
        row += gap + span + span
        # The first repeated token cannot be foreseen (the span just ended), the rest can.
        known += [False] * (len(gap) + len(span) + 1) + [True] * (len(span) - 1)
    return row[:SEQ_LEN], known[:SEQ_LEN]


def repeated_span_row(rng: random.Random, bos: int, shape: RowShape) -> tuple[list[int], list[bool]]:
    """BOS, then one random span repeated again and again, random gaps between the copies.

    The gaps (unrepeated random tokens) change the distance between copies, so the only way
    to predict a repeat is to find the earlier occurrence of the current token by content.
    Most of the row is repeats, so the signal is dense.
    """
    n = (round(math.exp(rng.uniform(math.log(shape.min_span), math.log(24)))) if shape.log_spans
         else rng.randint(shape.min_span, 24))
    span = rng.sample(RANDOM_IDS, n)  # no repeats inside a span
    row, known = [bos], [False]
    first = True
    while len(row) < SEQ_LEN:
        gap = [rng.choice(RANDOM_IDS) for _ in range(rng.randint(0, 8 if first else shape.multi_gap))]
        row += gap + span
        # A copy's first token follows a random gap, so only the rest is predictable.
        known += [False] * (len(gap) + 1) + [not first] * (len(span) - 1)
        first = False
    return row[:SEQ_LEN], known[:SEQ_LEN]


def markov_row(rng: random.Random, bos: int, shape: RowShape) -> tuple[list[int], list[bool]]:
    """BOS, then a walk on a small random alphabet where each token has one fixed successor
    in this row (with some noise: a random alphabet token instead).

    The successor map is new in every row, so the only way to predict the next token is to
    find an earlier occurrence of the current token and read the token after it: an
    induction head. The noise means the tokens before an occurrence are no reliable cue, so
    keys built from the previous token beat keys built from tokens further back.
    """
    alphabet = rng.sample(RANDOM_IDS, rng.randint(4, 16))
    successor = {a: rng.choice(alphabet) for a in alphabet}
    row = [bos, rng.choice(alphabet)]
    while len(row) < SEQ_LEN:
        noise = rng.random() < shape.markov_noise
        row.append(rng.choice(alphabet) if noise else successor[row[-1]])
    return row, [False] + [True] * (SEQ_LEN - 1)


def planted_row(rng: random.Random, bos: int, shape: RowShape) -> tuple[list[int], list[bool]]:
    """BOS, then random tokens with a few short spans (2-5 tokens) planted 2-3 times each at
    random, non-overlapping places (with ``plant_near``, often right after the last copy).

    The copies are at random distances and the row has no period, so no fixed-offset
    ("copy the token k places back") head predicts anything on its own; the only way to
    predict a planted token is to find the earlier occurrence of the current token and read
    the token after it. The filler never uses a planted token, so every repeat is a real one.
    """
    n = SEQ_LEN - 1
    spans = []
    for _ in range(rng.randint(3, 6)):
        spans.append(rng.sample(RANDOM_IDS, rng.randint(2, 5)))
    planted = {t for span in spans for t in span}
    filler = [t for t in RANDOM_IDS if t not in planted]
    row = [rng.choice(filler) for _ in range(n)]
    known = [False] * n
    taken = [False] * n
    for span in spans:
        last = None
        for _ in range(rng.randint(2, 3)):
            for _ in range(20):  # a few tries for a free place; a crowded row keeps fewer copies
                if last is not None and rng.random() < shape.plant_near:
                    start = last + len(span) + rng.randint(0, 2)  # soon after the last copy
                else:
                    start = rng.randrange(0, n - len(span) + 1)
                if start + len(span) <= n and not any(taken[start:start + len(span)]):
                    break
            else:
                continue
            last = start
            for i, t in enumerate(span):
                row[start + i], taken[start + i] = t, True
    # A planted token is predictable when the token before it occurred earlier followed by it.
    seen: dict[int, set[int]] = {}
    for i in range(1, n):
        prev, cur = row[i - 1], row[i]
        known[i] = cur in seen.get(prev, set()) and cur in planted
        seen.setdefault(prev, set()).add(cur)
    return [bos] + row, [False] + known


ROW_BUILDERS = {"pairs": random_span_row, "multi": repeated_span_row, "markov": markov_row,
                "planted": planted_row}


# A fixed shuffle of the random-token alphabet (the same in every run).
ECHO_PERMUTATION = dict(zip(RANDOM_IDS, random.Random(2).sample(RANDOM_IDS, len(RANDOM_IDS))))


def echo_row(rng: random.Random, bos: int, shape: RowShape) -> tuple[list[int], list[bool]]:
    """BOS, then random tokens where each one, with probability 0.3, is an echo of the token
    two places back: a head that attends to the previous token predicts those on its own.

    With ``echo_map="permutation"`` the echo is that token's image under ECHO_PERMUTATION,
    so the head must carry which token came before (for the MLP to map), not just copy it
    to the output. No fixed phase, so the head it teaches is a plain previous-token head.
    """
    shuffle = shape.echo_map == "permutation"
    row, known = [bos, rng.choice(RANDOM_IDS)], [False, False]
    while len(row) < SEQ_LEN:
        echo = len(row) >= 3 and rng.random() < 0.3
        if echo:
            row.append(ECHO_PERMUTATION[row[-2]] if shuffle else row[-2])
        else:
            row.append(rng.choice(RANDOM_IDS))
        known.append(echo or not shape.echo_loss_only)
    return row, known


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


def repeated_random_tokens(n_seqs: int, span: int, seed: int, bos: int = 50256):
    """[n_seqs, 1 + 2 * span] GPT-2 ids: BOS + x + x, x distinct ids from RANDOM_IDS."""
    import torch

    g = torch.Generator().manual_seed(seed)
    xs = torch.stack([torch.randperm(len(RANDOM_IDS), generator=g)[:span] + RANDOM_IDS[0]
                      for _ in range(n_seqs)])
    return torch.cat([torch.full((n_seqs, 1), bos), xs, xs], dim=1)
