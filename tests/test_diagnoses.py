"""Feedback that says why: code written by following the 2023 tutorial literally on
TransformerLens 4 is rejected with the reason, the generic diagnoses name each relation
to the reference by mechanism, and equivalent answers written differently still pass."""

from __future__ import annotations

import math

import pytest
import torch

from circuitlab_graders.compare import close_tensor
from circuitlab_graders.declare import Case, Exercise
from circuitlab_graders.engine import Grader
from circuitlab_graders.hints import Attempts
from circuitlab_graders.models import GradingModel, grading_model
from circuitlab_graders.registry import EXERCISES
from tests.native_twin import native_gelu_2l


@pytest.fixture(scope="module")
def gelu():
    return Grader([grading_model("gelu-2l")], attempts=Attempts())


def grade(grader, name, fn):
    return grader.grade(EXERCISES[name], fn)


def assert_rejected_because(result, *phrases):
    assert not result.passed, result.feedback
    for phrase in phrases:
        assert phrase in result.feedback, result.feedback


def _sweep(model, clean_prompt, corrupt_prompt, good, bad, *, column=lambda p: p, hook_fn=None, subtract=0.0):
    """A plain one-run-per-cell residual sweep, as the tutorial writes it, with knobs for its slips."""
    clean, corrupt = model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt)
    _, corrupt_cache = model.run_with_cache(corrupt)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    out = torch.zeros(len(names), clean.shape[1])
    for row, name in enumerate(names):
        for pos in range(clean.shape[1]):
            def patch(activations, hook, pos=pos):
                activations[:, pos, :] = corrupt_cache[hook.name][:, pos, :]
                return activations

            logits = model.run_with_hooks(clean, fwd_hooks=[(name, hook_fn or patch)])[0, -1]
            out[row, column(pos) % clean.shape[1]] = logits[good] - logits[bad] - subtract
    return out


# ------------------------------------------------------------------ the tutorial, followed literally


def test_answer_ids_from_tokenizer_encode_are_bos(gelu):
    def residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        good = model.tokenizer.encode(clean_answer)[0]  # TL 3 habit: in TL 4 this is BOS
        bad = model.tokenizer.encode(corrupt_answer)[0]
        return _sweep(model, clean_prompt, corrupt_prompt, good, bad)

    assert_rejected_because(grade(gelu, "residual_patching_sweep", residual_patching_sweep),
                            "Every entry of your answer is 0, as if both answers were the same token",
                            "use `model.to_single_token(' Hart')`")


def test_transformer_lens_utils_import(gelu):
    def residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        from transformer_lens import utils  # noqa: F401

    # TransformerLens 4's own message says what to use; the feedback passes it on.
    assert_rejected_because(grade(gelu, "residual_patching_sweep", residual_patching_sweep),
                            "ImportError", "transformer_lens.utilities")


def test_hooked_transformer_import(gelu):
    def next_token_prediction(model, prompt):
        from transformer_lens import HookedTransformer  # noqa: F401

    assert_rejected_because(grade(gelu, "next_token_prediction", next_token_prediction),
                            "TransformerLens 4 has no HookedTransformer")


def test_logit_diff_difference_returned_instead_of_the_patched_logit_diff(gelu):
    def residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
        final = model(clean_prompt)[0, -1]
        baseline = (final[good] - final[bad]).item()
        return _sweep(model, clean_prompt, corrupt_prompt, good, bad, subtract=baseline)

    assert_rejected_because(grade(gelu, "residual_patching_sweep", residual_patching_sweep),
                            "minus the clean run's", "returns the patched logit difference itself")


def test_a_hook_that_rebinds_instead_of_returning_changes_nothing(gelu):
    def residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        _, corrupt_cache = model.run_with_cache(corrupt_prompt)

        def patch(activations, hook):
            activations = corrupt_cache[hook.name]  # rebinds the name; the model never sees it

        good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
        return _sweep(model, clean_prompt, corrupt_prompt, good, bad, hook_fn=patch)

    assert_rejected_because(grade(gelu, "residual_patching_sweep", residual_patching_sweep),
                            "Every entry equals the clean run's logit difference")


def test_positions_off_by_one(gelu):
    def residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
        return _sweep(model, clean_prompt, corrupt_prompt, good, bad, column=lambda p: p + 1)

    assert_rejected_because(grade(gelu, "residual_patching_sweep", residual_patching_sweep),
                            "Your columns are the reference's shifted by one")


def test_query_and_key_swapped_read_a_masked_score(gelu):
    def attention_score(cache, layer, head, q_pos, k_pos):
        return cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, k_pos, q_pos].item()

    assert_rejected_because(grade(gelu, "attention_score", attention_score),
                            "that is a masked attention score, a key after its query")


def test_softmax_before_the_causal_mask(gelu):
    def attention_pattern_row(cache, layer, head, q_pos):
        q = cache[f"blocks.{layer}.attn.hook_q"][0, q_pos, head]
        k = cache[f"blocks.{layer}.attn.hook_k"][0, :, head]
        row = (k @ q / math.sqrt(q.shape[-1])).softmax(-1)
        row[q_pos + 1:] = 0
        return row

    assert_rejected_because(grade(gelu, "attention_pattern_row", attention_pattern_row),
                            "You took the softmax before masking the later keys")


def test_hook_result_on_a_native_bridge_says_to_patch_hook_z():
    model = native_gelu_2l()
    grader = Grader([GradingModel("native", model, "native twin")], attempts=Attempts())

    def head_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        model.cfg.use_attn_result = True  # the tutorial's switch; native bridges refuse it

    assert_rejected_because(grade(grader, "head_patching_sweep", head_patching_sweep),
                            "This model has no per-head hook_result", "patch blocks.L.attn.hook_z instead")


# ------------------------------------------------------------------ equivalent answers keep passing


def test_masking_with_minus_1e5_passes(gelu):
    def attention_pattern_row(cache, layer, head, q_pos):
        q = cache[f"blocks.{layer}.attn.hook_q"][0, q_pos, head]
        k = cache[f"blocks.{layer}.attn.hook_k"][0, :, head]
        scores = k @ q / math.sqrt(q.shape[-1])
        scores[q_pos + 1:] = -1e5
        return scores.softmax(-1)

    result = grade(gelu, "attention_pattern_row", attention_pattern_row)
    assert result.passed, result.feedback


def test_head_sweep_through_hook_result_passes_where_the_bridge_has_it(gelu):
    """HF-architecture bridges (the twins) support use_attn_result; patching hook_result
    is the same experiment as patching hook_z."""

    def head_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        model.cfg.use_attn_result = True
        try:
            good, bad = model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)
            _, corrupt_cache = model.run_with_cache(corrupt_prompt)
            out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    def patch(result, hook, head=head):
                        result[:, :, head] = corrupt_cache[hook.name][:, :, head]
                        return result

                    name = f"blocks.{layer}.attn.hook_result"
                    logits = model.run_with_hooks(clean_prompt, fwd_hooks=[(name, patch)])[0, -1]
                    out[layer, head] = logits[good] - logits[bad]
            return out
        finally:
            model.cfg.use_attn_result = False

    result = grade(gelu, "head_patching_sweep", head_patching_sweep)
    assert result.passed, result.feedback


# ------------------------------------------------------------------ each generic rule, by mechanism


def _table_exercise():
    table = torch.arange(1.0, 13.0).reshape(3, 4) ** 1.5

    def cases(gm, rng):
        return [Case("3 x 4", {"table": table})]

    return Exercise("table", "01_residual_patching", "The layer × position sweep", "", cases, close_tensor(),
                    reference=lambda table: table.clone()), table


@pytest.mark.parametrize("answer,phrase", [
    (lambda t: t.T.clone(), "Your answer is the reference transposed"),
    (lambda t: t[[1, 0, 2]].clone(), "Your answer has the reference's rows in another order"),
    (lambda t: torch.cat([t[1:], t[:1]]), "Your rows are the reference's shifted by one"),
    (lambda t: -t, "Your answer is the reference with its sign flipped"),
    (lambda t: 2.5 * t, "Your answer is the reference times 2.5"),
    (lambda t: torch.zeros_like(t), "Your answer is all zeros"),
    (lambda t: torch.full_like(t, 3.0), "Your answer has the same value everywhere"),
])
def test_generic_rule(gelu, answer, phrase):
    exercise, table = _table_exercise()
    result = Grader(gelu.models, attempts=Attempts()).grade(exercise, lambda table: answer(table))
    assert_rejected_because(result, phrase)


def test_times_root_d_head_is_named(gelu):
    def head_z(cache, layer, head, pos):
        weights = cache[f"blocks.{layer}.attn.hook_pattern"][0, head, pos]
        return weights @ cache[f"blocks.{layer}.attn.hook_v"][0, :, head] * math.sqrt(cache.model.cfg.d_head)

    assert_rejected_because(grade(gelu, "head_z", head_z), "times √d_head")


def test_no_diagnosis_when_the_failures_disagree(gelu):
    exercise, table = _table_exercise()

    def unrelated(table):
        return table + torch.randn(table.shape)

    result = Grader(gelu.models, attempts=Attempts()).grade(exercise, unrelated)
    assert not result.passed and "Your answer" not in result.feedback and "It looks like" not in result.feedback
