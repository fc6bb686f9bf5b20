"""Grading a whole class at once: `python -m circuitlab_graders autograde ASSIGNMENT`.

Every submission is graded in sandboxes, in parallel (or on a Dask cluster), first; then
nbgrader's own autograde records each one (gradebook, autograded notebooks), with
`SandboxExecute` (graders.nbgrader_plugin) taking the verdict computed here instead of
grading the submission again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import nbformat

from circuitlab_graders.course_secrets import CourseSecrets
from circuitlab_graders.nbgrader_plugin import PRECOMPUTED
from circuitlab_graders.results import Result


def submissions(root: Path, assignment: str, students: Sequence[str] = ()) -> dict[str, Path]:
    """student -> submitted notebook, in nbgrader's default layout submitted/<student>/<assignment>/."""
    found = {}
    for path in sorted((Path(root) / "submitted").glob(f"*/{assignment}/{assignment}.ipynb")):
        student = path.parent.parent.name
        if not students or student in students:
            found[student] = path
    missing = sorted(set(students) - set(found))
    if missing:
        raise FileNotFoundError(f"no submission of {assignment} from: {', '.join(missing)}")
    return found


def autograde_class(root: Path, assignment: str, students: Sequence[str] = (), workers: Optional[int] = None,
                    scheduler: Optional[str] = None, log: Callable = print) -> dict[str, dict[str, Result]]:
    """Grade every submission of `assignment` (or those of `students`) in sandboxes, in
    parallel, then record them with nbgrader's own autograde (gradebook, autograded
    notebooks). Returns student -> exercise -> Result."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from tqdm.auto import tqdm
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(root).resolve()
    found = submissions(root, assignment, students)
    if not found:
        raise FileNotFoundError(f"no submissions of {assignment} under {root / 'submitted'}")
    secrets = CourseSecrets.read(root)
    from circuitlab_graders.autograde import Autograder

    log(f"preparing {assignment}: {', '.join(secrets.exercises(assignment))} on hidden cases ...")
    start = time.perf_counter()
    with Autograder(secrets.exercises(assignment), secrets.seeds(assignment), hide=[root], workers=workers,
                    scheduler=scheduler, cell_timeout=secrets.cell_timeout, log=log) as grader:
        notebooks = [nbformat.read(path, as_version=4) for path in found.values()]
        with tqdm(total=len(notebooks), desc=f"grading {assignment}", unit="submission") as bar:
            graded = grader.grade_notebooks(notebooks, progress=lambda done: bar.update(done - bar.n))
    results = dict(zip(found, graded))
    log(f"graded {len(found)} submissions in {time.perf_counter() - start:.0f} s; recording them with nbgrader ...")
    start = time.perf_counter()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    unrecorded = []
    for student, by_exercise in results.items():  # one submission nbgrader cannot read must not stop the rest
        PRECOMPUTED[(student, found[student].stem)] = by_exercise
        outcome = api.autograde(assignment, student, force=True, create=True)
        PRECOMPUTED.pop((student, found[student].stem), None)
        if not outcome.get("success"):
            unrecorded.append(f"{student}: {(outcome.get('error') or outcome.get('log') or '').strip()[-800:]}")
    log(f"recorded in {time.perf_counter() - start:.0f} s")
    if unrecorded:
        raise RuntimeError("nbgrader could not record these submissions (the others are recorded):\n"
                           + "\n".join(unrecorded))
    return results
