"""Mistakes about token strings are named in every exercise that returns or takes token
strings, in full and in public mode: a leading space stripped, the BOS token included, a
token id where a string belongs, and answer ids that are all BOS (`tokenizer.encode(' Hart')[0]`
in TransformerLens 4). Each learner here is the honest reference with exactly that slip."""

from __future__ import annotations

import inspect

import pytest

from circuitlab_graders.engine import Grader
from circuitlab_graders.hints import Attempts
from circuitlab_graders.models import grading_model
from circuitlab_graders.registry import EXERCISES
from circuitlab_graders.token_diagnoses import BOS_ADVICE, not_one_token, takes_tokens
from tests.honest import readable_reference

RETURNING = ("next_token_prediction", "top_tokens_by_unembed_bias")
TAKING = ("residual_patching_sweep", "head_patching_sweep", "head_by_position_sweep", "direct_logit_attribution",
          "path_patch_to_head_input", "positional_embedding_patch", "ablate_heads", "attribution_patching_resid",
          "attribution_patching_heads", "attribution_patching_head_by_position")
MODES = ("full", "public")


@pytest.fixture(scope="module")
def model():
    return grading_model("gelu-2l")


def grade(model, name, fn, mode):
    fn.__name__ = name
    return Grader([model], attempts=Attempts()).grade(EXERCISES[name], fn, mode)  # a first try: no hint yet


def test_these_are_all_the_exercises_that_deal_in_token_strings():
    taking = [name for name, exercise in EXERCISES.items()  # answers as strings; chapter 6 takes token ids
              if any("answer" in p and "Tensor" not in str(param.annotation)
                     for p, param in inspect.signature(readable_reference(exercise)).parameters.items())]
    assert tuple(taking) == TAKING
    returning = [name for name, exercise in EXERCISES.items()
                 if "str" in (ret := str(inspect.signature(readable_reference(exercise)).return_annotation))
                 and not ret.startswith("dict")]  # chapter 6's datasets are dicts of prompts and token ids
    assert tuple(returning) == RETURNING


SLIPS = {  # what the learner's code did to each token string the reference returns, and what must be said
    "stripped the leading space": (lambda m, t: t.lstrip(" "), "stripped the leading space"),
    "decoded with the BOS token": (lambda m, t: m.tokenizer.bos_token + t, "include the BOS token '<|endoftext|>'"),
    "returned the token id": (lambda m, t: m.to_single_token(t), "token id"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("slip", SLIPS)
@pytest.mark.parametrize("name", RETURNING)
def test_a_token_string_slip_in_what_is_returned_is_named(model, name, slip, mode):
    honest, (change, said) = readable_reference(EXERCISES[name]), SLIPS[slip]

    def learner(**inputs):
        out = honest(**inputs)
        return [change(inputs["model"], t) for t in out] if isinstance(out, list) else change(inputs["model"], out)

    result = grade(model, name, learner, mode)
    assert not result.passed
    assert said in result.feedback, result.feedback
    assert "is not exactly one token of the model's vocabulary" not in result.feedback


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", TAKING)
def test_answer_tokens_read_as_bos_are_named(model, name, mode):
    honest = readable_reference(EXERCISES[name])

    def learner(**inputs):  # as if each answer id came from model.tokenizer.encode(answer)[0]
        bos = inputs["model"].tokenizer.bos_token
        return honest(**{k: ([bos] * len(v) if isinstance(v, list) else bos) if "answer" in k else v
                         for k, v in inputs.items()})

    result = grade(model, name, learner, mode)
    assert not result.passed
    assert "as if both answers were the same token" in result.feedback and BOS_ADVICE in result.feedback, \
        result.feedback


def test_what_is_not_a_token_string_mistake_is_not_named(model):
    m = model.model
    assert not_one_token(m, "photographers and more") is None  # several tokens, and no space stripped
    assert not_one_token(m, 3.5) is None
    assert takes_tokens(m, {"prompt": "Her name was Alex Hart. Tomorrow at lunch time Alex", "k": 5}) is False
    assert takes_tokens(m, {"clean_answer": " Hart", "model": None}) is True
