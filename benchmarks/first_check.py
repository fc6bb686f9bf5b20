"""Benchmark: how long a session's first check takes, in a Jupyter kernel as a learner has it.

    python benchmarks/first_check.py [--read 60] [--chapter 00_setup] [--exercise next_token_prediction]

Runs a small notebook in a fresh kernel: the chapter's import cell (which calls
graders.prepare), then --read seconds of the learner reading and typing (a sleep), then the
exercise's reference, copied as the learner's own code, and its check, timed. Then the same
without prepare, for comparison. The aim (issue 26): under 5 s after a minute's reading.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def notebook(chapter: str, exercise: str, read_s: float, prepare: bool) -> nbformat.NotebookNode:
    import importlib

    source = inspect.getsource(getattr(importlib.import_module(f"circuitlab_solutions.ch{chapter}"), exercise))
    cells = [
        "import time\nimport torch\nfrom circuitlab_graders import check, prepare\n"
        + (f"prepare({chapter!r})\n" if prepare else "") + "torch.set_grad_enabled(False)",
        f"time.sleep({read_s})",
        source,
        f"start = time.perf_counter()\nresult = check({exercise})\n"
        "print('FIRST_CHECK', time.perf_counter() - start, result.passed)",
    ]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def first_check_s(chapter: str, exercise: str, read_s: float, prepare: bool) -> tuple[float, bool]:
    from circuitlab_graders.notebooks import execute

    nb = notebook(chapter, exercise, read_s, prepare)
    with tempfile.TemporaryDirectory() as tmp:
        execute(nb, workdir=Path(tmp), allow_errors=False)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    _, seconds, passed = next(line for line in text.splitlines() if line.startswith("FIRST_CHECK")).split()
    return float(seconds), passed == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--read", type=float, default=60.0, help="seconds between the import cell and the check")
    parser.add_argument("--chapter", default="00_setup")
    parser.add_argument("--exercise", default="next_token_prediction")
    args = parser.parse_args()
    rows = {}
    for prepare in (True, False):
        seconds, passed = first_check_s(args.chapter, args.exercise, args.read, prepare)
        rows["with prepare" if prepare else "without"] = {"first_check_s": round(seconds, 1), "passed": passed}
        print(f"{'with prepare' if prepare else 'without':13s} first check of {args.exercise}: {seconds:5.1f} s "
              f"(after {args.read:.0f} s of reading){'' if passed else '  FAILED'}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
