"""Every number chapter 5 states about circuitlab-2l, measured here.

The tutorial prompt's numbers are the ones the chapter's cells print. The held-out
claims use twelve prompt pairs built only from what circuitlab-2l never saw in training
(held-out name pairings in held-out intro and query templates; see
circuitlab/data/circuitlab-2l.md), each with the three corruptions. Exact sweeps come
from circuitlab.sweeps (equal to transformer_lens.patching, tests/test_exact_sweeps.py).
"""

from __future__ import annotations

import time

import pytest
import torch
from transformer_lens import patching

from circuitlab import load_model
from circuitlab.estimate_plots import correlation
from circuitlab.prompts import CLEAN_PROMPT, CORRUPTIONS, PatchingCase
from circuitlab.sweeps import one_pair as fast
from circuitlab_solutions import ch05_attribution_patching as ref
from training import corpus

SWEEPS = {  # name: (exact, estimate)
    "resid": (fast.residual_patching_sweep, ref.attribution_patching_resid),
    "heads": (fast.head_patching_sweep, ref.attribution_patching_heads),
    "head_by_position": (fast.head_by_position_sweep, ref.attribution_patching_head_by_position),
}
SURNAME_POS, FINAL = 5, 11  # in the tutorial prompt


@pytest.fixture(scope="module")
def model():
    return load_model("circuitlab-2l")


def clean_diff(model, case: PatchingCase) -> float:
    final = model(case.clean_prompt)[0, -1]
    return (final[model.to_single_token(case.clean_answer)] - final[model.to_single_token(case.corrupt_answer)]).item()


def changes(model, case: PatchingCase) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(exact, estimate) for each sweep, as changes from the clean logit difference."""
    base = clean_diff(model, case)
    return {name: (exact(model, **case.as_args()) - base, estimate(model, **case.as_args()) - base)
            for name, (exact, estimate) in SWEEPS.items()}


@pytest.fixture(scope="module")
def tutorial(model):
    return {key: changes(model, case) for key, case in CORRUPTIONS.items()}


def heldout_cases() -> list[dict[str, PatchingCase]]:
    """Twelve held-out pairings, one person each, in held-out templates: "Her friend was
    Emma Wilson. At lunch time Emma" -> " Wilson", with its three corruptions (the other
    name comes from the next held-out pairing)."""
    pairs = corpus.HELDOUT_PAIRS[4:]
    out = []
    for i, (first, last) in enumerate(pairs):
        other_first, other_last = pairs[(i + 1) % len(pairs)]
        intro = corpus.HELDOUT_INTROS[i % len(corpus.HELDOUT_INTROS)]
        query = corpus.query_prefix(corpus.HELDOUT_QUERIES[(i // 3) % len(corpus.HELDOUT_QUERIES)])

        def prompt(f, s, again):
            return f"{intro.format(F=f, S=s)} {query.format(F=again)}"

        answers = (f" {last}", f" {other_last}")
        clean = prompt(first, last, first)
        out.append({
            "surname": PatchingCase("surname", clean, prompt(first, other_last, first), *answers),
            "first_name": PatchingCase("first_name", clean, prompt(other_first, last, first), *answers),
            "second_name": PatchingCase("second_name", clean, prompt(first, last, other_first), *answers),
        })
    return out


@pytest.fixture(scope="module")
def heldout(model):
    return [{key: (case, changes(model, case)) for key, case in cases.items()} for cases in heldout_cases()]


def test_heldout_prompts_are_held_out_and_predicted(model):
    cases = heldout_cases()
    assert len(cases) == 12
    for group in cases:
        clean = group["surname"]
        first, last = clean.clean_prompt.split()[-1], clean.clean_answer.strip()
        assert (first, last) in corpus.HELDOUT_PAIRS[4:] and f" {first} {last}" in clean.clean_prompt
        for case in group.values():
            assert model.to_tokens(case.clean_prompt).shape == model.to_tokens(case.corrupt_prompt).shape
        assert clean_diff(model, clean) > 0  # the model prefers the right surname on every one


# ---------------------------------------------------------------- the tutorial prompt


def test_cell_counts_in_the_introduction(model, gpt2_twin):
    """"36 runs for circuitlab-2l's residual stream on the tutorial prompt, 96 for its heads
    by position, 1,728 for gpt2-small's heads by position" (and 14,400 on 100 tokens)."""
    n_pos = model.to_tokens(CLEAN_PROMPT).shape[1]
    assert n_pos == gpt2_twin.to_tokens(CLEAN_PROMPT).shape[1] == 12
    assert (model.cfg.n_layers + 1) * n_pos == 36
    assert model.cfg.n_layers * model.cfg.n_heads * n_pos == 96
    assert gpt2_twin.cfg.n_layers * gpt2_twin.cfg.n_heads * n_pos == 1728
    assert gpt2_twin.cfg.n_layers * gpt2_twin.cfg.n_heads * 100 == 14400


def test_correlations_on_the_tutorial_prompt(tutorial):
    """"above 0.99 for the other surname, 0.94 to 0.96 for the other first first-name and
    0.90 to 0.92 for the other second first-name" (each of the three sweeps)."""
    r = {key: [correlation(*tutorial[key][name]) for name in SWEEPS] for key in CORRUPTIONS}
    assert min(r["surname"]) > 0.99
    assert all(0.94 <= round(x, 2) <= 0.96 for x in r["first_name"]), r
    assert all(0.90 <= round(x, 2) <= 0.92 for x in r["second_name"]), r


def test_largest_cells_are_the_circuits(model, tutorial):
    n_heads = model.cfg.n_heads
    induction, previous = model.course_heads["induction"], model.course_heads["previous-token"]
    assert (induction, previous) == ((1, 1), (0, 0))

    def argmax(t):
        return tuple(int(i) for i in torch.unravel_index(t.abs().argmax(), t.shape))

    cell = {"surname": (induction[0] * n_heads + induction[1], FINAL),
            "first_name": (previous[0] * n_heads + previous[1], SURNAME_POS),
            "second_name": (induction[0] * n_heads + induction[1], FINAL)}
    stated = {"surname": (-18.5, -11.1), "first_name": (-11.9, -3.4), "second_name": (-7.5, -1.5)}
    for key, (exact, estimate) in stated.items():
        got_exact, got_estimate = tutorial[key]["head_by_position"]
        assert argmax(got_exact) == cell[key]
        if key != "second_name":  # the text names the estimate's largest cell for these two
            assert argmax(got_estimate) == cell[key]
        assert got_exact[cell[key]].item() == pytest.approx(exact, abs=0.05)
        assert got_estimate[cell[key]].item() == pytest.approx(estimate, abs=0.05)


def test_estimate_has_the_right_sign_and_is_too_small(tutorial):
    """The points that matter lie between the diagonal and zero, and the worst cell is
    the largest effect itself."""
    for key in CORRUPTIONS:
        for name in SWEEPS:
            exact, estimate = tutorial[key][name]
            big = exact.abs() > 1
            assert big.any()
            assert (torch.sign(estimate[big]) == torch.sign(exact[big])).all(), (key, name)
            assert (estimate[big].abs() < exact[big].abs()).all(), (key, name)
            worst = (estimate - exact).abs().argmax()
            assert exact.flatten()[worst].abs() >= 0.99 * exact.abs().max(), (key, name)


def test_layer_0_at_the_changed_token(model, tutorial):
    stated = {"surname": (5, 1.12, -25.6, -14.8, 58), "first_name": (4, 0.92, -13.6, -2.2, 16),
              "second_name": (11, 0.90, -13.7, -1.0, 7)}
    for key, (pos, size, exact, estimate, percent) in stated.items():
        case = CORRUPTIONS[key]
        changed = (model.to_tokens(case.clean_prompt) != model.to_tokens(case.corrupt_prompt))[0].nonzero().flatten()
        assert changed.tolist() == [pos]
        _, clean = model.run_with_cache(case.clean_prompt)
        _, corrupt = model.run_with_cache(case.corrupt_prompt)
        a, b = clean["blocks.0.hook_resid_pre"][0, pos], corrupt["blocks.0.hook_resid_pre"][0, pos]
        assert ((b - a).norm() / a.norm()).item() == pytest.approx(size, abs=0.005)
        got_exact, got_estimate = (t[0, pos].item() for t in tutorial[key]["resid"])
        assert got_exact == pytest.approx(exact, abs=0.05)
        assert got_estimate == pytest.approx(estimate, abs=0.05)
        assert round(100 * got_estimate / got_exact) == percent


def test_saturated_attention(model):
    """Head 1.1 gives 0.98 of its attention to " Hart", slope 0.017; patching head 0.0 at
    the surname drops it to 0.19."""
    case = CORRUPTIONS["first_name"]
    _, clean = model.run_with_cache(case.clean_prompt)
    _, corrupt = model.run_with_cache(case.corrupt_prompt)
    seen = {}

    def patch(z, hook):
        z = z.clone()
        z[:, SURNAME_POS, 0] = corrupt["blocks.0.attn.hook_z"][:, SURNAME_POS, 0]
        return z

    model.run_with_hooks(case.clean_prompt, fwd_hooks=[
        ("blocks.0.attn.hook_z", patch),
        ("blocks.1.attn.hook_pattern", lambda p, hook: seen.setdefault("p", p.clone()))])
    p = clean["blocks.1.attn.hook_pattern"][0, 1, -1, SURNAME_POS].item()
    assert round(p, 2) == 0.98 and round(p * (1 - p), 3) == 0.017
    assert round(seen["p"][0, 1, -1, SURNAME_POS].item(), 2) == 0.19


def test_layernorm_scale_held_fixed(model, tutorial):
    def hold(scale, hook):
        return scale.detach()

    stated_last = {"surname": (-25.6, -14.0, -23.9), "first_name": (-13.6, -3.1, -13.5),
                   "second_name": (-13.7, -2.6, -13.6)}
    stated_head = {"surname": ((5, FINAL), -16.9), "first_name": ((0, SURNAME_POS), -6.1),
                   "second_name": ((5, FINAL), -8.8)}
    for key, case in CORRUPTIONS.items():
        base = clean_diff(model, case)
        with model.hooks(fwd_hooks=[("ln_final.hook_scale", hold)]):
            resid = ref.attribution_patching_resid(model, **case.as_args()) - base
            by_pos = ref.attribution_patching_head_by_position(model, **case.as_args()) - base
        exact, estimate = tutorial[key]["resid"]
        for got, want in zip((exact[-1, -1], estimate[-1, -1], resid[-1, -1]), stated_last[key]):
            assert got.item() == pytest.approx(want, abs=0.05), key
        at, want = stated_head[key]
        assert by_pos[at].item() == pytest.approx(want, abs=0.05), key
        exact_head = tutorial[key]["head_by_position"][0][at].item()
        # "it overshoots for 1.1 under the second first-name"; below the exact value elsewhere.
        assert (abs(by_pos[at].item()) > abs(exact_head)) == (key == "second_name"), key
    assert not model.hook_dict["ln_final.hook_scale"].fwd_hooks  # model.hooks took the hook off again


def test_the_estimate_is_cheaper_than_the_exact_head_by_position_sweep(model):
    case = CORRUPTIONS["surname"]
    tokens = model.to_tokens(case.clean_prompt)
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    _, corrupt = model.run_with_cache(case.corrupt_prompt)

    def best(fn, repeats=3):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    exact = best(lambda: patching.get_act_patch_attn_head_out_by_pos(
        model, tokens, corrupt, lambda logits: logits[0, -1, good] - logits[0, -1, bad]), repeats=1)
    estimate = best(lambda: ref.attribution_patching_head_by_position(model, **case.as_args()))
    assert exact > 5 * estimate, (exact, estimate)  # 96 forward passes against about four


# ---------------------------------------------------------------- the held-out prompts


def surname_position(model, case: PatchingCase) -> int:
    tokens = model.to_tokens(case.clean_prompt)[0].tolist()
    return tokens.index(model.to_single_token(case.clean_answer))


def test_heldout_surname(model, heldout):
    """"for the other surname the heads-by-position correlation was above 0.99 on all
    twelve and the largest estimated head was 1.1 every time"."""
    n_heads = model.cfg.n_heads
    for group in heldout:
        _, result = group["surname"]
        assert correlation(*result["head_by_position"]) > 0.99
        assert int(result["heads"][1].abs().argmax()) == 1 * n_heads + 1


def test_heldout_first_name(model, heldout):
    """"the correlation ranged from 0.08 to 0.99, head 0.0 was among the three largest
    estimated heads on 10 of 12, and on 3 of 12 the estimate gave head 0.0 at the surname
    less than 0.5 where the exact patch moves the logit difference by more than 4"."""
    r, top_three, missed = [], 0, 0
    for group in heldout:
        case, result = group["first_name"]
        r.append(correlation(*result["head_by_position"]))
        top_three += 0 in result["heads"][1].abs().flatten().argsort(descending=True)[:3].tolist()
        exact, estimate = (t[0, surname_position(model, case)].item() for t in result["head_by_position"])
        missed += abs(estimate) < 0.5 and abs(exact) > 4
    assert (round(min(r), 2), round(max(r), 2)) == (0.08, 0.99)
    assert top_three == 10
    assert missed == 3


def test_heldout_worst_cell_is_a_largest_effect(heldout):
    """"On all 36 prompt pairs the cell where the two disagree most was one of the exact
    sweep's two largest"."""
    pairs = [result["head_by_position"] for group in heldout for _, result in group.values()]
    assert len(pairs) == 36
    for exact, estimate in pairs:
        worst = int((estimate - exact).abs().argmax())
        assert worst in exact.abs().flatten().argsort(descending=True)[:2].tolist()


def test_heldout_layer_0_sign_can_be_wrong(heldout):
    """"On some held-out prompts it gets the sign wrong for the second first-name" (row 0
    at the changed, final position)."""
    wrong = 0
    for group in heldout:
        _, result = group["second_name"]
        exact, estimate = (t[0, -1].item() for t in result["resid"])
        wrong += exact * estimate < 0
    assert wrong >= 1
