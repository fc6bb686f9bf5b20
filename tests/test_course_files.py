"""The course's files wherever it is installed: the chapters locator, `circuitlab start`,
`circuitlab progress`, the chapters' first cell, and the commands that must refuse to
report success on no chapters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from circuitlab import cli, course_files
from circuitlab.course_files import ChaptersNotFound, chapter_files, chapters_dir, copy_chapters, learner_copy
from circuitlab.saved_results import RESULT_MIME, checked_exercises, progress
from circuitlab_graders import __main__ as graders_cli
from circuitlab_graders.notebooks import chapter_paths, exercise_names, read_notebook

REPO = Path(__file__).resolve().parents[1]


def _no_chapters(tmp_path, monkeypatch):
    empty = (tmp_path / "pkg" / "chapters", tmp_path / "clone" / "chapters")
    for place in empty:
        place.mkdir(parents=True)
    (empty[0] / "__init__.py").write_text("")  # a package directory, but no chapter in it
    monkeypatch.setattr(course_files, "CANDIDATES", empty)
    return empty


# ---------------------------------------------------------------- where the chapters are


def test_a_checkout_finds_its_own_chapters():
    assert chapters_dir() == REPO / "chapters"
    assert [p.name for p in chapter_paths()][:2] == ["00_setup.py", "01_residual_patching.py"]


def test_installed_copy_comes_first_then_the_clone(tmp_path, monkeypatch):
    installed, clone = tmp_path / "site" / "circuitlab" / "chapters", tmp_path / "chapters"
    monkeypatch.setattr(course_files, "CANDIDATES", (installed, clone))
    clone.mkdir()
    (clone / "00_a.py").write_text("")
    assert chapters_dir() == clone
    installed.mkdir(parents=True)
    (installed / "00_a.py").write_text("")
    assert chapters_dir() == installed


def test_no_chapters_says_where_it_looked_and_what_to_run(tmp_path, monkeypatch):
    places = _no_chapters(tmp_path, monkeypatch)
    with pytest.raises(ChaptersNotFound) as missing:
        chapters_dir()
    message = str(missing.value)
    assert all(str(p) in message for p in places)
    assert "pip install --force-reinstall" in message and "git checkout -- chapters" in message


def test_pyproject_lists_every_directory_the_wheel_needs():
    """pyproject names its packages one by one (chapters/, graders/ and solutions/ are mapped
    to their installed names): a new subpackage or data directory left off the list would be
    missing from the wheel."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    installed_as = {folder: name for name, folder in setuptools["package-dir"].items()}
    assert installed_as == {"chapters": "circuitlab.chapters", "graders": "circuitlab_graders",
                            "solutions": "circuitlab_solutions"}
    with_files = {
        ".".join((installed_as.get(path.relative_to(REPO).parts[0], path.relative_to(REPO).parts[0]),
                  *path.parent.relative_to(REPO).parts[1:]))
        for top in ("circuitlab", "graders", "solutions") for path in (REPO / top).rglob("*")
        if path.is_file()
        and not any(part == "__pycache__" or part.startswith(".") for part in path.relative_to(REPO).parts)
    }
    assert set(setuptools["packages"]) == with_files | {"circuitlab.chapters"}


# ---------------------------------------------------------------- nothing to grade is never a success


def test_render_with_no_chapters_fails_instead_of_passing(tmp_path, monkeypatch, capsys):
    _no_chapters(tmp_path, monkeypatch)
    out = tmp_path / "build"
    assert graders_cli.main(["render", "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert "All exercises passed" not in printed.out
    assert "No chapters found" in printed.err
    assert not (out / "scorecard.txt").exists()


def test_render_and_course_refuse_a_prefix_that_matches_no_chapter(tmp_path, capsys):
    assert graders_cli.main(["render", "09", "--out", str(tmp_path / "build")]) == 2
    assert "No chapter matches 09; the chapters are 00_setup, 01_residual_patching" in capsys.readouterr().err
    assert cli.main(["course", str(tmp_path / "course"), "09"]) == 2
    assert "No chapter matches 09" in capsys.readouterr().err
    assert not (tmp_path / "course").exists()


def test_every_command_fails_clearly_without_chapters(tmp_path, monkeypatch, capsys):
    _no_chapters(tmp_path, monkeypatch)
    for argv in (["start", str(tmp_path / "mine")], ["progress", str(tmp_path)], ["course", str(tmp_path / "c")]):
        assert cli.main(argv) == 2, argv
        assert "No chapters found" in capsys.readouterr().err, argv


def test_check_refuses_a_missing_notebook_and_one_without_checks(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "00_setup.ipynb")]) == 2
    assert "`circuitlab start DIR` copies the chapters" in capsys.readouterr().err
    plain = tmp_path / "notes.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), plain)
    assert cli.main(["check", str(plain)]) == 2
    assert "has no check(...) cells" in capsys.readouterr().err


# ---------------------------------------------------------------- circuitlab start


def test_start_copies_every_chapter_notebook_and_never_overwrites_an_edit(tmp_path, capsys):
    mine = tmp_path / "course"
    assert cli.main(["start", str(mine)]) == 0
    shipped = {p.name: learner_copy(p) for p in chapter_files()}
    assert {"00_setup.ipynb", "03_attention_patterns.ipynb"} <= set(shipped)
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == shipped  # no paired .py: see the Jupyter test
    assert "copied:   00_setup.ipynb, 01_residual_patching.ipynb" in capsys.readouterr().out

    edited = mine / "00_setup.ipynb"
    edited.write_text("my answers")
    (mine / "01_residual_patching.ipynb").unlink()
    assert cli.main(["start", str(mine)]) == 0
    said = capsys.readouterr().out
    assert edited.read_text() == "my answers"
    assert "kept, because you edited them" in said and said.count("00_setup.ipynb") >= 1
    assert "copied:   01_residual_patching.ipynb\n" in said
    assert f"already there, unchanged: {len(shipped) - 2} files" in said

    done = copy_chapters(mine, force=True)
    assert done.replaced == ["00_setup.ipynb"] and not done.copied and not done.kept
    assert edited.read_bytes() == shipped["00_setup.ipynb"]


def test_the_learners_copy_is_the_notebook_without_its_jupytext_pairing(tmp_path):
    for path in chapter_files():
        shipped, mine = nbformat.read(path, as_version=4), nbformat.reads(learner_copy(path).decode(), as_version=4)
        assert shipped.metadata.jupytext.formats == "ipynb,py:percent"  # the authors' pairing
        assert "jupytext" not in mine.metadata and mine.metadata.kernelspec == shipped.metadata.kernelspec
        assert mine.cells == shipped.cells
    # a copy an older `start` made (the shipped file as it is) is untouched: it is brought up to date
    older = tmp_path / "00_setup.ipynb"
    older.write_bytes(chapter_files()[0].read_bytes())
    assert copy_chapters(tmp_path).copied[0] == "00_setup.ipynb"
    assert older.read_bytes() == learner_copy(chapter_files()[0])


# ---------------------------------------------------------------- circuitlab progress


def _output(exercise, passed, score, **more):
    return nbformat.v4.new_output("display_data", data={
        "text/plain": f"{exercise} {passed}", RESULT_MIME: {"exercise": exercise, "passed": passed, "score": score, **more}})


def test_progress_reads_the_last_saved_result_of_each_exercise(tmp_path, capsys):
    copy_chapters(tmp_path)
    (tmp_path / "01_residual_patching.ipynb").unlink()
    path = tmp_path / "00_setup.ipynb"
    nb = nbformat.read(path, as_version=4)
    checks = {name: cell for cell in nb.cells if cell.cell_type == "code" for name in checked_exercises([cell.source])}
    checks["next_token_prediction"].outputs = [_output("next_token_prediction", False, 0.25)]
    checks["logit_diff"].outputs = [_output("logit_diff", False, 0.5)]
    # the learner checked next_token_prediction again in a cell of their own, later on
    nb.cells.append(nbformat.v4.new_code_cell("check(next_token_prediction)",
                                              outputs=[_output("next_token_prediction", True, 1.0)]))
    nbformat.write(nb, path)

    assert cli.main(["progress", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    total = sum(len(exercise_names(read_notebook(c))) for c in chapter_paths())
    assert f"  {'passed':15s}  {'next_token_prediction':38s} score 1.00\n" in report
    assert f"  {'not tried':15s}  top_tokens_by_unembed_bias\n" in report
    assert f"  {'failed':15s}  {'logit_diff':38s} score 0.50\n" in report
    assert "01_residual_patching  (01_residual_patching.ipynb is not here: `circuitlab start` copies it)" in report
    assert f"  {'not tried':15s}  patch_residual_stream\n" in report
    assert report.rstrip().endswith(f"1 of {total} exercises passed, 1 failed, {total - 2} not tried.")


def test_progress_tells_an_untouched_stub_from_a_wrong_answer(tmp_path, capsys):
    copy_chapters(tmp_path)
    path = tmp_path / "00_setup.ipynb"
    nb = nbformat.read(path, as_version=4)
    checks = {name: cell for cell in nb.cells if cell.cell_type == "code" for name in checked_exercises([cell.source])}
    checks["next_token_prediction"].outputs = [_output("next_token_prediction", False, 0.0, implemented=False)]
    checks["logit_diff"].outputs = [_output("logit_diff", False, 0.0, implemented=True)]
    # saved before "implemented" was recorded: the stub's verdict says so in its text
    older = _output("top_tokens_by_unembed_bias", False, 0.0)
    older.data["text/plain"] = "[FAIL] top_tokens_by_unembed_bias (score 0.00)\nnot implemented yet: replace ..."
    checks["top_tokens_by_unembed_bias"].outputs = [older]
    nbformat.write(nb, path)

    assert cli.main(["progress", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    total = sum(len(exercise_names(read_notebook(c))) for c in chapter_paths())
    assert f"  not implemented  next_token_prediction\n" in report
    assert f"  not implemented  top_tokens_by_unembed_bias\n" in report
    assert f"  {'failed':15s}  {'logit_diff':38s} score 0.00\n" in report
    assert report.rstrip().endswith(f"0 of {total} exercises passed, 1 failed, 2 not implemented yet, "
                                    f"{total - 3} not tried.")


def test_the_stubs_check_result_is_saved_as_not_implemented():
    from circuitlab_graders.results import not_implemented

    assert not not_implemented("logit_diff").implemented


def test_progress_survives_a_notebook_that_is_not_json(tmp_path):
    copy_chapters(tmp_path)
    (tmp_path / "00_setup.ipynb").write_text("{ half a notebook")
    chapter = progress(tmp_path)[0]
    assert chapter.chapter == "00_setup" and set(chapter.exercises.values()) == {None}


def test_progress_without_notebooks_says_to_run_start(tmp_path, capsys):
    assert cli.main(["progress", str(tmp_path)]) == 2
    assert f"No chapter notebooks in {tmp_path}: run `circuitlab start" in capsys.readouterr().err


def test_check_shows_a_machine_readable_result_next_to_the_html():
    script = (
        "import json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "from IPython.utils.capture import capture_output\n"
        "from circuitlab_graders import _show\n"
        "from circuitlab_graders import Result\n"
        "InteractiveShell.instance()\n"
        "with capture_output() as cap:\n"
        "    _show(Result('logit_diff', False, 0.25, 'off by one'))\n"
        "print(json.dumps([o.data for o in cap.outputs]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (bundle,) = json.loads(proc.stdout.splitlines()[-1])
    assert bundle[RESULT_MIME] == {"exercise": "logit_diff", "passed": False, "score": 0.25, "implemented": True}
    assert "off by one" in bundle["text/html"] and bundle["text/plain"].startswith("[FAIL] logit_diff")


def test_progress_of_a_chapter_run_with_the_references(executed_chapter, tmp_path):
    run = executed_chapter(chapters_dir() / "00_setup.py")
    nbformat.write(run.notebook, tmp_path / "00_setup.ipynb")
    (chapter, *_) = progress(tmp_path)
    assert list(chapter.exercises) == run.expected
    assert all(result == {"passed": True, "score": 1.0, "implemented": True}
               for result in chapter.exercises.values()), chapter


# ---------------------------------------------------------------- each chapter's first code cell


def _first_code_cells():
    return [next(c.source for c in read_notebook(p).cells if c.cell_type == "code") for p in chapter_paths()]


def _run_cell(source: str, cwd: Path) -> subprocess.CompletedProcess:
    # -S: no site-packages, so circuitlab (and torch) are importable only through what the cell does
    return subprocess.run([sys.executable, "-S", "-c", source + "\nprint(circuitlab.__file__)"],
                          cwd=cwd, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_first_code_cell_is_the_same_in_every_chapter():
    cells = _first_code_cells()
    assert len(set(cells)) == 1 and "import circuitlab" in cells[0]


def test_first_code_cell_uses_a_clone_that_is_not_installed(tmp_path):
    (tmp_path / "circuitlab").mkdir()
    (tmp_path / "circuitlab" / "__init__.py").write_text("")
    (tmp_path / "chapters").mkdir()
    proc = _run_cell(_first_code_cells()[0], tmp_path / "chapters")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "circuitlab" / "__init__.py")


@pytest.mark.parametrize("where", ["elsewhere", "clone"])
def test_first_code_cell_says_what_to_run_when_the_course_is_missing(where, tmp_path):
    cwd = REPO / "chapters" if where == "clone" else tmp_path  # the clone's code is found, torch is not
    proc = _run_cell(_first_code_cells()[0], cwd)
    assert proc.returncode == 1
    missing = "torch" if where == "clone" else "circuitlab"
    assert f"ModuleNotFoundError: {missing} is not installed. In a clone of the course run `make setup`" in proc.stderr
    assert "`%pip install <the circuitlab wheel, sdist or git URL>`" in proc.stderr


def test_python_dash_m_circuitlab_is_the_same_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "circuitlab", "progress", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "run `circuitlab start" in proc.stderr, proc.stderr
