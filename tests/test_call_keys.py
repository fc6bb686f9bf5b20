"""Which learner calls a set of checks makes: equal inputs on one model are one call, shared
by the checks that ask for it, except that a check asking twice gets two calls (a property
that compares two runs). The engine's verdict and the classroom plan read it from one place."""

from __future__ import annotations

from types import SimpleNamespace

from circuitlab_graders.engine import calls_by_check


def check(model: str, *calls: int):
    return SimpleNamespace(gm=SimpleNamespace(key=model), calls=[{"x": x} for x in calls])


def test_calls_shared_across_checks_and_repeated_within_one():
    checks = [check("a", 1), check("a", 1), check("b", 1), check("a", 2, 2), check("a", 2, 1, 3)]
    flags = [[shared for _, _, shared in asked] for _, asked in calls_by_check(checks)]
    assert flags == [[False], [True], [False], [False, False], [True, True, False]]
    keys = [[key for _, key, _ in asked] for _, asked in calls_by_check(checks)]
    assert keys[0] == keys[1] != keys[2] and keys[0][0][0] == "a" and keys[2][0][0] == "b"
    assert keys[3][0] == keys[3][1] == keys[4][0] != keys[4][2]
