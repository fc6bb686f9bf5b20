"""Chapter 4's references against TransformerLens's own implementations, on
circuitlab-2l, the HF-architecture random twins and (where TL supports it) a native
bridge like real gelu-2l's:

- composition scores: `utilities.composition_scores` on FactoredMatrix inputs and the
  bridge's `all_composition_scores`;
- direct logit attribution: `ActivationCache.stack_head_results` + `logit_attrs`;
- path patching and the layer-0 value patch: TL's split q/k/v inputs
  (`set_use_split_qkv_input`), which apply TL's own LayerNorm to a per-head input
  stream, and its per-head `hook_result` (`set_use_attn_result`, HF bridges only);
- resample ablation of one head: `transformer_lens.patching`'s head sweep, patching
  the rolled batch into the batch.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformer_lens import patching
from transformer_lens.utilities import composition_scores

from circuitlab import load_model
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS, TEMPLATES, name_batch
from circuitlab_solutions import ch04_confirming_the_circuit as ref
from tests.native_twin import native_gelu_2l


@pytest.fixture(scope="module")
def circuitlab_2l():
    return load_model("circuitlab-2l")


@pytest.fixture(scope="module")
def native():
    return native_gelu_2l()


@pytest.fixture(params=["circuitlab_2l", "gelu_twin", "native"])
def two_layer(request):
    """Every two-layer bridge the course meets: trained HF, random HF, random native."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["circuitlab_2l", "gelu_twin", "gpt2_twin"])
def hf_bridge(request):
    return request.getfixturevalue(request.param)


@contextlib.contextmanager
def split_inputs(model):
    """TL's per-head q/k/v input streams and per-head results, switched on for a block."""
    model.set_use_split_qkv_input(True)
    model.set_use_attn_result(True)
    try:
        yield
    finally:
        model.set_use_split_qkv_input(False)
        model.set_use_attn_result(False)


def _final_diff(model, logits, good, bad) -> float:
    final = logits[0, -1]
    return (final[model.to_single_token(good)] - final[model.to_single_token(bad)]).item()


def test_composition_score_matches_tl_on_factored_matrices(circuitlab_2l):
    ov, qk = circuitlab_2l.OV, circuitlab_2l.QK
    theirs = composition_scores(ov[0], qk[1].T, broadcast_dims=True)  # [sender, receiver]
    ours = ref.composition_score(ov[0].AB[:, None], qk[1].AB.transpose(-2, -1)[None])
    assert ours.shape == theirs.shape == (4, 4)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_layer_scores_match_all_composition_scores(two_layer):
    ov, qk, ov1 = two_layer.OV[0].AB, two_layer.QK[1].AB, two_layer.OV[1].AB
    ours = {"K": ref.k_composition_scores(ov, qk), "Q": ref.q_composition_scores(ov, qk),
            "V": ref.v_composition_scores(ov, ov1)}
    for mode, scores in ours.items():
        theirs = two_layer.all_composition_scores(mode).scores[0, :, 1, :]
        assert torch.allclose(scores, theirs, atol=1e-5), mode
    # The three differ: a transposed receiver is not a detail.
    assert not torch.allclose(ours["K"], ours["Q"], atol=1e-3)


@pytest.mark.parametrize("prompt,good,bad", [(CLEAN_PROMPT, " Hart", " Carroll"), ("Alex Hart Alex", " Hart", " Smith")])
def test_dla_matches_tl_logit_attrs(two_layer, prompt, good, bad):
    _, cache = two_layer.run_with_cache(prompt)
    stack = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=False)  # [layer * head, batch, d_model]
    theirs = cache.logit_attrs(stack, tokens=good, incorrect_tokens=bad, pos_slice=-1)[:, 0]
    ours = ref.direct_logit_attribution(two_layer, cache, good, bad)
    assert torch.allclose(ours.flatten(), theirs, atol=1e-4)


def _path_via_tl(model, case, sender, receiver, which) -> float:
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    with split_inputs(model):
        _, clean = model.run_with_cache(case.clean_prompt)
        _, corrupt = model.run_with_cache(case.corrupt_prompt)
        name = f"blocks.{s_layer}.attn.hook_result"
        change = corrupt[name][:, :, s_head] - clean[name][:, :, s_head]

        def add_change(activations, hook):
            activations[:, :, r_head] = activations[:, :, r_head] + change
            return activations

        logits = model.run_with_hooks(case.clean_prompt, fwd_hooks=[(f"blocks.{r_layer}.hook_{which}_input",
                                                                     add_change)])
    return _final_diff(model, logits, case.clean_answer, case.corrupt_answer)


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_path_patch_matches_tl_split_inputs(hf_bridge, which):
    far = type(CORRUPTIONS["surname"])(
        "everything differs", TEMPLATES[1].format(first="Alex", last="Hart", again="Alex"),
        TEMPLATES[2].format(first="Mary", last="Brown", again="Tom"), " Hart", " Brown")
    last = hf_bridge.cfg.n_layers - 1
    for case, sender, receiver in ((CORRUPTIONS["first_name"], (0, 0), (1, 1)), (far, (0, 2), (last, 3))):
        ours = ref.path_patch_to_head_input(hf_bridge, **case.as_args(), sender=sender, receiver=receiver,
                                            receiver_input=which)
        assert ours == pytest.approx(_path_via_tl(hf_bridge, case, sender, receiver, which), abs=2e-5)


def test_path_patch_runs_on_a_native_bridge(native):
    """Real gelu-2l is native (no hook_result): the reference needs only hook_z and W_O.
    From an identical run it gives the clean logit difference."""
    case = CORRUPTIONS["first_name"]
    clean = _final_diff(native, native(case.clean_prompt), case.clean_answer, case.corrupt_answer)
    same = ref.path_patch_to_head_input(native, case.clean_prompt, case.clean_prompt, case.clean_answer,
                                        case.corrupt_answer, sender=(0, 1), receiver=(1, 6), receiver_input="k")
    assert same == pytest.approx(clean, abs=1e-4)


@pytest.mark.parametrize("hook", ["hook_pos_embed", "hook_embed"])
def test_value_patch_matches_tl_split_inputs(hf_bridge, hook):
    _, cache = hf_bridge.run_with_cache(CLEAN_PROMPT)
    embedding = cache[hook]
    stream = cache["blocks.0.hook_resid_pre"] - embedding + embedding.mean(dim=1, keepdim=True)

    def replace_stream(activations, hook):
        activations[:] = stream[:, :, None]  # every head's value input: [batch, pos, head, d_model]
        return activations

    with split_inputs(hf_bridge):
        logits = hf_bridge.run_with_hooks(CLEAN_PROMPT, fwd_hooks=[("blocks.0.hook_v_input", replace_stream)])
    ours = ref.positional_embedding_patch(hf_bridge, CLEAN_PROMPT, " Hart", " Carroll", hook)
    assert ours == pytest.approx(_final_diff(hf_bridge, logits, " Hart", " Carroll"), abs=2e-5)


def test_resample_ablation_matches_tl_head_patching(two_layer):
    batch = name_batch()
    tokens = two_layer.to_tokens(list(batch.prompts))
    _, rolled_cache = two_layer.run_with_cache(tokens.roll(-1, dims=0))  # prompt i gets prompt i + 1's z
    good = torch.tensor([two_layer.to_single_token(a) for a in batch.answers])
    bad = torch.tensor([two_layer.to_single_token(a) for a in batch.wrong_answers])
    rows = torch.arange(len(batch.prompts))

    def mean_logit_diff(logits):
        final = logits[:, -1].cpu()
        return (final[rows, good] - final[rows, bad]).mean()

    # TL calls its arguments "corrupted tokens" and "clean cache": it runs the first with
    # activations from the second, which here is the batch with each head resampled.
    theirs = patching.get_act_patch_attn_head_out_all_pos(two_layer, tokens, rolled_cache, mean_logit_diff)
    n_layers, n_heads = two_layer.cfg.n_layers, two_layer.cfg.n_heads
    ours = torch.tensor([[ref.ablate_heads(two_layer, **batch.as_args(), heads=[(layer, head)], method="resample")
                          for head in range(n_heads)] for layer in range(n_layers)])
    assert torch.allclose(ours, theirs.cpu(), atol=1e-4)
