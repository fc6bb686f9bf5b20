"""A library of hostile submissions, one test each: the grader survives, says what
happened, and leaves the model's weights, the cached cases and the hook registry as
they were."""

from __future__ import annotations

import importlib
import resource
import sys
import time

import pytest
import torch

import circuitlab_graders as graders
import circuitlab_solutions.ch00_setup as reference_module
from circuitlab_graders.declare import Cache, Case, Exercise
from circuitlab_graders.engine import Grader
from circuitlab_graders.guard import walk_tensors
from circuitlab_graders.hints import Attempts
from circuitlab_graders.models import grading_model
from circuitlab_graders.registry import EXERCISES

# ------------------------------------------------------------------ the state that must survive


def hook_registry(model) -> list:
    """Every hook on every module, TransformerLens handle lists, and torch's global hooks."""
    entries = []
    for path, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            entries += [(path, attr, key) for key in getattr(module, attr, {})]
        for attr in ("fwd_hooks", "bwd_hooks"):
            entries += [(path, attr, len(getattr(module, attr, [])))]
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        entries += [("global", attr, key) for key in getattr(torch.nn.modules.module, attr)]
    return entries


class State:
    """Weights (float64 sums, parameter identity), hooks, mode, dtype, and every tensor
    the grader's cached cases hand out for the exercise."""

    def __init__(self, grader: Grader, exercise: Exercise, model) -> None:
        self.model = model
        self.inputs = self._inputs(grader, exercise)  # builds the cases first: that runs the model
        self.params = {n: (p, float(p.double().sum())) for n, p in model.named_parameters()}
        self.hooks = hook_registry(model)

    def _inputs(self, grader, exercise):
        """The case inputs themselves and the caches the grader hands to every call."""
        found = []
        for gm in grader.models:
            for case in grader.cases(exercise, gm):
                args, shared = grader.arguments(gm).build(case.inputs)
                for name, value in [*case.inputs.items(), *((path, cache) for path, cache, _ in shared)]:
                    found += [(case.label + path, t, t.clone()) for path, t in walk_tensors(value, name)]
        return found

    def assert_unchanged(self) -> None:
        now = dict(self.model.named_parameters())
        assert now.keys() == self.params.keys()
        for name, (param, total) in self.params.items():
            assert now[name] is param, f"{name} was replaced"
            assert float(param.double().sum()) == total, f"{name} changed"
        assert hook_registry(self.model) == self.hooks
        assert not self.model.training
        assert torch.get_default_dtype() == torch.float32
        for path, live, copy in self.inputs:
            assert torch.equal(live, copy), f"{path} changed"


@pytest.fixture(scope="module")
def gm():
    return grading_model("gelu-2l")


@pytest.fixture
def grader(gm, monkeypatch):
    monkeypatch.setattr(Grader, "MIN_TIME_LIMIT_S", 1.5)
    monkeypatch.setattr(Grader, "JUDGE_TIME_LIMIT_S", 1.5)
    return Grader([gm], attempts=Attempts())


def run(grader: Grader, exercise, fn):
    exercise = EXERCISES[exercise] if isinstance(exercise, str) else exercise
    state = State(grader, exercise, grader.models[0].model)
    result = grader.grade(exercise, fn)
    state.assert_unchanged()
    return result


def assert_passed_with_note(result, *phrases: str) -> None:
    """A right answer with a side effect the grader undid: it passes, and the feedback
    names what was undone (only edits to the inputs or the weights fail a case)."""
    assert result.passed, result.feedback
    for phrase in phrases:
        assert f"Note: your function {phrase}" in result.feedback or phrase in result.feedback, result.feedback


def assert_failed_with(result, *phrases: str) -> None:
    assert not result.passed and result.score < 1.0, result.feedback
    for phrase in phrases:
        assert phrase in result.feedback, result.feedback


# ------------------------------------------------------------------ crashes, time, return values


def test_exception_is_shown_at_the_learners_line(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return logits[0, -1, correct_token] / missing  # noqa: F821

    result = run(grader, "logit_diff", logit_diff)
    assert_failed_with(result, "NameError", "in logit_diff: return logits[0, -1, correct_token] / missing")
    assert result.score == 0.0


def test_endless_loop_is_stopped_with_a_time_limit(grader):
    def logit_diff(logits, correct_token, wrong_token):
        while True:
            pass

    result = run(grader, "logit_diff", logit_diff)
    assert_failed_with(result, "stopped after 1.5 s", "endless loop")
    # One time-out, not one per case: the remaining cases are skipped.
    assert [c.message.startswith("not run: an earlier case ran out of time or crashed") for c in result.cases] == [
        False, True, True, True]


def test_slow_code_is_stopped_even_if_it_catches_exceptions(grader):
    def logit_diff(logits, correct_token, wrong_token):
        while True:
            try:
                time.sleep(30)
            except Exception:
                pass

    assert_failed_with(run(grader, "logit_diff", logit_diff), "stopped after")


def test_an_allocation_past_the_memory_budget_fails_the_call_with_a_message(grader):
    """Measured: `.T` for `.mT` in k_composition_scores asked for 21.7 GB on gpt2-small and the
    OOM killer ended the process. Now the allocation raises inside the call: the case fails
    with what happened and what to look for, the process lives, and the limit is put back.
    5 GB of torch.empty needs the budget to fail (the kernel would grant it untouched); 64 GB
    is more than the machine has."""
    before = resource.getrlimit(resource.RLIMIT_AS)
    for size, shown in ((5 << 30, "5.37 GB"), (64 << 30, "68.7 GB")):
        def logit_diff(logits, correct_token, wrong_token, size=size):
            big = torch.empty(size, dtype=torch.uint8)
            return (logits[0, -1, correct_token] - logits[0, -1, wrong_token]).item() + float(big[:0].sum())

        result = run(grader, "logit_diff", logit_diff)
        assert_failed_with(result, f"your function tried to allocate a tensor of {shown}, more than the 4.29 GB",
                           "`.mT` transposes the last two", "in logit_diff: big = torch.empty(size, dtype=torch.uint8)")
        assert result.score == 0.0
        assert all("tried to allocate" in c.message for c in result.cases), [c.message for c in result.cases]
        assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_a_gpu_out_of_memory_is_described_as_the_gpus():
    """On a GPU the budget (host address space) does not apply: torch raises its own
    OutOfMemoryError, which the guard describes as the GPU's, not as the call's budget."""
    from circuitlab_graders.guard.memory import describe_memory_error, is_memory_error

    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.25 GiB. GPU 0 has a total capacity of 79 GiB")
    assert is_memory_error(err) and not is_memory_error(ValueError("out of memory"))
    message = describe_memory_error(err, 4 << 30)
    assert message.startswith("your function tried to allocate 20.25 GiB on the GPU, more than it has free")
    assert "4.29 GB" not in message


def test_returning_none_is_named(grader):
    def logit_diff(logits, correct_token, wrong_token):
        logits[0, -1, correct_token] - logits[0, -1, wrong_token]

    assert_failed_with(run(grader, "logit_diff", logit_diff), "returned None, expected a torch.Tensor")


def test_wrong_shape_is_named(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return logits[0, :, correct_token] - logits[0, :, wrong_token]

    assert_failed_with(run(grader, "logit_diff", logit_diff), "returned shape (")


def test_wrong_dtype_is_named(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return (logits[0, -1, correct_token] - logits[0, -1, wrong_token]).long()

    assert_failed_with(run(grader, "logit_diff", logit_diff), "returned dtype torch.int64")


def test_wrong_device_is_named(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return torch.empty((), device="meta")

    assert_failed_with(run(grader, "logit_diff", logit_diff), "on device meta, expected one on cpu")


def test_nan_is_named(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return (logits[0, -1, correct_token] - logits[0, -1, wrong_token]) / 0 * 0

    assert_failed_with(run(grader, "logit_diff", logit_diff), "returned 1 NaN and 0 infinite values")


def test_inf_is_named(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return logits[0, -1, correct_token] / 0

    assert_failed_with(run(grader, "logit_diff", logit_diff), "0 NaN and 1 infinite values")


def test_tensor_subclass_is_refused(grader):
    class Agreeable(torch.Tensor):
        pass

    def logit_diff(logits, correct_token, wrong_token):
        return (logits[0, -1, correct_token] - logits[0, -1, wrong_token]).as_subclass(Agreeable)

    assert_failed_with(run(grader, "logit_diff", logit_diff), "a Tensor subclass")


def test_str_subclass_is_refused_whatever_its_eq_does(grader):
    """A learner's value is data: a str subclass whose __eq__ raises, or always says True,
    is not a str, and the grader never runs its comparison."""

    class Broken(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            raise RuntimeError("no comparing me")

    class Agreeable(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            return True

    for cls in (Broken, Agreeable):
        def top_tokens_by_unembed_bias(model, k, cls=cls):
            return [cls("x")] * k

        result = run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias)
        assert_failed_with(result, f"item 0: returned a {cls.__name__}, expected a str")
        assert result.score == 0.0


def test_float_subclass_is_refused(grader):
    class Close(float):
        def __sub__(self, other):
            return 0.0

    def attention_score(cache, layer, head, q_pos, k_pos):
        return Close(123.0)

    assert_failed_with(run(grader, "attention_score", attention_score), "returned a Close, expected a float")


def test_exit_is_caught(grader):
    def logit_diff(logits, correct_token, wrong_token):
        sys.exit(0)

    assert_failed_with(run(grader, "logit_diff", logit_diff), "your function called exit()")


# ------------------------------------------------------------------ side effects, restored and named


def test_in_place_edit_of_the_corrupt_cache_is_restored_and_named(grader):
    def patch_residual_stream(activations, hook, pos, corrupt_cache):
        corrupt_cache[hook.name][:] = activations  # clean into the cache: the wrong way round
        return activations

    assert_failed_with(run(grader, "patch_residual_stream", patch_residual_stream),
                       "changed corrupt_cache['blocks.", "in place (the grader restored it)")


def test_returning_a_cache_entry_is_named(grader):
    def patch_residual_stream(activations, hook, pos, corrupt_cache):
        return corrupt_cache[hook.name]

    assert_failed_with(run(grader, "patch_residual_stream", patch_residual_stream),
                       "shares memory with corrupt_cache['blocks.")


def _cache_exercise() -> Exercise:
    """A two-cache exercise (like the later chapters'), to show clean caches are guarded too."""

    def cases(gm, rng):
        inputs = {"clean_cache": Cache("The cat sat on the"), "corrupt_cache": Cache("The dog sat on the"),
                  "name": "blocks.0.hook_resid_post"}
        return [Case("cat/dog", inputs)]

    def reference(clean_cache, corrupt_cache, name):
        return (clean_cache[name] - corrupt_cache[name]).norm()

    from circuitlab_graders.compare import close_tensor

    return Exercise("cache_gap", "01_residual_patching", "One patch by hand", "", cases, close_tensor(),
                    reference=reference)


def test_in_place_edit_of_the_clean_cache_is_restored_and_named(grader):
    def cache_gap(clean_cache, corrupt_cache, name):
        return clean_cache[name].sub_(corrupt_cache[name]).norm()

    result = run(grader, _cache_exercise(), cache_gap)
    assert_failed_with(result, "changed clean_cache['blocks.0.", "'blocks.0.hook_resid_post'")


def test_deleting_a_cache_entry_is_restored_and_named(grader):
    def cache_gap(clean_cache, corrupt_cache, name):
        gap = (clean_cache[name] - corrupt_cache[name]).norm()
        clean_cache.cache_dict.clear()
        return gap

    exercise = _cache_exercise()
    result = run(grader, exercise, cache_gap)
    assert_failed_with(result, "added, removed or replaced entries of clean_cache")
    gm = grader.models[0]
    args, _ = grader.arguments(gm).build(grader.cases(exercise, gm)[0].inputs)
    assert len(args["clean_cache"].cache_dict) > 10


def test_in_place_edit_of_the_weights_is_restored_and_named(grader):
    def top_tokens_by_unembed_bias(model, k):
        model.b_U.add_(1.0)
        return [model.to_string(t) for t in model.b_U.topk(k).indices]

    assert_failed_with(run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias),
                       "changed the model's weights (unembed.", "the grader restored them")


def test_edit_of_the_weights_through_data_is_restored_and_named(grader):
    def top_tokens_by_unembed_bias(model, k):
        model.blocks[0].attn.W_Q.data.zero_()  # invisible to version counters
        return [model.to_string(t) for t in model.b_U.topk(k).indices]

    assert_failed_with(run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias),
                       "changed the model's weights (transformer.h.0.attn.q.weight")


def test_hook_left_on_a_hook_point_is_removed_and_named(grader):
    def patch_residual_stream(activations, hook, pos, corrupt_cache):
        hook.add_hook(lambda act, hook: act * 0)
        hook.add_perma_hook(lambda act, hook: act * 0)
        activations[:, pos, :] = corrupt_cache[hook.name][:, pos, :]
        return activations

    assert_passed_with_note(run(grader, "patch_residual_stream", patch_residual_stream),
                            "left hooks attached to blocks.", "the grader removed them")


def test_raw_torch_hook_is_removed_and_named(grader):
    def top_tokens_by_unembed_bias(model, k):
        model.blocks[1].register_forward_pre_hook(lambda module, args: None)
        return [model.to_string(t) for t in model.b_U.topk(k).indices]

    assert_passed_with_note(run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias),
                            "left hooks attached to transformer.h.1 ")


def test_global_hook_is_removed_and_named(grader):
    def top_tokens_by_unembed_bias(model, k):
        torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
        return [model.to_string(t) for t in model.b_U.topk(k).indices]

    assert_passed_with_note(run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias), "a global hook")


def test_training_mode_cfg_and_default_dtype_are_put_back_and_named(grader):
    def top_tokens_by_unembed_bias(model, k):
        model.train()
        model.cfg.d_vocab_out = 7
        torch.set_default_dtype(torch.float64)
        return [model.to_string(t) for t in model.b_U.topk(k).indices]

    vocab = grader.models[0].model.cfg.d_vocab_out
    result = run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias)
    assert_passed_with_note(result, "training mode", "changed torch's default dtype", "model.cfg.d_vocab_out")
    assert grader.models[0].model.cfg.d_vocab_out == vocab


def test_printing_flood_is_hidden_and_summarised(grader, capsys):
    def logit_diff(logits, correct_token, wrong_token):
        for i in range(20_000):
            print("debug", i)
        return logits[0, -1, correct_token] - logits[0, -1, wrong_token]

    result = run(grader, "logit_diff", logit_diff)
    assert result.passed  # printing is not wrong, only hidden
    assert "printed 80000 lines while being checked (hidden); it began: debug 0 | debug 1" in result.feedback
    assert "debug" not in capsys.readouterr().out


# ------------------------------------------------------------------ reading the answer from the course


def test_importing_the_solution_scores_zero(grader):
    def logit_diff(logits, correct_token, wrong_token):
        from circuitlab_solutions.ch00_setup import logit_diff as answer

        return answer(logits, correct_token, wrong_token)

    result = run(grader, "logit_diff", logit_diff)
    assert_failed_with(result, "Scored zero", "imports circuitlab_solutions.ch00_setup")
    assert result.score == 0.0


def test_calling_chapter_5s_reference_through_solutions_scores_zero(grader):
    """circuitlab_solutions.ch05 re-exports the estimates from circuitlab.sweeps.attribution (the
    explorer uses them): reaching them through solutions/ is still reading the answer."""

    def attribution_patching_heads(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        from circuitlab_solutions.ch05_attribution_patching import attribution_patching_heads as answer

        return answer(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)

    result = run(grader, "attribution_patching_heads", attribution_patching_heads)
    assert_failed_with(result, "Scored zero")
    assert result.score == 0.0


def test_using_an_imported_solutions_module_scores_zero(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return reference_module.logit_diff(logits, correct_token, wrong_token)

    assert_failed_with(run(grader, "logit_diff", logit_diff), "Scored zero", "uses reference_module from circuitlab_solutions")


def test_reading_the_graders_registry_scores_zero(grader):
    def logit_diff(logits, correct_token, wrong_token):
        import circuitlab_graders.registry

        return graders.registry.EXERCISES["logit_diff"].reference_fn()(logits, correct_token, wrong_token)

    assert_failed_with(run(grader, "logit_diff", logit_diff), "Scored zero", "imports circuitlab_graders.registry")


def test_hidden_import_of_the_solution_is_caught_when_it_runs(grader):
    def logit_diff(logits, correct_token, wrong_token):
        module = importlib.import_module("".join(["circuitlab_solu", "tions.ch00", "_setup"]))
        return getattr(module, "logit" + "_diff")(logits, correct_token, wrong_token)

    result = run(grader, "logit_diff", logit_diff)
    assert_failed_with(result, "Scored zero", "runs circuitlab_solutions/ch00_setup.py:logit_diff")
    assert result.score == 0.0


def test_checking_the_reference_itself_scores_zero(capsys):
    result = graders.check(reference_module.logit_diff)
    assert not result.passed and result.score == 0.0
    assert "is the course's own code (from circuitlab_solutions.ch00_setup)" in result.feedback


# ------------------------------------------------------------------ hints and partial credit


def test_hints_grow_with_repeated_failures(grader):
    def logit_diff(logits, correct_token, wrong_token):
        return logits[0, -1, wrong_token] - logits[0, -1, correct_token]

    first, second, third = (grader.grade(EXERCISES["logit_diff"], logit_diff).feedback for _ in range(3))
    named = "It looks like you subtracted the wrong way round (wrong − correct)."
    assert named in first and named in second and named in third
    assert "Hint:" not in first and "Reread" not in first
    assert "Hint: logits[0, -1] is the final position" in second and "Reread" not in second
    assert "Reread the section 'The task, and the logit difference' of 00_setup.ipynb" in third
    assert "Hint:" not in grader.grade(EXERCISES["logit_diff"], reference_module.logit_diff).feedback


def test_sweep_credit_is_the_share_of_matching_cells_with_a_heatmap(grader):
    table = torch.arange(12.0).reshape(3, 4)

    def cases(gm, rng):
        return [Case("3 x 4", {"table": table})]

    from circuitlab_graders.compare import close_tensor

    exercise = Exercise("doubled", "01_residual_patching", "The layer × position sweep", "", cases, close_tensor(),
                        reference=lambda table: table * 2)

    def doubled(table):
        out = table * 2
        out[0] = -1.0  # one row of four wrong
        return out

    result = run(grader, exercise, doubled)
    assert not result.passed
    assert result.score == pytest.approx(8 / 12)
    assert "Cells matching the reference: 8/12 (67%)." in result.feedback
    label, diff = result.difference
    assert torch.equal(diff[0], -1.0 - table[0] * 2) and torch.equal(diff[1:], torch.zeros(2, 4))
    assert '<img alt="difference heatmap" src="data:image/png;base64,iVBOR' in result._repr_html_()


def test_gradient_state_left_behind_is_restored_and_named(grader):
    """Chapter 5 takes gradients: a function that switches autograd on globally, freezes a
    parameter or leaves .grad on the weights has all three undone and named."""

    def top_tokens_by_unembed_bias(model, k):
        torch.set_grad_enabled(True)
        next(model.parameters()).requires_grad_(False)
        model.W_U.sum().backward()
        return [model.to_string(t) for t in model.b_U.topk(k).indices]

    model = grader.models[0].model
    result = run(grader, "top_tokens_by_unembed_bias", top_tokens_by_unembed_bias)
    assert_passed_with_note(result, "switched torch's gradient mode globally", "changed requires_grad on 1 of the model's",
                            "left gradients in .grad of 1 of the model's parameters")
    assert not torch.is_grad_enabled()
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
