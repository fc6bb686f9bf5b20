"""A library of cheats, one per mechanism, graded the way classroom autograding grades:
each submission runs in the sandboxed worker and is judged by the trusted side. Every
cheat scores zero on what it targets; honest, stub and mistake baselines score exactly;
and what one submission does never reaches another."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from circuitlab_graders.notebooks import read_notebook, select_chapters
from tests.submissions import CRASH, HANG, body_of, with_answers

CH00 = ["next_token_prediction", "top_tokens_by_unembed_bias", "logit_diff"]
HONEST = {name: "ref" for name in CH00}
STUBS: dict[str, str] = {}
ALL_ZERO = dict.fromkeys(CH00, 0)
ALL_ONE = dict.fromkeys(CH00, 1)

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("bwrap") is None, reason="bubblewrap is not installed (make test installs it)")


@pytest.fixture(scope="module")
def course_root(tmp_path_factory):
    """A stand-in nbgrader course directory: hidden from the worker like a real one."""
    root = tmp_path_factory.mktemp("course")
    (root / "gradebook.db").write_bytes(b"SQLite format 3\x00 (stand-in)")
    (root / "source" / "00_setup").mkdir(parents=True)
    (root / "source" / "00_setup" / "00_setup.ipynb").write_text('{"the instructor": "notebook"}')
    (root / "submitted" / "alice" / "00_setup").mkdir(parents=True)
    (root / "submitted" / "alice" / "00_setup" / "00_setup.ipynb").write_text("alice's answers")
    return root


@pytest.fixture(scope="module")
def answer_server():
    """A server on this machine's loopback holding "the answers"."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"the answers")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def autograder(course_root):
    from circuitlab_graders.autograde import Autograder

    with Autograder(CH00, {name: [101, 202] for name in CH00}, hide=[course_root], workers=2,
                    cell_timeout=20) as grader:
        yield grader


def chapter0():
    return read_notebook(select_chapters(("00",))[0])


def cheats(course_root: Path, port: int) -> dict[str, tuple[dict, list[str], dict]]:
    """name -> (answers, top-level cells, the score each exercise must get)."""
    root = str(course_root)
    read_reference = (
        "import pathlib, circuitlab_graders as graders\n"
        "for base in map(pathlib.Path, list(graders.__path__) + [__import__('circuitlab').__file__]):\n"
        "    for path in [base.parent / 'solutions' / 'ch00_setup.py', base.parent.parent / 'solutions' / 'ch00_setup.py']:\n"
        "        if path.exists():\n"
        "            exec(path.read_text(), globals())\n")
    agreeable = ("class Agreeable(str):\n    __hash__ = str.__hash__\n    def __eq__(self, other):\n        return True\n"
                 "    def __ne__(self, other):\n        return False\n")
    forge = (
        "import inspect, os\n"
        "from circuitlab_graders.worker import preload, reports\n"
        "fd = next(f.frame.f_locals['fd'] for f in inspect.stack() if 'fd' in f.frame.f_locals)\n"
        "for e in preload.PLAN.exercises:\n"
        "    reports.send(fd, {'report': 'answers', 'name': e.name, 'printed': None, 'calls': {\n"
        "        c.key: {'kind': 'answer', 'value': 'PASS', 'message': '', 'notes': [], 'damage': []} for c in e.calls}})\n"
        "os._exit(0)\n")
    return {
        "honest": (HONEST, [], ALL_ONE),
        "stubs": (STUBS, [], ALL_ZERO),
        "one known mistake": ({**HONEST, "logit_diff": "return logits[0, -1, wrong_token] - logits[0, -1, correct_token]"},
                              [], {**ALL_ONE, "logit_diff": 0}),
        "endless loop and crash cost their own exercises": (
            {**HONEST, "next_token_prediction": HANG, "top_tokens_by_unembed_bias": CRASH}, [],
            {**ALL_ZERO, "logit_diff": 1}),
        "a top-level os._exit costs its cell only": (HONEST, ["import os\nos._exit(0)"], ALL_ONE),
        "an endless top-level cell costs its cell only": (HONEST, ["while True:\n    pass"], ALL_ONE),
        "the alarm ignored in an endless loop": (
            {**HONEST, "logit_diff": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"},
            [], {**ALL_ONE, "logit_diff": 0}),
        "import the solutions at top level": (STUBS, ["from circuitlab_solutions.ch00_setup import *"], ALL_ZERO),
        "import the solutions in the function": (
            {name: f"from circuitlab_solutions.ch00_setup import {name} as answer\nreturn answer(**locals())" for name in CH00},
            [], ALL_ZERO),
        "exec the reference's source from disk": (STUBS, [read_reference], ALL_ZERO),
        "read the instructor's source notebook": (
            STUBS, [f"exec(open({root!r} + '/source/00_setup/00_setup.ipynb').read())"], ALL_ZERO),
        "read another student's submission": (
            STUBS, [f"exec(open({root!r} + '/submitted/alice/00_setup/00_setup.ipynb').read())"], ALL_ZERO),
        "write the gradebook": (
            STUBS, [f"import sqlite3\nsqlite3.connect({root!r} + '/gradebook.db').execute('update grade set manual_score=1')"],
            ALL_ZERO),
        "fetch the answers over the network": (
            STUBS, [f"import urllib.request\nexec(urllib.request.urlopen('http://127.0.0.1:{port}/').read())"], ALL_ZERO),
        "rebind the grader": (
            STUBS, ["import circuitlab_graders.autograde, circuitlab_graders.engine\ncircuitlab_graders.engine.Grader.verdict = lambda *a, **k: None"],
            ALL_ZERO),
        "find the references through gc": (
            STUBS, ["import gc\nfound = [o for o in gc.get_objects() if type(o).__name__ in ('Grader', 'Check', 'Exercise')]\n"
                    "assert found, 'nothing to steal'"], ALL_ZERO),
        "patch torch's comparisons": (
            {name: "return torch.tensor(0.0)" for name in CH00},
            ["import torch\ntorch.isclose = lambda *a, **k: torch.tensor(True)\n"
             "torch.allclose = torch.equal = lambda *a, **k: True"], ALL_ZERO),
        "patch the model class": (
            {"next_token_prediction": "return ' x'", "top_tokens_by_unembed_bias": "return [' x'] * k",
             "logit_diff": "return torch.tensor(0.0)"},
            ["model = course_model()\ntype(model).to_string = lambda self, t: ' x'\n"
             "type(model).forward = lambda self, *a, **k: torch.zeros(1, 1, 50257)"], ALL_ZERO),
        "a str subclass that equals everything": (
            {"next_token_prediction": "return Agreeable(' x')", "top_tokens_by_unembed_bias": "return [Agreeable(' x')] * k",
             "logit_diff": "return torch.tensor(0.0)"}, [agreeable], ALL_ZERO),
        "a tensor subclass": ({**STUBS, "logit_diff": "class T(torch.Tensor):\n    pass\n"
                                                      "return (logits[0, -1, correct_token] - logits[0, -1, wrong_token]).as_subclass(T)"},
                              [], ALL_ZERO),
        "forge the worker's answers": (STUBS, [forge], ALL_ZERO),
        # 5 GB of torch.empty: the kernel would grant it untouched; the job's memory limit does not.
        "an allocation past the memory limit": (
            {**HONEST, "logit_diff": "big = torch.empty(5 << 30, dtype=torch.uint8)\n"
                                     + body_of("logit_diff", HONEST["logit_diff"])}, [], {**ALL_ONE, "logit_diff": 0}),
        "an answer too big to send back": ({**HONEST, "logit_diff": "return torch.zeros(4_000_000)"}, [],
                                           {**ALL_ONE, "logit_diff": 0}),
        "a daemon left for the next submission": (
            STUBS, ["import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3)\n"
                    "    [os.kill(int(p), 9) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]\n"
                    "    os._exit(0)"], ALL_ZERO),
    }


def test_the_cheat_library(autograder, course_root, answer_server):
    library = cheats(course_root, answer_server)
    names = list(library)
    base = chapter0()
    notebooks = [with_answers(base, answers, top) for answers, top, _ in library.values()]
    notebooks.append(with_answers(base, HONEST))  # after the daemon: untouched
    results = autograder.grade_notebooks(notebooks)
    scores = {name: {ex: int(r.passed) for ex, r in res.items()} for name, res in zip(names + ["honest again"], results)}
    expected = {name: want for name, (_, _, want) in library.items()} | {"honest again": ALL_ONE}
    assert scores == expected
    assert (course_root / "gradebook.db").read_bytes() == b"SQLite format 3\x00 (stand-in)"
    assert (course_root / "submitted" / "alice" / "00_setup" / "00_setup.ipynb").read_text() == "alice's answers"
    by_name = dict(zip(names, results))
    subclass = by_name["a str subclass that equals everything"]["next_token_prediction"].feedback
    assert "returned a Agreeable, expected a str" in subclass
    assert "returned a T, expected a torch.Tensor" in by_name["a tensor subclass"]["logit_diff"].feedback
    assert "returned a str, expected" in by_name["forge the worker's answers"]["logit_diff"].feedback
    assert "did not finish" in by_name["endless loop and crash cost their own exercises"]["next_token_prediction"].feedback
    assert "sent back more than 8 MB" in by_name["an answer too big to send back"]["logit_diff"].feedback
    memory = by_name["an allocation past the memory limit"]["logit_diff"].feedback
    assert "your function tried to allocate a tensor of 5.37 GB, more than the" in memory, memory
    assert "GB of memory one call may use here" in memory and "`.mT` transposes the last two" in memory
    assert "crash" in by_name["endless loop and crash cost their own exercises"]["top_tokens_by_unembed_bias"].feedback


def test_what_the_worker_cannot_reach(autograder, course_root, answer_server):
    """A probe submission: its answer to next_token_prediction is the list of what it tried."""
    probe = f"""
import os, socket, importlib, pathlib
tried = []
def attempt(label, action):
    try:
        action()
        tried.append(label + ": REACHED")
    except BaseException as err:
        tried.append(label + ": " + type(err).__name__)
attempt("import solutions", lambda: importlib.import_module("circuitlab_solutions.ch00_setup"))
attempt("import graders.engine", lambda: importlib.import_module("circuitlab_graders.engine"))
attempt("import circuitlab.sweeps", lambda: importlib.import_module("circuitlab.sweeps").residual_sweep)
import circuitlab_graders.worker, circuitlab
repo = pathlib.Path(circuitlab.__file__).resolve().parent.parent
attempt("read solutions/ch00_setup.py", lambda: (repo / "solutions" / "ch00_setup.py").read_text())
attempt("read graders/ch00_setup.py", lambda: (repo / "graders" / "ch00_setup.py").read_text())
attempt("read circuitlab/sweeps/exact.py", lambda: (repo / "circuitlab" / "sweeps" / "exact.py").read_text())
attempt("read the chapter source", lambda: (repo / "chapters" / "00_setup.py").read_text())
attempt("read the gradebook", lambda: open({str(course_root)!r} + "/gradebook.db", "rb").read())
attempt("write the gradebook", lambda: open({str(course_root)!r} + "/gradebook.db", "ab").write(b"x"))
attempt("connect to this machine", lambda: socket.create_connection(("127.0.0.1", {answer_server}), timeout=2))
attempt("connect out", lambda: socket.create_connection(("1.1.1.1", 80), timeout=2))
attempt("read torch", lambda: pathlib.Path(__import__("torch").__file__).read_text())
"""
    answers = {"next_token_prediction": "return tried", "top_tokens_by_unembed_bias": "return []",
               "logit_diff": "return None"}
    kind, reply = autograder.answers(with_answers(chapter0(), answers, [probe]))
    assert kind == "ok", reply
    outcome = next(iter(reply["exercises"]["next_token_prediction"]["calls"].values()))
    assert outcome["value"] == [
        "import solutions: ModuleNotFoundError",
        "import graders.engine: ModuleNotFoundError",
        "import circuitlab.sweeps: AttributeError",
        "read solutions/ch00_setup.py: FileNotFoundError",
        "read graders/ch00_setup.py: FileNotFoundError",
        "read circuitlab/sweeps/exact.py: FileNotFoundError",
        "read the chapter source: FileNotFoundError",
        "read the gradebook: FileNotFoundError",
        "write the gradebook: FileNotFoundError",
        "connect to this machine: ConnectionRefusedError",
        "connect out: OSError",
        "read torch: REACHED",
    ]


def test_the_plan_holds_inputs_and_limits_only(autograder):
    """What the sandbox can read about the hidden cases: their inputs, never an answer."""
    from circuitlab_graders.worker.plan import Plan

    plan = Plan.loads(autograder._plan.dumps())
    assert [e.name for e in plan.exercises] == CH00
    for exercise in plan.exercises:
        for call in exercise.calls:
            assert set(call.inputs) <= {"model", "prompt", "k", "logits", "correct_token", "wrong_token"}
