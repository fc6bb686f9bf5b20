"""Benchmark: the patching explorer as visitors see it, against the tutorial page's approach.

    make bench        # or: python benchmarks/explorer_speed.py [--threads N] [--models KEY ...]

Each measurement drives the real app (started here on localhost) in Debian's chromium
(Playwright): the time from clicking Run to the exact heatmaps on the page, for the
tutorial's surname example on each model shape; then four visitors who click Run at the
same moment, each one's click-to-exact time (the queue runs model work one request at a
time, so the last visitor waits for the other three). "tutorial page" is the same app
with its exact sweeps replaced by one `run_with_hooks` per heatmap cell
(transformer_lens.patching), the approach of the page the source tutorial linked; both
run in this process, on the same prompts, in the same run. The estimate's own expected-time
factor (compute.PASSES_PER_CELL) is printed beside the measured one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ["circuitlab-2l", "gelu-2l:random", "gpt2-small:random"]


def _per_cell_sweeps(model, inputs, direction, *, step=None, deadline=None):
    """The tutorial page's exact sweeps: one forward pass with hooks per cell."""
    import torch
    from transformer_lens import patching

    from circuitlab.explore import compute

    start = time.perf_counter()
    base, source = compute._base_and_source(inputs, direction)
    good, bad = inputs.answers[0].tolist()

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    with torch.no_grad():
        _, cache = model.run_with_cache(source)
        values = {"resid": patching.get_act_patch_resid_pre(model, base, cache, metric),
                  "heads": patching.get_act_patch_attn_head_out_all_pos(model, base, cache, metric),
                  "head_pos": patching.get_act_patch_attn_head_out_by_pos(model, base, cache, metric).transpose(1, 2)}
    return compute.Sweeps("exact", direction, {k: v.float().cpu() for k, v in values.items()},
                          time.perf_counter() - start)


def _visit(browser, url, model_label, results, index, barrier=None):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#run")
    page.locator("#model input").first.click()
    page.get_by_role("option", name=model_label).click()
    page.click("#case-surname")
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    page.click("#run")
    page.wait_for_selector("#status :text('Exact sweeps done')", timeout=3_600_000)
    wall = time.perf_counter() - start
    sweeps = float(re.search(r"Exact sweeps done in ([0-9.]+) s", page.inner_text("#status")).group(1))
    results[index] = (wall, sweeps)
    context.close()


def _run(url, model_label, visitors: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    results = [None] * visitors
    barrier = threading.Barrier(visitors) if visitors > 1 else None

    def one(i):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            _visit(browser, url, model_label, results, i, barrier)
            browser.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--models", nargs="+", default=MODELS, help=f"model keys (default: {' '.join(MODELS)})")
    parser.add_argument("--per-cell-models", nargs="+", default=MODELS[:2],
                        help="models the tutorial page's approach also runs on (default: the two small ones; "
                             "gpt2-small's per-cell sweeps take many minutes)")
    parser.add_argument("--visitors", type=int, default=4)
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"  # transformer_lens.patching's bars
    import torch

    torch.set_num_threads(args.threads)
    from circuitlab.explore import compute
    from circuitlab.explore.app import Limits
    from circuitlab.explore.compute import ModelStore
    from tests import explorer_server

    store = ModelStore()
    labels = {c.key: c.label for c in store.choices.values()}
    for key in args.models:
        store.get(key)  # loading is not part of a click
    limits = Limits(auto_exact_s=1e9, time_limit_s=1e9)
    fast = explorer_server.start(store, limits)
    print(f"explorer benchmark: {args.threads} torch thread(s), {os.cpu_count()} cores; the tutorial's surname example")
    print("\nclick -> exact heatmaps on the page (wall, chromium and server on this machine), and in brackets the"
          "\nexact sweeps' own compute time on the server:")
    print(f"{'model':<20}{'explorer':>22}{'tutorial page':>24}{'sweeps speed-up':>17}")
    fast_times = {}
    for key in args.models:
        _run(fast.url, labels[key], 1)  # warm
        fast_times[key] = _run(fast.url, labels[key], 1)[0]
    original = compute.exact_sweeps
    compute.exact_sweeps = _per_cell_sweeps
    try:
        slow_times = {key: _run(fast.url, labels[key], 1)[0] for key in args.per_cell_models}
        slow_visitors = _run(fast.url, labels["circuitlab-2l"], args.visitors)
    finally:
        compute.exact_sweeps = original
    def pair(t):
        return f"{t[0]:.1f} s ({t[1]:.2f} s)"

    for key in args.models:
        slow = slow_times.get(key)
        print(f"{key:<20}{pair(fast_times[key]):>22}" + (f"{pair(slow):>24}{slow[1] / fast_times[key][1]:>16.0f}x"
                                                           if slow else f"{'(not run)':>24}"))
    fast_visitors = _run(fast.url, labels["circuitlab-2l"], args.visitors)
    print(f"\n{args.visitors} visitors clicking Run at once on circuitlab-2l, click -> exact heatmaps for each:")
    for name, times in (("explorer", fast_visitors), ("tutorial page", slow_visitors)):
        walls = sorted(t[0] for t in times)
        print(f"  {name + ':':<15}{', '.join(f'{w:.1f}' for w in walls)} s (median {statistics.median(walls):.1f}); "
              f"sweeps {', '.join(f'{t[1]:.2f}' for t in times)} s")
    fast.stop()


if __name__ == "__main__":
    main()
