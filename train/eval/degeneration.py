"""Degeneration metrics (REFERENCE §7), on token ids so they need no tokenizer.

    seq-rep-n   per continuation 1 - unique n-grams / n-grams, averaged (Welleck et al. 2019:
                50-token prefix, 100-token greedy continuation, n = 1 and 4; human text ~0,
                their greedy MLE baseline ~0.43 for n = 4)
    rep/l       teacher-forced on real text: share of positions whose greedy next-token
                prediction already occurs among the previous l gold tokens
    longest run longest stretch of one token repeated back to back in a continuation
    distinct-n  distinct n-grams / n-grams pooled over all continuations

Greedy continuations have a fixed length and do not stop at EOS, as in Welleck et al., so
every checkpoint is measured on the same number of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def seq_rep_n(tokens: Sequence[int], n: int) -> float:
    """1 - unique n-grams / n-grams of one sequence (0 when it is shorter than n)."""
    grams = ngrams(list(tokens), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def longest_run(tokens: Sequence[int]) -> int:
    """Length of the longest stretch of one token repeated back to back."""
    best = run = 0
    prev = None
    for t in tokens:
        run = run + 1 if t == prev else 1
        prev = t
        best = max(best, run)
    return best


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams / n-grams, pooled over all sequences."""
    grams = [g for s in sequences for g in ngrams(list(s), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def rep_l_hits(inputs: torch.Tensor, preds: torch.Tensor, window: int) -> tuple[int, int]:
    """(hits, positions) for rep/l: ``preds[b, t]`` is the greedy prediction of token t + 1
    after reading ``inputs[b, :t + 1]``; a hit when it equals one of ``inputs[b, t - l + 1 : t + 1]``.

    inputs, preds: (B, T). Memory B * T * T bools, fine for T up to a few thousand.
    """
    T = inputs.shape[1]
    t = torch.arange(T)
    # visible[t, s]: gold token s is among the previous `window` tokens at position t.
    visible = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)  # (T, T)
    same = preds[:, :, None] == inputs[:, None, :]  # (B, T, T)
    hits = (same & visible).any(dim=-1)  # (B, T)
    return int(hits.sum()), hits.numel()


def summarize(continuations: Sequence[Sequence[int]]) -> dict[str, float]:
    """Generation metrics of a set of continuations (one per prompt)."""
    runs = [longest_run(c) for c in continuations]
    k = max(len(continuations), 1)
    return {
        "seq_rep_1": sum(seq_rep_n(c, 1) for c in continuations) / k,
        "seq_rep_4": sum(seq_rep_n(c, 4) for c in continuations) / k,
        "longest_run": max(runs, default=0),
        "mean_longest_run": sum(runs) / k,
        "distinct_2": distinct_n(continuations, 2),
    }
