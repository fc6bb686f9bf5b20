"""Command line: `python -m circuitlab_graders check NOTEBOOK`, `python -m circuitlab_graders render`,
`python -m circuitlab_graders course OUTDIR` and `python -m circuitlab_graders autograde ASSIGNMENT` (also
reached as `circuitlab check|render|course|autograde`).

Exit codes: 0 all passed or built, 1 an exercise failed, 2 nothing to grade (no such
notebook, no check cells, no chapter found or matched), with what to run instead."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat


def _check(args: argparse.Namespace) -> int:
    from circuitlab_graders.notebooks import execute, exercise_names, read_notebook, scorecard

    path = Path(args.notebook)
    if not path.exists():
        print(f"No such notebook: {path}. `circuitlab start DIR` copies the chapters into DIR; "
              "then grade one of them, e.g. DIR/00_setup.ipynb.", file=sys.stderr)
        return 2
    nb = read_notebook(path)
    if not exercise_names(nb):
        print(f"{path} has no check(...) cells, so there is nothing to grade: pass one of the "
              "chapter notebooks (`circuitlab start DIR` copies them into DIR).", file=sys.stderr)
        return 2
    run = execute(nb, workdir=path.resolve().parent, timeout=args.timeout)
    text, ok = scorecard(f"Scorecard for {path}", run)
    print(text)
    return 0 if ok else 1


def _render(args: argparse.Namespace) -> int:
    """The main job: run every chapter with the reference solutions, grade, save."""
    from circuitlab_graders.html import notebook_html
    from circuitlab_graders.notebooks import execute, fill_with_solutions, read_notebook, scorecard, select_chapters

    chapters = select_chapters(args.chapters)  # none: ChaptersNotFound, never an empty "all passed"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ok_all, cards = True, []
    for chapter in chapters:
        start = time.perf_counter()
        run = execute(fill_with_solutions(read_notebook(chapter), chapter), workdir=chapter.parent,
                      timeout=args.timeout, allow_errors=False)
        nbformat.write(run.notebook, out / f"{chapter.stem}.ipynb")
        (out / f"{chapter.stem}.html").write_text(notebook_html(run.notebook), encoding="utf-8")
        text, ok = scorecard(f"{chapter.stem}  ({time.perf_counter() - start:.0f} s)", run)
        print(text, flush=True)
        cards.append(text)
        ok_all &= ok
    (out / "scorecard.txt").write_text("\n".join(cards) + "\n")
    print(f"\n{'All exercises passed' if ok_all else 'SOME EXERCISES FAILED'}; executed notebooks and HTML pages in {out}/")
    return 0 if ok_all else 1


def _course(args: argparse.Namespace) -> int:
    """Generate the nbgrader course directory (see graders.classroom)."""
    from circuitlab_graders.classroom import build
    from circuitlab_graders.notebooks import select_chapters

    select_chapters(args.chapters)  # no chapter: a clear ChaptersNotFound before anything is built
    course = build(Path(args.outdir), tuple(args.chapters), seed=args.seed, cell_timeout=args.cell_timeout,
                   check=not args.no_check)
    for assignment in course.assignments:
        print(f"source/{assignment.name}/{assignment.name}.ipynb: {', '.join(assignment.exercises)}")
    print(f"Hidden seeds: {args.outdir}/circuitlab_course.json (keep it out of students' reach); "
          f"a cell may take {course.cell_timeout} s at autograde."
          f"\nNext: cd {args.outdir} && nbgrader generate_assignment {course.assignments[0].name}")
    return 0


def _autograde(args: argparse.Namespace) -> int:
    """Grade every submission of an assignment in sandboxes, then record it in nbgrader."""
    from circuitlab_graders.whole_class import autograde_class
    from circuitlab_graders.sandbox import SandboxUnavailable

    try:
        results = autograde_class(Path(args.course), args.assignment, args.student, workers=args.workers,
                                  scheduler=args.scheduler)
    except (FileNotFoundError, KeyError, SandboxUnavailable) as err:
        print(err, file=sys.stderr)
        return 2
    except RuntimeError as err:  # some submissions could not be recorded; the others were
        print(err, file=sys.stderr)
        return 1
    for student, by_exercise in results.items():
        points = sum(r.passed for r in by_exercise.values())
        print(f"{student:24s} {points}/{len(by_exercise)}  " + " ".join(
            f"{name}:{'pass' if r.passed else 'FAIL'}" for name, r in by_exercise.items()))
    return 0


def _student_release(args: argparse.Namespace) -> int:
    """The course without its answers, for students (see graders.student_release)."""
    from circuitlab_graders.student_release import build

    try:
        build(Path(args.outdir), wheel=args.wheel)
    except FileExistsError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m circuitlab_graders") -> int:
    from circuitlab.course_files import ChaptersNotFound

    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="execute a notebook, grade every exercise, print a scorecard")
    check.add_argument("notebook")
    check.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    check.set_defaults(run=_check)
    render = sub.add_parser("render", help="run every chapter with the reference solutions and grade it")
    render.add_argument("chapters", nargs="*", help="chapter prefixes such as 00 or 01 (default: all)")
    render.add_argument("--out", default="build", help="where the executed notebooks go")
    render.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    render.set_defaults(run=_render)
    course = sub.add_parser("course", help="generate an nbgrader course directory from the chapters")
    course.add_argument("outdir")
    course.add_argument("chapters", nargs="*", help="chapter prefixes such as 00 or 01 (default: all)")
    course.add_argument("--seed", type=int, help="seed for the hidden cases (default: random)")
    course.add_argument("--cell-timeout", type=int,
                        help="seconds a notebook cell may take at autograde (default: 5x the slowest, measured)")
    course.add_argument("--no-check", action="store_true",
                        help="skip grading the references in the sandbox before writing (a few minutes per chapter)")
    course.set_defaults(run=_course)
    grade = sub.add_parser("autograde", help="grade every submission of an assignment in sandboxes, in parallel, "
                                             "and record the scores and feedback in nbgrader")
    grade.add_argument("assignment")
    grade.add_argument("--course", default=".", help="the nbgrader course directory (default: here)")
    grade.add_argument("--student", action="append", default=[], help="only this student (repeatable)")
    grade.add_argument("--workers", type=int, help="sandboxes on this machine (default: one per core)")
    grade.add_argument("--scheduler", help="a Dask scheduler address: grade on that cluster instead")
    grade.set_defaults(run=_autograde)
    student = sub.add_parser("student-release", help="the course without solutions/ and known mistakes, for students")
    student.add_argument("outdir")
    student.add_argument("--wheel", action="store_true", help="also build its wheel into OUTDIR/dist")
    student.set_defaults(run=_student_release)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ChaptersNotFound as missing:
        print(missing, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
