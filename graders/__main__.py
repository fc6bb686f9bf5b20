"""Command line: `python -m graders check NOTEBOOK` and `python -m graders render`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat


def _check(args: argparse.Namespace) -> int:
    from graders.notebooks import execute, read_notebook, scorecard

    path = Path(args.notebook)
    if not path.exists():
        print(f"No such notebook: {path}", file=sys.stderr)
        return 2
    run = execute(read_notebook(path), workdir=path.resolve().parent, timeout=args.timeout)
    text, ok = scorecard(f"Scorecard for {path}", run)
    print(text)
    if not run.expected:
        print("This notebook has no check(...) cells, so there is nothing to grade.")
    return 0 if ok else 1


def _render(args: argparse.Namespace) -> int:
    """The main job: run every chapter with the reference solutions, grade, save."""
    from graders.html import notebook_html
    from graders.notebooks import CHAPTERS, chapter_paths, execute, fill_with_solutions, read_notebook, scorecard

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ok_all, cards = True, []
    for chapter in chapter_paths():
        if args.chapters and not any(chapter.stem.startswith(c) for c in args.chapters):
            continue
        start = time.perf_counter()
        run = execute(fill_with_solutions(read_notebook(chapter), chapter), workdir=CHAPTERS,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graders", description=__doc__)
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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
