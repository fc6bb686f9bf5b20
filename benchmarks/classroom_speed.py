"""Benchmark: classroom autograding throughput, this course's sandboxed grader against
`nbgrader autograde` on the same submissions, in the same run.

    python benchmarks/classroom_speed.py [--chapters 00] [--n 6] [--baseline-n 3] [--workers 1 2]

For each chapter it builds the course, makes N synthetic submissions (honest, stubs, one
known mistake, an endless loop, a crash, half done, cycled) and grades them:

* ours: `python -m circuitlab_graders autograde` (graders.whole_class.autograde_class) with 1,
  2, ... sandboxes, end to end: references and model loading (once per run), grading,
  and nbgrader's own recording of every submission; and the grading alone, once the
  sandboxes are up;
* nbgrader: stock `nbgrader autograde` (its Execute preprocessor: each submission in a
  fresh kernel that loads the models and grades in-process, the flow this course
  replaced) on the same submissions (or the first --baseline-n), with the same limit
  per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nbformat  # noqa: E402

from circuitlab_graders.classroom import build  # noqa: E402
from circuitlab_graders.registry import EXERCISES  # noqa: E402
from tests.submissions import CRASH, HANG, with_answers  # noqa: E402

STOCK = ("[Execute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades, AssignLatePenalties, "
         "CheckCellMetadata]")
BASELINE_CONFIG = f'''
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, Execute, IgnorePattern, LimitOutput,
                                    SaveAutoGrades)
c = get_config()
c.CourseDirectory.course_id = "baseline"
c.Autograde.autograde_preprocessors = {STOCK}
c.Execute.timeout = {{timeout}}
'''


def synthetic(release: nbformat.NotebookNode, exercises: list[str], n: int) -> list[tuple[str, nbformat.NotebookNode]]:
    first, second = exercises[0], exercises[1 % len(exercises)]
    honest = {name: "ref" for name in exercises}
    kinds = [
        ("honest", honest),
        ("stubs", {}),
        ("mistake", {**honest, first: "raise ValueError('a wrong turn')"}),
        ("endless_loop", {**honest, first: HANG}),
        ("crash", {**honest, second: CRASH}),
        ("half", {name: "ref" for name in exercises[::2]}),
    ]
    return [(f"{kinds[i % len(kinds)][0]}_{i}", with_answers(release, kinds[i % len(kinds)][1])) for i in range(n)]


def env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO)}


def baseline_course(course: Path, chapter: str, exercises: list[str], cell_timeout: int) -> Path:
    """The same course, graded the way it was before: check cells that grade in the kernel."""
    root = Path(tempfile.mkdtemp(prefix="baseline-"))
    shutil.copytree(course / "source", root / "source")
    path = root / "source" / chapter / f"{chapter}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            name = next(n for n in exercises if f"check({n})" in cell.source)
            cell.source = f"import circuitlab_graders as graders\nassert graders.grade({name!r}, {name}).passed"
    nbformat.write(nb, path)
    (root / "nbgrader_config.py").write_text(BASELINE_CONFIG.replace("{timeout}", str(cell_timeout)))
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", chapter, "--force"], cwd=root,
                   env=env(), check=True, capture_output=True)
    return root


def bench_chapter(chapter: str, args) -> None:
    from circuitlab_graders.autograde import Autograder
    from circuitlab_graders.whole_class import autograde_class

    course = Path(tempfile.mkdtemp(prefix="course-"))
    built = build(course, (chapter,), seed=1, cell_timeout=args.cell_timeout, check=False, log=lambda *_: None)
    assignment = built.assignments[0]
    name, exercises = assignment.name, assignment.exercises
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force"], cwd=course, env=env(),
                   check=True, capture_output=True)
    release = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
    subs = synthetic(release, exercises, args.n)
    for student, nb in subs:
        (course / "submitted" / student / name).mkdir(parents=True)
        nbformat.write(nb, course / "submitted" / student / name / f"{name}.ipynb")
    print(f"\n{name}: {len(exercises)} exercises, {len(subs)} submissions "
          f"({', '.join(sorted({s.rsplit('_', 1)[0] for s, _ in subs}))})")
    rates = {}
    for workers in args.workers:
        start = time.perf_counter()
        results = autograde_class(course, name, workers=workers, log=lambda *_: None)
        total = time.perf_counter() - start
        passed = sum(r.passed for res in results.values() for r in res.values())
        rates[workers] = len(subs) / total * 60
        # The same grading without nbgrader's recording, timed after the sandboxes started.
        with Autograder(exercises, assignment.seeds, hide=[course], workers=workers, cell_timeout=args.cell_timeout,
                        log=lambda *_: None) as grader:
            grader.grade_notebooks([subs[0][1]] * workers)  # every sandbox up
            begin = time.perf_counter()
            grader.grade_notebooks([nb for _, nb in subs])
            steady = time.perf_counter() - begin
        print(f"  ours, {workers} sandbox{'es' if workers > 1 else '  '}: {total:6.1f} s end to end (start, grading, "
              f"nbgrader's recording) -> {rates[workers]:6.1f} submissions/min; once started "
              f"{steady / len(subs):4.1f} s each ({len(subs) / steady * 60:6.1f}/min); {passed} exercises passed")
    if args.baseline_n:
        root = baseline_course(course, name, exercises, args.cell_timeout)
        baseline = subs[:args.baseline_n]
        for student, nb in baseline:  # the same notebooks: nbgrader restores its own test cells by grade id
            folder = root / "submitted" / student / name
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{name}.ipynb")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", name], cwd=root, env=env(),
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
        rate = len(baseline) / seconds * 60
        print(f"  nbgrader autograde (stock, in-kernel): {seconds:6.1f} s for {len(baseline)} "
              f"({seconds / len(baseline):5.1f} s each) -> {rate:6.1f} submissions/min")
        same = "" if len(baseline) == len(subs) else f" (nbgrader on the first {len(baseline)} only)"
        for workers, ours in rates.items():
            print(f"  ours with {workers} sandbox{'es' if workers > 1 else ''} / nbgrader, end to end: "
                  f"{ours / rate:5.1f}x{same}")
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(course, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="+", default=["00"])
    parser.add_argument("--n", type=int, default=12, help="synthetic submissions per chapter")
    parser.add_argument("--baseline-n", type=int, help="of those, how many nbgrader grades (default: all; 0: none)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cell-timeout", type=int, default=30,
                        help="a cell's limit at autograde (the course build measures it; 30 s is its floor)")
    args = parser.parse_args()
    args.baseline_n = args.n if args.baseline_n is None else args.baseline_n
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f} at start")
    for chapter in args.chapters:
        bench_chapter(chapter, args)
    print(json.dumps({"load_average_at_end": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
