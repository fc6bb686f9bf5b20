"""The circuit scores training reports and the acceptance tests assert.

Patterns are ``[head, dst, src]`` attention of one layer (one sequence, or a batch mean).
"""

from __future__ import annotations

from training.corpus import HELDOUT_TEXT, heldout_prompts, repeated_random_tokens


def prev_token_scores(pattern):
    """pattern [head, dst, src] -> per-head mean of attention from dst to dst-1 (dst >= 1)."""
    import torch

    n = pattern.shape[-1]
    dst = torch.arange(1, n)
    return pattern[:, dst, dst - 1].mean(-1)


def lag_attention(pattern, span: int, lag: int):
    """pattern [head, dst, src] on BOS + x + x (len(x) = span) -> per head, the mean attention
    from a second-copy token to the token ``lag`` places after its earlier copy.

    A token at position p in the second copy has its earlier copy at p - span. Lag 1 (the
    token right after that copy) is induction; weight at lag >= 2 means keys built from
    tokens further back.
    """
    import torch

    dst = torch.arange(1 + span, 1 + 2 * span)
    return pattern[:, dst, dst - span + lag].mean(-1)


def induction_scores(pattern, span: int):
    """pattern [head, dst, src] on BOS + x + x (len(x) = span) -> per-head induction score."""
    return lag_attention(pattern, span, lag=1)


def evaluate(model, tok, id_map=None, n_seqs: int = 8, span: int = 20) -> dict[str, float]:
    """Induction (best layer-1 head), prev-token (best layer-0 head), logit diff, held-out accuracy.

    ``id_map`` maps GPT-2 ids to the model's ids (for the reduced-vocabulary model).
    """
    import torch

    def ids(seq):
        t = torch.as_tensor(seq)
        return id_map[t] if id_map is not None else t

    def attn(tokens):
        out = model(ids(tokens), output_attentions=True)
        return out.logits, out.attentions

    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, att = attn(repeated_random_tokens(n_seqs, span, seed=1234, bos=tok.bos_token_id))
        # Best layer-1 head at lags 0-4; lag 1 is the induction score.
        lags = [lag_attention(att[1].mean(0), span, k).max().item() for k in range(5)]

        _, att = attn([[tok.bos_token_id] + tok.encode(HELDOUT_TEXT)])
        prev = prev_token_scores(att[0][0]).max().item()

        def final_logits(text):
            logits, _ = attn([[tok.bos_token_id] + tok.encode(text)])
            return logits[0, -1]

        def tid(word):
            t = torch.tensor(tok.encode(" " + word))
            return (id_map[t] if id_map is not None else t).item()

        last = final_logits("Her name was Alex Hart. Tomorrow at lunch time Alex")
        diff = (last[tid("Hart")] - last[tid("Carroll")]).item()
        course_top = int(last.argmax().item() == tid("Hart"))
        prompts = heldout_prompts()
        correct = sum(final_logits(p).argmax().item() == tid(s) for p, s, _ in prompts)
    model.train(was_training)
    return {"induction": lags[1], "prev_token": prev, "logit_diff": diff,
            "course_top1": course_top, "heldout_acc": correct / len(prompts),
            **{f"lag{k}": v for k, v in enumerate(lags)}}
