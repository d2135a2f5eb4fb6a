"""Training samples from packed datasets: document splits, epochs, weighted blends, index cache.

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
    cache   with an ``IndexCache`` the split and each epoch's index are built once (by rank 0,
            or ahead of training with ``build_index_cache``) into .npy files that every rank
            memory-maps, so 8 ranks of a node share one copy through the page cache; the
            next epoch's index is built in the background once half of the current one is read

Usage::

    from data.config import DataConfig
    from data.dataset import IndexCache, build_datasets
    cfg = DataConfig(train_paths=["runs/data/blogs", "runs/data/news"], weights=[0.7, 0.3], seq_len=2048)
    sets = build_datasets(cfg, vocab_size=30003)                 # index in process memory
    sets = build_datasets(cfg, cache=IndexCache("runs/data/index_cache"))   # ... or in shared files
    train = sets["train"]
    tokens, ds_ids, epochs = train.get_batch(0, 8)     # (8, 2049) int64, (8,), (8,)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from data.indexed import IndexedDataset
from data.stage import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from data.config import DataConfig

SPLITS = ("train", "valid", "test")
INDEX_VERSION = 1
"""Format version of the cached index files; part of their key, so a new layout never reads an old one."""

# Building an epoch index walks the shuffled documents in chunks, so beyond the document order
# itself (8 bytes per document) the builder's memory does not grow with the corpus.
_CHUNK = 1 << 22


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


def _index_dtype(n: int) -> np.dtype:
    """Smallest dtype for positions below ``n`` (and in-sequence offsets, which are int32)."""
    return np.dtype(np.uint32 if n < 2**32 else np.int64)


def _sequences_of(indexed: IndexedDataset, docs: np.ndarray) -> np.ndarray:
    """Sequence ids of documents ``docs`` (int64), in their order."""
    if indexed.one_sequence_per_document:
        return docs  # two random gathers from the document index saved (half an epoch build)
    first = np.asarray(indexed.doc_index[docs])
    return concat_ranges(first, np.asarray(indexed.doc_index[docs + 1]) - first)


def split_counts(indexed: IndexedDataset, documents: np.ndarray) -> tuple[int, int]:
    """(sequences, tokens) of ``documents``, summed in bounded chunks."""
    n_seq = n_tok = 0
    for lo in range(0, len(documents), _CHUNK):
        s = _sequences_of(indexed, np.asarray(documents[lo : lo + _CHUNK], dtype=np.int64))
        n_seq += len(s)
        n_tok += int(np.asarray(indexed.lengths[s], dtype=np.int64).sum())
    return n_seq, n_tok


class EpochIndex(NamedTuple):
    """Where the samples of one epoch are: arrays in memory, or memory-mapped from an ``IndexCache``.

    ::

        stream   |seq 17 ......|seq 3 ..|seq 41 ..........|seq 8 ...     the epoch's token stream
        seqs     [17, 3, 41, 8, ...]               (N,) sequence ids of the split in stream order
        starts   [[0, 0], [2, 5], ...]             (S + 1, 2) token p * seq_len, where sample p
                                                   starts, is token starts[p, 1] of stream
                                                   sequence starts[p, 0]; row p + 1 is where it ends
        order    [812, 3, 5120, ...]               (S,) the epoch's k-th sample is stream sample order[k]

    4 bytes per sequence and 12 per sample (uint32 while the counts fit), against 16 and 8 in
    the (bounds, file offsets) layout this replaces; token offsets come from the .idx on demand.
    """

    seqs: np.ndarray
    starts: np.ndarray
    order: np.ndarray


Alloc = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


def _in_memory(_name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


class GPTDataset:
    """Fixed-length samples of ``seq_len + 1`` tokens over the documents of one split.

    Indexable by any non-negative sample number; ``k >= samples_per_epoch`` lands in a
    later epoch with its own shuffles. Each epoch's ``EpochIndex`` is built when first needed
    (two kept open) in process memory, or, with ``cache``, read from files built once for
    every rank; the tokens stay memory-mapped.
    """

    def __init__(
        self,
        indexed: IndexedDataset,
        documents: np.ndarray,
        seq_len: int,
        seed: int,
        key: Sequence[int] = (),
        name: str = "",
        counts: tuple[int, int] | None = None,
        cache: IndexCache | None = None,
        cache_name: str = "",
    ):
        """``counts``: (sequences, tokens) of ``documents`` when already known (the cache's
        metadata), else counted here; ``cache`` + ``cache_name``: where the epoch indexes live."""
        self.indexed = indexed
        self.documents = np.asarray(documents)  # no copy: from the cache it is a view of the file
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.key = tuple(int(k) for k in key)
        self.name = name or indexed.prefix
        self.num_sequences, self.num_tokens = counts if counts is not None else split_counts(indexed, self.documents)
        self.samples_per_epoch = max((self.num_tokens - 1) // self.seq_len, 0)
        self.cache = cache
        self.cache_name = cache_name
        self._item = indexed.dtype.itemsize
        # Plain views: skip np.memmap's per-call overhead in the gather.
        self._tokens = indexed.tokens.view(np.ndarray)
        self._lengths = indexed.lengths.view(np.ndarray)
        self._pointers = indexed.pointers.view(np.ndarray)
        self._open: OrderedDict[int, EpochIndex] = OrderedDict()

    def __len__(self) -> int:
        """Samples in one epoch (indices beyond it continue into later epochs)."""
        return self.samples_per_epoch

    def build_epoch(self, e: int, alloc: Alloc = _in_memory) -> EpochIndex:
        """Compute epoch e's index into arrays from ``alloc(name, shape, dtype)``.

        The shuffles are those of the original in-memory index (document order, then sample
        order, from one generator keyed by seed, component, split and e), so a cached index
        gives the same samples in the same order. Only the document order (8 bytes per
        document) is held whole; the stream is walked in chunks.
        """
        rng = _rng(self.seed, *self.key, e)
        order = rng.permutation(len(self.documents))  # (D,) the epoch's document order
        n_seq, L, S = self.num_sequences, self.seq_len, self.samples_per_epoch
        pos_dtype = _index_dtype(n_seq)
        seqs = alloc("seqs", (n_seq,), pos_dtype)
        starts = alloc("starts", (S + 1, 2), pos_dtype)
        pos = tok = p = 0  # stream sequences / tokens before this chunk; next sample start to place
        for lo in range(0, len(order), _CHUNK):
            d = np.asarray(self.documents[order[lo : lo + _CHUNK]], dtype=np.int64)
            s = _sequences_of(self.indexed, d)  # (n,) sequence ids, stream order
            if not len(s):
                continue
            lens = np.asarray(self.indexed.lengths[s], dtype=np.int64)
            ends = tok + np.cumsum(lens)  # (n,) stream offset just past each sequence
            seqs[pos : pos + len(s)] = s
            # Samples whose first token p * L lies in this chunk (sample S starts at the last token used).
            p_hi = max(p, min(S + 1, (int(ends[-1]) - 1) // L + 1))
            t = np.arange(p, p_hi, dtype=np.int64) * L
            i = np.searchsorted(ends, t, side="right")  # the sequence holding token t (empty ones skipped)
            starts[p:p_hi, 0] = pos + i
            starts[p:p_hi, 1] = t - (ends[i] - lens[i])
            pos, tok, p = pos + len(s), int(ends[-1]), p_hi
        sample_order = alloc("order", (S,), _index_dtype(S))
        sample_order[:] = rng.permutation(S)
        return EpochIndex(seqs, starts, sample_order)

    def _epoch(self, e: int) -> EpochIndex:
        """Index of epoch e, from the cache when there is one; the two last used are kept open."""
        if e in self._open:
            self._open.move_to_end(e)
            return self._open[e]
        ep = self.cache.epoch(self, e) if self.cache is not None else self.build_epoch(e)
        self._open[e] = ep
        while len(self._open) > 2:
            self._open.popitem(last=False)
        return ep

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
            pos[rows] = self._epoch(int(e)).order[ks[rows] - e * self.samples_per_epoch]
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
            out[rows] = self._gather(self._epoch(int(e)), pos[rows])
        return out

    def _gather(self, ep: EpochIndex, pos: np.ndarray) -> np.ndarray:
        """Tokens of in-epoch sample positions ``pos``: one vectorised gather from the memmap."""
        head = np.asarray(ep.starts[pos], dtype=np.int64)  # (n, 2) sequence and offset of the first token
        tail = np.asarray(ep.starts[pos + 1], dtype=np.int64)  # (n, 2) ... and of the last (shared) one
        n_pieces = tail[:, 0] - head[:, 0] + 1  # (n,) sequences each sample touches
        piece = concat_ranges(head[:, 0], n_pieces)  # (P,) stream positions of all pieces
        seq = np.asarray(ep.seqs[piece], dtype=np.int64)  # (P,) their sequence ids
        last = np.cumsum(n_pieces) - 1  # (n,) each sample's last piece
        cut_lo = np.zeros(len(piece), dtype=np.int64)
        cut_lo[last - n_pieces + 1] = head[:, 1]
        cut_hi = self._lengths[seq].astype(np.int64)
        cut_hi[last] = tail[:, 1] + 1
        file_start = self._pointers[seq] // self._item
        idx = concat_ranges(file_start + cut_lo, cut_hi - cut_lo)  # (n * (seq_len + 1),)
        return np.take(self._tokens, idx).astype(np.int64).reshape(len(pos), self.seq_len + 1)

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

    def prefetch(self, start: int, stop: int) -> None:
        """Cache builders only: have the epoch indexes that global samples [start, stop) read on
        disk now, and queue in the background every epoch reached within the next half epoch
        (or the next such range, for a component whose epoch is shorter than two of them).

        The loader calls this with the whole global micro-batch, on every rank; the builder
        (rank 0) therefore builds every epoch any rank is about to read, and the epoch after
        the current one is ready well before its first sample: no rank stalls at the boundary.
        """
        if not any(d.cache is not None and d.cache.builder for d in self.datasets):
            return
        c0, c1 = self.counts_before(start), self.counts_before(stop)
        for d, a, b in zip(self.datasets, c0.tolist(), c1.tolist(), strict=True):
            if d.cache is None or not d.cache.builder:
                continue
            s = d.samples_per_epoch
            if b > a:
                for e in range(a // s, (b - 1) // s + 1):
                    d.cache.ensure(d, e)
            horizon = b + max(s // 2, b - a)
            for e in range((b - 1) // s + 1 if b else 0, (horizon - 1) // s + 1):
                d.cache.prebuild(d, e)

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


class IndexCache:
    """Split and epoch indexes as .npy files, built by one process and memory-mapped by every rank.

    Files in ``directory`` per data file (``STEM-HASH``: the hash covers the .bin/.idx paths,
    sizes and modification times, ``split``, ``split_seed``, ``seed``, ``seq_len``, the
    component's place in ``train_paths`` and INDEX_VERSION, so anything that would change the
    samples names other files)::

        news-3f2a9c0d1e2b4a5f.json                    what was indexed; per split its counts (written last)
        news-3f2a9c0d1e2b4a5f-train.docs.npy          sorted document ids of each split
        news-3f2a9c0d1e2b4a5f-train-e0000.seqs.npy    epoch 0: EpochIndex.seqs, .starts and .order
        news-3f2a9c0d1e2b4a5f-train-e0000.starts.npy  (.order is renamed into place last: an epoch
        news-3f2a9c0d1e2b4a5f-train-e0000.order.npy    is complete once it exists)

    Each file appears under its final name only when complete (``data.stage.atomic_path``), and
    builders in different processes take turns on a lock file (``flock``) and re-check first, so
    two runs sharing the cache never build the same file at once and a killed build leaves only
    ``*.tmp`` files. With ``builder=False`` nothing is written: missing files are waited for (up
    to ``wait_s``) as a builder makes them. A builder's ``prebuild`` queues an epoch on one
    background (daemon) thread; ``ensure`` joins it or builds synchronously.
    """

    def __init__(self, directory: str | os.PathLike, builder: bool = True, wait_s: float = 3600.0):
        self.directory = Path(directory)
        self.builder = builder
        self.wait_s = wait_s
        self.built: list[tuple[str, str]] = []
        """(file name stem, what): "split", or "e3 sync" / "e3 background" for an epoch, in build order."""
        self._ready: set[tuple[str, int]] = set()
        self._pending: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()
        self._queue: list[tuple[GPTDataset, int, Future]] = []
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None

    # -- names -------------------------------------------------------------------------------

    @staticmethod
    def key(prefix: str | os.PathLike, cfg: DataConfig, component: int) -> dict:
        """Everything the split and the epoch indexes of ``prefix`` depend on (OSError if a file is missing)."""
        ds = Path(os.fspath(prefix).removesuffix(".bin").removesuffix(".idx"))

        def ident(f: Path) -> list:
            st = f.stat()
            return [str(f.resolve()), st.st_size, st.st_mtime_ns]

        return {
            "version": INDEX_VERSION,
            "bin": ident(ds.with_name(ds.name + ".bin")),
            "idx": ident(ds.with_name(ds.name + ".idx")),
            "split": [float(x) for x in cfg.split],
            "split_seed": int(cfg.split_seed),
            "seed": int(cfg.seed),
            "seq_len": int(cfg.seq_len),
            "component": int(component),
        }

    def component_name(self, prefix: str | os.PathLike, cfg: DataConfig, component: int) -> str:
        record = json.dumps(self.key(prefix, cfg, component), sort_keys=True).encode()
        stem = Path(os.fspath(prefix).removesuffix(".bin").removesuffix(".idx")).name
        return f"{stem}-{hashlib.sha256(record).hexdigest()[:16]}"

    def has_splits(self, prefix: str | os.PathLike, cfg: DataConfig, component: int) -> bool:
        """Whether the splits of ``prefix`` are cached (then its files were opened and checked by a builder)."""
        try:
            return (self.directory / f"{self.component_name(prefix, cfg, component)}.json").is_file()
        except OSError:
            return False

    def _epoch_files(self, g: GPTDataset, e: int) -> dict[str, Path]:
        return {k: self.directory / f"{g.cache_name}-e{e:04d}.{k}.npy" for k in EpochIndex._fields}

    # -- splits ------------------------------------------------------------------------------

    def splits(
        self, ds: IndexedDataset, cfg: DataConfig, component: int
    ) -> tuple[str, list[tuple[np.ndarray, tuple[int, int]]]]:
        """(name, [(document ids, (sequences, tokens)) per split]) of one data file, memory-mapped."""
        name = self.component_name(ds.prefix, cfg, component)
        meta_file = self.directory / f"{name}.json"
        if not meta_file.is_file():
            if self.builder:
                self._build_splits(ds, cfg, component, name)
            else:
                self._wait(meta_file)
        meta = json.loads(meta_file.read_text(encoding="utf-8"))["splits"]
        return name, [
            (
                np.load(self.directory / f"{name}-{s}.docs.npy", mmap_mode="r"),
                (int(meta[s]["sequences"]), int(meta[s]["tokens"])),
            )
            for s in SPLITS
        ]

    def _build_splits(self, ds: IndexedDataset, cfg: DataConfig, component: int, name: str) -> None:
        meta_file = self.directory / f"{name}.json"
        with self._exclusive(name):
            if meta_file.is_file():
                return
            counts = {}
            for s, docs in zip(SPLITS, split_documents(ds.num_documents, cfg.split, cfg.split_seed), strict=True):
                with atomic_path(self.directory / f"{name}-{s}.docs.npy") as tmp, open(tmp, "wb") as f:
                    np.save(f, docs.astype(_index_dtype(ds.num_documents)))
                n_seq, n_tok = split_counts(ds, docs)
                counts[s] = {"documents": len(docs), "sequences": n_seq, "tokens": n_tok}
            record = {"key": self.key(ds.prefix, cfg, component), "splits": counts}
            write_text_atomic(meta_file, json.dumps(record, indent=1) + "\n")
            self.built.append((name, "split"))

    # -- epochs ------------------------------------------------------------------------------

    def epoch(self, g: GPTDataset, e: int) -> EpochIndex:
        """Epoch e of ``g``, memory-mapped; built now (builder) or waited for (otherwise) if missing."""
        files = self._epoch_files(g, e)
        if self.builder:
            self.ensure(g, e)
        elif not files["order"].is_file():
            self._wait(files["order"])
        return EpochIndex(*(np.load(files[k], mmap_mode="r").view(np.ndarray) for k in EpochIndex._fields))

    def ensure(self, g: GPTDataset, e: int) -> None:
        """Have epoch e of ``g`` on disk: at once if it is, else by joining its background build,
        else by building it here."""
        if (g.cache_name, e) in self._ready:
            return
        with self._lock:
            pending = self._pending.get((g.cache_name, e))
        if pending is not None:
            pending.result()
        elif not self._epoch_files(g, e)["order"].is_file():
            self._build_epoch(g, e, "sync")
        self._ready.add((g.cache_name, e))

    def prebuild(self, g: GPTDataset, e: int) -> None:
        """Queue epoch e of ``g`` for the background thread, unless it is on disk or queued already."""
        if not self.builder or (g.cache_name, e) in self._ready:
            return
        with self._lock:
            if (g.cache_name, e) in self._pending:
                return
        if self._epoch_files(g, e)["order"].is_file():
            self._ready.add((g.cache_name, e))
            return
        with self._lock:
            job: Future = Future()
            self._pending[(g.cache_name, e)] = job
            self._queue.append((g, e, job))
            if self._worker is None:
                # A daemon: a run that stops (pre-emption) must not wait for an index it no longer needs.
                self._worker = threading.Thread(target=self._work, name="index-cache", daemon=True)
                self._worker.start()
            self._wake.notify()

    def wait_idle(self) -> None:
        """Block until every queued background build has finished (raising its error, if any)."""
        with self._lock:
            jobs = list(self._pending.values())
        for job in jobs:
            job.result()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                g, e, job = self._queue.pop(0)
            try:
                self._build_epoch(g, e, "background")
                job.set_result(None)
            except BaseException as exc:  # handed to whoever needs this epoch (ensure / wait_idle)
                job.set_exception(exc)

    def _build_epoch(self, g: GPTDataset, e: int, how: str) -> None:
        files = self._epoch_files(g, e)
        with self._exclusive(g.cache_name):
            if files["order"].is_file():
                return
            # Nested so that they are renamed in the order seqs, starts, order: .order marks completion.
            with (
                atomic_path(files["order"]) as order,
                atomic_path(files["starts"]) as starts,
                atomic_path(files["seqs"]) as seqs,
            ):
                tmp = {"seqs": seqs, "starts": starts, "order": order}
                ep = g.build_epoch(
                    e, lambda kind, shape, dtype: np.lib.format.open_memmap(tmp[kind], "w+", dtype, shape)
                )
                for a in ep:
                    a.flush()
                del ep
            self.built.append((g.cache_name, f"e{e} {how}"))

    # -- helpers -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """One builder of ``name``'s files at a time, across processes and threads."""
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"{name}.lock", "a") as fh:
            with contextlib.suppress(OSError):  # a filesystem without locks: builders are still atomic
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _wait(self, path: Path) -> None:
        start, delay = time.monotonic(), 0.01
        while not path.is_file():
            if time.monotonic() - start > self.wait_s:
                raise TimeoutError(
                    f"{path}: not built after {self.wait_s:.0f} s. Rank 0 builds the index cache: does every rank "
                    f"see {self.directory}, and the same data files (path, size, modification time)?"
                )
            time.sleep(delay)
            delay = min(2 * delay, 0.5)


def index_cache_dir(cfg: DataConfig, run_dir: str | os.PathLike | None = None) -> Path:
    """Where a run's index cache goes: ``data.index_cache`` when set; else ``index_cache`` next to the
    first training file, when that directory is writable (so runs on the same data share it); else
    ``RUN/index_cache``."""
    if cfg.index_cache:
        return Path(cfg.index_cache)
    beside = Path(cfg.train_paths[0]).parent / "index_cache"
    if run_dir is None or _writable(beside):
        return beside
    return Path(run_dir) / "index_cache"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


def build_datasets(
    cfg: DataConfig, vocab_size: int | None = None, cache: IndexCache | None = None
) -> dict[str, BlendedDataset | None]:
    """Open, validate and split every ``cfg.train_paths`` entry; blend each split by ``cfg.weights``.

    Returns ``{"train": ..., "valid": ..., "test": ...}``; a held-out split is None when it
    has no component with at least ``seq_len + 1`` tokens (e.g. split ``[1, 0, 0]``).
    Every file is checked before anything else happens (``IndexedDatasetError`` names it);
    with ``cache``, files whose split is already cached were checked by the builder (their
    size and modification time are in the key) and are only opened, in O(1).
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
        IndexedDataset(
            p,
            vocab_size=vocab_size,
            check_tokens=cfg.verify_token_ids,
            validate=cache is None or not cache.has_splits(p, cfg, i),
        )
        for i, p in enumerate(cfg.train_paths)
    ]
    per_split: dict[str, list[tuple[GPTDataset, float | None]]] = {s: [] for s in SPLITS}
    for i, ds in enumerate(opened):
        if cache is not None:
            name, parts = cache.splits(ds, cfg, i)
        else:
            name, parts = "", [(d, None) for d in split_documents(ds.num_documents, cfg.split, cfg.split_seed)]
        for j, (split_name, (docs, counts)) in enumerate(zip(SPLITS, parts, strict=True)):
            g = GPTDataset(
                ds, docs, cfg.seq_len, cfg.seed, key=(i, j), name=ds.prefix, counts=counts,
                cache=cache, cache_name=f"{name}-{split_name}",
            )
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


def build_index_cache(
    cfg: DataConfig, directory: str | os.PathLike | None = None, epochs: int = 1, vocab_size: int | None = None
) -> dict:
    """Build the index cache of ``cfg`` ahead of training: every split, the first ``epochs``
    epochs of the training split and the first epoch of the held-out ones. Returns a report
    (directory, files built, their bytes, CPU seconds). Files already there are kept."""
    start = time.process_time()
    cache = IndexCache(directory if directory is not None else index_cache_dir(cfg))
    sets = build_datasets(cfg, vocab_size, cache=cache)
    for s, blend in sets.items():
        for g in blend.datasets if blend is not None else []:
            for e in range(epochs if s == "train" else 1):
                cache.ensure(g, e)
    return {
        "directory": str(cache.directory),
        "built": [f"{name} {what}" for name, what in cache.built],
        "bytes": sum(f.stat().st_size for f in cache.directory.glob("*.npy")),
        "cpu_seconds": round(time.process_time() - start, 3),
    }
