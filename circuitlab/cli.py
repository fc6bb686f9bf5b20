"""`circuitlab`: the course's one command.

    circuitlab start [DIR] [--force]   copy the chapters into DIR (default: here) to work on them
    circuitlab check NOTEBOOK          run a notebook in a fresh kernel and grade every exercise
    circuitlab progress [DIR]          passed / failed / not tried, from the notebooks saved in DIR
    circuitlab explore [--port N]      the patching explorer: a web page that patches any prompts (needs the
                                       `explore` extra)
    circuitlab render | course | autograde ...   the graders' commands (`python -m circuitlab_graders`), passed through

Exit codes: 0 done, 1 an exercise failed (check, render), 2 nothing to work on (no chapters,
no such notebook). `start` and `progress` only read and copy files; the graders' commands
start kernels and load models.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

GRADERS_COMMANDS = ("check", "render", "course", "autograde")  # graders/__main__.py owns these


def _jupyter() -> str:
    """How to call this environment's Jupyter: plain `jupyter` when that is the one on PATH."""
    ours = Path(sys.executable).with_name("jupyter")
    if not ours.exists():
        return "jupyter"
    on_path = shutil.which("jupyter")
    return "jupyter" if on_path and Path(on_path).resolve() == ours.resolve() else str(ours)


def _start(args: argparse.Namespace) -> int:
    from circuitlab.course_files import copy_chapters

    dest = Path(args.dir).resolve()
    done = copy_chapters(dest, force=args.force)
    print(f"Chapters in {dest}:")
    if done.copied:
        print(f"  copied:   {', '.join(done.copied)}")
    if done.replaced:
        print(f"  replaced with the shipped version (--force): {', '.join(done.replaced)}")
    if done.kept:
        print(f"  kept, because you edited them (`circuitlab start {args.dir} --force` replaces them "
              f"with fresh copies): {', '.join(done.kept)}")
    if done.unchanged:
        print(f"  already there, unchanged: {len(done.unchanged)} files")
    print(f"\nOpen them with `{_jupyter()} lab {dest}` and start with 00_setup.ipynb.\n"
          f"Grade a saved notebook from the shell: `circuitlab check {dest / '00_setup.ipynb'}`.\n"
          f"See how far you are: `circuitlab progress {dest}`.")
    return 0


def _progress(args: argparse.Namespace) -> int:
    from circuitlab.saved_results import progress, progress_report

    workdir = Path(args.dir).resolve()
    chapters = progress(workdir)
    if not any(chapter.notebook for chapter in chapters):
        print(f"No chapter notebooks in {workdir}: run `circuitlab start {args.dir}` to copy them there, "
              "or pass the directory that holds them.", file=sys.stderr)
        return 2
    print(progress_report(workdir, chapters))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="circuitlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    start = sub.add_parser("start", help="copy the chapters into DIR")
    start.add_argument("dir", nargs="?", default=".", help="where to put them (default: the current directory)")
    start.add_argument("--force", action="store_true", help="replace notebooks you edited with fresh copies")
    start.set_defaults(run=_start)
    progress = sub.add_parser("progress", help="passed / failed / not tried for every exercise")
    progress.add_argument("dir", nargs="?", default=".", help="where your notebooks are (default: here)")
    progress.set_defaults(run=_progress)
    sub.add_parser("explore", help="serve the patching explorer (`explore -h` for its options)")
    for name, says in (("check", "grade a notebook"), ("render", "run every chapter with the references"),
                       ("course", "build the nbgrader course"),
                       ("autograde", "grade a class's submissions in sandboxes")):
        sub.add_parser(name, help=f"{says} (`{name} -h` for its options)")  # main() hands these on
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] in GRADERS_COMMANDS:
        from circuitlab_graders.__main__ import main as graders_main

        return graders_main(argv, prog="circuitlab")
    if argv and argv[0] == "explore":
        try:
            from circuitlab.explore import main as explore_main
        except ImportError:
            print("This distribution does not carry the patching explorer (the student distribution leaves it "
                  "out: it runs the exact sweeps and chapter 5's estimates, the answers to the sweep exercises). "
                  "Your instructor may host it; or install the full course.", file=sys.stderr)
            return 2
        return explore_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `circuitlab`: what it can do, not just argparse's complaint
        parser.print_help()
        return 2
    return args.run(args)


def main(argv: list[str] | None = None) -> int:
    from circuitlab.course_files import ChaptersNotFound

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except ChaptersNotFound as missing:
        print(missing, file=sys.stderr)
        return 2
    except BrokenPipeError:  # `circuitlab progress | head`: the reader has what it wanted
        # Python would report the pipe again when it flushes stdout at exit: point stdout elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
