"""A worker's reply is untrusted data: an exercise it reports as failed costs each of its
cases the call kind the report names only when a failed exercise can have that kind
(graders.worker.reports.FAILED, spelled as graders.calls.KINDS); anything else is a crash."""

from __future__ import annotations

from circuitlab_graders.autograde import _answered
from circuitlab_graders.calls import Outcome


def outcome(entry: dict) -> Outcome:
    return _answered(entry, "no answer came back")(None, {})  # a failed exercise's cases all read the same


def test_the_kinds_a_failed_exercise_can_have_are_kept():
    missing = "`logit_diff` is not defined when it is checked: its cell must define a function of that name"
    assert outcome({"failed": "raised", "message": missing}) == Outcome("raised", message=missing)
    assert outcome({"failed": "timed_out", "message": "did not finish within 3 s"}) == Outcome(
        "timed_out", message="did not finish within 3 s")
    assert outcome({"failed": "crashed", "message": "killed by signal 9"}) == Outcome("crashed",
                                                                                       message="killed by signal 9")


def test_any_other_failure_kind_is_a_crash():
    for forged in ["answer", "stub", "course_code", "not_run", "timeout", "missing", 3, None]:
        assert outcome({"failed": forged, "message": "m"}) == Outcome("crashed", message="m"), forged
