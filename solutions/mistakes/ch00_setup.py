"""Chapter 0's known mistakes: logits, the unembedding bias, the logit difference."""

from __future__ import annotations

from circuitlab_graders.declare import Mistake

MISTAKES = {
    "next_token_prediction": (
        Mistake("read the prediction at the first position",
                "The next-token prediction sits at the last position: logits[0, -1].",
                lambda model, prompt: model.to_string(model(prompt)[0, 0].argmax())),
        Mistake("took the least likely token (argmin)",
                "The prediction is the token with the largest logit: use argmax.",
                lambda model, prompt: model.to_string(model(prompt)[0, -1].argmin())),
        Mistake("stripped the leading space from the token",
                "Keep the token exactly as decoded: ' Turing' and 'Turing' are different tokens.",
                lambda model, prompt: model.to_string(model(prompt)[0, -1].argmax()).strip()),
        Mistake("returned the token id, not the token string", "Decode the id with model.to_string(...).",
                lambda model, prompt: int(model(prompt)[0, -1].argmax())),
    ),
    "top_tokens_by_unembed_bias": (
        Mistake("returned the tokens with the smallest bias", "Use topk (largest first), not the bottom of the ranking.",
                lambda model, k: [model.to_string(t) for t in model.b_U.topk(k, largest=False).indices]),
        Mistake("returned token ids, not token strings", "Decode each id with model.to_string(...).",
                lambda model, k: [int(t) for t in model.b_U.topk(k).indices]),
        Mistake("ranked tokens by the absolute value of the bias",
                "A large negative bias suppresses a token; rank by the signed value.",
                lambda model, k: [model.to_string(t) for t in model.b_U.abs().topk(k).indices]),
        Mistake("returned the top tokens smallest-first", "Order the list from the largest bias down.",
                lambda model, k: [model.to_string(t) for t in model.b_U.topk(k).indices.flip(0)]),
    ),
    "logit_diff": (
        Mistake("subtracted the wrong way round (wrong − correct)",
                "The logit difference is logit(correct) − logit(wrong).",
                lambda logits, correct_token, wrong_token: logits[0, -1, wrong_token] - logits[0, -1, correct_token]),
        Mistake("used the first position instead of the final one", "The next-token prediction is at logits[0, -1].",
                lambda logits, correct_token, wrong_token: logits[0, 0, correct_token] - logits[0, 0, wrong_token]),
        Mistake("used the last batch item instead of item 0", "Index batch item 0: logits[0, -1].",
                lambda logits, correct_token, wrong_token: logits[-1, -1, correct_token] - logits[-1, -1, wrong_token]),
        Mistake("compared probabilities instead of logits", "Subtract the raw logits; a softmax squashes the difference.",
                lambda logits, correct_token, wrong_token: logits[0, -1].softmax(-1)[correct_token]
                - logits[0, -1].softmax(-1)[wrong_token]),
        Mistake("returned a 1-element tensor instead of a 0-dim one",
                "Index with plain integers (logits[0, -1, token]) so the result is a single number.",
                lambda logits, correct_token, wrong_token: logits[0, -1, [correct_token]] - logits[0, -1, [wrong_token]]),
    ),
}
