"""Chapter 6's dataset sweeps equal transformer_lens.patching's on batches.

transformer_lens.patching runs one forward pass per cell on the whole batch and hands
its logits to a metric; the metric here is the one chapter 6 reports (each prompt's
normalised logit difference, averaged), so both sides must give the same [n_layers, ...]
tensor. Checked in both directions, on circuitlab-2l (trained) and on gelu-2l's
random-weight twin (an HF-architecture bridge of another shape).
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching

from circuitlab import load_model
from circuitlab_solutions import ch06_dataset_patching as ref
from circuitlab_solutions import ch06_exact_sweeps as exact

TEMPLATE = "Her friend was {first} {last}. At lunch time {again}"
PEOPLE = [("Emma", "Wilson"), ("John", "Taylor"), ("Mary", "Clark"), ("David", "Walker"), ("Anna", "Hall")]
TL_SWEEPS = {
    "q": patching.get_act_patch_attn_head_q_all_pos,
    "k": patching.get_act_patch_attn_head_k_all_pos,
    "v": patching.get_act_patch_attn_head_v_all_pos,
    "pattern": patching.get_act_patch_attn_head_pattern_all_pos,
}


def fillers(kind: str) -> list[dict]:
    out = []
    for i, (first, last) in enumerate(PEOPLE):
        other_first, other_last = PEOPLE[(i + 1) % len(PEOPLE)]
        corrupt = {"surname": {"first": first, "last": other_last, "again": first},
                   "first_name": {"first": other_first, "last": last, "again": first}}[kind]
        out.append({"clean": {"first": first, "last": last, "again": first}, "corrupt": corrupt,
                    "answers": [f" {last}", f" {other_last}"]})
    return out


MODELS = ["circuitlab-2l", "gelu-2l twin"]


@pytest.fixture(scope="module")
def datasets(gelu_twin):
    models = {"circuitlab-2l": load_model("circuitlab-2l"), "gelu-2l twin": gelu_twin}
    return {name: (model, ref.aligned_prompt_pairs(model, [TEMPLATE], fillers("surname")))
            for name, model in models.items()}


@pytest.fixture(params=MODELS)
def dataset(request, datasets):
    return datasets[request.param]


def tl_metric(model, data, direction):
    """The chapter's metric as a function of the patched run's logits, for TL."""
    clean_diff = ref.batch_logit_diff(model(data["clean"]), data["answers"], per_prompt=True)
    corrupt_diff = ref.batch_logit_diff(model(data["corrupt"]), data["answers"], per_prompt=True)

    def metric(logits):
        patched = ref.batch_logit_diff(logits, data["answers"], per_prompt=True)
        return ref.normalised_patching_metric(patched, clean_diff, corrupt_diff).mean()

    return metric


def tl_inputs(model, data, direction):
    base, source = (data["clean"], data["corrupt"]) if direction == "noising" else (data["corrupt"], data["clean"])
    _, source_cache = model.run_with_cache(source)
    return base, source_cache, tl_metric(model, data, direction)


@pytest.mark.parametrize("direction", ["noising", "denoising"])
def test_residual_sweep_matches_tl(dataset, direction):
    model, data = dataset
    assert data["clean"].shape[0] == len(PEOPLE) and not data["dropped"]
    theirs = patching.get_act_patch_resid_pre(model, *tl_inputs(model, data, direction))
    for sweep in (ref.dataset_patching_sweep, exact.exact_dataset_patching_sweep):  # readable, and the engine's
        ours = sweep(model, data["clean"], data["corrupt"], data["answers"], direction)
        assert ours.shape == theirs.shape == (model.cfg.n_layers, data["clean"].shape[1])
        torch.testing.assert_close(ours, theirs.to(ours.dtype), atol=1e-4, rtol=1e-4)
    assert theirs.abs().max() > 0.1  # not a trivially zero comparison


# Denoising only exchanges the two batches: checked on one model, which keeps the file quick.
HEAD_INPUT_RUNS = [(name, component, direction) for name in MODELS for component in TL_SWEEPS
                   for direction in (["noising", "denoising"] if name == "circuitlab-2l" else ["noising"])]


@pytest.mark.parametrize("name,component,direction", HEAD_INPUT_RUNS)
def test_head_input_sweeps_match_tl(datasets, name, component, direction):
    model, data = datasets[name]
    ours = ref.head_input_patching(model, data["clean"], data["corrupt"], data["answers"], component, direction)
    theirs = TL_SWEEPS[component](model, *tl_inputs(model, data, direction))
    assert ours.shape == theirs.shape == (model.cfg.n_layers, model.cfg.n_heads)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), atol=1e-4, rtol=1e-4)


def test_per_prompt_view_averages_to_the_head_output_sweep(dataset):
    """The per-prompt view's mean over prompts (readable and exact) is TL's head-output sweep
    (hook_z, all positions)."""
    model, data = dataset
    heads = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    theirs = patching.get_act_patch_attn_head_out_all_pos(model, *tl_inputs(model, data, "noising"))
    for view in (ref.per_prompt_head_patching, exact.exact_per_prompt_head_patching):
        ours = view(model, data["clean"], data["corrupt"], data["answers"], heads)
        assert ours.shape == (data["clean"].shape[0], len(heads))
        torch.testing.assert_close(ours.mean(0), theirs.flatten().to(ours.dtype), atol=1e-4, rtol=1e-4)
