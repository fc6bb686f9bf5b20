"""The student distribution holds no answers, and its checks still tell right from wrong:
built from this checkout, then used from an environment that has the course's libraries
but no way to reach this checkout's `solutions/`."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from circuitlab_graders.notebooks import REPO
from circuitlab_graders.registry import EXERCISES
from circuitlab_graders.student_release import build

PACKAGE_DIRS = ("circuitlab", "graders", "chapters")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("student") / "release", wheel=True, log=lambda *_: None)


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text).replace("'", '"')


# Lines of the answer code that are no answer: the exercise's interface, which its declaration
# states too, and input handling the runtime does the same way.
SHARED_WITH_THE_RUNTIME = {_norm('COMPONENTS = ("q", "k", "v", "pattern")'),
                           _norm("answers = torch.as_tensor(answers)")}


def distinctive_lines() -> dict[str, str]:
    """Lines of every reference (all of solutions/ and circuitlab/sweeps/) and every known mistake that a student
    could not find in the chapters: normalised (no spaces, one kind of quote), >= 30 characters
    (shorter ones are generic: `n_heads = model.cfg.n_heads`)."""
    public = _norm("".join(p.read_text() for p in (REPO / "chapters").glob("*.py")))
    found = {}
    for path in [*(REPO / "solutions").glob("*.py"), *(REPO / "circuitlab" / "sweeps").glob("*.py")]:
        for line in path.read_text().splitlines():
            found[_norm(line)] = f"{path.name}: {line.strip()}"
    for exercise in EXERCISES.values():
        for mistake in exercise.mistakes:
            for line in inspect.getsource(mistake.fn).splitlines():
                found[_norm(line)] = f"mistake of {exercise.name}: {line.strip()}"
    return {norm: where for norm, where in found.items() if len(norm) >= 30 and norm not in public
            and norm not in SHARED_WITH_THE_RUNTIME
            and not norm.startswith(("from", "import", '"""', "def", "#"))}


def test_no_line_of_a_reference_or_a_mistake_is_in_it(release):
    lines = distinctive_lines()
    assert len(lines) > 150, "too few lines to look for: the test would prove little"
    wheel = next((release / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        texts = {n: archive.read(n).decode() for n in names if n.endswith((".py", ".ipynb", ".md", ".json", ".txt"))}
    assert not [n for n in names if n.startswith(("solutions/", "circuitlab/explore/", "circuitlab/sweeps/attribution"))]
    assert any(n.startswith("circuitlab/chapters/00_setup") for n in names)
    assert not [n for n in names if n.startswith(("circuitlab/sweeps/", "circuitlab/explore/"))]
    tree = {str(p.relative_to(release)): p.read_text() for d in PACKAGE_DIRS for p in (release / d).rglob("*")
            if p.is_file() and p.suffix in (".py", ".ipynb", ".md")}
    leaks = [(file, where) for file, text in {**texts, **tree}.items() for norm, where in lines.items()
             if norm in _norm(text)]
    assert leaks == []


def test_pip_and_a_person_tell_it_from_the_full_course(release):
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    wheel = next((release / "dist").glob("*.whl"))
    assert wheel.name == f"circuitlab-{version}+student-py3-none-any.whl"  # the full one: circuitlab-{version}-...
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    head, _, readme = metadata.partition("\n\n")
    assert f"\nVersion: {version}+student\n" in head and "(student release: public checks, no references)" in head
    # its own README: what the student release is and how a student uses it, nothing of the full course's
    assert readme.startswith(f"# circuitlab {version}+student: the student release")
    assert readme == (release / "README.md").read_text()
    assert f"pip install circuitlab-{version}+student-py3-none-any.whl" in readme and "circuitlab start" in readme
    for full_course_only in ("make course", "solutions/", "student-release", "nbgrader", "render"):
        assert full_course_only not in readme, full_course_only


def test_a_mistake_line_would_be_found():
    """The leak check can fail: the full package does hold those lines."""
    lines = distinctive_lines()
    full = _norm((REPO / "solutions" / "mistakes" / "ch01_residual_patching.py").read_text())
    assert any(norm in full for norm, where in lines.items() if where.startswith("mistake of residual_patching_sweep"))


def test_right_passes_and_wrong_fails_there(release, tmp_path):
    """A fresh venv sees the course's libraries (one .pth line to this venv's site-packages,
    whose own .pth files, the editable install's among them, are not read) and the release's
    wheel, unpacked as pip installs it. The learner's folder holds a solutions.py and a
    graders.py of their own: the course's installed names are not those, so neither is read."""
    import site

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next((venv / "lib").glob("python*/site-packages"))
    installed = tmp_path / "installed"
    with zipfile.ZipFile(next((release / "dist").glob("*.whl"))) as archive:
        archive.extractall(installed)
    (packages / "libraries.pth").write_text(site.getsitepackages()[0] + "\n")
    (packages / "release.pth").write_text(str(installed) + "\n")
    learner = tmp_path / "learner"
    learner.mkdir()
    for name in ("solutions.py", "graders.py"):
        (learner / name).write_text(f"raise SystemExit('the learner\\'s {name} was imported')\n")
    script = textwrap.dedent("""
        import importlib.util, json, torch
        import circuitlab_graders as graders
        from circuitlab_graders.registry import EXERCISES
        def logit_diff(logits, correct_token, wrong_token):
            return logits[0, -1, correct_token] - logits[0, -1, wrong_token]
        def wrong(logits, correct_token, wrong_token):
            return logits[0, -1, wrong_token] - logits[0, -1, correct_token]
        def stub(logits, correct_token, wrong_token):
            raise NotImplementedError
        def uses_the_sweeps(logits, correct_token, wrong_token):
            import circuitlab.sweeps
            return logits[0, -1, correct_token] - logits[0, -1, wrong_token]
        results = [graders.grade("logit_diff", f) for f in (logit_diff, wrong, stub, uses_the_sweeps)]
        print(json.dumps({
            "circuitlab_solutions": importlib.util.find_spec("circuitlab_solutions") is not None,
            "graders_from": graders.__file__,
            "mistakes": sum(len(e.mistakes) for e in EXERCISES.values()),
            "public": graders.public_mode(),
            "passed": [r.passed for r in results], "modes": [r.mode for r in results],
            "sweeps_from": importlib.util.find_spec("circuitlab.sweeps"),
            "wrong": results[1].feedback, "stub": results[2].feedback, "sweeps": results[3].feedback}))
    """)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=learner, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["circuitlab_solutions"] is False and out["graders_from"].startswith(str(installed))
    assert out["mistakes"] == 0 and out["public"] is True
    assert out["passed"] == [True, False, False, False] and out["modes"] == ["public"] * 4
    assert "must be positive" in out["wrong"]
    assert out["stub"].startswith("not implemented yet")
    # the exact sweeps (answer code) are not in the release at all
    assert out["sweeps_from"] is None
    assert "Scored zero: your function reads the course's own code (imports circuitlab.sweeps)" in out["sweeps"]
