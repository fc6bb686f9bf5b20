"""The patching explorer's numbers and safety, without a browser: compute.py's functions
on the tutorial's example and on both random-weight twins, every bad input's message,
a request that fails halfway, and the Hugging Face Space layout."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from transformer_lens import patching

from circuitlab.explore import compute
from circuitlab.explore.compute import ExplorerError, ModelStore
from circuitlab.prompts import CORRUPTIONS
from tests.explorer_server import free_port

SURNAME = CORRUPTIONS["surname"]


@pytest.fixture(scope="module")
def store():
    return ModelStore()


@pytest.fixture(scope="module")
def surname(store):
    with compute.pristine(store, "circuitlab-2l") as model:
        inputs = compute.read_inputs(model, **SURNAME.as_args())
        return model, inputs, compute.exact_sweeps(model, inputs, "noising")


def _tl_reference(model, base, source, good, bad):
    """transformer_lens.patching's three sweeps, one forward pass per cell (the reference)."""
    _, cache = model.run_with_cache(source)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    return {"resid": patching.get_act_patch_resid_pre(model, base, cache, metric),
            "heads": patching.get_act_patch_attn_head_out_all_pos(model, base, cache, metric),
            "head_pos": patching.get_act_patch_attn_head_out_by_pos(model, base, cache, metric).transpose(1, 2)}


def test_exact_sweeps_of_the_surname_example_equal_transformer_lens(surname):
    model, inputs, result = surname
    good, bad = inputs.answers[0].tolist()
    with torch.no_grad():
        expected = _tl_reference(model, inputs.clean_tokens, inputs.corrupt_tokens, good, bad)
    for kind in compute.KINDS:
        assert result.values[kind].shape == expected[kind].shape
        torch.testing.assert_close(result.values[kind], expected[kind].float().cpu(), atol=1e-4, rtol=0)
    # Position 5 is the only one that differs: patching all of it at layer 0 is the corrupt run.
    clean, corrupt = compute.baselines(model, inputs)
    assert inputs.differing() == [5]
    assert result.values["resid"][0, 5].item() == pytest.approx(corrupt, abs=1e-4)
    assert result.values["resid"][0, 4].item() == pytest.approx(clean, abs=1e-4)


def test_denoising_patches_clean_into_the_corrupt_run(surname):
    model, inputs, _ = surname
    result = compute.exact_sweeps(model, inputs, "denoising")
    clean, corrupt = compute.baselines(model, inputs)
    assert result.values["resid"][0, 5].item() == pytest.approx(clean, abs=1e-4)
    assert result.values["resid"][1, 0].item() == pytest.approx(corrupt, abs=1e-4)


def test_estimate_is_chapter_5s_and_lines_up_with_the_exact_cells(surname):
    model, inputs, exact = surname
    estimate = compute.estimate_sweeps(model, inputs, "noising")
    clean, _ = compute.baselines(model, inputs)
    for kind in compute.KINDS:
        assert estimate.values[kind].shape == exact.values[kind].shape
    # Positions where the prompts agree change nothing, to first order and exactly.
    assert torch.allclose(estimate.values["resid"][:, :5], torch.tensor(clean), atol=1e-4)
    # The per-head estimate is the per-position estimates' changes summed over positions.
    change = (estimate.values["head_pos"] - clean).sum(-1)
    torch.testing.assert_close(estimate.values["heads"] - clean, change, atol=1e-3, rtol=1e-4)


def test_predictions_show_top_tokens_ranks_and_logit_differences(surname):
    model, inputs, _ = surname
    preds = compute.predictions(model, inputs)
    clean, corrupt = compute.baselines(model, inputs)
    assert preds["clean"].logit_diff == pytest.approx(clean, abs=1e-4)
    assert preds["corrupt"].logit_diff == pytest.approx(corrupt, abs=1e-4)
    assert preds["clean"].top[0][0] == " Hart" and preds["clean"].answer_ranks[" Hart"][0] == 0
    assert preds["corrupt"].top[0][0] == " Carroll" and preds["corrupt"].answer_ranks[" Hart"][0] > 0
    assert len(preds["clean"].top) == compute.TOP_K
    assert [row[3] for row in compute.alignment_rows(inputs)].count(True) == 1


def test_scales_and_csv(surname):
    model, inputs, exact = surname
    clean, corrupt = compute.baselines(model, inputs)
    normalised = compute.rescale(exact.values["resid"], "normalised", clean, corrupt)
    assert normalised[0, 4].item() == pytest.approx(1.0, abs=1e-5) and normalised[0, 5].item() == pytest.approx(0, abs=1e-5)
    change = compute.rescale(exact.values["resid"], "change", clean, corrupt)
    assert change[0, 4].item() == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ExplorerError, match="Unknown scale"):
        compute.rescale(exact.values["resid"], "percent", clean, corrupt)
    rows = list(csv.DictReader(io.StringIO(compute.results_csv([exact], inputs.clean_strs, "change", clean, corrupt))))
    cfg = model.cfg
    assert len(rows) == cfg.n_layers * inputs.n_pos + cfg.n_layers * cfg.n_heads * (1 + inputs.n_pos)
    cell = next(r for r in rows if r["sweep"] == "head_pos" and r["layer"] == "1" and r["head"] == "2" and r["position"] == "7")
    assert float(cell["logit_diff"]) == pytest.approx(exact.values["head_pos"][1, 2, 7].item(), abs=1e-5)
    assert float(cell["value"]) == pytest.approx(exact.values["head_pos"][1, 2, 7].item() - clean, abs=1e-5)
    assert cell["token"] == inputs.clean_strs[7]


BAD_INPUTS = [
    (dict(clean_prompt="   "), "The clean prompt is empty"),
    (dict(corrupt_prompt="word " * 200), "the limit is 600 characters"),
    (dict(clean_prompt="Alex " * 70), "the limit is 64 tokens"),
    (dict(corrupt_prompt=SURNAME.corrupt_prompt.replace("Carroll", "Carrollsonberg")),
     "'Carrollsonberg' is 3 tokens (' Carroll' | 'son' | 'berg')"),
    (dict(clean_answer=" Hartzenberg"), "is 3 tokens (' Hart' | 'zen' | 'berg')"),
    (dict(clean_answer="Hart"), None),  # one token without the space: accepted
    (dict(corrupt_answer=" Hart"), "the same token"),
    (dict(corrupt_answer=""), "The corrupt answer is empty"),
]


@pytest.mark.parametrize("change, message", BAD_INPUTS)
def test_bad_input_gets_a_message_that_says_what_to_do(store, change, message):
    with compute.pristine(store, "circuitlab-2l") as model:
        if message is None:
            compute.read_inputs(model, **{**SURNAME.as_args(), **change})
            return
        with pytest.raises(ExplorerError) as raised:
            compute.read_inputs(model, **{**SURNAME.as_args(), **change})
    assert message in str(raised.value)


def test_different_lengths_name_the_first_differing_position_and_suggest_single_tokens(store):
    with compute.pristine(store, "circuitlab-2l") as model, pytest.raises(ExplorerError) as raised:
        compute.read_inputs(model, **{**SURNAME.as_args(), "corrupt_prompt": "Her name was Alex Carrollsonberg."})
    text = str(raised.value)
    assert "clean: 12 tokens, corrupt: 9" in text and "first differ at position 5" in text
    assert "single-token names on this model: Alex, Sarah" in text


def test_missing_weights_say_how_to_get_them(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = ModelStore([compute.ModelChoice("gelu-2l:pretrained", "gelu-2l", "pretrained", "gelu-2l")])
    with pytest.raises(ExplorerError, match="(?s)weights of gelu-2l are not available here.*weights='random'.*pick another model"):
        with compute.pristine(store, "gelu-2l:pretrained"):
            pass


def test_a_request_that_fails_halfway_leaves_the_model_as_it_was(store):
    key = "circuitlab-2l"
    model = store.get(key)
    before_hooks = compute._hook_ids(model)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    grad_mode = torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="halfway"):
        with compute.pristine(store, key) as m:
            m.blocks[0].attn.hook_z.add_hook(lambda act, hook: act * 0)
            m.blocks[1].hook_resid_pre.add_hook(lambda act, hook: act, is_permanent=True)
            with torch.no_grad():
                m.blocks[0].attn.W_Q.mul_(0)  # a weight changed in place
            torch.set_grad_enabled(not grad_mode)
            m.W_E.requires_grad_(True)
            raise RuntimeError("failed halfway")
    assert compute._hook_ids(model) == before_hooks
    assert torch.is_grad_enabled() == grad_mode
    assert key not in store.loaded(), "a model whose weights changed is dropped"
    fresh = store.get(key)
    assert fresh is not model
    for name, p in fresh.named_parameters():
        assert torch.equal(p.detach(), weights[name]), name
    # A failure inside a forward pass, with the course's hooks on, leaves no hook either.
    with pytest.raises(RuntimeError, match="inside"):
        with compute.pristine(store, key) as m:
            def boom(act, hook):
                raise RuntimeError("inside the forward pass")
            m.run_with_hooks(m.to_tokens("Alex Hart"), fwd_hooks=[("blocks.1.hook_resid_pre", boom)])
    assert compute._hook_ids(fresh) == compute._hook_ids(store.get(key))
    assert store.get(key) is fresh, "hooks alone do not cost a reload"


@pytest.mark.parametrize("key", ["gelu-2l:random", "gpt2-small:random"])
def test_every_panel_works_on_the_random_twins(store, key):
    with compute.pristine(store, key) as model:
        case = CORRUPTIONS["surname"] if key.startswith("gelu") else _short(model)
        inputs = compute.read_inputs(model, **case.as_args())
        preds = compute.predictions(model, inputs)
        estimate = compute.estimate_sweeps(model, inputs, "noising")
        exact = compute.exact_sweeps(model, inputs, "noising")
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        assert exact.values["head_pos"].shape == estimate.values["head_pos"].shape == (n_layers, n_heads, inputs.n_pos)
        assert exact.values["resid"][0, inputs.differing()[0]].item() == pytest.approx(preds["corrupt"].logit_diff, abs=1e-3)
        frame = compute.attention_iframe(model, inputs)
        assert frame.startswith("<iframe") and "CircuitsVis" in frame and f"L{n_layers - 1}H{n_heads - 1}" in frame
        scores = compute.head_scores(model, inputs)
        assert len(scores) == n_layers * n_heads and all(0 <= v <= 1 for row in scores for v in row[1:])
        assert compute.expected_seconds(model, inputs) > 0
    labels = {c.key: c.label for c in store.choices.values()}
    assert "RANDOM weights" in labels[key]


def _short(model):
    import random

    from circuitlab.prompts import short_case

    return short_case(model, random.Random(0))


def test_the_space_folder_runs_its_app(tmp_path):
    from circuitlab.explore.space import build_space

    space = build_space(tmp_path / "space")
    assert {"app.py", "README.md", "requirements.txt"} <= {p.name for p in space.iterdir()}
    assert "app_file: app.py" in (space / "README.md").read_text()
    reqs = (space / "requirements.txt").read_text()
    assert "gradio" in reqs and "transformer-lens" in reqs and "nbgrader" not in reqs
    assert not (space / "solutions").exists() and not (space / "graders").exists()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONPATH": ""}
    proc = subprocess.Popen([sys.executable, "-c", "import circuitlab, runpy; print(circuitlab.__file__, flush=True); "
                             "runpy.run_path('app.py', run_name='__main__')"], cwd=space, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == str(space / "circuitlab" / "__init__.py")
        deadline, page = time.monotonic() + 90, None
        while page is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None and "patching explorer" in page
        chapter = urllib.request.urlopen(f"http://127.0.0.1:{port}/chapters/01_residual_patching.ipynb").read()
        assert b'"cells"' in chapter
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cli_has_the_explore_command():
    out = subprocess.run([sys.executable, "-m", "circuitlab", "explore", "-h"], capture_output=True, text=True)
    assert out.returncode == 0 and "--port" in out.stdout
