"""Chapter 3's head scores on small hand-built patterns whose answers are known."""

from __future__ import annotations

import torch

from circuitlab_solutions.ch03_attention_patterns import duplicate_token_score, induction_score, previous_token_score

N = 6


def _pattern(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """A [dst, src] pattern: the given rows, and every other row attending to itself."""
    pattern = torch.eye(N)
    for dst, weights in rows.items():
        pattern[dst] = 0.0
        for src, w in weights.items():
            pattern[dst, src] = w
        pattern[dst, dst] += 1.0 - sum(weights.values())
    return pattern


def test_previous_token_score():
    previous = torch.zeros(N, N)
    previous[0, 0] = 1.0
    previous[torch.arange(1, N), torch.arange(N - 1)] = 1.0
    uniform = torch.ones(N, N).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    scores = previous_token_score(torch.stack([previous, torch.eye(N), uniform]))
    expected_uniform = sum(1 / (d + 1) for d in range(1, N)) / (N - 1)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, expected_uniform]))


# Token 5 at positions 0, 2, 5; token 7 at 1, 3; token 9 at 4 only.
TOKENS = torch.tensor([5, 7, 5, 7, 9, 5])


def test_duplicate_and_induction_scores():
    # Rows with an earlier copy: 2 (copy 0), 3 (copy 1), 5 (copies 0 and 2).
    duplicate = _pattern({2: {0: 1.0}, 3: {1: 0.5}, 5: {0: 0.25, 2: 0.25}})  # per row 1, 0.5, 0.5
    # Induction targets (after each copy): 2 -> 1, 3 -> 2, 5 -> 1 and 3.
    induction = _pattern({2: {1: 1.0}, 3: {2: 1.0}, 5: {1: 0.5, 3: 0.5}})
    pattern = torch.stack([duplicate, induction, torch.eye(N)])
    torch.testing.assert_close(duplicate_token_score(pattern, TOKENS), torch.tensor([2 / 3, 0.0, 0.0]))
    torch.testing.assert_close(induction_score(pattern, TOKENS), torch.tensor([0.0, 1.0, 0.0]))


def test_position_without_a_copy_does_not_count():
    # Row 4 (token 9, no earlier copy) puts all its attention on position 0 (a 5): ignored.
    pattern = _pattern({4: {0: 1.0}, 2: {0: 1.0}, 3: {1: 1.0}, 5: {0: 0.5, 2: 0.5}}).unsqueeze(0)
    torch.testing.assert_close(duplicate_token_score(pattern, TOKENS), torch.tensor([1.0]))


def test_no_repeated_token_scores_zero():
    tokens = torch.arange(N)
    pattern = torch.ones(2, N, N).tril() / torch.arange(1, N + 1)[:, None]
    assert torch.equal(duplicate_token_score(pattern, tokens), torch.zeros(2))
    assert torch.equal(induction_score(pattern, tokens), torch.zeros(2))
