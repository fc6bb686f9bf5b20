"""Benchmark: the course's fast patching sweeps against transformer_lens.patching, and
how long the graders' checks take.

    make bench                      # or: python benchmarks/patching_speed.py [--threads N] [--tl-cells N]

For each sweep (residual stream, heads, heads × positions) on gelu-2l- and
gpt2-small-shaped random-weight models it times our sweep and transformer_lens.patching
on the same prompt pair in the same run, checks they agree, and converts both times into
forward passes of that model. TL runs one forward per cell; when a sweep has more cells
than --tl-cells, TL runs a random sample of that many cells and its time is scaled to
all cells (marked "~"). Then it times every exercise's check: the first check (which
computes and caches the reference answers), repeated checks (which only run the
learner's function; an honest copy of the readable reference stands in for the
learner) and the public checks of the student release (--checks NAME ... for some only).

The attribution section (chapter 5) times, for gpt2-small's shape on the tutorial prompt
and on a prompt pair of about 100 tokens, each exact sweep (ours and TL's) against its
attribution estimate (one corrupt forward, one clean forward and backward), and prints
exact / estimate. Exact sweeps with more cells than --sample-cells (ours) or --tl-cells
(TL; --tl-cells-long on the long prompt) run a random sample, scaled to all cells ("~").

The dataset section (chapter 6) times, on a batch of --dataset-prompts prompt pairs of the
chapter's name task (gelu-2l's shape), `dataset_patching_sweep` (the exact engine the
graders use, and the readable reference) against transformer_lens.patching's
get_act_patch_resid_pre, and `head_input_patching` against get_act_patch_attn_head_{q,k,v,
pattern}_all_pos, with the chapter's metric (each prompt's normalised logit difference,
averaged) on both sides. Only that section: --skip-sweeps --skip-attribution --skip-graders.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    parser.add_argument("--tl-cells", type=int, default=400, help="most cells TL runs per sweep before sampling")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each of our sweeps (median)")
    parser.add_argument("--skip-graders", action="store_true", help="only the sweeps")
    parser.add_argument("--skip-sweeps", action="store_true", help="only the checks")
    parser.add_argument("--checks", nargs="+", metavar="EXERCISE", help="time only these exercises' checks")
    parser.add_argument("--skip-attribution", action="store_true", help="no attribution-vs-exact section")
    parser.add_argument("--long-tokens", type=int, default=100, help="length of the long prompt pair (at least)")
    parser.add_argument("--sample-cells", type=int, default=300, help="most cells our exact sweep runs per sweep")
    parser.add_argument("--tl-cells-long", type=int, default=30, help="most cells TL runs per sweep, long prompt")
    parser.add_argument("--skip-dataset", action="store_true", help="no chapter 6 dataset section")
    parser.add_argument("--dataset-prompts", type=int, default=32, help="prompt pairs in chapter 6's batch")
    return parser.parse_args()


ARGS = _parse()
# Before torch is imported, so both sides run on the same number of threads.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["TQDM_DISABLE"] = "1"  # TL's own progress bars
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformer_lens import patching  # noqa: E402

from circuitlab_solutions import ch05_attribution_patching as attribution  # noqa: E402
from circuitlab.loading import load_model  # noqa: E402
from circuitlab.plotting import residual_labels  # noqa: E402
from circuitlab.sweeps import one_pair as fast  # noqa: E402
from circuitlab.prompts import CORRUPTIONS, PatchingCase  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_grad_enabled(False)


def _seconds(fn, repeats: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SWEEPS = {
    # name: (our sweep, TL activation, TL patch setter, TL index axes, TL result -> our layout)
    "residual": (fast.residual_patching_sweep, "resid_pre", patching.layer_pos_patch_setter, ("layer", "pos"),
                 lambda ours: ours[:-1]),  # our extra row (the final stream) is extra work for us, not TL
    "head": (fast.head_patching_sweep, "z", patching.layer_head_vector_patch_setter, ("layer", "head"),
             lambda ours: ours),
    "head × position": (fast.head_by_position_sweep, "z", patching.layer_pos_head_vector_patch_setter,
                        ("layer", "pos", "head"), None),
}


def _tl_cells(model, n_pos: int, axes) -> pd.DataFrame:
    sizes = {"layer": model.cfg.n_layers, "pos": n_pos, "head": model.cfg.n_heads}
    return pd.MultiIndex.from_product([range(sizes[a]) for a in axes], names=list(axes)).to_frame(index=False)


def bench_sweeps(name: str) -> list[dict]:
    model = load_model(name, weights="random", device="cpu")
    case = CORRUPTIONS["surname"]  # the tutorial's main corruption
    tokens = model.to_tokens(case.clean_prompt)
    good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
    _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    forward, _ = _seconds(lambda: model(tokens), repeats=5)
    rows = []
    for sweep, (ours_fn, act, setter, axes, as_tl) in SWEEPS.items():
        cells = _tl_cells(model, tokens.shape[1], axes)
        sampled = len(cells) > ARGS.tl_cells
        if sampled:
            cells = cells.sample(ARGS.tl_cells, random_state=0).reset_index(drop=True)
        ours_s, ours = _seconds(lambda: ours_fn(model, **case.as_args()), repeats=ARGS.repeats)
        tl_s, tl = _seconds(lambda: patching.generic_activation_patch(
            model, tokens, corrupt_cache, metric, setter, act, index_df=cells))
        tl_s *= len(_tl_cells(model, tokens.shape[1], axes)) / len(cells)
        # Compare cell by cell: our sweep indexed at each TL cell.
        ours_at = _ours_at_cells(sweep, ours, cells, model.cfg.n_heads)
        rows.append(dict(
            model=f"{name} shape", sweep=sweep, cells=len(_tl_cells(model, tokens.shape[1], axes)),
            ours_s=ours_s, tl_s=tl_s, tl_sampled=sampled, ratio=tl_s / ours_s,
            ours_fwd=ours_s / forward, tl_fwd=tl_s / forward, forward_ms=forward * 1e3,
            max_diff=(ours_at - tl.to(ours_at.dtype)).abs().max().item(), n_pos=tokens.shape[1],
        ))
        print(_sweep_line(rows[-1]), flush=True)
    return rows


def _ours_at_cells(sweep: str, ours: torch.Tensor, cells: pd.DataFrame, n_heads: int) -> torch.Tensor:
    if sweep == "residual":
        return torch.stack([ours[r.layer, r.pos] for r in cells.itertuples()])
    if sweep == "head":
        return torch.stack([ours[r.layer, r.head] for r in cells.itertuples()])
    return torch.stack([ours[r.layer * n_heads + r.head, r.pos] for r in cells.itertuples()])


def _sweep_line(r: dict) -> str:
    tilde = "~" if r["tl_sampled"] else " "
    return (f"{r['model']:17s} {r['sweep']:16s} {r['cells']:5d}  ours {r['ours_s']:7.2f} s "
            f"({r['ours_fwd']:6.1f} fwd)  TL {tilde}{r['tl_s']:7.1f} s ({r['tl_fwd']:6.0f} fwd)  "
            f"{r['ratio']:5.1f}× faster  max |diff| {r['max_diff']:.1e}")


# -- chapter 5: attribution estimates against exact sweeps -----------------------------

ESTIMATES = {  # sweep: (attribution estimate, its TL activation, setter, index axes)
    "residual": (attribution.attribution_patching_resid, "resid_pre", patching.layer_pos_patch_setter,
                 ("layer", "pos")),
    "head": (attribution.attribution_patching_heads, "z", patching.layer_head_vector_patch_setter,
             ("layer", "head")),
    "head × position": (attribution.attribution_patching_head_by_position, "z",
                        patching.layer_pos_head_vector_patch_setter, ("layer", "pos", "head")),
}
FILLER = ["It was a sunny day.", "The train was late again.", "Everyone was happy.",
          "We talked for a long time.", "Then it started to rain."]


def long_case(model, n_tokens: int) -> PatchingCase:
    """The tutorial's surname corruption with filler sentences between the introduction
    and the query, until the prompt has at least `n_tokens` tokens."""
    middle: list[str] = []
    while True:
        text = " ".join(middle)
        case = PatchingCase(f"surname, {n_tokens}+ tokens", f"Her name was Alex Hart. {text} Tomorrow at lunch time Alex",
                            f"Her name was Alex Carroll. {text} Tomorrow at lunch time Alex", " Hart", " Carroll")
        if model.to_tokens(case.clean_prompt).shape[1] >= n_tokens:
            return case
        middle.append(FILLER[len(middle) % len(FILLER)])


def _fast_cells(run, corrupt, sweep: str, cells: pd.DataFrame) -> None:
    """Our exact sweep on the given cells only (layer, pos[, head]); for timing."""
    for layer, group in cells.groupby("layer"):
        n = len(group)
        if sweep == "residual":  # row `layer` patches the stream entering block `layer`
            name = residual_labels(run.n_layers)[layer]
            values = run.resid[layer][0].expand(n, *run.resid[layer].shape[1:]).clone()
            pos = torch.tensor(group["pos"].to_numpy())
            values[torch.arange(n), pos] = corrupt[name][0, pos].to(values.dtype)
            run.patch_resid(layer, values)
            continue
        source = corrupt[f"blocks.{layer}.attn.hook_z"][0]
        values = run.z[layer][0].expand(n, *run.z[layer].shape[1:]).clone()
        head = torch.tensor(group["head"].to_numpy())
        if sweep == "head":
            values[torch.arange(n), :, head] = source[:, head].transpose(0, 1).to(values.dtype)
        else:
            pos = torch.tensor(group["pos"].to_numpy())
            values[torch.arange(n), pos, head] = source[pos, head].to(values.dtype)
        run.patch_z(layer, values)


def bench_attribution(name: str = "gpt2-small") -> list[dict]:
    model = load_model(name, weights="random", device="cpu")
    print(f"\nAttribution estimates against exact sweeps, {name} shape (random weights). "
          "exact / estimate is how many times longer the exact sweep takes.")
    rows = []
    for case, tl_limit in ((CORRUPTIONS["surname"], ARGS.tl_cells), (long_case(model, ARGS.long_tokens), ARGS.tl_cells_long)):
        tokens = model.to_tokens(case.clean_prompt)
        n_pos = tokens.shape[1]
        good, bad = model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)
        _, corrupt_cache = model.run_with_cache(case.corrupt_prompt)
        forward, _ = _seconds(lambda: model(tokens), repeats=3)
        run, corrupt = fast.prepare(model, case.clean_prompt, case.corrupt_prompt, case.clean_answer, case.corrupt_answer)
        for sweep, (estimate_fn, act, setter, axes) in ESTIMATES.items():
            every = _tl_cells(model, n_pos, axes)
            total = len(every)
            estimate_s, _ = _seconds(lambda: estimate_fn(model, **case.as_args()), repeats=ARGS.repeats)
            ours_cells = every if total <= ARGS.sample_cells else every.sample(ARGS.sample_cells, random_state=0)
            ours_s, _ = _seconds(lambda: _fast_cells(run, corrupt, sweep, ours_cells))
            ours_s *= total / len(ours_cells)
            tl_cells = every if total <= tl_limit else every.sample(tl_limit, random_state=0).reset_index(drop=True)
            tl_s, _ = _seconds(lambda: patching.generic_activation_patch(
                model, tokens, corrupt_cache, lambda logits: logits[0, -1, good] - logits[0, -1, bad], setter, act,
                index_df=tl_cells))
            tl_s *= total / len(tl_cells)
            rows.append(dict(model=f"{name} shape", n_pos=n_pos, sweep=sweep, cells=total, estimate_s=estimate_s,
                             ours_s=ours_s, ours_sampled=len(ours_cells) < total, tl_s=tl_s,
                             tl_sampled=len(tl_cells) < total, estimate_fwd=estimate_s / forward,
                             ours_ratio=ours_s / estimate_s, tl_ratio=tl_s / estimate_s))
            print(_attribution_line(rows[-1]), flush=True)
    return rows


def _attribution_line(r: dict) -> str:
    ours, tl = ("~" if r["ours_sampled"] else " "), ("~" if r["tl_sampled"] else " ")
    return (f"{r['n_pos']:4d} tokens  {r['sweep']:16s} {r['cells']:6d} cells  estimate {r['estimate_s']:6.2f} s "
            f"({r['estimate_fwd']:4.1f} fwd)  ours {ours}{r['ours_s']:8.1f} s  TL {tl}{r['tl_s']:8.1f} s  "
            f"exact / estimate: ours {r['ours_ratio']:7.1f}×, TL {r['tl_ratio']:8.1f}×")


def bench_dataset(name: str = "gelu-2l") -> list[dict]:
    """Chapter 6's dataset sweeps against transformer_lens.patching on one batch."""
    from circuitlab import datasets
    from circuitlab_solutions import ch06_dataset_patching as ch06
    from circuitlab_solutions import ch06_exact_sweeps as exact

    model = load_model(name, weights="random", device="cpu")
    people = [(f, s) for f in datasets.FIRST_NAMES for s in datasets.SURNAMES][::7][:ARGS.dataset_prompts]
    data = ch06.aligned_prompt_pairs(model, [datasets.NAME_TEMPLATES[0]], datasets.name_fillers("surname", people))
    clean, corrupt, answers = data["clean"], data["corrupt"], data["answers"]
    clean_diff, corrupt_diff = exact.baselines(model, clean, corrupt, answers)
    _, corrupt_cache = model.run_with_cache(corrupt)

    def metric(logits):
        patched = ch06.batch_logit_diff(logits, answers, per_prompt=True)
        return ch06.normalised_patching_metric(patched, clean_diff, corrupt_diff).mean()

    forward, _ = _seconds(lambda: model(clean), repeats=5)
    runs = [  # (what, ours, TL)
        ("dataset_patching_sweep (exact engine)", lambda: exact.exact_dataset_patching_sweep(model, clean, corrupt, answers),
         lambda: patching.get_act_patch_resid_pre(model, clean, corrupt_cache, metric)),
        ("dataset_patching_sweep (readable)", lambda: ch06.dataset_patching_sweep(model, clean, corrupt, answers),
         None),
    ] + [(f"head_input_patching {c}", lambda c=c: ch06.head_input_patching(model, clean, corrupt, answers, c),
          lambda c=c: getattr(patching, f"get_act_patch_attn_head_{c}_all_pos")(model, clean, corrupt_cache, metric))
         for c in ("q", "k", "v", "pattern")]
    print(f"\nChapter 6: {len(clean)} prompt pairs of {clean.shape[1]} tokens, {name} shape (random weights); "
          f"one batched forward {forward * 1e3:.0f} ms")
    print(f"{'sweep':40s} {'ours':>8s} {'TL':>8s} {'faster':>7s} {'max diff':>9s}")
    rows, tl_results = [], {}
    for what, ours_fn, tl_fn in runs:
        ours_s, ours = _seconds(ours_fn, repeats=ARGS.repeats)
        key = what.split(" (")[0]
        if tl_fn is not None:
            tl_results[key] = _seconds(tl_fn)
        tl_s, tl = tl_results[key]
        rows.append(dict(sweep=what, ours_s=ours_s, tl_s=tl_s, ratio=tl_s / ours_s,
                         max_diff=(ours - tl.to(ours.dtype)).abs().max().item()))
        r = rows[-1]
        print(f"{what:40s} {r['ours_s']:6.2f} s {r['tl_s']:6.2f} s {r['ratio']:6.1f}x {r['max_diff']:9.1e}", flush=True)
    return rows


def bench_graders() -> None:
    """Every check as a learner runs it: an honest copy of the readable reference, defined
    outside the course's packages (so the answer-code watch runs too), in full mode (first
    check: references computed and cached; repeats: the learner's function only) and in
    public mode (the student release's checks)."""
    import circuitlab_graders as graders
    from circuitlab_graders.models import grading_models
    from circuitlab_graders.registry import EXERCISES
    from tests.honest import readable_reference

    start = time.perf_counter()
    labels = [gm.label for gm in grading_models()]
    print(f"\nGrading models: {', '.join(labels)} (loaded in {time.perf_counter() - start:.1f} s)")
    print(f"{'exercise':28s} {'first check':>12s} {'median repeat':>14s} {'public repeat':>14s}")
    per_chapter: dict[str, float] = {}
    slowest = ("", 0.0)
    unknown = set(ARGS.checks or ()) - set(EXERCISES)
    if unknown:
        raise SystemExit(f"--checks: no exercise named {', '.join(sorted(unknown))}")
    for name, exercise in EXERCISES.items():
        if ARGS.checks and name not in ARGS.checks:
            continue
        learner = readable_reference(exercise)
        first, result = _seconds(lambda: graders.grade(name, learner, mode="full"))
        assert result.passed, result.feedback
        repeat, _ = _seconds(lambda: graders.grade(name, learner, mode="full"), repeats=3)
        public, result = _seconds(lambda: graders.grade(name, learner, mode="public"), repeats=3)
        assert result.passed, result.feedback
        per_chapter[exercise.chapter] = per_chapter.get(exercise.chapter, 0.0) + first
        slowest = max(slowest, (name, repeat), (f"{name} (public)", public), key=lambda item: item[1])
        print(f"{name:28s} {first:10.2f} s {repeat:12.2f} s {public:12.2f} s", flush=True)
    for chapter, total in per_chapter.items():
        print(f"chapter {chapter}: all checks, first run {total:.1f} s")
    print(f"slowest repeat: {slowest[0]} {slowest[1]:.1f} s ({'within' if slowest[1] <= 10 else 'OVER'} the 10 s goal)")


def main() -> None:
    from importlib.metadata import version

    load = os.getloadavg()
    print(f"CPU: {_cpu()}, {os.cpu_count()} cores, load average {load[0]:.1f} at start; "
          f"torch {torch.__version__} with {torch.get_num_threads()} thread(s) for both sides; "
          f"transformer-lens {version('transformer-lens')}")
    print("Prompt pair: the tutorial's surname corruption. Times are medians; "
          "'fwd' = the time of that many forward passes of the model.\n")
    if not ARGS.skip_sweeps:
        for name in ("gelu-2l", "gpt2-small"):
            bench_sweeps(name)
    if not ARGS.skip_attribution:
        bench_attribution()
    if not ARGS.skip_dataset:
        bench_dataset()
    if not ARGS.skip_graders:
        bench_graders()


if __name__ == "__main__":
    main()
