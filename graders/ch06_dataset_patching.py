"""Chapter 6's exercises: patching a dataset.

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`. References: solutions/ch06_dataset_patching.py; known mistakes:
solutions/mistakes/ch06_dataset_patching.py.

A dataset here is token batches (clean, corrupt: [n, pos]; answers: [n, 2]) built from
the course's name prompts by the grader itself (tokenizing is not answer code). Sweeps
normalise each prompt by its own clean and corrupt logit differences, so a prompt whose
two baselines nearly agree would turn float noise into large errors: datasets keep only
prompts whose baselines differ by at least MIN_GAP on the grading model.
"""

from __future__ import annotations

import random
from typing import Any, Optional

import torch

from circuitlab.prompts import FIRST_NAMES, SURNAMES, TEMPLATE
from circuitlab_graders.compare import close_tensor, kind, same_value, scalar_shape
from circuitlab_graders.declare import MODEL, Case, Exercise, Property
from circuitlab_graders.kit import COMPUTED, FORWARD, SLOW_MODEL
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close, shaped

CHAPTER = "06_dataset_patching"
SHORT = "{first} {last} {again}"
SAME_LENGTH = "His name was {first} {last}. Tomorrow at lunch time {again}"  # TEMPLATE's length on GPT-2
LONGER = "Yesterday I met {first} {last} at the station. Later that evening {again}"
LONG_NAMES = ["Bartholomew", "Gwendolyn", "Maximilian"]  # several GPT-2 tokens each
MIN_GAP = 0.05


# ---------------------------------------------------------------- datasets the grader builds


def filler(first: str, last: str, other_first: str, other_last: str, corruption: str) -> dict:
    """One filler of the chapter's form for the name task, with one of chapter 1's corruptions."""
    corrupt = {"surname": {"first": first, "last": other_last, "again": first},
               "first_name": {"first": other_first, "last": last, "again": first},
               "second_name": {"first": first, "last": last, "again": other_first}}[corruption]
    return {"clean": {"first": first, "last": last, "again": first}, "corrupt": corrupt,
            "answers": [f" {last}", f" {other_last}"]}


def random_fillers(rng: random.Random, n: int, corruptions=("surname", "first_name", "second_name")) -> list[dict]:
    out = []
    for _ in range(n):
        first, other_first = rng.sample(FIRST_NAMES, 2)
        last, other_last = rng.sample(SURNAMES, 2)
        out.append(filler(first, last, other_first, other_last, rng.choice(corruptions)))
    return out


def _baseline(model, tokens: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        final = model(tokens)[:, -1]
    return final.gather(1, answers).diff(dim=1).neg()[:, 0]  # logit(answer 0) - logit(answer 1)


def dataset(gm: GradingModel, rng: random.Random, n: int, template: str,
            corruptions=("surname", "first_name", "second_name")) -> dict[str, torch.Tensor]:
    """`n` aligned prompt pairs of `template` whose baselines differ by MIN_GAP or more."""
    model = gm.model
    clean, corrupt, answers = [], [], []
    while len(clean) < n:
        (f,) = random_fillers(rng, 1, corruptions)
        a = model.to_tokens(template.format(**f["clean"]))
        b = model.to_tokens(template.format(**f["corrupt"]))
        pair = torch.tensor([[model.to_single_token(x) for x in f["answers"]]], device=a.device)
        if a.shape != b.shape or (clean and a.shape[1] != clean[0].shape[1]):
            continue
        if (_baseline(model, a, pair) - _baseline(model, b, pair)).abs().item() < MIN_GAP:
            continue
        clean.append(a)
        corrupt.append(b)
        answers.append(pair)
    return {"clean": torch.cat(clean), "corrupt": torch.cat(corrupt), "answers": torch.cat(answers)}


def exchanged(data: dict) -> dict:
    """The other direction's call on the same pairs: clean and corrupt (and their answers)
    exchanged, denoising. Its metric is 1 minus the noising one, cell for cell."""
    return {**data, "clean": data["corrupt"], "corrupt": data["clean"], "answers": data["answers"][:, [1, 0]],
            "direction": "denoising"}


def one_minus(what: str, shape: tuple):
    def holds(answers: list) -> Optional[str]:
        return (shaped(answers[0], shape) or shaped(answers[1], shape)
                or close(answers[1], 1 - answers[0], what, atol=1e-3))

    return holds


def sweep_args(gm: GradingModel, rng: random.Random, n: int, template: str, **extra) -> dict[str, Any]:
    return {"model": MODEL, **dataset(gm, rng, n, template), **extra}


# ---------------------------------------------------------------- aligned_prompt_pairs


def same_dataset(got: Any, expected: dict) -> Optional[str]:
    """The dict aligned_prompt_pairs returns: its keys, equal token tensors, equal lists
    (a learner's tuples read as lists)."""
    if type(got) is not dict:
        return f"returned {kind(got)}, expected a dict with keys {sorted(expected)}"
    if sorted(map(repr, got)) != sorted(map(repr, expected)):
        return f"returned keys {sorted(map(repr, got))}, expected {sorted(expected)}"
    for key in ("clean", "corrupt", "answers"):
        value, want = got[key], expected[key]
        if type(value) is not torch.Tensor:
            return f"{key!r}: returned {kind(value)}, expected a tensor of token ids"
        if value.shape != want.shape:
            return f"{key!r}: returned shape {tuple(value.shape)}, expected {tuple(want.shape)}"
        if value.dtype != want.dtype or not torch.equal(value.cpu(), want.cpu()):
            return f"{key!r}: the token ids differ from the expected ones"
    for key in ("kept", "dropped"):
        if (problem := same_value(_lists(got[key]), expected[key])) is not None:
            return f"{key!r}: {problem}"
    return None


def _lists(value: Any) -> Any:
    if type(value) in (list, tuple):
        return [_lists(v) for v in value]
    return value


def _pairs_inputs(gm: GradingModel, rng: random.Random) -> dict[str, Any]:
    fillers = random_fillers(rng, 4)
    first, other_first = rng.sample(FIRST_NAMES, 2)
    last = rng.choice(SURNAMES)
    long_answer = rng.choice(LONG_NAMES)
    fillers.insert(rng.randrange(len(fillers)), {  # a multi-token answer, on prompts that still align
        "clean": {"first": first, "last": last, "again": first},
        "corrupt": {"first": other_first, "last": last, "again": first}, "answers": [f" {last}", f" {long_answer}"]})
    fillers.insert(rng.randrange(len(fillers)), filler(first, last, other_first, long_answer, "surname"))
    templates = [TEMPLATE, LONGER, SAME_LENGTH]
    rng.shuffle(templates)
    return {"model": MODEL, "templates": templates, "fillers": fillers}


def _pairs_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(f"3 templates x 6 fillers, draw {i}", _pairs_inputs(gm, rng)) for i in range(2)]


def _pairs_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    fillers = [filler("Alex", "Hart", "Sarah", "Carroll", "surname"),
               filler("Alex", "Hart", "Sarah", "Carroll", "first_name"),
               {**filler("Alex", "Hart", "Sarah", "Carroll", "first_name"), "answers": [" Hart", " Bartholomew"]}]
    call = {"model": MODEL, "templates": [TEMPLATE, LONGER], "fillers": fillers}
    n_pos = model.to_tokens(TEMPLATE.format(first="Alex", last="Hart", again="Alex")).shape[1]
    answers = torch.tensor([[model.to_single_token(" Hart"), model.to_single_token(" Carroll")]] * 2)

    def keys(a):
        got = a[0]
        if type(got) is not dict or not {"clean", "corrupt", "answers", "kept", "dropped"} <= set(got):
            return "expected a dict with keys 'clean', 'corrupt', 'answers', 'kept', 'dropped'"
        return None

    def batches(a):
        got = a[0]
        for key in ("clean", "corrupt"):
            if type(got[key]) is not torch.Tensor or tuple(got[key].shape) != (2, n_pos):
                return f"{key!r}: expected the 2 aligned pairs of the first template as a [2, {n_pos}] tensor"
        if type(got["answers"]) is not torch.Tensor or not torch.equal(got["answers"].cpu(), answers):
            return "'answers': expected [[id of ' Hart', id of ' Carroll']] for each kept pair"
        return None

    def reasons(a):
        dropped = [tuple(_lists(d)) for d in a[0]["dropped"]]
        if (0, 2, "answer not a single token") not in dropped:
            return "the pair with answer ' Bartholomew' (several tokens) must be dropped: [0, 2, 'answer not a single token']"
        if (1, 0, "not the dataset's length") not in dropped:
            return "the second template's prompts are longer: [1, 0, \"not the dataset's length\"] must be dropped"
        return None

    return [Property("a dict of the batches and the kept and dropped pairs", (call,), keys),
            Property("the aligned pairs of the first template, their answer ids", (call,),
                     lambda a: keys(a) or batches(a)),
            Property("a multi-token answer and another length are dropped, with the reason", (call,),
                     lambda a: keys(a) or reasons(a))]


ALIGNED_PROMPT_PAIRS = Exercise(
    name="aligned_prompt_pairs",
    chapter=CHAPTER,
    section="From one pair to a dataset",
    hint=("For each template, then each filler: drop the pair if model.to_single_token fails on an answer, if "
          "model.to_tokens gives the clean and corrupt prompts different lengths, or if that length is not the "
          "first kept pair's. Stack the kept rows with torch.stack."),
    cases=_pairs_cases,
    compare=same_dataset,
    properties=_pairs_properties,
)


# ---------------------------------------------------------------- batch_logit_diff


def _logit_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    out = []
    for per_prompt in (False, True):
        data = dataset(gm, rng, 3, SHORT if gm.key == SLOW_MODEL else TEMPLATE)
        with torch.no_grad():
            logits = gm.model(data["clean"])
        out.append(Case(f"3 prompts, per_prompt={per_prompt}",
                        {"logits": logits, "answers": data["answers"], "per_prompt": per_prompt}))
    return out


def _logit_properties(gm: GradingModel) -> list[Property]:
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(4, 5, 30, generator=generator)
    answers = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    per = {"logits": logits, "answers": answers, "per_prompt": True}
    final = logits[:, -1]
    return [
        Property("per_prompt=True: one difference per prompt, from its own final position", (per,),
                 lambda a: shaped(a[0], (4,)) or close(a[0], final[[0, 1, 2, 3], [1, 3, 5, 7]]
                                                       - final[[0, 1, 2, 3], [2, 4, 6, 8]], "per-prompt differences")),
        Property("swapping each pair's answers flips the sign", (per, {**per, "answers": answers[:, [1, 0]]}),
                 lambda a: shaped(a[0], (4,)) or shaped(a[1], (4,)) or close(a[1], -a[0], "swapped answers")),
        Property("per_prompt=False: the mean of the per-prompt differences", (per, {**per, "per_prompt": False}),
                 lambda a: shaped(a[0], (4,)) or shaped(a[1], ()) or close(a[1], a[0].mean(), "the mean")),
    ]


BATCH_LOGIT_DIFF = Exercise(
    name="batch_logit_diff",
    chapter=CHAPTER,
    section="One number per prompt",
    hint=("Take the final position, logits[:, -1] ([batch, d_vocab]); gather each row's two answer ids "
          "(torch.gather or indexing with torch.arange(batch)); subtract column 1 from column 0; return that, "
          "or its .mean()."),
    cases=_logit_cases,
    compare=scalar_shape(close_tensor(atol=1e-4, rtol=1e-4)),
    properties=_logit_properties,
)


# ---------------------------------------------------------------- normalised_patching_metric


def _metric_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    clean = torch.rand(5, generator=generator) * 4 + 1
    corrupt = -torch.rand(5, generator=generator) * 4
    patched = torch.randn(5, 3, 7, generator=generator) * 3
    return [
        # (Not 0-dim: graders.inputs.fingerprint cannot hash a 0-dim tensor yet.)
        Case("one prompt, one cell", {"patched": patched[0, 0, :1], "clean": clean[:1], "corrupt": corrupt[:1]}),
        Case("a sweep of 5 prompts, each with its own baselines",
             {"patched": patched, "clean": clean[:, None, None], "corrupt": corrupt[:, None, None]}),
    ]


def _metric_properties(gm: GradingModel) -> list[Property]:
    clean, corrupt = torch.tensor([3.0, 2.0]), torch.tensor([-1.0, 1.0])
    patched = torch.stack([clean, corrupt, (clean + corrupt) / 2, clean + (clean - corrupt)])
    call = {"patched": patched, "clean": clean, "corrupt": corrupt}
    expected = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.5, 0.5], [2.0, 2.0]])
    return [Property("1 at the clean run, 0 at the corrupt run, 0.5 half way, 2 one gap beyond clean", (call,),
                     lambda a: shaped(a[0], (4, 2)) or close(a[0], expected, "the metric"))]


NORMALISED_PATCHING_METRIC = Exercise(
    name="normalised_patching_metric",
    chapter=CHAPTER,
    section="A metric from 0 to 1",
    hint="Shift so the corrupt baseline is 0, then scale so the clean baseline is 1: (patched - corrupt) / (clean - corrupt).",
    cases=_metric_cases,
    compare=COMPUTED,
    properties=_metric_properties,
)


# ---------------------------------------------------------------- dataset_patching_sweep


def _sweep_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    if gm.key == SLOW_MODEL:
        direction = rng.choice(["noising", "denoising"])
        return [Case(f"3 short prompts, {direction}", sweep_args(gm, rng, 3, SHORT, direction=direction))]
    return [Case(f"3 prompts, {direction}", sweep_args(gm, rng, 3, TEMPLATE, direction=direction))
            for direction in ("noising", "denoising")]


def _sweep_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    rng = random.Random(6)
    data = dataset(gm, rng, 2, SHORT, corruptions=("surname",))  # only position 2 differs
    shape = (model.cfg.n_layers, data["clean"].shape[1])
    noising = {"model": MODEL, **data, "direction": "noising"}
    denoising = {**noising, "direction": "denoising"}
    # Row 0 is the embedding: patching the changed token swaps the whole run, the others change nothing.
    return [
        Property(f"shape [n_layers, pos] = {list(shape)}", (noising,), lambda a: shaped(a[0], shape)),
        Property("row 0, noising: 0 at the changed token, 1 elsewhere", (noising,), lambda a: shaped(a[0], shape)
                 or close(a[0][0], torch.tensor([1.0, 1.0, 0.0, 1.0]), "row 0", atol=1e-3)),
        Property("row 0, denoising: 1 at the changed token, 0 elsewhere", (denoising,), lambda a: shaped(a[0], shape)
                 or close(a[0][0], torch.tensor([0.0, 0.0, 1.0, 0.0]), "row 0", atol=1e-3)),
        Property("denoising with clean and corrupt exchanged = 1 - noising", (noising, exchanged(noising)),
                 one_minus("the exchanged run's sweep", shape)),
    ]


DATASET_PATCHING_FORWARD = Exercise(
    name="dataset_patching_sweep",
    chapter=CHAPTER,
    section="Noising and denoising",
    hint=("base, source = (clean, corrupt) for noising, (corrupt, clean) for denoising. Cache the source batch; for "
          "each layer L and position p, run the base batch with blocks.L.hook_resid_pre[:, p] taken from the source "
          "cache (row i from row i), take batch_logit_diff(..., per_prompt=True), normalise it with each prompt's "
          "clean and corrupt baselines, and store the mean."),
    # Graded against the exact batched engine (same numbers, a fraction of the time); the
    # readable reference in solutions/ is what learners see, and passes this check too.
    reference="circuitlab_solutions.ch06_exact_sweeps:exact_dataset_patching_sweep",
    cases=_sweep_cases,
    compare=FORWARD,
    properties=_sweep_properties,
)


# ---------------------------------------------------------------- head_input_patching

COMPONENTS = ("q", "k", "v", "pattern")


def _head_input_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    if gm.key == SLOW_MODEL:
        component, direction = rng.choice(COMPONENTS), rng.choice(["noising", "denoising"])
        return [Case(f"2 short prompts, {component}, {direction}",
                     sweep_args(gm, rng, 2, SHORT, component=component, direction=direction))]
    directions = ["noising", "denoising", "noising", "denoising"]
    rng.shuffle(directions)
    return [Case(f"2 prompts, {component}, {direction}",
                 sweep_args(gm, rng, 2, TEMPLATE, component=component, direction=direction))
            for component, direction in zip(COMPONENTS, directions)]


def _head_input_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    data = dataset(gm, random.Random(6), 2, SHORT)
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    call = {"model": MODEL, **data, "component": "v", "direction": "noising"}
    properties = [Property(f"shape [n_layers, n_heads] = {list(shape)}", (call,), lambda a: shaped(a[0], shape))]
    if gm.key != SLOW_MODEL:  # a second learner sweep on gpt2-small would take the public check past 10 s
        for component in ("q", "pattern"):
            noising = {**call, "component": component}
            properties.append(Property(f"{component}: denoising with clean and corrupt exchanged = 1 - noising",
                                       (noising, exchanged(noising)), one_minus("the exchanged run's sweep", shape)))
    return properties


HEAD_INPUT_PATCHING = Exercise(
    name="head_input_patching",
    chapter=CHAPTER,
    section="Which input of a head",
    hint=("The hook points are blocks.L.attn.hook_q, hook_k, hook_v ([batch, pos, head, d_head]) and hook_pattern "
          "([batch, head, query, key]). For each layer and head, overwrite that head's slice at every position with "
          "the source cache's, run the base batch, and normalise each prompt's logit difference as in "
          "dataset_patching_sweep."),
    cases=_head_input_cases,
    compare=FORWARD,
    properties=_head_input_properties,
)


# ---------------------------------------------------------------- abc_corruption


def _abc_inputs(gm: GradingModel, rng: random.Random) -> dict[str, Any]:
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(SURNAMES)
    rest = [n for n in FIRST_NAMES + SURNAMES if n not in (first, last)]
    rng.shuffle(rest)
    pool = [rng.choice(LONG_NAMES), last, first] + rest
    fields = ["first", "last", "again"]
    names = {field: list(pool) for field in fields}
    return {"model": MODEL, "filling": {"first": first, "last": last, "again": first}, "names": names}


def _abc_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    return [Case(f"first name repeated, draw {i}", _abc_inputs(gm, rng)) for i in range(2)]


def _same_filling(got: Any, expected: dict) -> Optional[str]:
    if type(got) is not dict:
        return f"returned {kind(got)}, expected a dict field -> name"
    if sorted(map(repr, got)) != sorted(map(repr, expected)):
        return f"returned fields {sorted(map(repr, got))}, expected {sorted(expected)}"
    return same_value([got[k] for k in expected], [expected[k] for k in expected])


def _abc_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    filling = {"first": "Alex", "last": "Hart", "again": "Alex"}
    pool = ["Bartholomew", "Hart", "Alex", "Sarah", "Carroll", "John", "Smith", "Mary"]
    call = {"model": MODEL, "filling": filling, "names": {k: pool for k in filling}}

    def holds(a):
        got = a[0]
        if type(got) is not dict or sorted(got) != sorted(filling) or any(type(v) is not str for v in got.values()):
            return "expected a dict with the filling's fields, each a name (str)"
        if any(v not in pool for v in got.values()):
            return "every new name must come from `names`"
        if set(got.values()) & set(filling.values()):
            return f"{got}: a field kept a name of the clean filling"
        if len(set(got.values())) != len(got):
            return f"{got}: two fields got the same name (the repetition must go)"
        width = {v: model.to_tokens(" " + v, prepend_bos=False).shape[1] for v in pool}
        if any(width[got[k]] != width[filling[k]] for k in filling):
            return f"{got}: a new name has another number of tokens than the one it replaces"
        return None

    return [Property("every field a new, distinct, equally long name from `names`", (call,), holds)]


ABC_CORRUPTION = Exercise(
    name="abc_corruption",
    chapter=CHAPTER,
    section="Corrupting every name",
    hint=("Start a set with the filling's values. For each field in order, take the first name in names[field] "
          "that is not in the set and has as many tokens as the old value (model.to_tokens(' ' + name, "
          "prepend_bos=False).shape[1]); add it to the set."),
    cases=_abc_cases,
    compare=_same_filling,
    properties=_abc_properties,
)


# ---------------------------------------------------------------- per_prompt_head_patching


def _heads(gm: GradingModel, rng: random.Random, n: int) -> list[list[int]]:
    cfg = gm.model.cfg
    every = [[layer, head] for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    return rng.sample(every, n)


def _per_prompt_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    if gm.key == SLOW_MODEL:
        return [Case("3 short prompts, 3 heads, noising", sweep_args(gm, rng, 3, SHORT, heads=_heads(gm, rng, 3)))]
    return [Case(f"4 prompts, 3 heads, {direction}",
                 sweep_args(gm, rng, 4, TEMPLATE, heads=_heads(gm, rng, 3), direction=direction))
            for direction in ("noising", "denoising")]


def _per_prompt_properties(gm: GradingModel) -> list[Property]:
    data = dataset(gm, random.Random(6), 3, SHORT)
    heads = [[0, 0], [gm.model.cfg.n_layers - 1, 1]]
    call = {"model": MODEL, **data, "heads": heads, "direction": "noising"}
    return [
        Property("shape [n_prompts, n_heads given] = [3, 2]", (call,), lambda a: shaped(a[0], (3, 2))),
        Property("denoising with clean and corrupt exchanged = 1 - noising, prompt by prompt",
                 (call, exchanged(call)), one_minus("the exchanged run's values", (3, 2))),
    ]


PER_PROMPT_HEAD_PATCHING = Exercise(
    name="per_prompt_head_patching",
    chapter=CHAPTER,
    section="The spread across prompts",
    hint=("For each (layer, head) in `heads`, run the base batch with blocks.{layer}.attn.hook_z[:, :, head] taken "
          "from the source cache, take batch_logit_diff(..., per_prompt=True), normalise per prompt, and stack the "
          "columns into [n_prompts, len(heads)]: no mean."),
    reference="circuitlab_solutions.ch06_exact_sweeps:exact_per_prompt_head_patching",
    cases=_per_prompt_cases,
    compare=FORWARD,
    properties=_per_prompt_properties,
)


EXERCISES = [ALIGNED_PROMPT_PAIRS, BATCH_LOGIT_DIFF, NORMALISED_PATCHING_METRIC, DATASET_PATCHING_FORWARD,
             HEAD_INPUT_PATCHING, ABC_CORRUPTION, PER_PROMPT_HEAD_PATCHING]
