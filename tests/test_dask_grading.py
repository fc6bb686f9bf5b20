"""A class larger than one machine: the same grader on a Dask distributed cluster (here a
local one with two worker processes), with the same verdicts as on this machine."""

from __future__ import annotations

import shutil

import pytest

from circuitlab_graders.notebooks import read_notebook, select_chapters
from tests.submissions import CRASH, with_answers

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
CH00 = ["next_token_prediction", "top_tokens_by_unembed_bias", "logit_diff"]


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_a_class_on_a_local_dask_cluster(cluster, tmp_path):
    from circuitlab_graders.autograde import Autograder

    chapter = read_notebook(select_chapters(("00",))[0])
    honest = {name: "ref" for name in CH00}
    notebooks = [with_answers(chapter, honest), with_answers(chapter, {}),
                 with_answers(chapter, {**honest, "logit_diff": CRASH}), with_answers(chapter, honest)]
    progress = []
    with Autograder(CH00, {n: [7, 8] for n in CH00}, hide=[tmp_path], scheduler=cluster.scheduler_address,
                    cell_timeout=30) as grader:
        results = grader.grade_notebooks(notebooks, progress=progress.append)
    scores = [{name: int(r.passed) for name, r in result.items()} for result in results]
    assert scores == [dict.fromkeys(CH00, 1), dict.fromkeys(CH00, 0), {**dict.fromkeys(CH00, 1), "logit_diff": 0},
                      dict.fromkeys(CH00, 1)]
    assert progress == [1, 2, 3, 4]
    assert "crashed" in results[2]["logit_diff"].feedback
    # Both worker processes took submissions: each started one sandbox for the plan.
    from distributed import Client

    with Client(cluster) as client:
        sandboxes = client.run(lambda: len(__import__("circuitlab_graders.autograde").autograde._DASK_SANDBOX))
    assert sorted(sandboxes.values()) == [1, 1]
