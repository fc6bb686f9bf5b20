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


def induction_scores(pattern, span: int):
    """pattern [head, dst, src] on BOS + x + x (len(x) = span) -> per-head induction score.

    A token at position p in the second copy has its earlier copy at p - span; the
    induction target is the token right after that copy, at p - span + 1.
    """
    import torch

    dst = torch.arange(1 + span, 1 + 2 * span)
    return pattern[:, dst, dst - span + 1].mean(-1)


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
        induction = induction_scores(att[1].mean(0), span).max().item()
        lags = lag_scores(att[1].mean(0), span)

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
    return {"induction": induction, "prev_token": prev, "logit_diff": diff,
            "course_top1": course_top, "heldout_acc": correct / len(prompts),
            **{f"lag{k}": v for k, v in enumerate(lags)}}


def lag_scores(pattern, span: int, max_lag: int = 4) -> list[float]:
    """pattern [head, dst, src] on BOS + x + x -> for k = 0..max_lag, the best head's mean
    attention from a second-copy token to the token k places after its first occurrence.

    k = 1 is induction; weight at k >= 2 means keys built from tokens further back.
    """
    import torch

    dst = torch.arange(1 + span, 1 + 2 * span)
    return [pattern[:, dst, dst - span + k].mean(-1).max().item() for k in range(max_lag + 1)]
