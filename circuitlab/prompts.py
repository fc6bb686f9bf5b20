"""The tutorial's prompts: one clean prompt and its three corruptions.

Each corruption changes exactly one single-token name, so clean and corrupt
prompts line up token for token and can be patched position by position.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class PatchingCase:
    """A clean prompt, a corrupted twin, and the answers whose logit difference we track."""

    label: str
    clean_prompt: str
    corrupt_prompt: str
    clean_answer: str
    corrupt_answer: str

    def logit_diff(self, model, prompt: str) -> float:
        """logit(clean_answer) − logit(corrupt_answer) at the final position of `prompt`
        on `model`: the number every patching sweep of this case records."""
        import torch

        with torch.no_grad():
            final = model(prompt)[0, -1]
        return (final[model.to_single_token(self.clean_answer)] - final[model.to_single_token(self.corrupt_answer)]).item()

    def as_args(self) -> dict[str, str]:
        return {
            "clean_prompt": self.clean_prompt,
            "corrupt_prompt": self.corrupt_prompt,
            "clean_answer": self.clean_answer,
            "corrupt_answer": self.corrupt_answer,
        }


TEMPLATE = "Her name was {first} {last}. Tomorrow at lunch time {again}"
CLEAN_PROMPT = TEMPLATE.format(first="Alex", last="Hart", again="Alex")
CLEAN_ANSWER = " Hart"

CORRUPTIONS: dict[str, PatchingCase] = {
    "surname": PatchingCase(
        "other surname (Alex Carroll ... Alex)",
        CLEAN_PROMPT,
        TEMPLATE.format(first="Alex", last="Carroll", again="Alex"),
        " Hart",
        " Carroll",
    ),
    "first_name": PatchingCase(
        "other first first-name (Sarah Hart ... Alex)",
        CLEAN_PROMPT,
        TEMPLATE.format(first="Sarah", last="Hart", again="Alex"),
        " Hart",
        " Carroll",
    ),
    "second_name": PatchingCase(
        "other second first-name (Alex Hart ... Sarah)",
        CLEAN_PROMPT,
        TEMPLATE.format(first="Alex", last="Hart", again="Sarah"),
        " Hart",
        " Carroll",
    ),
}

# Single GPT-2 tokens with a leading space; used to draw fresh grading cases.
FIRST_NAMES = ["Alex", "Sarah", "John", "Mary", "David", "Emma", "James", "Anna", "Tom", "Kate"]
SURNAMES = ["Hart", "Carroll", "Smith", "Brown", "Miller", "Wilson", "Taylor", "Moore", "Clark", "Hall"]
TEMPLATES = [
    TEMPLATE,
    "Yesterday I met {first} {last} at the station. Later that evening {again}",
    "The report was written by {first} {last}, and the next day {again}",
]


SHORT_TEMPLATE = "{first} {last} {again}"  # 4 positions with BOS: big-model sweeps take seconds


def _draw_case(rng: random.Random, template: str, label: str) -> PatchingCase:
    """Names and a corruption kind drawn from ``rng``, filled into ``template``;
    ``label`` names the case, with ``{kind}`` for the corruption kind."""
    first, other_first = rng.sample(FIRST_NAMES, 2)
    last, other_last = rng.sample(SURNAMES, 2)
    kind = rng.choice(sorted(CORRUPTIONS))
    clean = template.format(first=first, last=last, again=first)
    corrupt_names = {
        "surname": dict(first=first, last=other_last, again=first),
        "first_name": dict(first=other_first, last=last, again=first),
        "second_name": dict(first=first, last=last, again=other_first),
    }[kind]
    return PatchingCase(
        label.format(kind=kind),
        clean,
        template.format(**corrupt_names),
        f" {last}",
        f" {other_last}",
    )


def random_case(rng: random.Random) -> PatchingCase:
    """A fresh prompt pair: a random template, names and corruption kind."""
    return _draw_case(rng, rng.choice(TEMPLATES), "random {kind} case")


def short_case(model, rng: random.Random) -> PatchingCase:
    """A seeded four-token pair (first name, surname, first name again) whose clean and
    corrupt prompts tokenize to the same length on ``model``."""
    while True:
        case = _draw_case(rng, SHORT_TEMPLATE, "short {kind} corruption")
        if model.to_tokens(case.clean_prompt).shape == model.to_tokens(case.corrupt_prompt).shape:
            return case


@dataclass(frozen=True)
class NameBatch:
    """Prompts of one template with different people, for measuring a behaviour on average
    (ablations). Prompt i's answer is its own surname; its wrong answer is the next
    prompt's surname, the one a resample ablation from prompt i + 1 pushes towards."""

    label: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    wrong_answers: tuple[str, ...]

    def as_args(self) -> dict[str, list[str]]:
        return {"prompts": list(self.prompts), "answers": list(self.answers), "wrong_answers": list(self.wrong_answers)}


# People whose names and surnames circuitlab-2l was trained on (its model card): the
# course's offline batch. " Miller" and " Moore" are GPT-2 tokens it never saw.
BATCH_PAIRS = (("Alex", "Hart"), ("Sarah", "Carroll"), ("John", "Smith"), ("Mary", "Brown"),
               ("Emma", "Wilson"), ("James", "Taylor"), ("Tom", "Clark"), ("Kate", "Hall"))


def name_batch(pairs=BATCH_PAIRS, template: str = TEMPLATE, label: str = "the course's name batch") -> NameBatch:
    """One prompt per (first name, surname) pair, the first name repeated at the end."""
    surnames = [f" {last}" for _, last in pairs]
    return NameBatch(
        label,
        tuple(template.format(first=first, last=last, again=first) for first, last in pairs),
        tuple(surnames),
        tuple(surnames[1:] + surnames[:1]),
    )


def random_batch(model, rng: random.Random, size: int, template: str) -> NameBatch:
    """`size` people with distinct first names and distinct surnames, drawn from ``rng``,
    whose prompts all tokenize to the same length on ``model``."""
    while True:
        pairs = list(zip(rng.sample(FIRST_NAMES, size), rng.sample(SURNAMES, size)))
        batch = name_batch(pairs, template, f"{size} random people in {template!r}")
        if len({model.to_tokens(prompt).shape[1] for prompt in batch.prompts}) == 1:
            return batch
