"""Training samples from packed datasets: document splits, epochs, weighted blends.

How a sample is made (GPT-NeoX style)::

    split   documents of one .bin/.idx -> train / valid / test, by a seeded shuffle of
            document ids (``split_seed``), so no validation document is ever trained on
    epoch e documents of the split in a fresh shuffled order (seed, component, split, e),
            concatenated into one token stream; EOS tokens keep the boundaries visible
            |doc 17 ...<eos>|doc 3 ...<eos>|doc 41 ...<eos>|doc 8 ...
            [ sample 0: seq_len+1 ][ sample 1 ]...        samples overlap by one token,
                                   ^ start = i * seq_len  the shifted-target token
            samples_per_epoch = (tokens - 1) // seq_len; the short tail is dropped, so
            every sample belongs to exactly one epoch and epochs have equal length
    order   the samples of epoch e are visited in a shuffled order; sample k of a
            component is sample k % S of epoch k // S: asking for more than one pass
            simply starts the next epoch with a new shuffle
    blend   component d's k-th sample is placed at "time" (k + 0.5) / w_d and all
            components are merged by time, so after n samples each component has
            supplied n * w_d samples give or take one, for every n, reproducibly; the
            merge can be computed for any range [a, b) without the samples before a

Usage::

    from data.config import DataConfig
    from data.dataset import build_datasets
    cfg = DataConfig(train_paths=["runs/data/blogs", "runs/data/news"], weights=[0.7, 0.3], seq_len=2048)
    sets = build_datasets(cfg, vocab_size=30003)
    train = sets["train"]
    tokens, ds_ids, epochs = train.get_batch(0, 8)     # (8, 2049) int64, (8,), (8,)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.indexed import IndexedDataset

if TYPE_CHECKING:
    from data.config import DataConfig

SPLITS = ("train", "valid", "test")


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    # Each output slot = its range's start + (slot - first slot of that range).
    first_slot = np.cumsum(counts) - counts
    return np.repeat(starts - first_slot, counts) + np.arange(total, dtype=np.int64)


def split_documents(num_documents: int, split: Sequence[float], split_seed: int) -> list[np.ndarray]:
    """Assign document ids to train/valid/test by a seeded shuffle; returns sorted ids per split.

    Documents, not samples, are split, so a validation document never contributes a single
    token to training. The seed is separate from the sample seed: changing the training
    seed reshuffles samples but never moves a document across splits.
    """
    fr = np.asarray(list(split) + [0.0] * (3 - len(split)), dtype=np.float64)[:3]
    if (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"split {list(split)}: need non-negative fractions with a positive sum")
    bounds = np.round(np.cumsum(fr / fr.sum()) * num_documents).astype(np.int64)
    bounds[-1] = num_documents
    perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([split_seed, 0x5EED]))).permutation(
        num_documents
    )
    lo = np.concatenate(([0], bounds[:-1]))
    return [np.sort(perm[a:b]) for a, b in zip(lo, bounds, strict=True)]


def _distinct(a: np.ndarray) -> np.ndarray | list[int]:
    """np.unique with a fast path for the common single-value case (one epoch, one component)."""
    if len(a) and a.min() == a.max():
        return [int(a[0])]
    return np.unique(a)


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


class GPTDataset:
    """Fixed-length samples of ``seq_len + 1`` tokens over the documents of one split.

    Indexable by any non-negative sample number; ``k >= samples_per_epoch`` lands in a
    later epoch with its own shuffles. Index arrays are built per epoch (two kept cached):
    16 bytes per sequence of the split; the tokens stay memory-mapped.
    """

    def __init__(
        self,
        indexed: IndexedDataset,
        documents: np.ndarray,
        seq_len: int,
        seed: int,
        key: Sequence[int] = (),
        name: str = "",
    ):
        self.indexed = indexed
        self.documents = np.asarray(documents, dtype=np.int64)
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.key = tuple(int(k) for k in key)
        self.name = name or indexed.prefix
        doc = indexed.doc_index
        self._seq_counts = np.asarray(doc[self.documents + 1] - doc[self.documents])
        seqs = concat_ranges(np.asarray(doc[self.documents]), self._seq_counts)
        self.num_tokens = int(np.asarray(indexed.lengths[seqs], dtype=np.int64).sum())
        self.samples_per_epoch = max((self.num_tokens - 1) // self.seq_len, 0)
        self._item = indexed.dtype.itemsize
        self._tokens = indexed.tokens.view(np.ndarray)  # plain view: skips np.memmap's per-call overhead
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        """Samples in one epoch (indices beyond it continue into later epochs)."""
        return self.samples_per_epoch

    def _epoch(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index of epoch e: (stream offsets, .bin token offsets, sample order).

        ``bounds[i]:bounds[i+1]`` is the i-th sequence of the epoch's token stream and
        ``file_start[i]`` where its tokens are in .bin; precomputing the latter keeps the
        per-batch work to one gather from the token memmap.
        """
        if e in self._cache:
            self._cache.move_to_end(e)
            return self._cache[e]
        rng = _rng(self.seed, *self.key, e)
        order = rng.permutation(len(self.documents))
        docs = self.documents[order]
        doc = self.indexed.doc_index
        seqs = concat_ranges(np.asarray(doc[docs]), self._seq_counts[order])
        bounds = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(np.asarray(self.indexed.lengths[seqs], dtype=np.int64), out=bounds[1:])
        file_start = np.asarray(self.indexed.pointers[seqs]) // self._item
        sample_order = rng.permutation(self.samples_per_epoch)
        self._cache[e] = (bounds, file_start, sample_order)
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return self._cache[e]

    def epoch_of(self, k: np.ndarray | int) -> np.ndarray:
        """Fractional epoch of sample number(s) k: 1.25 = a quarter into the second epoch."""
        return np.asarray(k, dtype=np.float64) / self.samples_per_epoch

    def locate(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(epoch, position in that epoch's token stream / seq_len) of sample numbers ``ks``."""
        ks = np.asarray(ks, dtype=np.int64)
        if self.samples_per_epoch == 0:
            raise IndexError(f"{self.name}: fewer than seq_len + 1 = {self.seq_len + 1} tokens in this split")
        epochs = ks // self.samples_per_epoch
        pos = np.empty_like(ks)
        for e in _distinct(epochs):
            rows = np.nonzero(epochs == e)[0]
            pos[rows] = self._epoch(int(e))[2][ks[rows] - e * self.samples_per_epoch]
        return epochs, pos

    def get_many(self, ks: np.ndarray) -> np.ndarray:
        """Samples ``ks`` as an ``(len(ks), seq_len + 1)`` int64 array."""
        ks = np.asarray(ks, dtype=np.int64)
        out = np.empty((len(ks), self.seq_len + 1), dtype=np.int64)
        if len(ks) == 0:
            return out
        epochs, pos = self.locate(ks)
        for e in _distinct(epochs):
            rows = np.nonzero(epochs == e)[0]
            bounds, file_start, _ = self._epoch(int(e))
            out[rows] = self._gather(bounds, file_start, pos[rows])
        return out

    def _gather(self, bounds: np.ndarray, file_start: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Tokens of in-epoch sample positions ``pos``: one vectorised gather from the memmap."""
        width = self.seq_len + 1
        lo = pos * self.seq_len  # (n,) first stream token of each sample
        hi = lo + width  # (n,) one past the last
        first = np.searchsorted(bounds, lo, side="right") - 1  # stream sequence holding token lo
        last = np.searchsorted(bounds, hi - 1, side="right") - 1  # ... and token hi - 1
        n_pieces = last - first + 1  # (n,) sequences each sample touches
        piece = concat_ranges(first, n_pieces)  # (P,) stream positions of all pieces
        owner = np.repeat(np.arange(len(pos)), n_pieces)  # (P,) sample of each piece
        seq_start = bounds[piece]
        cut_lo = np.maximum(seq_start, lo[owner])
        cut_hi = np.minimum(bounds[piece + 1], hi[owner])
        idx = concat_ranges(file_start[piece] + (cut_lo - seq_start), cut_hi - cut_lo)  # (n * width,)
        return np.take(self._tokens, idx).astype(np.int64).reshape(len(pos), width)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.get_many(np.array([k]))[0]


class BlendedDataset:
    """Weighted, deterministic interleaving of several ``GPTDataset`` components.

    Global sample i is component ``d``'s sample ``k``; after any n samples component d has
    supplied ``n * w_d`` of them, give or take one. Random access: ``assign(a, b)`` costs
    O(b - a + D^2), independent of a, so resuming at step 100,000 is instant.
    """

    def __init__(
        self, datasets: Sequence[GPTDataset], weights: Sequence[float] | None = None, name: str = ""
    ):
        if not datasets:
            raise ValueError("a blend needs at least one dataset")
        w = np.asarray(weights if weights is not None else [d.num_tokens for d in datasets], dtype=np.float64)
        if len(w) != len(datasets):
            raise ValueError(f"{len(w)} weights for {len(datasets)} datasets")
        if (w < 0).any() or w.sum() <= 0 or not np.isfinite(w).all():
            raise ValueError(f"weights {list(w)}: need non-negative numbers with a positive sum")
        keep = w > 0
        self.datasets = [d for d, k in zip(datasets, keep, strict=True) if k]
        self.weights = w[keep] / w[keep].sum()
        self.name = name
        for d in self.datasets:
            if d.samples_per_epoch == 0:
                raise ValueError(
                    f"{d.name}: fewer than seq_len + 1 = {d.seq_len + 1} tokens, cannot make a sample"
                )
        self.seq_len = self.datasets[0].seq_len
        self._counts_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def samples_per_epoch(self) -> list[int]:
        return [d.samples_per_epoch for d in self.datasets]

    def _below(self, t: float) -> np.ndarray:
        # Approximate count of each component's samples with time (k + 0.5) / w < t; only
        # used as a bound with a margin of a few samples, so rounding does not matter.
        return np.maximum(np.ceil(t * self.weights - 0.5), 0).astype(np.int64)

    def _merge(self, base: np.ndarray, upper: np.ndarray, take: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``take`` earliest samples with k in [base_d, upper_d) per component, in time order."""
        counts = np.maximum(upper - base, 0)
        comp = np.repeat(np.arange(len(self.weights)), counts)
        k = concat_ranges(base, counts)
        t = (k + 0.5) / self.weights[comp]
        order = np.lexsort((comp, t))[:take]  # by time, ties by component index
        if len(order) < take:
            raise AssertionError("blend candidate window too small (bug)")
        return comp[order], k[order]

    def counts_before(self, n: int) -> np.ndarray:
        """Samples each component has supplied among global samples [0, n)."""
        hit = self._counts_cache.get(n)
        if hit is None:
            hit = self._counts_cache[n] = self._counts_before(n)
            while len(self._counts_cache) > 16:  # the loader asks for the same few positions
                self._counts_cache.popitem(last=False)
        return hit.copy()

    def _counts_before(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(len(self.weights), dtype=np.int64)
        if len(self.weights) == 1:
            return np.array([n], dtype=np.int64)
        m = len(self.weights) + 2
        base = np.maximum(self._below(n - m) - 1, 0)  # all of these are certainly before n
        upper = self._below(n + m) + 2  # none of these or later can be before n
        comp, _ = self._merge(base, upper, n - int(base.sum()))
        return base + np.bincount(comp, minlength=len(self.weights))

    def assign(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(component, component sample number) of global samples [start, stop)."""
        if len(self.weights) == 1:
            return np.zeros(stop - start, dtype=np.int64), np.arange(start, stop, dtype=np.int64)
        base = self.counts_before(start)
        upper = self._below(stop + len(self.weights) + 2) + 2
        return self._merge(base, np.maximum(upper, base), stop - start)

    def get_batch(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global samples [start, start + size): tokens (size, seq_len + 1) int64, component ids, epochs."""
        comp, k = self.assign(start, start + size)
        tokens = np.empty((size, self.seq_len + 1), dtype=np.int64)
        epochs = np.empty(size, dtype=np.float64)
        for d in _distinct(comp):
            rows = np.nonzero(comp == d)[0]
            tokens[rows] = self.datasets[d].get_many(k[rows])
            epochs[rows] = self.datasets[d].epoch_of(k[rows])
        return tokens, comp, epochs

    def epochs(self, consumed: int) -> dict[str, float]:
        """Fractional epoch of every component after ``consumed`` global samples."""
        c = self.counts_before(consumed)
        return {d.name: float(n / d.samples_per_epoch) for d, n in zip(self.datasets, c, strict=True)}

    def epoch(self, consumed: int) -> float:
        """Training progress in epochs after ``consumed`` samples: the most-repeated component's.

        With one dataset this is simply consumed / samples_per_epoch; in a blend it is the
        component that first starts repeating data, which is what degeneration follows.
        """
        return max(self.epochs(consumed).values())

    def starts_new_epoch(self, start: int, stop: int) -> bool:
        """Whether global samples [start, stop) hold the first sample of epoch 2, 3, ... of any component."""
        c0 = np.maximum(self.counts_before(start), 1)  # sample 0 opens epoch 1: not a boundary
        c1 = self.counts_before(stop)
        s = np.asarray(self.samples_per_epoch)
        return bool(((c1 - 1) // s > (c0 - 1) // s).any())

    def fingerprint(self) -> dict:
        """What must not change under a resumed run (checked by the loader's load_state_dict)."""
        return {
            "seq_len": self.seq_len,
            "components": [
                {
                    "name": Path(d.name).name,  # a moved data directory is still the same data
                    "tokens": d.num_tokens,
                    "documents": len(d.documents),
                    "seed": d.seed,
                    "key": list(d.key),
                }
                for d in self.datasets
            ],
            "weights": [round(float(w), 12) for w in self.weights],
        }


def build_datasets(cfg: DataConfig, vocab_size: int | None = None) -> dict[str, BlendedDataset | None]:
    """Open, validate and split every ``cfg.train_paths`` entry; blend each split by ``cfg.weights``.

    Returns ``{"train": ..., "valid": ..., "test": ...}``; a held-out split is None when it
    has no component with at least ``seq_len + 1`` tokens (e.g. split ``[1, 0, 0]``).
    Every file is checked before anything else happens (``IndexedDatasetError`` names it).
    """
    if not cfg.train_paths:
        raise ValueError(
            "data.train_paths is empty: nothing to train on (pack text with `koneox pack` first)"
        )
    if cfg.weights and len(cfg.weights) != len(cfg.train_paths):
        raise ValueError(
            f"data.weights has {len(cfg.weights)} entries for {len(cfg.train_paths)} data.train_paths"
        )
    opened = [
        IndexedDataset(p, vocab_size=vocab_size, check_tokens=cfg.verify_token_ids) for p in cfg.train_paths
    ]
    per_split: dict[str, list[tuple[GPTDataset, float | None]]] = {s: [] for s in SPLITS}
    for i, ds in enumerate(opened):
        for j, (split_name, docs) in enumerate(
            zip(SPLITS, split_documents(ds.num_documents, cfg.split, cfg.split_seed), strict=True)
        ):
            g = GPTDataset(ds, docs, cfg.seq_len, cfg.seed, key=(i, j), name=ds.prefix)
            weight = cfg.weights[i] if cfg.weights else None
            if g.samples_per_epoch == 0:
                if split_name == "train" and (weight is None or weight > 0):
                    raise ValueError(
                        f"{ds.prefix}: its train split holds {g.num_tokens} tokens, fewer than "
                        f"seq_len + 1 = {cfg.seq_len + 1}"
                    )
                continue
            per_split[split_name].append((g, weight))
    out: dict[str, BlendedDataset | None] = {}
    for s in SPLITS:
        parts = per_split[s]
        if not parts:
            out[s] = None
            continue
        weights = None if not cfg.weights else [w for _, w in parts]
        if weights is not None and not any(w > 0 for w in weights):
            weights = None
        out[s] = BlendedDataset([g for g, _ in parts], weights, name=s)
    return out
