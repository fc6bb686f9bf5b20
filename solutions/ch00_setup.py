"""Chapter 0 reference solutions: logits, the unembedding bias, the logit difference."""

from __future__ import annotations

from torch import Tensor


def next_token_prediction(model, prompt: str) -> str:
    """The model's most likely next token after `prompt`, as a string (e.g. " Turing").

    Logits are [batch, position, vocab]; the prediction for the next token lives
    at the final position of the only batch item.
    """
    logits = model(prompt)
    next_token = logits[0, -1].argmax()
    return model.to_string(next_token)


def top_tokens_by_unembed_bias(model, k: int) -> list[str]:
    """The `k` tokens with the largest unembedding bias `b_U`, largest first.

    The bias is added to every logit whatever the input, so it is a prior over
    tokens: the largest entries are tokens the model favours by default.
    """
    top = model.b_U.topk(k).indices
    return [model.to_string(token) for token in top]


def logit_diff(logits: Tensor, correct_token: int, wrong_token: int) -> Tensor:
    """logit(correct) - logit(wrong) at the final position of batch item 0 (a 0-dim tensor)."""
    final = logits[0, -1]
    return final[correct_token] - final[wrong_token]
