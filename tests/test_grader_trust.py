"""The grader is never wrong about an honest answer, and no submission earns a point it did
not earn. Regression tests for five measured bugs, then properties over many seeds."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

import circuitlab
import circuitlab.plotting
import circuitlab.sweeps.exact
import circuitlab_graders as graders
from circuitlab.sweeps import residual_sweep
from circuitlab_graders.engine import Grader
from circuitlab_graders.hints import Attempts
from circuitlab_graders.models import grading_model
from circuitlab_graders.notebooks import REPO
from circuitlab_graders.registry import EXERCISES
from tests import tutorial_loops
from tests.honest import honest_copy, readable_reference

SPREAD_ACROSS_WORKERS = True  # independent gradings, several of them minutes long: one worker for all was too long


def fresh_grader(models=None) -> Grader:
    return Grader(models, attempts=Attempts())


# ------------------------------------------------------------------ bug 1: cases are named by content


def test_two_fresh_pairs_with_one_label_are_two_cases():
    """Two random pairs of the same corruption kind share a label; their ids differ."""
    exercise = EXERCISES["residual_patching_sweep"]
    gm = grading_model("gelu-2l")
    grader = fresh_grader([gm])
    cases = [c for seed in range(40) for c in grader.cases(exercise, gm, seed)]
    by_label: dict[str, set] = {}
    for case in cases:
        by_label.setdefault(case.label, set()).add(exercise.case_id(gm.key, case))
    shared = [label for label, ids in by_label.items() if len(ids) > 1]
    assert shared, "expected some label to name several different cases"
    ids = {exercise.case_id(gm.key, c): c for c in cases}
    assert all(dict(ids[exercise.case_id(gm.key, c)].inputs) == dict(c.inputs) for c in cases)


def test_honest_sweep_passes_the_hidden_check_that_failed_it():
    """The measured failure: seeds 971477687 and 1859167399, an honest copy of the
    reference, "returned shape (3, 14), expected (3, 12)"."""
    exercise = EXERCISES["residual_patching_sweep"]
    result = fresh_grader().grade(exercise, readable_reference(exercise), "hidden", [971477687, 1859167399])
    assert result.passed, result.feedback
    assert result.score == 1.0


# ------------------------------------------------------------------ bug 2: every seed is drawn


def test_the_two_seeds_of_a_hidden_check_grade_different_cases():
    grader = fresh_grader()
    for name in ("logit_diff", "residual_patching_sweep", "attention_score"):
        exercise = EXERCISES[name]
        for gm in grader.models:
            first = {exercise.case_id(gm.key, c) for c in grader.cases(exercise, gm, 11)}
            second = {exercise.case_id(gm.key, c) for c in grader.cases(exercise, gm, 12)}
            assert first - second, (name, gm.key)
        checks = grader.plan(exercise, "hidden", [11, 12])
        per_seed = len(grader.plan(exercise, "hidden", [11]))
        assert len(checks) == per_seed + len(grader.plan(exercise, "hidden", [12]))


# ------------------------------------------------------------------ bug 3: no reference from a damaged model


def _zeroes_the_unembedding(model, k):
    model.W_U.data.zero_()  # invisible to version counters
    model.b_U.data.zero_()
    return [model.to_string(t) for t in model.b_U.topk(k).indices]


@pytest.mark.parametrize("mode", ["full", "public"])
def test_damage_through_data_then_an_honest_check(mode):
    """A fresh grader (nothing cached): the hostile call is caught and undone before the
    next reference is computed, so the correct answer checked next passes in full."""
    grader = fresh_grader()
    exercise = EXERCISES["top_tokens_by_unembed_bias"]
    hostile = grader.grade(exercise, _zeroes_the_unembedding, mode)
    assert not hostile.passed and "changed the model's weights" in hostile.feedback
    honest = grader.grade(exercise, honest_copy("circuitlab_solutions.ch00_setup", "top_tokens_by_unembed_bias"), mode)
    assert honest.passed and honest.score == 1.0, honest.feedback
    for gm in grader.models:
        assert gm.model.b_U.abs().sum() > 0 and gm.model.W_U.abs().sum() > 0


# ------------------------------------------------------------------ bug 4: the guard in public mode


def test_public_mode_stops_an_endless_loop(monkeypatch):
    monkeypatch.setattr(Grader, "PUBLIC_TIME_LIMIT_S", 1.5)

    def logit_diff(logits, correct_token, wrong_token):
        while True:
            pass

    result = fresh_grader([grading_model("gelu-2l")]).grade(EXERCISES["logit_diff"], logit_diff, "public")
    assert not result.passed
    assert "did not finish: stopped after 1.5 s" in result.feedback


@pytest.mark.parametrize("name", ["head_patching_sweep", "head_by_position_sweep"])
def test_the_public_head_sweep_checks_sweep_gpt2_small_once(name, gpt2_twin, gelu_twin):
    """A learner's head sweep on gpt2-small is the slowest call of a public check: there its
    properties share one call (the identical run); gelu-2l checks three runs."""
    properties = EXERCISES[name].properties
    runs = {}
    for key in ("gpt2-small", "gelu-2l"):
        calls = [call for p in properties(grading_model(key)) for call in p.calls]
        runs[key] = {(c["clean_prompt"], c["corrupt_prompt"], c["clean_answer"]) for c in calls}
    assert len(runs["gpt2-small"]) == 1
    ((clean, corrupt, _),) = runs["gpt2-small"]
    assert clean == corrupt
    assert len(runs["gelu-2l"]) == 3


def test_graders_grade_works_without_solutions():
    """A student release: no `solutions` package. graders.grade and check run the public
    checks through the same engine, guard included."""
    script = """
import sys
sys.modules["circuitlab_solutions"] = None  # import solutions -> ImportError
import torch
import circuitlab_graders as graders
from circuitlab_graders.registry import EXERCISES
def logit_diff(logits, correct_token, wrong_token):
    return logits[0, -1, correct_token] - logits[0, -1, wrong_token]
right = graders.grade("logit_diff", logit_diff)
def top_tokens_by_unembed_bias(model, k):
    model.W_U.data.zero_()
    return [model.to_string(t) for t in model.b_U.topk(k).indices]
hostile = graders.grade("top_tokens_by_unembed_bias", top_tokens_by_unembed_bias)
print("RESULT", right.passed, right.mode, hostile.passed, "changed the model's weights" in hostile.feedback)
try:
    EXERCISES["logit_diff"].reference_fn()
except RuntimeError as err:
    print("NOREF", "student release" in str(err))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT True public False True" in proc.stdout
    assert "NOREF True" in proc.stdout


# ------------------------------------------------------------------ bug 5: answer code slips past detection


def _imports_the_sweeps(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    import circuitlab.sweeps.one_pair as fast

    return fast.residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)


def _imports_the_package_from_circuitlab(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    from circuitlab import sweeps

    return sweeps.residual_sweep(model, model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt),
                                 [[model.to_single_token(clean_answer), model.to_single_token(corrupt_answer)]])[0]


def _uses_a_module_level_import(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    # residual_sweep: imported at this test module's top, as a notebook would at its top
    clean, corrupt = model.to_tokens(clean_prompt), model.to_tokens(corrupt_prompt)
    return residual_sweep(model, clean, corrupt, [[model.to_single_token(clean_answer),
                                                   model.to_single_token(corrupt_answer)]])[0]


def _reaches_it_through_importlib(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    import importlib

    module = importlib.import_module("".join(["circuit", "lab.swe", "eps.one_pair"]))
    return module.residual_patching_sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)


def _finds_it_through_gc(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
    import gc

    sweep = next(o for o in gc.get_objects() if type(o).__name__ == "function"
                 and o.__name__ == "residual_patching_sweep" and o.__module__.endswith("sweeps" + ".one_pair"))
    return sweep(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer)


@pytest.mark.parametrize("mode", ["full", "public", "hidden"])
@pytest.mark.parametrize("learner, named", [
    (_imports_the_sweeps, "imports circuitlab.sweeps.one_pair"),
    (_imports_the_package_from_circuitlab, "imports circuitlab.sweeps"),
    (_uses_a_module_level_import, "uses residual_sweep from circuitlab.sweeps.exact"),
    (_reaches_it_through_importlib, "runs circuitlab/sweeps/one_pair.py:residual_patching_sweep"),
    (_finds_it_through_gc, "runs circuitlab/sweeps/one_pair.py:residual_patching_sweep"),
], ids=["import", "from-circuitlab", "module-level", "importlib", "gc"])
def test_using_the_exact_sweeps_scores_zero(learner, named, mode):
    """circuitlab.sweeps is answer code inside the runtime package: found by the bytecode
    check (imports, globals) before a call, by the trace (importlib, gc) during one."""
    grader = fresh_grader([grading_model("gelu-2l")])
    result = grader.grade(EXERCISES["residual_patching_sweep"], learner, mode)
    assert not result.passed and result.score == 0.0
    assert f"Scored zero: your function reads the course's own code ({named})" in result.feedback, result.feedback
    assert "must not use solutions/, graders/ or circuitlab.sweeps" in result.feedback


def test_the_rest_of_circuitlab_stays_the_learners():
    """Only circuitlab.sweeps is answer code: the runtime modules a learner is meant to use
    (and a package whose name merely starts the same way) are not."""
    course = fresh_grader().course
    assert course.is_course_module("circuitlab.sweeps") and course.is_course_module("circuitlab.sweeps.exact")
    assert course.is_course_module("circuitlab.sweeps.one_pair:residual_patching_sweep")
    assert not course.is_course_module("circuitlab") and not course.is_course_module("circuitlab.sweepstakes")
    assert not course.is_course_module("circuitlab.plotting")
    assert course.is_course_file(circuitlab.sweeps.exact.__file__)
    assert not course.is_course_file(circuitlab.plotting.__file__) and not course.is_course_file(circuitlab.__file__)

    def uses_the_runtime(model, clean_prompt, corrupt_prompt, clean_answer, corrupt_answer):
        from circuitlab import prompts
        from circuitlab.plotting import residual_labels

        return residual_labels(model.cfg.n_layers), prompts.CORRUPTIONS, circuitlab.load_model

    assert course.references(uses_the_runtime) == []


def test_an_exercise_found_through_gc_scores_zero():
    def logit_diff(logits, correct_token, wrong_token):
        import gc

        found = next(o for o in gc.get_objects() if type(o).__name__ == "Exercise" and o.name == "logit_diff")
        return found.reference_fn()(logits, correct_token, wrong_token)

    result = graders.grade("logit_diff", logit_diff)
    assert not result.passed and result.score == 0.0
    assert "Scored zero" in result.feedback and "(runs circuitlab_graders/declare.py:reference_fn)" in result.feedback


def test_detection_holds_through_a_symlinked_checkout(tmp_path):
    """The course imported through symlinks: co_filename is the link's path."""
    site = tmp_path / "site"
    site.mkdir()
    for name, folder in (("circuitlab", "circuitlab"), ("circuitlab_graders", "graders"),
                         ("circuitlab_solutions", "solutions")):
        (site / name).symlink_to(REPO / folder, target_is_directory=True)
    script = f"""
import sys
sys.path.insert(0, {str(site)!r})
import importlib, torch
import circuitlab_graders as graders
assert graders.__file__.startswith({str(site)!r}), graders.__file__
def logit_diff(logits, correct_token, wrong_token):
    module = importlib.import_module("".join(["circuitlab_solu", "tions.ch00_setup"]))
    return module.logit_diff(logits, correct_token, wrong_token)
r = graders.grade("logit_diff", logit_diff)
print("RESULT", r.passed, r.score, "runs circuitlab_solutions/ch00_setup.py:logit_diff" in r.feedback)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT False 0.0 True" in proc.stdout


def test_a_learner_thread_running_the_reference_is_caught():
    def logit_diff(logits, correct_token, wrong_token):
        import threading

        from importlib import import_module

        out = []
        worker = threading.Thread(target=lambda: out.append(
            import_module("".join(["circuitlab_solu", "tions.ch00_setup"])).logit_diff(logits, correct_token,
                                                                                      wrong_token)))
        worker.start()
        worker.join()
        return out[0]

    result = graders.grade("logit_diff", logit_diff)
    assert not result.passed and "runs circuitlab_solutions/ch00_setup.py:logit_diff" in result.feedback


# ------------------------------------------------------------------ hooks the libraries add are not the learner's


def test_hooks_transformers_adds_lazily_are_neither_named_nor_removed():
    """Hugging Face transformers hooks a model for output capture the first time a run asks
    for hidden states, once per model, so on a model nothing has run on an honest call can
    be the one that adds them. Measured when the suite first ran on two workers: an honest
    attribution_patching_resid, checked first on its worker, was told "your function left
    hooks attached to blocks.0._original_component, ..." and the grader removed the hooks,
    breaking that capture for every later run."""
    from circuitlab import load_model
    from circuitlab_graders.models import GradingModel

    model = load_model("gelu-2l", weights="random")  # fresh: no run has hooked it yet
    exercise = EXERCISES["attribution_patching_resid"]
    grader = Grader([GradingModel("gelu-2l", model, "gelu-2l (fresh)", "random")], attempts=Attempts())
    result = grader.grade(exercise, readable_reference(exercise), "public")
    assert result.passed and "Note:" not in result.feedback, result.feedback
    capturing = [hook for module in model.modules() for hook in module._forward_hooks.values()
                 if hook.__module__.startswith("transformers.")]
    assert capturing, "this check no longer makes transformers hook the model; the test needs one that does"


# ------------------------------------------------------------------ hostile, then honest, in every mode


HOSTILE = {
    "weights through .data": ("top_tokens_by_unembed_bias", _zeroes_the_unembedding),
    "cache edited in place": ("patch_residual_stream",
                              lambda activations, hook, pos, corrupt_cache: corrupt_cache[hook.name].mul_(0)),
    "hooks left on": ("patch_residual_stream",
                      lambda activations, hook, pos, corrupt_cache: hook.add_hook(lambda a, hook: a * 0) or activations),
    "training mode": ("next_token_prediction", lambda model, prompt: model.train() and " x"),
}


@pytest.mark.parametrize("mode", ["full", "public"])
@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_then_honest(what, mode):
    name, hostile = HOSTILE[what]
    exercise = EXERCISES[name]
    grader = fresh_grader()
    before = [(gm.model.training, float(sum(p.double().sum() for p in gm.model.parameters()))) for gm in grader.models]
    grader.grade(exercise, hostile, mode)
    honest = grader.grade(exercise, readable_reference(exercise), mode)
    assert honest.passed and honest.score == 1.0, honest.feedback
    assert "Note:" not in honest.feedback
    after = [(gm.model.training, float(sum(p.double().sum() for p in gm.model.parameters()))) for gm in grader.models]
    assert after == before


# ------------------------------------------------------------------ honest answers on many seeds


# ------------------------------------------------------------------ bug 6: the chapter's plain loop is not stopped


@pytest.fixture(scope="module")
def loop_grader() -> Grader:
    return fresh_grader()


@pytest.mark.parametrize("mode", ["full", "public"])
@pytest.mark.parametrize("name", ["residual_patching_sweep", "head_patching_sweep", "head_by_position_sweep"])
def test_the_tutorials_plain_loop_passes_every_sweep_check(loop_grader, name, mode):
    """Measured: the tutorial's head x position loop (one run_with_hooks per cell), right on
    all 272 cells, was stopped at 30 s on gpt2-small and scored 0.67. A sweep's time limit
    now covers the one-pass-per-cell loop on each case, on every model."""
    learner = getattr(tutorial_loops, name)
    result = loop_grader.grade(EXERCISES[name], learner, mode)
    assert result.passed and result.score == 1.0, result.feedback
    assert "did not finish" not in result.feedback


def _seed_pairs(n: int, salt: str) -> list[list[int]]:
    rng = random.Random(salt)
    return [[rng.randrange(1, 2**31), rng.randrange(1, 2**31)] for _ in range(n)]


def _honest_on_seeds(name: str, n_pairs: int) -> None:
    exercise = EXERCISES[name]
    fn = readable_reference(exercise)
    grader = fresh_grader()
    for seeds in _seed_pairs(n_pairs, name):
        result = grader.grade(exercise, fn, "hidden", seeds)
        assert result.passed, (seeds, result.feedback)
        grader._expected.clear()  # keep memory flat: every pair draws new cases anyway


CHEAP = ["logit_diff", "previous_token_score", "duplicate_token_score", "induction_score", "patch_head_output",
         "patch_residual_stream", "attention_score", "attention_pattern_row", "head_z", "top_tokens_by_unembed_bias",
         "composition_score", "direct_logit_attribution"]


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_honest_copy_passes_on_fresh_seed_pairs(name):
    """A few pairs per exercise in every run; the slow test below runs 50."""
    _honest_on_seeds(name, 2 if name in CHEAP else 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_honest_copy_passes_on_50_seed_pairs(name):
    _honest_on_seeds(name, 50)
