"""The patching explorer's numbers, as plain functions of a model and the page's inputs.

The web page (app.py) only calls these and draws what they return, so tests check the
numbers without a browser. Bad input raises `ExplorerError`, whose message is what the
page shows. Every function here leaves the model as it found it: exact sweeps and
estimates come from `circuitlab.sweeps`, which remove their hooks when a run ends
(`pristine` below also checks that after every request).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from circuitlab import sweeps
from circuitlab.loading import MODELS, WeightsUnavailableError, load_model, weights_cached
from circuitlab.prompts import FIRST_NAMES, SURNAMES
from circuitlab.sweeps import attribution

MAX_CHARS = 600  # per prompt, checked before tokenizing
MAX_TOKENS = 64  # per prompt, counting the start-of-text token
TOP_K = 5
KINDS = ("resid", "heads", "head_pos")
KIND_TITLES = {
    "resid": "Residual stream (layer × position)",
    "heads": "Attention heads (layer × head, every position)",
    "head_pos": "Attention heads × position",
}
DIRECTIONS = {
    "noising": "Corrupt into clean (the tutorial's)",
    "denoising": "Clean into corrupt",
}
DIRECTION_SENTENCES = {
    "noising": ("Each cell runs the clean prompt with one activation taken from the corrupt run: a cell far from "
                "the clean value marks an activation the clean answer needs (breaking it alone breaks the behaviour)."),
    "denoising": ("Each cell runs the corrupt prompt with one activation taken from the clean run: a cell near the "
                  "clean value marks an activation that carries enough to restore the clean answer on its own."),
}
SCALES = {
    "logit": "Logit difference",
    "change": "Difference from the clean run",
    "normalised": "Normalised (1 = clean, 0 = corrupt)",
}
CHAPTERS = {
    "predictions": ("00_setup", "Chapter 0: the model and its predictions"),
    "resid": ("01_residual_patching", "Chapter 1: patching the residual stream"),
    "heads": ("02_head_patching", "Chapter 2: patching attention heads"),
    "head_pos": ("02_head_patching", "Chapter 2: patching attention heads"),
    "attention": ("03_attention_patterns", "Chapter 3: attention patterns and head scores"),
    "estimate": ("05_attribution_patching", "Chapter 5: attribution patching"),
}


class ExplorerError(Exception):
    """Input the explorer cannot use; the message says why and what to do."""


# --- models: loaded once, shared by every visitor, never changed ------------------------

@dataclass(frozen=True)
class ModelChoice:
    key: str  # what the page's dropdown returns
    name: str
    weights: str  # "pretrained" or "random"
    label: str


def model_choices() -> list[ModelChoice]:
    """circuitlab-2l (ships with the course), then gelu-2l and gpt2-small: pretrained when
    their weights are in the local Hugging Face cache, their random-weight twins otherwise."""
    choices = [ModelChoice("circuitlab-2l", "circuitlab-2l", "pretrained",
                           "circuitlab-2l (the course's model, 2 layers × 4 heads)")]
    for name in ("gelu-2l", "gpt2-small"):
        spec = MODELS[name]
        shape = f"{spec.n_layers} layers × {spec.n_heads} heads"
        if weights_cached(name):
            choices.append(ModelChoice(name, name, "pretrained", f"{name} ({shape})"))
        else:
            choices.append(ModelChoice(f"{name}:random", name, "random",
                                       f"{name}, RANDOM weights ({shape}; its pretrained weights are not cached here)"))
    return choices


class ModelStore:
    """One copy of each model, loaded on first use. The set of models is fixed, so memory
    does not grow with visitors; a model a request changed is dropped and reloaded."""

    def __init__(self, choices: Optional[list[ModelChoice]] = None, device: str = "cpu") -> None:
        self.choices = {c.key: c for c in (choices or model_choices())}
        self.device = device
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, key: str):
        choice = self.choices.get(key)
        if choice is None:
            raise ExplorerError(f"Unknown model {key!r}; pick one of: {', '.join(self.choices)}.")
        with self._lock:
            if key not in self._models:
                try:
                    self._models[key] = load_model(choice.name, weights=choice.weights, device=self.device)
                except WeightsUnavailableError as missing:
                    raise ExplorerError(f"The weights of {choice.name} are not available here: {missing}\n"
                                        "On this page: pick another model (circuitlab-2l ships with the course).") from None
            return self._models[key]

    def loaded(self) -> dict[str, object]:
        return dict(self._models)

    def drop(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)


def _hook_ids(model) -> dict[str, set[int]]:
    found = {}
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            ids = set(getattr(module, kind, {}))
            if ids:
                found[f"{name}:{kind}"] = ids
    return found


@contextlib.contextmanager
def pristine(store: ModelStore, key: str) -> Iterator[object]:
    """The shared model for one request. Afterwards, even when the request failed halfway:
    every hook the request added is removed, grad mode and gradients are as before, and a
    model whose weights changed in place is dropped (the next request loads it afresh)."""
    model = store.get(key)
    hooks = _hook_ids(model)
    params = list(model.parameters())
    versions = [p._version for p in params]
    trainable = [p.requires_grad for p in params]
    grad_mode = torch.is_grad_enabled()
    try:
        yield model
    finally:
        torch.set_grad_enabled(grad_mode)
        for name, module in model.named_modules():
            for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
                table = getattr(module, kind, None)
                if table:
                    for hook_id in set(table) - hooks.get(f"{name}:{kind}", set()):
                        del table[hook_id]
        for hook_point in getattr(model, "hook_dict", {}).values():
            hook_point.ctx = {}
        for p, flag in zip(params, trainable):
            p.grad = None
            p.requires_grad_(flag)
        if any(p._version != v for p, v in zip(params, versions)):
            store.drop(key)


# --- inputs ------------------------------------------------------------------------------

@dataclass
class Inputs:
    clean_prompt: str
    corrupt_prompt: str
    clean_answer: str
    corrupt_answer: str
    clean_tokens: Tensor  # [1, pos]
    corrupt_tokens: Tensor  # [1, pos]
    answers: Tensor  # [1, 2]: (clean answer, corrupt answer) token ids
    clean_strs: list[str]
    corrupt_strs: list[str]

    @property
    def n_pos(self) -> int:
        return self.clean_tokens.shape[1]

    def differing(self) -> list[int]:
        return (self.clean_tokens[0] != self.corrupt_tokens[0]).nonzero().flatten().tolist()


def _show(token: str) -> str:
    return repr(token)


def _prompt_tokens(model, prompt: str, which: str) -> Tensor:
    if not prompt or not prompt.strip():
        raise ExplorerError(f"The {which} prompt is empty: type a prompt (at most {MAX_TOKENS} tokens).")
    if len(prompt) > MAX_CHARS:
        raise ExplorerError(f"The {which} prompt is {len(prompt)} characters long; the limit is {MAX_CHARS} "
                            f"characters and {MAX_TOKENS} tokens. Shorten it.")
    tokens = model.to_tokens(prompt)
    if tokens.shape[1] > MAX_TOKENS:
        raise ExplorerError(f"The {which} prompt is {tokens.shape[1]} tokens long (with the start token); the limit "
                            f"is {MAX_TOKENS} tokens. Shorten it.")
    return tokens


def _answer_token(model, answer: str, which: str) -> int:
    if not answer:
        raise ExplorerError(f"The {which} answer is empty: give one token, usually with a leading space (' Hart').")
    ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
    if len(ids) != 1:
        pieces = " | ".join(_show(model.to_string([i])) for i in ids)
        hint = "" if answer.startswith(" ") else " Answers usually start with a space: the model predicts ' Hart', not 'Hart'."
        raise ExplorerError(f"The {which} answer {answer!r} is {len(ids)} tokens ({pieces}); the logit difference "
                            f"needs an answer that is one token.{hint}")
    return ids[0]


def _single_token_names(model, words: list[str]) -> list[str]:
    return [w for w in words if model.to_tokens(f" {w}", prepend_bos=False).shape[1] == 1]


def _length_mismatch(model, clean: Tensor, corrupt: Tensor) -> str:
    clean_strs, corrupt_strs = model.to_str_tokens(clean[0]), model.to_str_tokens(corrupt[0])
    first = next((i for i, (a, b) in enumerate(zip(clean_strs, corrupt_strs)) if a != b),
                 min(len(clean_strs), len(corrupt_strs)))
    lines = [f"The prompts tokenize to different lengths (clean: {len(clean_strs)} tokens, corrupt: "
             f"{len(corrupt_strs)}), so they cannot be patched position by position. They first differ at "
             f"position {first}:",
             f"  clean from {first}:   {' | '.join(_show(t) for t in clean_strs[first:first + 6])}",
             f"  corrupt from {first}: {' | '.join(_show(t) for t in corrupt_strs[first:first + 6])}"]
    clean_words, corrupt_words = set(_words(model.to_string(clean[0, 1:]))), set(_words(model.to_string(corrupt[0, 1:])))
    for word in sorted((clean_words ^ corrupt_words)):
        pieces = model.to_str_tokens(f" {word}", prepend_bos=False)
        if len(pieces) > 1:
            lines.append(f"  {word!r} is {len(pieces)} tokens ({' | '.join(_show(p) for p in pieces)}).")
    options = _single_token_names(model, FIRST_NAMES + SURNAMES)
    lines.append("Replace each word that differs by a word of one token, so both prompts have the same length "
                 f"(single-token names on this model: {', '.join(options[:12])}).")
    return "\n".join(lines)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def read_inputs(model, clean_prompt: str, corrupt_prompt: str, clean_answer: str, corrupt_answer: str) -> Inputs:
    """The page's four inputs checked and tokenized; `ExplorerError` says what is wrong."""
    clean = _prompt_tokens(model, clean_prompt, "clean")
    corrupt = _prompt_tokens(model, corrupt_prompt, "corrupt")
    good = _answer_token(model, clean_answer, "clean")
    bad = _answer_token(model, corrupt_answer, "corrupt")
    if clean.shape != corrupt.shape:
        raise ExplorerError(_length_mismatch(model, clean, corrupt))
    if good == bad:
        raise ExplorerError("The two answers are the same token, so their logit difference is 0 everywhere: "
                            "give the answer the clean prompt should predict and the one the corrupt prompt should.")
    return Inputs(clean_prompt, corrupt_prompt, clean_answer, corrupt_answer, clean, corrupt,
                  torch.tensor([[good, bad]], device=clean.device),
                  model.to_str_tokens(clean[0]), model.to_str_tokens(corrupt[0]))


def alignment_rows(inputs: Inputs) -> list[tuple[int, str, str, bool]]:
    """(position, clean token, corrupt token, whether they differ) for every position."""
    differ = set(inputs.differing())
    return [(i, a, b, i in differ) for i, (a, b) in enumerate(zip(inputs.clean_strs, inputs.corrupt_strs))]


# --- predictions ---------------------------------------------------------------------------

@dataclass
class Prediction:
    prompt: str
    top: list[tuple[str, float]]  # (token, probability), most likely first
    answer_ranks: dict[str, tuple[int, float]]  # answer -> (rank from 0, probability)
    logit_diff: float


def predictions(model, inputs: Inputs) -> dict[str, Prediction]:
    """What the model predicts after each prompt (what test_prompt shows): the top tokens,
    the answers' ranks and probabilities, and the logit difference."""
    with torch.no_grad():
        logits = model(torch.cat([inputs.clean_tokens, inputs.corrupt_tokens]))[:, -1].float()
    out = {}
    for row, (which, prompt) in enumerate((("clean", inputs.clean_prompt), ("corrupt", inputs.corrupt_prompt))):
        probs = logits[row].softmax(-1)
        top = probs.topk(TOP_K)
        order = logits[row].argsort(descending=True)
        ranks = {}
        for answer, token in zip((inputs.clean_answer, inputs.corrupt_answer), inputs.answers[0].tolist()):
            ranks[answer] = (int((order == token).nonzero()[0, 0]), float(probs[token]))
        good, bad = inputs.answers[0].tolist()
        out[which] = Prediction(prompt, [(model.to_string([int(t)]), float(p)) for p, t in zip(top.values, top.indices)],
                                ranks, float(logits[row, good] - logits[row, bad]))
    return out


# --- the three heatmaps ----------------------------------------------------------------------

@dataclass
class Sweeps:
    """One method's three results, as logit differences: resid [n_layers, pos] (hook_resid_pre),
    heads [n_layers, n_heads], head_pos [n_layers, n_heads, pos]."""

    method: str  # "estimate" or "exact"
    direction: str
    values: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0


def _base_and_source(inputs: Inputs, direction: str) -> tuple[Tensor, Tensor]:
    if direction not in DIRECTIONS:
        raise ExplorerError(f"Unknown direction {direction!r}; pick one of {', '.join(DIRECTIONS)}.")
    if direction == "noising":
        return inputs.clean_tokens, inputs.corrupt_tokens
    return inputs.corrupt_tokens, inputs.clean_tokens


def estimate_sweeps(model, inputs: Inputs, direction: str) -> Sweeps:
    """Attribution patching's first-order estimates of the three sweeps (chapter 5): one
    forward pass of the source prompt and one forward and backward pass of the base one."""
    start = time.perf_counter()
    _base_and_source(inputs, direction)
    base, source = ((inputs.clean_prompt, inputs.corrupt_prompt) if direction == "noising"
                    else (inputs.corrupt_prompt, inputs.clean_prompt))
    args = (model, base, source, inputs.clean_answer, inputs.corrupt_answer)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    values = {
        # Row L of the estimate is blocks.L.hook_resid_pre for L < n_layers; its last row
        # (the final residual stream) has no exact-sweep counterpart here.
        "resid": attribution.attribution_patching_resid(*args)[:n_layers],
        "heads": attribution.attribution_patching_heads(*args),
        "head_pos": attribution.attribution_patching_head_by_position(*args).reshape(n_layers, n_heads, -1),
    }
    return Sweeps("estimate", direction, {k: v.detach().float().cpu() for k, v in values.items()},
                  time.perf_counter() - start)


def exact_sweeps(model, inputs: Inputs, direction: str, *, step: Optional[Callable[[str], None]] = None,
                 deadline: Optional[float] = None) -> Sweeps:
    """The three exact sweeps (the course's fast sweeps: transformer_lens.patching's numbers).
    `step(kind)` is called before each; past `deadline` (time.monotonic()) it stops with a message."""
    start = time.perf_counter()
    base, source = _base_and_source(inputs, direction)
    runs = {"resid": sweeps.residual_sweep, "heads": sweeps.head_sweep, "head_pos": sweeps.head_by_position_sweep}
    values = {}
    for kind, sweep in runs.items():
        if deadline is not None and time.monotonic() > deadline:
            raise ExplorerError(f"The exact sweeps passed this server's time limit before the "
                                f"{KIND_TITLES[kind].lower()} sweep. Shorten the prompts or pick a smaller model; "
                                "the estimate above is still shown.")
        if step is not None:
            step(kind)
        with torch.no_grad():
            values[kind] = sweep(model, base, source, inputs.answers, progress_bar=False)[0].detach().float().cpu()
    return Sweeps("exact", direction, values, time.perf_counter() - start)


def baselines(model, inputs: Inputs) -> tuple[float, float]:
    """(clean, corrupt) logit differences, unpatched."""
    diffs = sweeps.logit_diffs(model, torch.cat([inputs.clean_tokens, inputs.corrupt_tokens]),
                               inputs.answers.expand(2, 2))
    return float(diffs[0]), float(diffs[1])


def rescale(values: Tensor, scale: str, clean: float, corrupt: float) -> Tensor:
    """`values` (logit differences) as the page shows them."""
    if scale == "logit":
        return values
    if scale == "change":
        return values - clean
    if scale == "normalised":
        if abs(clean - corrupt) < 1e-6:
            raise ExplorerError("The clean and corrupt logit differences are equal, so there is nothing to normalise "
                                "by: show the logit difference instead, or pick prompts the model tells apart.")
        return (values - corrupt) / (clean - corrupt)
    raise ExplorerError(f"Unknown scale {scale!r}; pick one of {', '.join(SCALES)}.")


def cells(kind: str, values: Tensor, tokens: list[str]) -> Iterator[tuple[int, Optional[int], Optional[int], float]]:
    """(layer, head, position, value) for every cell of one result."""
    if kind == "resid":
        for layer, pos in itertools_product(values.shape):
            yield layer, None, pos, float(values[layer, pos])
    elif kind == "heads":
        for layer, head in itertools_product(values.shape):
            yield layer, head, None, float(values[layer, head])
    else:
        for layer, head, pos in itertools_product(values.shape):
            yield layer, head, pos, float(values[layer, head, pos])


def itertools_product(shape) -> Iterator[tuple[int, ...]]:
    import itertools

    return itertools.product(*(range(n) for n in shape))


CSV_COLUMNS = ["method", "direction", "sweep", "layer", "head", "position", "token", "logit_diff", "value", "scale"]


def results_csv(results: list[Sweeps], tokens: list[str], scale: str, clean: float, corrupt: float) -> str:
    """Every number on the page: one row per cell of each sweep, the raw logit difference
    and the value in the page's scale."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for result in results:
        for kind in KINDS:
            raw = result.values[kind]
            shown = rescale(raw, scale, clean, corrupt)
            for (layer, head, pos, value), (_, _, _, scaled) in zip(cells(kind, raw, tokens), cells(kind, shown, tokens)):
                writer.writerow([result.method, result.direction, kind, layer, "" if head is None else head,
                                 "" if pos is None else pos, "" if pos is None else tokens[pos],
                                 f"{value:.6f}", f"{scaled:.6f}", scale])
    return out.getvalue()


def heatmap(kind: str, values: Tensor, tokens: list[str], *, title: str, scale: str):
    """A Plotly heatmap; hovering a cell shows its layer (and head), position, token and value."""
    import plotly.graph_objects as go

    positions = [f"{i}: {t}" for i, t in enumerate(tokens)]
    data = values.numpy()
    if kind == "resid":
        y = [f"L{layer}" for layer in range(data.shape[0])]
        x, z = positions, data
        text = [[f"layer {layer}, resid_pre<br>position {p}, token {tokens[p]!r}" for p in range(data.shape[1])]
                for layer in range(data.shape[0])]
    elif kind == "heads":
        y = [f"L{layer}" for layer in range(data.shape[0])]
        x, z = [f"H{h}" for h in range(data.shape[1])], data
        text = [[f"layer {layer}, head {h}<br>every position" for h in range(data.shape[1])]
                for layer in range(data.shape[0])]
    else:
        n_layers, n_heads, n_pos = data.shape
        y = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
        x, z = positions, data.reshape(n_layers * n_heads, n_pos)
        text = [[f"layer {layer}, head {h}<br>position {p}, token {tokens[p]!r}" for p in range(n_pos)]
                for layer in range(n_layers) for h in range(n_heads)]
    limit = float(abs(z).max()) or 1.0
    centre = 0.0 if scale != "normalised" else None
    figure = go.Figure(go.Heatmap(
        z=z, x=x, y=y, text=text, colorscale="RdBu", zmid=centre,
        zmin=None if centre is None else -limit, zmax=None if centre is None else limit,
        hovertemplate="%{text}<br>" + SCALES[scale].lower() + ": %{z:.4f}<extra></extra>",
        colorbar={"title": {"text": SCALES[scale].split(" (")[0]}},
    ))
    figure.update_layout(title=title, yaxis={"autorange": "reversed", "type": "category", "tickmode": "array",
                                             "tickvals": y, "ticktext": y},  # every row labelled
                         xaxis={"type": "category", "tickangle": -45}, margin={"l": 60, "r": 20, "t": 50, "b": 90},
                         height=max(280, 120 + 22 * len(y)))
    return figure


# --- how long an exact sweep takes ------------------------------------------------------------

# The fast sweeps cost about this many forward passes of the whole prompt per cell (they
# recompute only the positions a patch changes, in batches): measured 0.036 (gpt2-small's
# shape) and 0.040 (gelu-2l's) on the tutorial prompt, one thread; rounded up.
PASSES_PER_CELL = 0.05


def sweep_cells(model, n_pos: int) -> int:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    return n_layers * n_pos + n_layers * n_heads + n_layers * n_heads * n_pos


def expected_seconds(model, inputs: Inputs) -> float:
    """How long the three exact sweeps should take here: a timed forward pass of the
    clean prompt times the sweeps' cost in forward passes."""
    with torch.no_grad():
        model(inputs.clean_tokens)  # warm
        start = time.perf_counter()
        model(inputs.clean_tokens)
        one = time.perf_counter() - start
    return one * PASSES_PER_CELL * sweep_cells(model, inputs.n_pos)


# --- attention patterns and head roles (chapter 3) --------------------------------------------

def attention_patterns(model, tokens: Tensor) -> Tensor:
    """Every head's attention pattern on `tokens` [1, pos]: [n_layers * n_heads, dst, src]."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.cat([cache[name][0] for name in names]).float().cpu()


def attention_iframe(model, inputs: Inputs) -> str:
    """circuitsvis's view of every head on the clean prompt, inside an <iframe srcdoc>: the
    page's HTML component does not run scripts, a document in an iframe does. The bundle
    is inlined, so nothing loads from the network."""
    import html

    from circuitlab.attention_view import attention_heads

    n_heads = model.cfg.n_heads
    names = [f"L{i // n_heads}H{i % n_heads}" for i in range(model.cfg.n_layers * n_heads)]
    view = attention_heads(attention_patterns(model, inputs.clean_tokens), inputs.clean_strs, names,
                           include_library=True)
    # A srcdoc document shares the page's origin, so it can size its own frame to what
    # circuitsvis drew (the zoomed pattern is as tall as the frame is wide).
    fit = ("<script>new ResizeObserver(function () { if (window.frameElement) window.frameElement.style.height = "
           "Math.max(560, document.body.scrollHeight + 8) + 'px'; }).observe(document.body);</script>")
    document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='margin:0'>"
                f"{view._repr_html_()}{fit}</body></html>")
    return (f'<iframe class="attention-view" title="Attention patterns of every head" '
            f'style="width:100%;height:760px;border:0" srcdoc="{html.escape(document, quote=True)}"></iframe>')


REPEATS = 20  # random tokens, shown twice, for the induction score


def head_scores(model, inputs: Inputs) -> Optional[list[list]]:
    """Chapter 3's head-role scores per head: previous-token and duplicate-token on the clean
    prompt, induction on a seeded random sequence shown twice. None when this install has
    no chapter 3 answers (a student distribution)."""
    try:
        from circuitlab_solutions.ch03_attention_patterns import duplicate_token_score, induction_score, previous_token_score
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(0)
    random = torch.randint(1000, 10000, (REPEATS,), generator=generator)
    bos = inputs.clean_tokens[0, :1].cpu()
    repeated = torch.cat([bos, random, random])[None].to(inputs.clean_tokens.device)
    on_prompt = attention_patterns(model, inputs.clean_tokens)
    on_repeat = attention_patterns(model, repeated)
    clean_ids = inputs.clean_tokens[0].cpu()
    prev = previous_token_score(on_prompt)
    dup = duplicate_token_score(on_prompt, clean_ids)
    ind = induction_score(on_repeat, repeated[0].cpu())
    n_heads = model.cfg.n_heads
    return [[f"L{i // n_heads}H{i % n_heads}", round(float(prev[i]), 3), round(float(dup[i]), 3),
             round(float(ind[i]), 3)] for i in range(prev.shape[0])]
