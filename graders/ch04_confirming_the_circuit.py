"""Chapter 4's exercises: composition scores, direct logit attribution, path patching,
positional-embedding patching and ablations.

One block per exercise, in the chapter's order: its cases, its public properties, its
`Exercise(...)`. Every case's inputs are plain data (graders/inputs.py): the model,
strings, ints, tuples and lists of those, tensors (the model's own circuits are computed
once, when the case is drawn), and caches named by their prompt. Every number a property
compares with is computed from the model when the property is built, before any learner
code runs. References and known mistakes: solutions/ch04_confirming_the_circuit.py and
solutions/mistakes/ch04_confirming_the_circuit.py.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

import torch
from torch import Tensor

from circuitlab.composition import random_circuits
from circuitlab.prompts import (
    CLEAN_PROMPT,
    CORRUPTIONS,
    FIRST_NAMES,
    SHORT_TEMPLATE,
    SURNAMES,
    TEMPLATES,
    PatchingCase,
    name_batch,
    random_batch,
    short_case,
)
from circuitlab_graders import kit
from circuitlab_graders.compare import close_float, close_tensor
from circuitlab_graders.declare import MODEL, Cache, Case, Exercise, Property
from circuitlab_graders.models import GradingModel
from circuitlab_graders.properties import close, scalar, shaped

CHAPTER = "04_confirming_the_circuit"


# ---------------------------------------------------------------- helpers every block may use

def _outer(a: Tensor, b: Tensor) -> Tensor:
    return a[:, None] * b[None, :]


def _numbers(answers: list) -> list[float]:
    return [float(a) for a in answers]


# ---------------------------------------------------------------- composition_score

def _score_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    """Random matrices (square, rectangular, batched with broadcasting) and one real pair
    of the model's circuits: a layer-0 head's OV and a layer-1 head's QK, transposed."""
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    square = (torch.randn(6, 6, generator=gen), torch.randn(6, 6, generator=gen))
    rectangular = (torch.randn(5, 3, generator=gen), torch.randn(3, 7, generator=gen))
    batched = (torch.randn(4, 1, 8, 8, generator=gen), torch.randn(1, 3, 8, 8, generator=gen))
    model = gm.model
    sender, receiver = rng.randrange(model.cfg.n_heads), rng.randrange(model.cfg.n_heads)
    with torch.no_grad():
        real = (model.OV[0, sender].AB, model.QK[1, receiver].AB.T.contiguous())
    return [
        Case(label, {"left": pair[0], "right": pair[1]})
        for label, pair in (("random 6 x 6 matrices", square), ("random [5, 3] and [3, 7]", rectangular),
                            ("batched [4, 1, 8, 8] with [1, 3, 8, 8]", batched),
                            (f"OV of head 0.{sender} and QK.T of head 1.{receiver}", real))
    ]


def _score_properties(gm: GradingModel) -> list[Property]:
    generator = torch.Generator().manual_seed(3)
    u, v, w = (torch.randn(6, generator=generator) for _ in range(3))
    e = torch.eye(6)
    aligned = {"left": _outer(u, v), "right": _outer(v, w)}
    unrelated = {"left": _outer(u, e[0]), "right": _outer(e[1], w)}
    left, right = torch.randn(6, 6, generator=generator), torch.randn(6, 6, generator=generator)
    plain = {"left": left, "right": right}
    scaled = {"left": 3 * left, "right": 0.5 * right}
    identity = {"left": left, "right": torch.eye(6)}
    batch_left, batch_right = torch.randn(2, 1, 6, 6, generator=generator), torch.randn(1, 3, 6, 6, generator=generator)
    batched = {"left": batch_left, "right": batch_right}
    singles = tuple({"left": batch_left[i, 0].clone(), "right": batch_right[0, j].clone()}
                    for i in range(2) for j in range(3))

    def broadcast(answers: list) -> Optional[str]:
        if (problem := shaped(answers[0], (2, 3))) is not None:
            return problem
        if (problem := next((p for p in map(scalar, answers[1:]) if p is not None), None)) is not None:
            return f"a single pair: {problem}"
        return close(answers[0], torch.stack(answers[1:]).reshape(2, 3), "batched scores")

    return [
        Property("two matrices give one number", (aligned,), lambda a: scalar(a[0])),
        Property("rank-1 matrices where right reads exactly what left writes score 1", (aligned,),
                 lambda a: scalar(a[0]) or close(a[0], torch.tensor(1.0), "score of u v^T and v w^T")),
        Property("right reading nothing that left writes scores 0", (unrelated,),
                 lambda a: scalar(a[0]) or close(a[0], torch.tensor(0.0), "score of u e0^T and e1 w^T")),
        Property("scaling either matrix changes nothing", (plain, scaled),
                 lambda a: scalar(a[0]) or scalar(a[1]) or close(
                     a[1], a[0], "score after scaling left by 3 and right by 0.5")),
        Property("any matrix with the identity scores 1/sqrt(d): the identity reads every direction alike",
                 (identity,), lambda a: scalar(a[0]) or close(
                     a[0], torch.tensor(6 ** -0.5), "score of a random matrix and I")),
        Property("leading dimensions broadcast: [2, 1, m, m] with [1, 3, m, m] gives [2, 3] single scores",
                 (batched, *singles), broadcast),
    ]


COMPOSITION_SCORE = Exercise(
    name="composition_score",
    hint="Multiply left @ right, take the Frobenius norm over the last two dimensions (.norm(dim=(-2, -1))), and divide by the product of the two inputs' Frobenius norms, taken the same way, so leading batch dimensions survive.",
    chapter=CHAPTER,
    section="Composition scores",
    cases=_score_cases,
    properties=_score_properties,
    compare=kit.COMPUTED,
)


# ---------------------------------------------------------------- k_composition_scores

def _circuit_cases(receiver_circuit: str):
    """Random circuits (different numbers of senders and receivers, so a transposed answer
    has the wrong shape; one set of low rank, like real heads) and the model's own:
    layer 0's OV circuits and layer 1's `receiver_circuit` ("QK" or "OV")."""

    def cases(gm: GradingModel, rng: random.Random) -> list[Case]:
        gen = torch.Generator().manual_seed(rng.randrange(2**31))
        full = (torch.randn(3, 16, 16, generator=gen), torch.randn(5, 16, 16, generator=gen))
        low_rank = (random_circuits(4, 24, 6, gen), random_circuits(2, 24, 6, gen))
        model = gm.model
        with torch.no_grad():
            real = (model.OV[0].AB, getattr(model, receiver_circuit)[1].AB)
        second = "receiver_qk" if receiver_circuit == "QK" else "receiver_ov"
        return [
            Case(label, {"sender_ov": pair[0], second: pair[1]})
            for label, pair in (("random 16 x 16 circuits, 3 senders, 5 receivers", full),
                                ("random rank-6 24 x 24 circuits, 4 senders, 2 receivers", low_rank),
                                (f"the model's layer-0 OV and layer-1 {receiver_circuit} circuits", real))
        ]

    return cases


def _handmade_circuits() -> dict[str, Tensor]:
    """Two senders writing along e0 and e2, and receivers that read e0 or e2 with their
    keys, queries or values. Row-vector convention, as in the chapter: x @ (u o^T) writes
    along o; with QK = q k^T, x_q @ QK @ x_k.T reads the query along q and the key along
    k; x @ (r o^T) reads along r."""
    e = torch.eye(8)
    u = torch.arange(1.0, 9.0)
    return {
        "sender_ov": torch.stack([_outer(u, e[0]), _outer(u.flip(0), e[2])]),  # write along e0, e2
        # QK = q k^T: queries read q, keys read k
        "receiver_qk": torch.stack([_outer(e[5], e[0]), _outer(e[0], e[5]), _outer(e[6], e[2])]),
        # OV = r o^T: reads along r
        "receiver_ov": torch.stack([_outer(e[0], e[7]), _outer(e[2], e[7]), _outer(e[4], e[7])]),
    }


def _reversed_stack(answer, inputs: dict) -> Optional[str]:
    """The shape `.T` on the stack of receiver matrices gives ([senders, d_model] instead of
    [senders, receivers]), named: `.T` reverses every dimension of a 3-D tensor."""
    name = next(key for key in inputs if key != "sender_ov")
    sender, receiver = inputs["sender_ov"], inputs[name]
    wrong = (sender.shape[0], receiver.shape[-1])
    if not isinstance(answer, torch.Tensor) or tuple(answer.shape) != wrong or wrong[1] == receiver.shape[0]:
        return None
    return (f"shape {list(wrong)} ([n_senders, d_model]), not [n_senders, n_receivers] = "
            f"{[sender.shape[0], receiver.shape[0]]}: that is what `{name}.T` gives, since on a stack of matrices "
            "`.T` reverses every dimension ([d_model, d_model, n_receivers]); transpose each matrix with "
            f"`{name}.mT` (or `.transpose(-2, -1)`)")


def _circuit_properties(receiver: str, expected: list[list[float]], story: str):
    """Hand-made heads whose scores the chapter's formulas fix, and the model's own
    heads, whose scores must lie between 0 and 1. An answer shaped by `.T` on the
    receivers' stack is named as such."""

    def properties(gm: GradingModel) -> list[Property]:
        circuits = _handmade_circuits()
        model = gm.model
        with torch.no_grad():
            real = {"sender_ov": model.OV[0].AB, receiver: (model.QK if receiver == "receiver_qk" else model.OV)[1].AB}
        shape = (model.cfg.n_heads, model.cfg.n_heads)
        handmade = {"sender_ov": circuits["sender_ov"], receiver: circuits[receiver]}

        def bounded(answers: list) -> Optional[str]:
            if (problem := _reversed_stack(answers[0], real) or shaped(answers[0], shape)) is not None:
                return problem
            inside = (answers[0] >= 0) & (answers[0] <= 1 + 1e-5)
            return None if bool(inside.all()) else "a composition score outside [0, 1]"

        return [
            Property(f"hand-made heads: {story}", (handmade,),
                     lambda a: _reversed_stack(a[0], handmade)
                     or close(a[0], torch.tensor(expected), "[sender, receiver] scores")),
            Property(f"the model's heads: shape {list(shape)}, every score between 0 and 1", (real,), bounded),
        ]

    return properties


K_COMPOSITION_SCORES = Exercise(
    name="k_composition_scores",
    hint="Broadcast instead of looping: composition_score(sender_ov[:, None], receiver_qk.transpose(-2, -1)[None]) scores every sender (rows) against every receiver (columns), with the pair's matrix OV_sender @ QK_receiver.T.",
    chapter=CHAPTER,
    section="Which heads compose?",
    cases=_circuit_cases("QK"),
    properties=_circuit_properties(
        "receiver_qk", [[1, 0, 0], [0, 0, 1]],
        "a receiver whose keys read what a sender writes scores 1, one whose queries read it 0"),
    compare=kit.COMPUTED,
)


# ---------------------------------------------------------------- q_composition_scores

Q_COMPOSITION_SCORES = Exercise(
    name="q_composition_scores",
    hint="Like the K-composition, but the sender writes into the query side: the pair's matrix is OV_sender @ QK_receiver, with no transpose; composition_score(sender_ov[:, None], receiver_qk[None]).",
    chapter=CHAPTER,
    section="Which heads compose?",
    cases=_circuit_cases("QK"),
    properties=_circuit_properties(
        "receiver_qk", [[0, 1, 0], [0, 0, 0]],
        "a receiver whose queries read what a sender writes scores 1, one whose keys read it 0"),
    compare=kit.COMPUTED,
)


# ---------------------------------------------------------------- v_composition_scores

V_COMPOSITION_SCORES = Exercise(
    name="v_composition_scores",
    hint="The receiver moves on what the sender wrote: the pair's matrix is OV_sender @ OV_receiver (a row vector passes the sender first); composition_score(sender_ov[:, None], receiver_ov[None]).",
    chapter=CHAPTER,
    section="Which heads compose?",
    cases=_circuit_cases("OV"),
    properties=_circuit_properties(
        "receiver_ov", [[1, 0, 0], [0, 1, 0]],
        "a receiver whose values read what a sender writes scores 1, one reading elsewhere 0"),
    compare=kit.COMPUTED,
)


# ---------------------------------------------------------------- direct_logit_attribution

def _dla_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    model = gm.model
    pairs = [("tutorial prompt", CLEAN_PROMPT, " Hart", " Carroll")]
    drawn = kit.fresh_pair(gm, rng)
    pairs.append((drawn.label, drawn.clean_prompt, drawn.clean_answer, drawn.corrupt_answer))
    short = short_case(model, rng)
    pairs.append((short.label, short.clean_prompt, short.corrupt_answer, short.clean_answer))  # answers swapped
    return [Case(f"{label}: {prompt!r}, {good!r} vs {bad!r}",
                 {"model": MODEL, "cache": Cache(prompt), "clean_answer": good, "corrupt_answer": bad})
            for label, prompt, good, bad in pairs]


def _dla_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    with torch.no_grad():
        _, cache = model.run_with_cache(CLEAN_PROMPT)
        direction = model.W_U[:, model.to_single_token(" Hart")] - model.W_U[:, model.to_single_token(" Carroll")]
        scale = cache["ln_final.hook_scale"][0, -1]
        layers = torch.stack([(cache[f"blocks.{layer}.hook_attn_out"][0, -1] - model.b_O[layer]) / scale @ direction
                              for layer in range(model.cfg.n_layers)])
    args = {"model": MODEL, "cache": Cache(CLEAN_PROMPT), "clean_answer": " Hart", "corrupt_answer": " Carroll"}
    same = {**args, "corrupt_answer": " Hart"}
    form = kit.tensor_of(shape)
    return [
        kit.has_form(f"shape {list(shape)}, finite floats", args, form),
        kit.sign_flip(args, kit.swapped_answers(args), form, "swapped answers"),
        kit.equals("the same answer twice gives zeros", (same,), form, torch.zeros(shape), "same answer"),
        Property("a layer's heads add up to its attention output (minus b_O), as the chapter says", (args,),
                 lambda a: form.problem(a[0]) or close(a[0].sum(dim=1), layers, "row sums", atol=1e-3)),
    ]


DIRECT_LOGIT_ATTRIBUTION = Exercise(
    name="direct_logit_attribution",
    hint="For each layer, take z = cache['blocks.{layer}.attn.hook_z'][0, -1] ([head, d_head]) times W_O[layer] ([head, d_head, d_model]) to get each head's output; divide by cache['ln_final.hook_scale'][0, -1] and take the dot product with W_U[:, clean] - W_U[:, corrupt].",
    chapter=CHAPTER,
    section="Direct logit attribution",
    cases=_dla_cases,
    properties=_dla_properties,
    compare=close_tensor(atol=1e-4, rtol=1e-3),
)


# ---------------------------------------------------------------- path_patch_to_head_input

def far_pair(model, rng: random.Random, templates: tuple[str, ...]) -> PatchingCase:
    """Two prompts that differ almost everywhere (other templates, other people) but have
    the same number of tokens: on random weights one path carries only a small effect,
    and a large change in the sender makes it measurable."""
    while True:
        clean_template, corrupt_template = rng.sample(templates, 2) if len(templates) > 1 else templates * 2
        first, other, again = rng.sample(FIRST_NAMES, 3)
        last, other_last = rng.sample(SURNAMES, 2)
        clean = clean_template.format(first=first, last=last, again=first)
        corrupt = corrupt_template.format(first=other, last=other_last, again=again)
        if model.to_tokens(clean).shape == model.to_tokens(corrupt).shape:
            return PatchingCase("prompts that differ everywhere", clean, corrupt, f" {last}", f" {other_last}")


def _path_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    """gelu-2l: the tutorial's first-name corruption and prompts that differ everywhere;
    gpt2-small: short prompts, with senders and receivers in any two layers. Values carry
    the largest effects on random weights, so half the cases patch v."""
    model = gm.model
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if gm.key == kit.SLOW_MODEL:
        pairs = [short_case(model, rng)] + [far_pair(model, rng, (SHORT_TEMPLATE,)) for _ in range(3)]
    else:
        pairs = [CORRUPTIONS["first_name"]] + [far_pair(model, rng, tuple(TEMPLATES[1:])) for _ in range(3)]
    out = []
    for pair, which in zip(pairs, ("k", "q", "v", "v")):
        s_layer = rng.randrange(n_layers - 1)
        r_layer = rng.randrange(s_layer + 1, n_layers)
        sender, receiver = (s_layer, rng.randrange(n_heads)), (r_layer, rng.randrange(n_heads))
        out.append(Case(f"{pair.label}: {sender[0]}.{sender[1]} -> {receiver[0]}.{receiver[1]} {which}",
                        {"model": MODEL, **pair.as_args(), "sender": sender, "receiver": receiver,
                         "receiver_input": which}))
    return out


def _path_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    pair = kit.SHORT_PAIR  # 4 tokens with BOS: quick on any model
    baseline = pair.logit_diff(model, pair.clean_prompt)
    receiver = (model.cfg.n_layers - 1, 1)
    args = {**kit.pair_args(pair), "sender": (0, 0), "receiver": receiver, "receiver_input": "v"}
    identical = kit.identical_run(args)
    by_input = tuple({**args, "receiver_input": which} for which in "qkv")
    other = {**args, "receiver": (receiver[0], 2)}

    def three_paths(answers: list) -> Optional[str]:
        if (problem := kit.NUMBER.first_problem(answers)) is not None:
            return problem
        got = dict(zip("qkv", _numbers(answers)))
        return None if len({round(x, 7) for x in got.values()}) == 3 else f"got {got}; is receiver_input read?"

    def other_head(answers: list) -> Optional[str]:
        if (problem := kit.NUMBER.first_problem(answers)) is not None:
            return problem
        one, two = _numbers(answers)
        return None if abs(one - two) > 1e-7 else (
            f"receivers {receiver[0]}.1 and {receiver[0]}.2 gave the same {one:.6g}; is only the receiver head patched?")

    return [
        kit.has_form("returns one number", args, kit.NUMBER),
        kit.equals("patching from an identical run gives the clean logit difference (q, k and v)",
                   tuple({**identical, "receiver_input": which} for which in "qkv"), kit.NUMBER,
                   torch.full((3,), baseline), "with corrupt_prompt = clean_prompt (q, k, v)", atol=1e-3),
        kit.sign_flip(args, kit.swapped_answers(args), kit.NUMBER, "swapped answers"),
        Property("q, k and v are three different paths", by_input, three_paths),
        Property("another receiver head gives another answer", (args, other), other_head),
    ]


PATH_PATCH_TO_HEAD_INPUT = Exercise(
    name="path_patch_to_head_input",
    hint="Take the sender's output change (z_corrupt - z_clean)[:, :, head] @ W_O[layer, head], add it to the clean blocks.{receiver layer}.hook_resid_pre, normalise that afresh (centre, divide by sqrt(mean square + eps)), multiply by the receiver's W_Q/W_K/W_V and add its bias, and write the result into that head only of hook_q/hook_k/hook_v in a clean run.",
    chapter=CHAPTER,
    section="Path patching: composition tested causally",
    cases=_path_cases,
    properties=_path_properties,
    # One path's effect on random weights is small (1e-4 to 1e-2), so the comparison is
    # tight; other exact implementations (e.g. TransformerLens's split q/k/v inputs)
    # agree with the reference to 1e-5 (tests/test_ch04_matches_tl.py).
    compare=close_float(atol=2e-5, rtol=1e-5),
)


# ---------------------------------------------------------------- positional_embedding_patch

def _embedding_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    model = gm.model
    drawn = kit.fresh_pair(gm, rng)
    short = short_case(model, rng)
    prompts = [("tutorial prompt", CLEAN_PROMPT, " Hart", " Carroll", "hook_pos_embed"),
               (drawn.label, drawn.clean_prompt, drawn.clean_answer, drawn.corrupt_answer, "hook_embed"),
               (short.label, short.clean_prompt, short.clean_answer, short.corrupt_answer, "hook_pos_embed")]
    return [
        Case(f"{label}: {prompt!r}, {hook}",
             {"model": MODEL, "prompt": prompt, "clean_answer": good, "corrupt_answer": bad, "embedding_hook": hook})
        for label, prompt, good, bad, hook in prompts
    ]


def _embedding_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    pair = kit.SHORT_PAIR
    repeated = "<|endoftext|>" * 3  # the same token at every position: its mean is itself
    unchanged = kit.final_logit_diff(model, repeated, pair.clean_answer, pair.corrupt_answer)
    args = {"model": MODEL, "prompt": pair.clean_prompt, "clean_answer": pair.clean_answer,
            "corrupt_answer": pair.corrupt_answer, "embedding_hook": "hook_pos_embed"}
    token = {**args, "embedding_hook": "hook_embed"}

    def differ(answers: list) -> Optional[str]:
        if (problem := kit.NUMBER.first_problem(answers)) is not None:
            return problem
        position, tokens = _numbers(answers)
        return None if abs(position - tokens) > 1e-6 else "both embeddings gave the same answer; is embedding_hook read?"

    return [
        kit.has_form("returns one number", args, kit.NUMBER),
        kit.sign_flip(args, kit.swapped_answers(args), kit.NUMBER, "swapped answers"),
        kit.equals("hook_embed on a prompt of one repeated token changes nothing", ({**token, "prompt": repeated},),
                   kit.NUMBER, torch.tensor(unchanged), "the repeated-token prompt", atol=1e-3),
        Property("hook_embed and hook_pos_embed patch different things", (args, token), differ),
    ]


POSITIONAL_EMBEDDING_PATCH = Exercise(
    name="positional_embedding_patch",
    hint="From the cache of the prompt: resid = blocks.0.hook_resid_pre - emb + emb.mean(dim=1, keepdim=True), where emb = cache[embedding_hook]; normalise resid afresh, multiply by W_V[0] and add b_V[0], and return that from a hook on blocks.0.attn.hook_v.",
    chapter=CHAPTER,
    section="Positional embeddings: which information does layer 0 move?",
    cases=_embedding_cases,
    properties=_embedding_properties,
    compare=close_float(atol=1e-4, rtol=1e-4),  # on random weights some mistakes move it by 3e-3 only
)


# ---------------------------------------------------------------- ablate_heads

def _ablation_cases(gm: GradingModel, rng: random.Random) -> list[Case]:
    """Batches of the course's name prompts (short ones on gpt2-small) and random sets of
    heads spread over layers, mean- and resample-ablated."""
    model = gm.model
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    if gm.key == kit.SLOW_MODEL:
        batches = [random_batch(model, rng, 3, SHORT_TEMPLATE), random_batch(model, rng, 4, SHORT_TEMPLATE),
                   random_batch(model, rng, 3, SHORT_TEMPLATE)]
    else:
        batches = [name_batch(), random_batch(model, rng, 4, rng.choice(TEMPLATES)),
                   random_batch(model, rng, 5, SHORT_TEMPLATE)]
    out = []
    for batch, method in zip(batches, ("mean", "resample", "mean")):
        heads = sorted(rng.sample(every, rng.randint(2, len(every) // 2)))
        out.append(Case(f"{batch.label}, {method}, {len(heads)} heads",
                        {"model": MODEL, **batch.as_args(), "heads": heads, "method": method}))
    # The fixed case: every head but two ablated, resampled (the chapter's faithfulness run).
    keep = {(0, 0), (n_layers - 1, n_heads - 1)}
    out.append(Case("the course's name batch, resample, all heads but two",
                    {"model": MODEL, **name_batch().as_args(), "heads": [h for h in every if h not in keep],
                     "method": "resample"}))
    return out


def _ablation_properties(gm: GradingModel) -> list[Property]:
    model = gm.model
    prompts, answers, wrong = ["Alex Hart Alex", "Mary Clark Mary"], [" Hart", " Clark"], [" Clark", " Hart"]
    heads = [(0, 0), (model.cfg.n_layers - 1, 1)]
    clean = [kit.final_logit_diff(model, *row) for row in zip(prompts, answers, wrong)]
    batch = {"model": MODEL, "prompts": prompts, "answers": answers, "wrong_answers": wrong}
    one_prompt = {**batch, "prompts": prompts[:1] * 3, "answers": answers[:1] * 3, "wrong_answers": wrong[:1] * 3}
    ablated = {**batch, "heads": heads, "method": "mean"}

    def near(label: str, call: dict, expected: float, what: str) -> Property:
        return kit.equals(label, (call,), kit.NUMBER, torch.tensor(expected), what, atol=1e-3)

    def differ(message: str) -> Callable[[list], Optional[str]]:
        return lambda a: kit.NUMBER.first_problem(a) or (None if abs(float(a[0]) - float(a[1])) > 1e-7 else message)

    props = [
        kit.has_form("returns one number", ablated, kit.NUMBER),
        near("ablating no heads gives the batch's mean logit difference", {**batch, "heads": [], "method": "mean"},
             sum(clean) / len(clean), "with heads=[]"),
    ]
    for method in ("mean", "resample"):
        props.append(near(f"{method}: a batch of one prompt three times is its own mean and resample",
                          {**one_prompt, "heads": heads, "method": method}, clean[0],
                          "ablating heads over identical prompts"))
    props += [
        Property("mean and resample ablation differ", (ablated, {**ablated, "method": "resample"}),
                 differ("both methods gave the same number; is `method` read?")),
        Property("ablating head 0.0 and head 0.1 differ",
                 ({**ablated, "heads": [(0, 0)]}, {**ablated, "heads": [(0, 1)]}),
                 differ("two different heads gave the same number; is only the listed head ablated?")),
        kit.sign_flip(ablated, kit.swapped_answers(ablated, "answers", "wrong_answers"), kit.NUMBER,
                      "swapped answers", label="swapping answers and wrong answers flips the sign"),
    ]
    return props


ABLATE_HEADS = Exercise(
    name="ablate_heads",
    hint="Cache the batch once. With hooks on blocks.{layer}.attn.hook_z for each layer that has listed heads, overwrite those heads at every position: with cache[...].mean(dim=0, keepdim=True) for 'mean', or cache[...].roll(-1, dims=0) for 'resample'. Return the mean over prompts of logit(answer) - logit(wrong answer) at the final position.",
    chapter=CHAPTER,
    section="Ablations: is the circuit enough?",
    cases=_ablation_cases,
    properties=_ablation_properties,
    compare=close_float(atol=1e-3, rtol=1e-3),
)


EXERCISES = [COMPOSITION_SCORE, K_COMPOSITION_SCORES, Q_COMPOSITION_SCORES, V_COMPOSITION_SCORES, DIRECT_LOGIT_ATTRIBUTION, PATH_PATCH_TO_HEAD_INPUT, POSITIONAL_EMBEDDING_PATCH, ABLATE_HEADS]
