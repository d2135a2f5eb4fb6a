"""Accuracy and macro F1 with standard errors (numpy only).

    acc        mean of 0/1 hits; stderr = sample std (ddof 1) / sqrt(n), the harness's mean_stderr
    f1         macro F1 as sklearn.metrics.f1_score(average="macro"): the mean over every label
               seen in the gold labels or the predictions of 2 tp / (2 tp + fp + fn)
    f1 stderr  bootstrap: the sample std (ddof 1) of macro F1 over BOOTSTRAP_ITERS resamples of
               the examples with replacement, drawn from numpy's default_rng(seed). The harness
               reports no stderr for KoBEST's F1 (its aggregation is not in its bootstrap list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_ITERS = 1000


def accuracy(golds: Sequence[int], preds: Sequence[int]) -> float:
    g, p = np.asarray(golds), np.asarray(preds)
    return float((g == p).mean())


def mean_stderr(values: Sequence[float]) -> float:
    """Sample standard deviation / sqrt(n); NaN for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return math.nan
    return float(v.std(ddof=1) / math.sqrt(len(v)))


def _macro_f1_rows(g: np.ndarray, p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Macro F1 of each row of (R, n) gold/prediction arrays; ``labels`` covers every value."""
    gc = g[..., None] == labels  # (R, n, C)
    pc = p[..., None] == labels
    tp = (gc & pc).sum(axis=1)  # (R, C)
    fp = (~gc & pc).sum(axis=1)
    fn = (gc & ~pc).sum(axis=1)
    present = (gc | pc).any(axis=1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def macro_f1(golds: Sequence[int], preds: Sequence[int]) -> float:
    g, p = np.asarray(golds), np.asarray(preds)
    labels = np.union1d(g, p)
    return float(_macro_f1_rows(g[None], p[None], labels)[0])


def bootstrap_f1_stderr(golds: Sequence[int], preds: Sequence[int], iters: int = BOOTSTRAP_ITERS,
                        seed: int = 1234) -> float:
    g, p = np.asarray(golds), np.asarray(preds)
    if len(g) < 2:
        return math.nan
    labels = np.union1d(g, p)
    rng = np.random.default_rng(seed)
    scores = []
    for lo in range(0, iters, 100):  # 100 resamples at a time bounds memory for large splits
        idx = rng.integers(0, len(g), size=(min(100, iters - lo), len(g)))
        scores.append(_macro_f1_rows(g[idx], p[idx], labels))
    return float(np.concatenate(scores).std(ddof=1))
