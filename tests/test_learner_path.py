"""A learner's path from `circuitlab start` to a graded chapter: the notebook opens in Jupyter
whatever edited it last, the commands say what they do, `check` says why an exercise failed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from circuitlab.course_files import chapter_files, copy_chapters
from circuitlab_graders.notebooks import ExecutedNotebook, scorecard

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the notebook opens in Jupyter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A Jupyter server of this environment (jupytext's contents manager included, as a learner's
    JupyterLab has it) on localhost, serving a fresh directory: (root, GET of a path -> status)."""
    root = tmp_path_factory.mktemp("jupyter-root")
    port, token = _free_port(), "circuitlab-test"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(root.parent / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--ServerApp.root_dir={root}", f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
         "--ServerApp.allow_root=True"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def get(path: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/{path}",
                                         headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except urllib.error.URLError as err:
            return 0, str(err)

    deadline = time.monotonic() + 120
    while get("")[0] != 200:
        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-3000:]
        time.sleep(0.5)
    yield root, get
    server.terminate()
    server.wait(timeout=30)


def _edit_outside_jupyterlab(path: Path) -> None:
    """What a script, VS Code or a copy back from Colab does: new code in a cell, a newer file."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "exercise" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("raise NotImplementedError", "return ' Turing'  # my answer", 1)
    nbformat.write(nb, path)
    later = time.time() + 120
    os.utime(path, (later, later))


def test_a_notebook_edited_outside_jupyterlab_still_opens_there(jupyter):
    root, get = jupyter
    copy_chapters(root / "course")
    _edit_outside_jupyterlab(root / "course" / "00_setup.ipynb")
    status, body = get("course/00_setup.ipynb")
    assert status == 200, body[:500]
    assert "# my answer" in json.dumps(json.loads(body)["content"])


def test_the_authors_paired_layout_is_what_jupyter_refuses(jupyter):
    """The test above can fail: the shipped notebook beside its .py, edited the same way, is
    refused by this server (jupytext pairs them by the notebook's metadata)."""
    root, get = jupyter
    authors = root / "authors"
    authors.mkdir()
    for shipped in chapter_files()[:1]:
        for path in (shipped, shipped.with_suffix(".py")):
            (authors / path.name).write_bytes(path.read_bytes())
    _edit_outside_jupyterlab(authors / "00_setup.ipynb")
    status, body = get("authors/00_setup.ipynb")
    assert status == 400 and "more recent than" in body, (status, body[:500])


# ---------------------------------------------------------------- the commands


def _circuitlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "circuitlab", *args], capture_output=True, text=True, timeout=300)


def test_circuitlab_alone_lists_its_commands():
    done = _circuitlab()
    assert done.returncode == 2, done
    for command in ("start", "check", "progress", "render", "course", "autograde"):
        assert f"    {command}" in done.stdout, done.stdout
    assert "error:" not in done.stderr


@pytest.mark.parametrize("reader", ["head -2", "true"])  # true: closed before anything is written
def test_progress_into_a_closed_pipe_ends_quietly(tmp_path, reader):
    copy_chapters(tmp_path)
    shell = f"{sys.executable} -m circuitlab progress {tmp_path} | {reader}"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=300)
    assert done.stdout == ("" if reader == "true" else "".join(_circuitlab("progress", str(tmp_path))
                                                                .stdout.splitlines(keepends=True)[:2]))
    assert done.stderr == "", done.stderr


# ---------------------------------------------------------------- `circuitlab check` says why


def test_the_scorecard_shows_a_failures_whole_feedback():
    feedback = ("0/4 cases passed on gelu-2l, gpt2-small.\n"
                "First failure (gelu-2l, k=5): returned ['aternity', 'should'], expected ['aternity', ' should']\n"
                "It looks like you stripped the leading space.\nHint: decode each id with model.to_string.")
    run = ExecutedNotebook(nbformat.v4.new_notebook(), {
        "top_tokens_by_unembed_bias": {"passed": False, "score": 0.0, "feedback": feedback},
        "logit_diff": {"passed": True, "score": 1.0, "feedback": "4/4 cases passed on gelu-2l, gpt2-small."}},
        ["top_tokens_by_unembed_bias", "logit_diff"], [])
    text, ok = scorecard("Scorecard", run)
    assert not ok
    lines = text.splitlines()
    assert lines[1].startswith("  FAIL  top_tokens_by_unembed_bias") and lines[1].endswith("0/4 cases passed on "
                                                                                             "gelu-2l, gpt2-small.")
    assert lines[2:5] == ["        " + line for line in feedback.splitlines()[1:]]
    assert lines[5].startswith("  PASS  logit_diff") and len(lines) == 6  # a pass stays one line


def test_a_checked_notebook_runs_its_kernel_without_the_tcp_warning(tmp_path, capfd):
    from circuitlab_graders.notebooks import execute

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    run = execute(nb, workdir=tmp_path)
    assert run.notebook.cells[0].outputs[0]["text"] == "42\n"
    said = capfd.readouterr()
    assert "without encryption" not in said.err + said.out and "IPKernelApp" not in said.err, said.err
