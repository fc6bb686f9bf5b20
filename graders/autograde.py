"""Classroom autograding that judges outside the student's code.

    with Autograder(["logit_diff", ...], seeds={"logit_diff": [812, 4471], ...}, hide=[course_root]) as grader:
        results = grader.grade_notebooks([nb_a, nb_b, ...])     # per notebook: {exercise: Result}

This process is the trusted side and never runs learner code. It plans every exercise on
the hidden seeds (cases, reference answers: once per Autograder), writes the plan (inputs
and limits, no answers) where the sandbox can read it, and hands each submission to a
sandboxed worker (`circuitlab_graders.worker`: bubblewrap, no network, the course's answer code,
the course directory and every other submission hidden). The worker returns the
learner's answers as plain data (`circuitlab_graders.wire`: JSON and safetensors, never pickle);
the engine here compares them with the references, types checked exactly, names known
mistakes and writes the feedback. Without bubblewrap, grading refuses to start.

Submissions run in parallel: one single-threaded sandbox per core by default, or, given a
Dask scheduler address, one sandbox per Dask worker process (each gets the plan once).
A crash, an endless loop or `os._exit` costs the exercise it happens in (a top-level one
costs its cell), never another submission.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import nbformat

from circuitlab.saved_results import CHECK_CALL
from circuitlab_graders import calls, limits, wire
from circuitlab_graders.calls import Outcome
from circuitlab_graders.engine import Check, Grader, call_key, calls_by_check
from circuitlab_graders.notebooks import is_test_cell
from circuitlab_graders.guard.timer import wall_seconds
from circuitlab_graders.registry import exercise as find
from circuitlab_graders.results import Result
from circuitlab_graders.worker import STAGED, reports
from circuitlab_graders.worker.plan import Call, ExercisePlan, Plan
from circuitlab_graders.worker.preload import PLAN_ENV

CELL_TIMEOUT = limits.CELL_TIMEOUT_S
SANDBOX_MIN_TIME_LIMIT_S = limits.SANDBOX_CALL_FLOOR_CPU_S
GRACE = limits.GRACE_S
CPU_SECONDS = limits.PROCESS_CPU_S


def job(nb: nbformat.NotebookNode) -> dict:
    """What a worker gets of a notebook: every code cell but the test cells (the grader
    decides what those check; a student's copy of one counts for nothing), and where each
    test cell stands with the exercises it checks (they are graded there)."""
    cells, checks = [], []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        source = str(cell.get("source", ""))
        if is_test_cell(cell):
            checks.append([index, CHECK_CALL.findall(source)])
        else:
            cells.append([index, source])
    return {"cells": cells, "checks": checks}


def plan_directory() -> Path:
    """Where the plan file goes: a place the sandbox sees (its /tmp is its own, the course
    and the checkout are hidden)."""
    for base in (Path("/var/tmp"), Path.home() / ".cache"):
        if base.is_dir() and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="circuitlab-plan-", dir=base))
    raise RuntimeError("no directory outside /tmp to write the grading plan to (tried /var/tmp and ~/.cache)")


class Autograder:
    """Grades submissions of one assignment's exercises on hidden seeds, in sandboxes."""

    def __init__(self, exercises: Sequence[str], seeds: Mapping[str, Sequence[int]], hide: Iterable[Path] = (),
                 workers: Optional[int] = None, scheduler: Optional[str] = None,
                 cell_timeout: float = CELL_TIMEOUT, grader: Optional[Grader] = None, log: Callable = print) -> None:
        self.exercises = [find(name) for name in exercises]
        self.seeds = {name: list(seeds[name]) for name in exercises}
        self.hide = [Path(p) for p in hide]
        self.workers = workers or len(os.sched_getaffinity(0))
        self.scheduler = scheduler
        self.cell_timeout = cell_timeout
        self.grader = grader or Grader()
        self.log = log
        self._checks: dict[str, list[Check]] = {}
        self._plan: Optional[Plan] = None
        self._plan_dir: Optional[Path] = None
        self._runner = None

    # ------------------------------------------------------------ trusted preparation

    def prepare(self) -> Plan:
        """Cases and reference answers for every exercise (computed here, once), and the plan."""
        planned = []
        for exercise in self.exercises:
            checks = self.grader.plan(exercise, "hidden", self.seeds[exercise.name], floor=SANDBOX_MIN_TIME_LIMIT_S)
            self._checks[exercise.name] = checks
            # The worker makes each call once; a check that asks for it twice reads one answer.
            made = {key: Call("/".join(key), check.gm.key, dict(inputs), check.limit)
                    for check, asked in calls_by_check(checks) for inputs, key, shared in asked if not shared}
            planned.append(ExercisePlan(exercise.name, tuple(made.values())))
        from circuitlab.loading import default_model

        models = tuple((gm.key, gm.weights) for gm in self.grader.models)
        self._plan = Plan(models, default_model(), tuple(planned), self.cell_timeout)
        return self._plan

    def __enter__(self) -> "Autograder":
        plan = self.prepare()
        self._plan_dir = plan_directory()
        (self._plan_dir / "plan.bin").write_bytes(plan.dumps())
        self._runner = (DaskRunner(self.scheduler, self._sandbox_args()) if self.scheduler
                        else LocalRunner(self.workers, self._sandbox_args()))
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            self._runner.close()
        if self._plan_dir is not None:
            for child in self._plan_dir.iterdir():
                child.unlink()
            self._plan_dir.rmdir()

    def _sandbox_args(self) -> dict[str, Any]:
        from circuitlab_graders.sandbox import Limits
        from circuitlab_graders.sandbox.project import course_view

        view = course_view(self.hide)
        view = dataclasses.replace(view, env={**view.env, PLAN_ENV: str(self._plan_dir / "plan.bin")})
        limits = Limits(cpu_seconds=CPU_SECONDS)
        return {"preload": "circuitlab_graders.worker.preload:load", "handler": "circuitlab_graders.worker.supervisor:grade",
                "stage": list(STAGED), "view": view, "limits": limits}

    def job_timeout(self, n_cells: int) -> float:
        """The sandbox's last resort for one submission: every cell once at its limit,
        each restart, and every exercise's deadline (the supervisor stops things sooner)."""
        deadlines = sum(e.deadline for e in self._plan.exercises) + GRACE * len(self._plan.exercises)
        return (n_cells + 2) * (wall_seconds(self.cell_timeout) + GRACE) + deadlines

    # ------------------------------------------------------------ grading

    def grade_notebooks(self, notebooks: Sequence[nbformat.NotebookNode],
                        progress: Optional[Callable[[int], None]] = None) -> list[dict[str, Result]]:
        """Each notebook's results, by exercise, in the notebooks' order."""
        jobs = [wire.dumps(job(nb)) for nb in notebooks]
        timeouts = [self.job_timeout(len(job(nb)["cells"])) for nb in notebooks]
        replies = self._runner.run(jobs, timeouts, progress)
        decoded = [self._decode(reply) for reply in replies]
        self.cell_seconds = [seconds for _, seconds, _ in decoded]  # per notebook, for the course build's timeout
        return [self.judge(answers, problem) for answers, _, problem in decoded]

    def _decode(self, reply: tuple[str, bytes, str]) -> tuple[dict, dict[int, float], str]:
        """A worker's reply (untrusted data) as (answers by exercise, seconds per cell, the
        problem if there is no answer)."""
        kind, answer, message = reply
        if kind != "ok":
            return {}, {}, message or f"the submission could not be run ({kind})"
        try:
            device = str(self.grader.models[0].model.cfg.device)
            tree = wire.loads(answer, model_device=device)
            seconds = {int(k): float(v) for k, v in tree.get("cell_seconds", {}).items()}
            return dict(tree.get("exercises", {})), seconds, ""
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}, {}, "the grading worker sent an answer that could not be read"

    def answers(self, nb: nbformat.NotebookNode) -> tuple[str, Any]:
        """What the worker sent back for one notebook, decoded but not judged (the sandbox's
        outcome kind, and the answers): for tests and for looking into a strange verdict."""
        kind, answer, message = self._runner.run([wire.dumps(job(nb))], [self.job_timeout(len(job(nb)["cells"]))])[0]
        return kind, (wire.loads(answer) if kind == "ok" else message)

    def judge(self, answers: dict, problem: str) -> dict[str, Result]:
        """Judge every exercise from one worker's decoded answers."""
        results = {}
        for exercise in self.exercises:
            entry = answers.get(exercise.name)
            call = _answered(entry, problem or "no answer came back for this exercise")
            results[exercise.name] = self.grader.verdict(exercise, self._checks[exercise.name], call, "hidden",
                                                         lambda e=entry: _printed(e), escalate=False)
        return results


def _answered(entry: Any, fallback: str) -> Callable[[Check, Mapping[str, Any]], Outcome]:
    """The engine's `call` for one exercise, answered from a worker's reply."""

    def call(check: Check, inputs: Mapping[str, Any]) -> Outcome:
        if not isinstance(entry, dict):
            return Outcome("crashed", message=calls.short(fallback))
        if "failed" in entry:
            kind = str(entry["failed"]) if entry["failed"] in reports.FAILED else "crashed"  # untrusted: checked
            return Outcome(kind, message=calls.short(str(entry.get("message", ""))))
        got = entry.get("calls", {}).get("/".join(call_key(check.gm, inputs))) if isinstance(entry.get("calls"), dict) else None
        if not isinstance(got, dict) or got.get("kind") not in calls.KINDS:
            return Outcome("crashed", message="no answer came back for this case")
        notes = [calls.short(str(n)) for n in got.get("notes", [])][:10] if isinstance(got.get("notes"), list) else []
        damage = [calls.short(str(n)) for n in got.get("damage", [])][:10] if isinstance(got.get("damage"), list) else []
        return Outcome(got["kind"], got.get("value"), calls.short(str(got.get("message", ""))), notes, damage)

    return call


def _printed(entry: Any) -> Optional[str]:
    note = entry.get("printed") if isinstance(entry, dict) else None
    return calls.short(note) if isinstance(note, str) else None


# ---------------------------------------------------------------- one warm grader per course

_WARM: dict[tuple[str, str], "Autograder"] = {}  # one warm Autograder per course and assignment


def warm_autograder(root: Path, assignment: str, workers: Optional[int] = 1,
                    scheduler: Optional[str] = None) -> "Autograder":
    """A started Autograder for `assignment` of the course at `root`, kept for the process's
    lifetime: nbgrader's own autograde calls SandboxExecute once per submission."""
    from circuitlab_graders.course_secrets import CourseSecrets

    key = (str(Path(root).resolve()), assignment)
    if key not in _WARM:
        secrets = CourseSecrets.read(root)
        grader = Autograder(secrets.exercises(assignment), secrets.seeds(assignment), hide=[Path(root).resolve()],
                            workers=workers, scheduler=scheduler, cell_timeout=secrets.cell_timeout)
        _WARM[key] = grader.__enter__()
    return _WARM[key]


def close_warm_autograders() -> None:
    while _WARM:
        _WARM.popitem()[1].__exit__(None, None, None)


# ---------------------------------------------------------------- where the sandboxes run


class LocalRunner:
    """`workers` sandboxes on this machine (a graders.sandbox.SandboxPool), each serving one
    submission at a time; replies as (kind, answer, message), like DaskRunner's."""

    def __init__(self, workers: int, sandbox_args: dict[str, Any]) -> None:
        from circuitlab_graders.sandbox import SandboxPool

        self.pool = SandboxPool(workers, **sandbox_args).__enter__()  # starts them side by side

    def run(self, jobs: list[bytes], timeouts: list[float], progress=None) -> list[tuple[str, bytes, str]]:
        return [(o.kind, o.answer or b"", o.message) for o in self.pool.run(jobs, timeouts, progress)]

    def close(self) -> None:
        self.pool.close()


_DASK_SANDBOX: dict[str, Any] = {}  # in each Dask worker process: the sandbox for one plan


def _dask_task(plan_bytes: bytes, sandbox_args: dict[str, Any], job: bytes, timeout: float) -> tuple[str, bytes, str]:
    """Runs in a Dask worker (a trusted process that never runs learner code itself): one
    sandbox per worker process and plan, started on first use."""
    import hashlib

    from circuitlab_graders.sandbox import Sandbox

    key = hashlib.sha256(plan_bytes).hexdigest()
    if key not in _DASK_SANDBOX:
        for old in _DASK_SANDBOX.values():
            old.close()
        _DASK_SANDBOX.clear()
        folder = plan_directory()
        (folder / "plan.bin").write_bytes(plan_bytes)
        atexit.register(shutil.rmtree, folder, True)
        view = sandbox_args["view"]
        args = {**sandbox_args, "view": dataclasses.replace(view, env={**view.env, PLAN_ENV: str(folder / "plan.bin")})}
        _DASK_SANDBOX[key] = Sandbox(**args)
    outcome = _DASK_SANDBOX[key].run(job, timeout)
    return outcome.kind, outcome.answer or b"", outcome.message


class DaskRunner:
    """Submissions as tasks on a Dask distributed cluster; the plan travels once per worker."""

    def __init__(self, scheduler: str, sandbox_args: dict[str, Any]) -> None:
        from distributed import Client

        self.client = Client(scheduler)
        self.sandbox_args = sandbox_args
        plan_path = Path(sandbox_args["view"].env[PLAN_ENV])
        self.plan = self.client.scatter(plan_path.read_bytes(), broadcast=True)

    def run(self, jobs: list[bytes], timeouts: list[float], progress=None) -> list[tuple[str, bytes, str]]:
        from distributed import as_completed as dask_completed

        futures = [self.client.submit(_dask_task, self.plan, self.sandbox_args, job, t, pure=False)
                   for job, t in zip(jobs, timeouts)]
        index = {f.key: i for i, f in enumerate(futures)}
        replies: list = [None] * len(jobs)
        for done, future in enumerate(dask_completed(futures), 1):
            replies[index[future.key]] = future.result()
            if progress:
                progress(done)
        return replies

    def close(self) -> None:
        self.client.close()
