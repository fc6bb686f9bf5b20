"""The declaration kit's properties say what they should, and the graders hold no answer
code: every known mistake and reference is in solutions/ (issue 23's layout)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import torch

from circuitlab_graders import kit
from circuitlab_graders.registry import EXERCISES, chapter_modules

CALL = {"x": 1}


def test_sign_flip_holds_only_for_negated_answers():
    prop = kit.sign_flip(CALL, {"x": 2}, kit.tensor_of((2,)), "swapped")
    assert prop.calls == (CALL, {"x": 2}) and prop.label == "swapping the answers flips the sign"
    assert prop.holds([torch.tensor([1.0, -2.0]), torch.tensor([-1.0, 2.0])]) is None
    assert prop.holds([torch.tensor([1.0, -2.0]), torch.tensor([1.0, -2.0])]).startswith("swapped: got [1.0, -2.0]")
    assert prop.holds([torch.tensor([1.0]), torch.tensor([-1.0])]) == (
        "returned shape (1,), expected a tensor of shape (2,)")


def test_equals_checks_the_form_first_and_stacks_several_answers():
    prop = kit.equals("three", (CALL, CALL, CALL), kit.NUMBER, torch.full((3,), 2.0), "q, k, v", atol=1e-3)
    assert prop.holds([2.0, 2.0005, torch.tensor([2.0])]) is None
    assert prop.holds([2.0, 3.0, 2.0]).startswith("q, k, v: got [2.0, 3.0, 2.0]")
    assert prop.holds([2.0, "2", 2.0]) == "returned str, expected a float"
    scalar = kit.equals("zero", (CALL,), kit.SCALAR, torch.tensor(0.0), "same")
    assert scalar.holds([torch.tensor(0.0)]) is None
    assert scalar.holds([torch.tensor([0.0])]).startswith("returned shape (1,)")


def test_has_form_names_the_wrong_form():
    prop = kit.has_form("one number", CALL, kit.NUMBER)
    assert prop.holds([1.5]) is None and prop.holds([float("nan")]) == "returned nan, expected a finite number"


def test_swapped_answers_and_identical_run():
    args = kit.pair_args(kit.SHORT_PAIR)
    assert kit.swapped_answers(args)["clean_answer"] == " Carroll" and kit.swapped_answers(args)["corrupt_answer"] == " Hart"
    assert kit.identical_run(args)["corrupt_prompt"] == "Alex Hart Alex"
    batch = {"answers": ["a"], "wrong_answers": ["b"]}
    assert kit.swapped_answers(batch, "answers", "wrong_answers") == {"answers": ["b"], "wrong_answers": ["a"]}


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return found | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_declarations_hold_no_answer_code():
    modules = chapter_modules()
    assert len(modules) >= 6
    for module in modules:
        imported = _imports(module)
        assert not {m for m in imported if m.startswith(("circuitlab_solutions", "circuitlab.sweeps"))}, module.__name__
        # No chapter's declarations import another's: what they share is in graders/kit.py.
        assert not {m for m in imported if m.startswith("circuitlab_graders.ch")}, module.__name__
        assert "Mistake(" not in inspect.getsource(module), module.__name__
    mistakes = [m for e in EXERCISES.values() for m in e.mistakes]
    assert len(mistakes) > 100
    assert {inspect.getmodule(m.fn).__name__.split(".ch")[0] for m in mistakes} == {"circuitlab_solutions.mistakes"}
