"""Exact and near (MinHash LSH) deduplication.

Both work in two halves so that the expensive half runs in worker processes and the result
does not depend on how many there are:
- per document (workers): ``exact_key`` (hash of the normalised text) and
  ``minhash_matrix`` + ``band_key_matrix`` (a batch at a time);
- across the corpus (main process, documents in input order): ``CorpusDeduper`` keeps the
  first copy it sees, so the kept copy is always the earliest one in input order. It takes a
  whole batch as arrays (keys, signatures, band keys) and only kept documents enter its state,
  so the state is a function of the output: a resumed run rebuilds it from the shards it
  already wrote. (A document whose normalised text equals a document dropped as a near
  duplicate is therefore checked as a near duplicate, of the same kept original.)

Signatures are MinHash over character n-grams with spaces removed:
Korean spacing is inconsistent (``재밌어요`` / ``재밌 어요``) and 36% of NSMC reviews have
fewer than 5 words, which word 5-grams cannot sign at all (REFERENCE §3). The LSH banding
is datasketch's choice of (bands, rows) for the threshold; the index itself is a numpy hash
table of band hashes (datasketch's ``MinHashLSH`` object costs about 90 us per query+insert,
this one a few us per document), and every band hit is confirmed by the estimated Jaccard
similarity of the full signatures before a document is dropped.

Bounded memory (``CorpusDeduper(memory_mb=...)``, ``data.clean.dedup_memory_mb``). In memory the
state costs about 1 KB per kept document (448 B signature, 9 band keys, exact key), too much for
hundreds of millions of documents. With a budget, the in-memory state above is only the newest
part (a memtable, as in an LSM tree); when it would pass a quarter of the budget it is written
out and emptied::

    check(batch) -> memtable: exact-key table, band-key table (+ _more), signature blocks
                    │ would pass memory_mb / 4: sort (nearly sorted already), write, empty
                    ▼
    work_dir/  exact-N.bin, bands-N.bin   (key, value) records sorted by key; eight runs of one
               │                          level merge into one of the next (each key is
               │                          rewritten about log8(spills) times)
               signatures.bin             uint32 rows by kept-document index, appended
    memory:    Bloom filter of every key on disk (5/16 of memory_mb, one 64-bit word per key);
               per run a Bloom filter (all of them: 3/16 of memory_mb) and where each bucket
               of about 256 records starts (0.06 B per key)

A key the big filter rules out is certainly not on disk: most keys, as most documents are
unique. A key it lets through is read (one ``pread`` of its 4 KB bucket) from the runs whose
own filter lets it through, and a document's band hashes are looked up one at a time until a
candidate confirms it: a near duplicate usually costs one bucket read and one signature read.
Every kept key is in the memtable or in one run, so a document's candidates, and the codes, are
those of the in-memory state; the budget changes only the speed. Runs are read with ``pread``,
not memory-mapped: the pages of a mapping count in the process's RSS (and this kernel maps
large folios per fault), which would defeat the budget.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import xxhash

from data.clean.config import NearDedupConfig

_WS = re.compile(r"\s+")


def exact_key(text: str) -> bytes:
    """16-byte hash of the text after casefold and whitespace collapse."""
    norm = " ".join(text.casefold().split())
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


def shingles(text: str, n: int) -> list[bytes]:
    """Character n-grams of the text with whitespace removed (the whole text if shorter)."""
    s = _WS.sub("", text)
    if len(s) <= n:
        return [s.encode("utf-8")]
    return [s[i : i + n].encode("utf-8") for i in range(len(s) - n + 1)]


@functools.lru_cache(maxsize=8)
def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) that datasketch picks for this threshold (balances FP and FN area)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Odd multipliers a and offsets b of the hash family h -> (a*h + b) mod 2^32."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
    return a, b


_MASK32 = np.uint64(0xFFFFFFFF)
_MAX_SHINGLES = 1 << 16  # rows per numpy block: 65,536 x num_perm x 8 bytes = 58 MB at 112 perms


def minhash_matrix(texts: list[str], cfg: NearDedupConfig | None = None) -> np.ndarray:
    """uint32 MinHash signatures of the texts, one row (``num_perm`` values) per text.

    The same scheme as datasketch's default ``affine32`` (a well-mixed 32-bit hash per
    shingle, then odd-multiplier affine maps mod 2^32, which are bijections), computed for a
    whole batch at once: one ``(shingles, num_perm)`` array and ``np.minimum.reduceat`` over
    document boundaries. datasketch's per-document ``MinHash`` objects measured 100-300 us
    per review here; this is several times faster on the same signatures' quality.
    """
    cfg = cfg or NearDedupConfig()
    a, b = _permutations(cfg.num_perm, cfg.seed)
    blocks: list[np.ndarray] = [np.zeros((0, cfg.num_perm), np.uint32)]
    hashes: list[int] = []
    starts: list[int] = []

    def flush() -> None:
        if not starts:
            return
        h = np.fromiter(hashes, dtype=np.uint64, count=len(hashes))
        phv = (h[:, None] * a[None, :] + b[None, :]) & _MASK32  # (S, num_perm); < 2^64, no overflow
        blocks.append(np.minimum.reduceat(phv, np.asarray(starts), axis=0).astype(np.uint32))
        hashes.clear()
        starts.clear()

    for text in texts:
        grams = shingles(text, cfg.ngram)
        if hashes and len(hashes) + len(grams) > _MAX_SHINGLES:
            flush()
        starts.append(len(hashes))
        hashes.extend(xxhash.xxh32_intdigest(g) for g in grams)
    flush()
    return np.concatenate(blocks)


def minhash_signatures(texts: list[str], cfg: NearDedupConfig | None = None) -> list[np.ndarray]:
    """uint32 MinHash signature (``num_perm`` values) of each text (rows of ``minhash_matrix``)."""
    return list(minhash_matrix(texts, cfg))


def band_key_matrix(signatures: np.ndarray, cfg: NearDedupConfig | None = None) -> np.ndarray:
    """``(n, bands)`` uint64: one 64-bit hash per LSH band of each signature row."""
    cfg = cfg or NearDedupConfig()
    bands, rows = _lsh_params(cfg.threshold, cfg.num_perm)
    sigs = np.ascontiguousarray(signatures, dtype=np.uint32)
    raw, stride, width = sigs.tobytes(), sigs.shape[1] * 4, rows * 4
    keys = np.empty((len(sigs), bands), np.uint64)
    for d in range(len(sigs)):
        base = d * stride
        keys[d] = [
            xxhash.xxh64_intdigest(raw[base + i * width : base + (i + 1) * width], seed=i)
            for i in range(bands)
        ]
    return keys


KEEP, DUPLICATE, NEAR_DUPLICATE = 0, 1, 2
"""Codes ``CorpusDeduper.check`` returns per document."""


_SCALAR_TAIL = 16  # the last few keys of a long probe run are cheaper to follow one by one


def _home(first: np.ndarray, capacity: int) -> np.ndarray:
    """The slot where a key starts in a table of ``capacity`` (a power of two) slots: the top bits
    of its first word, so that the table in slot order is nearly sorted by key (a spill sorts it
    with a few merges, ``SpilledState.add_run``)."""
    return (first >> np.uint64(65 - capacity.bit_length())).astype(np.int64)


class HashTable:
    """Open-addressing hash table (linear probing) of keys made of ``width`` uint64 words, with
    an optional int64 value each, in one numpy array (a key and its value share a cache line);
    lookups and inserts take whole batches.

    Keys must be hash outputs (their first word picks the slot). A first word of 0 marks an
    empty slot, so a key's first word of 0 is stored as 1 (``prepare``): for band keys that can
    only add a candidate, which the signature check then rejects; exact keys still differ in
    their other 64 bits. A Python dict of band keys cost 7 us per document (nine int objects and
    entries) and about 100 bytes per key; this costs about 2 us (plus growing) and 32-64 bytes.
    """

    def __init__(self, width: int, values: bool, capacity: int = 1 << 16) -> None:
        self.width, self.cols = width, width + int(values)
        self._new(capacity)
        self.size = 0

    def _new(self, capacity: int) -> None:
        self._table = np.zeros((capacity, self.cols), np.uint64)
        # the same memory as one record per slot: numpy gathers and scatters 1-D arrays of
        # records 30x faster than rows of a 2-D array
        self._slots = self._table.view(np.dtype((np.void, 8 * self.cols))).ravel()

    def _gather(self, slots: np.ndarray) -> np.ndarray:
        return self._slots[slots].view(np.uint64).reshape(-1, self.cols)

    @staticmethod
    def prepare(keys: np.ndarray) -> np.ndarray:
        """``keys`` ``(n, width)`` as stored: a copy with a first word of 0 made 1."""
        keys = np.array(keys, dtype=np.uint64)
        keys[:, 0] = np.maximum(keys[:, 0], np.uint64(1))
        return keys

    def _matches(self, stored: np.ndarray, keys: np.ndarray) -> np.ndarray:
        found = stored[:, 0] == keys[:, 0]
        for w in range(1, self.width):
            found &= stored[:, w] == keys[:, w]
        return found

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The value of each (prepared) key (0 in a table without values), -1 where absent; and
        the slot where each search ended (the key's slot, or the empty slot an insert would take)."""
        mask = len(self._table) - 1
        out = np.full(len(keys), -1, np.int64)
        end = _home(keys[:, 0], len(self._table))
        rows, slots = np.arange(len(keys)), end.copy()
        while len(rows) > _SCALAR_TAIL:
            stored = self._gather(slots)
            found = self._matches(stored, keys[rows])
            if found.any():
                out[rows[found]] = stored[found, -1].astype(np.int64) if self.cols > self.width else 0
            probe = ~found & (stored[:, 0] != 0)
            end[rows[~probe]] = slots[~probe]
            rows, slots = rows[probe], (slots[probe] + 1) & mask
        for row, slot in zip(rows.tolist(), slots.tolist(), strict=True):
            key = keys[row].tolist()
            while (stored := self._table[slot].tolist())[0] and stored[: self.width] != key:
                slot = (slot + 1) & mask
            end[row] = slot
            if stored[0]:
                out[row] = stored[-1] if self.cols > self.width else 0
        return out, end

    def insert(
        self, keys: np.ndarray, values: np.ndarray | None = None, start: np.ndarray | None = None
    ) -> None:
        """Add (prepared) keys that are all absent and distinct. ``start``: the empty slots
        ``lookup`` ended at, when nothing was inserted since (saves probing them again)."""
        n = len(keys)
        if 2 * (self.size + n) > len(self._table):  # keep the load under 1/2
            self._grow(self.size + n)
            start = None
        rows = np.hstack([keys, values[:, None].astype(np.uint64)]) if values is not None else keys
        rows = np.ascontiguousarray(rows).view(self._slots.dtype).ravel()
        mask = len(self._table) - 1
        slots = _home(keys[:, 0], len(self._table)) if start is None else start.copy()
        pending = np.arange(n)
        free = start is not None  # the first slots are known to be empty
        while len(pending) > _SCALAR_TAIL:
            empty = np.ones(len(pending), bool) if free else self._table[slots, 0] == 0
            ep, es = pending[empty], slots[empty]
            self._slots[es] = rows[ep]  # several keys may want one empty slot: the last one gets it
            won = self._matches(self._gather(es), keys[ep])
            placed = np.zeros(len(pending), bool)
            placed[np.flatnonzero(empty)[won]] = True
            pending, slots = pending[~placed], (slots[~placed] + 1) & mask
            free = False
        for row, slot in zip(pending.tolist(), slots.tolist(), strict=True):
            while self._table[slot, 0]:
                slot = (slot + 1) & mask
            self._slots[slot] = rows[row]
        self.size += n

    def _grow(self, keys: int) -> None:
        """Rehash into the smallest power-of-two table with a load of at most 1/3 (usually twice
        as big: fresh memory costs about 0.5-2 ms/MB to fault in here, so it grows no faster).

        No probing: with the keys in order of their new home slot, linear probing puts key i at
        ``max(home_i, slot_(i-1) + 1)``, a running maximum. The old table is already nearly in
        that order, which the stable sort runs through quickly.
        """
        used = self._table[self._table[:, 0] != 0]
        capacity = len(self._table)
        while capacity < 3 * keys:
            capacity *= 2
        self._new(capacity)
        home = _home(used[:, 0], capacity)
        order = np.argsort(home, kind="stable")
        ranks = np.arange(len(order))
        slots = ranks + np.maximum.accumulate(home[order] - ranks)
        fits = slots < capacity  # the few that would run past the end wrap round: insert those
        self._slots[slots[fits]] = used.view(self._slots.dtype).ravel()[order[fits]]
        self.size = int(fits.sum())
        late = used[order[~fits]]
        if len(late):
            self.insert(
                late[:, : self.width], late[:, -1].astype(np.int64) if self.cols > self.width else None
            )

    def peak_bytes(self, more: int) -> int:
        """Bytes this table holds while ``more`` keys are added (old and new table while it grows)."""
        capacity = len(self._table)
        if 2 * (self.size + more) <= capacity:
            return self._table.nbytes
        grown = capacity
        while grown < 3 * (self.size + more):
            grown *= 2
        return (capacity + grown + self.size) * self.cols * 8

    def records(self) -> np.ndarray:
        """Every stored row ``(size, cols)``: the key's words, then its value."""
        return self._table[self._table[:, 0] != 0]


# ---- the state beyond the memory budget ------------------------------------------------------

_PAIRS = (np.uint64(1) << (np.arange(4096, dtype=np.uint64) & np.uint64(63))) | (
    np.uint64(1) << (np.arange(4096, dtype=np.uint64) >> np.uint64(6))
)  # the two bits that 12 bits of a key set in its word: a key sets four (or fewer)
_BUCKET = 256  # records per bucket of a sorted run (4 KB): one read finds a key
_FANIN = 8  # runs of one level merged into one of the next
# shares of the budget: the in-memory tables and signatures, the filter of all keys on disk,
# the filters of the single runs, the records merged at a time (and their copies while sorted)
_MEMTABLE_SHARE, _FILTER_SHARE, _HINT_SHARE, _MERGE_SHARE = 1 / 4, 5 / 16, 3 / 16, 1 / 64
_CHUNK = 1 << 18  # keys a filter takes at a time (bounds the temporary arrays)


class BloomFilter:
    """Fixed-size Bloom filter of 64-bit hash keys with a key's bits all in one 64-bit word:
    one random memory access per key (the word chosen by the key's top 32 bits, scaled to the
    number of words, the bits by its low 24). About 2% of absent keys pass at 10 bits per key,
    10% at 5; it fills up as keys are added and never grows, but halves (``fold``) into the
    filter it would be at half the size."""

    def __init__(self, nbytes: int) -> None:
        self._words = np.zeros(max(64, nbytes // 8), np.uint64)

    @property
    def nbytes(self) -> int:
        return self._words.nbytes

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low = keys.astype(np.uint32)  # bits 0-23: four 6-bit positions, two per table entry
        mask = _PAIRS[low & np.uint32(0xFFF)] | _PAIRS[(low >> np.uint32(12)) & np.uint32(0xFFF)]
        word = ((keys >> np.uint64(32)) * np.uint64(len(self._words))) >> np.uint64(32)
        return word.astype(np.intp), mask

    def add_sorted(self, keys: np.ndarray) -> None:
        """Add ascending keys (their words ascend too: one OR per word, no ``ufunc.at``)."""
        for start in range(0, len(keys), _CHUNK):
            word, mask = self._locate(keys[start : start + _CHUNK])
            first = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
            self._words[word[first]] |= np.bitwise_or.reduceat(mask, first)

    def may_contain(self, keys: np.ndarray) -> np.ndarray:
        """False: certainly never added; True: added, or a false positive."""
        word, mask = self._locate(keys)
        return (self._words[word] & mask) == mask

    def fold(self) -> None:
        """Halve a filter of an even number of words: words 2k and 2k+1 become word k (a key's
        word index halves too)."""
        assert len(self._words) % 2 == 0
        self._words = self._words[0::2] | self._words[1::2]


def _bucket_bits(records: int) -> int:
    return max(1, (records // _BUCKET).bit_length())


def _top(keys: np.ndarray, bits: int) -> np.ndarray:
    return (keys >> np.uint64(64 - bits)).astype(np.intp)


def _pread(fd: int, size: int, offset: int) -> bytes:
    parts = []
    while size > 0:
        data = os.pread(fd, min(size, 1 << 30), offset)
        if not data:
            raise OSError(f"dedup state file ended early (fd {fd}, offset {offset})")
        parts.append(data)
        size, offset = size - len(data), offset + len(data)
    return b"".join(parts)


class SortedRun:
    """``(key, value)`` uint64 records sorted by key in one file, with the start of each bucket
    (the keys' top ``bits`` bits, ~``_BUCKET`` records each) in memory: finding a key reads its
    bucket, 4 KB on average, with one ``pread``. ``hint``: a small Bloom filter of its keys, so a
    key that some run holds is read only from the runs that may hold it."""

    def __init__(self, path: Path, offsets: np.ndarray, level: int, hint: BloomFilter) -> None:
        self.path, self.offsets, self.level, self.hint = path, offsets, level, hint
        self.bits = (len(offsets) - 1).bit_length() - 1  # 2^bits + 1 offsets
        self.size = int(offsets[-1])
        self._fd = os.open(path, os.O_RDONLY)

    def read(self, start: int, end: int) -> np.ndarray:
        """Records ``start:end`` as a ``(end - start, 2)`` array."""
        data = _pread(self._fd, (end - start) * 16, start * 16)
        return np.frombuffer(data, np.uint64).reshape(-1, 2)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record whose key is in ``keys`` (ascending uint64): the index in ``keys`` of its
        key, and its value."""
        buckets = np.unique(_top(keys, self.bits))
        starts, ends = self.offsets[buckets], self.offsets[buckets + 1]
        full = ends > starts
        fd = self._fd
        # buckets are 4 KB on average: one pread returns them whole
        data = b"".join(
            os.pread(fd, (e - s) * 16, s * 16)
            for s, e in zip(starts[full].tolist(), ends[full].tolist(), strict=True)
        )
        records = np.frombuffer(data, np.uint64).reshape(-1, 2)
        # ascending buckets of sorted records: the concatenation is sorted too
        lo = np.searchsorted(records[:, 0], keys, "left")
        counts = np.searchsorted(records[:, 0], keys, "right") - lo
        query = np.repeat(np.arange(len(keys)), counts)
        at = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        return query, records[at, 1]

    def close(self) -> None:
        """Close and delete the file."""
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


class _RunWriter:
    """Writes a ``SortedRun`` of ``size`` records from pieces given in key order."""

    def __init__(self, path: Path, size: int, hint_bytes: int) -> None:
        self.path, self.bits = path, _bucket_bits(size)
        self._counts = np.zeros(1 << self.bits, np.int64)
        self._hint = BloomFilter(1 << (max(hint_bytes, 1).bit_length() - 1))  # power of two: folds
        self._file = open(path, "wb")  # noqa: SIM115 (closed by finish)

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        top = _top(records[:, 0], self.bits)
        counts = np.bincount(top - top[0])
        self._counts[top[0] : top[0] + len(counts)] += counts
        self._hint.add_sorted(records[:, 0])
        self._file.write(np.ascontiguousarray(records, np.uint64).data)

    def finish(self, level: int) -> SortedRun:
        self._file.close()
        return SortedRun(self.path, np.concatenate([[0], np.cumsum(self._counts)]), level, self._hint)


class SpilledState:
    """The part of a ``CorpusDeduper``'s state on disk (see the module docstring): sorted runs of
    exact keys ``(word 0, word 1)`` and of band keys ``(band hash, document)``, a Bloom filter of
    all their keys, and the signatures of the documents written out, by index."""

    def __init__(self, directory: Path, budget: int, num_perm: int) -> None:
        self._made_directory = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.filter = BloomFilter(int(budget * _FILTER_SHARE))
        self.runs: dict[str, list[SortedRun]] = {"exact": [], "bands": []}
        self._hint_bytes = int(budget * _HINT_SHARE)
        self._window = max(1 << 16, int(budget * _MERGE_SHARE) // 16)  # records per merge step
        self._names = 0
        self._row = 4 * num_perm
        self._signatures = open(directory / "signatures.bin", "w+b")  # noqa: SIM115 (closed by close)
        self.signature_count = 0
        self.merges = 0

    def _all_runs(self) -> list[SortedRun]:
        return [r for runs in self.runs.values() for r in runs]

    def _writer(self, kind: str, size: int, replacing: tuple[SortedRun, ...] = ()) -> _RunWriter:
        """A writer of a new run (of the runs ``replacing``) whose hint gets its share by size."""
        self._names += 1
        total = size + sum(r.size for r in self._all_runs() if r not in replacing)
        path = self.directory / f"{kind}-{self._names:06d}.bin"
        return _RunWriter(path, size, self._hint_bytes * size // total)

    def _fit_hints(self) -> None:
        runs = self._all_runs()
        while sum(r.hint.nbytes for r in runs) > self._hint_bytes:
            largest = max(runs, key=lambda r: r.hint.nbytes)
            if largest.hint.nbytes <= 512:
                return
            largest.hint.fold()

    def add_run(self, kind: str, records: np.ndarray) -> None:
        """Write unsorted ``(key, value)`` records as a new run; merge runs of equal level."""
        if not len(records):
            return
        records = records[np.argsort(records[:, 0], kind="stable")]  # nearly sorted: timsort
        self.filter.add_sorted(records[:, 0])
        writer = self._writer(kind, len(records))
        writer.add(records)
        del records
        runs = self.runs[kind]
        runs.append(writer.finish(level=0))
        while len(runs) >= _FANIN and len({r.level for r in runs[-_FANIN:]}) == 1:
            merged = self._merge(kind, runs[-_FANIN:])
            runs[-_FANIN:] = [merged]
        self._fit_hints()

    def _merge(self, kind: str, runs: list[SortedRun]) -> SortedRun:
        """One run of the next level from several, a window of key prefixes at a time."""
        size = sum(r.size for r in runs)
        w = min(min(r.bits for r in runs), (size // self._window).bit_length())
        writer = self._writer(kind, size, replacing=tuple(runs))
        for p in range(1 << w):
            pieces = np.concatenate(
                [
                    r.read(int(r.offsets[p << (r.bits - w)]), int(r.offsets[(p + 1) << (r.bits - w)]))
                    for r in runs
                ]
            )
            # sorted pieces one after the other: timsort merges them
            writer.add(pieces[np.argsort(pieces[:, 0], kind="stable")])
        for r in runs:
            r.close()
        self.merges += 1
        return writer.finish(level=runs[0].level + 1)

    def append_signatures(self, blocks: list[np.ndarray]) -> None:
        for block in blocks:
            self._signatures.write(np.ascontiguousarray(block, np.uint32).tobytes())
            self.signature_count += len(block)
        self._signatures.flush()

    def signature(self, index: int) -> np.ndarray:
        return np.frombuffer(_pread(self._signatures.fileno(), self._row, index * self._row), np.uint32)

    def exact_found(self, words: np.ndarray) -> np.ndarray:
        """Which of the exact keys ``(n, 2)`` are on disk."""
        found = np.zeros(len(words), bool)
        todo = np.flatnonzero(self.filter.may_contain(words[:, 0]))
        todo = todo[np.argsort(words[todo, 0], kind="stable")]
        for run in reversed(self.runs["exact"]):  # newest first; a key is in at most one run
            ask = todo[run.hint.may_contain(words[todo, 0])]
            if not len(ask):
                continue
            query, second = run.find(words[ask, 0])
            hit = ask[query[second == words[ask[query], 1]]]
            found[hit] = True
            todo = todo[~found[todo]]
        return found

    def band_documents(self, keys: np.ndarray) -> dict[int, list[int]]:
        """For each band key (1-D, passed by ``filter``) that is on disk, its index in ``keys`` ->
        the documents with it."""
        if not len(keys):
            return {}
        unique, inverse = np.unique(keys, return_inverse=True)
        documents: dict[int, list[int]] = {}
        for run in self.runs["bands"]:
            ask = np.flatnonzero(run.hint.may_contain(unique))
            if not len(ask):
                continue
            query, docs = run.find(unique[ask])
            for q, d in zip(ask[query].tolist(), docs.tolist(), strict=True):
                documents.setdefault(q, []).append(d)
        if not documents:
            return {}
        hit = np.zeros(len(unique), bool)
        hit[list(documents)] = True
        at = np.flatnonzero(hit[inverse])
        return {i: documents[u] for i, u in zip(at.tolist(), inverse[at].tolist(), strict=True)}

    def disk_bytes(self) -> int:
        return 16 * sum(r.size for r in self._all_runs()) + self._row * self.signature_count

    def memory_bytes(self) -> int:
        """The filter, the hints and the bucket starts."""
        runs = self._all_runs()
        return self.filter.nbytes + sum(r.hint.nbytes + r.offsets.nbytes for r in runs)

    def close(self) -> None:
        """Remove the files it wrote (and the directory, if it made it and nothing else is there)."""
        for run in self._all_runs():
            run.close()
        self.runs = {"exact": [], "bands": []}
        self._signatures.close()
        Path(self._signatures.name).unlink(missing_ok=True)
        if self._made_directory:
            with contextlib.suppress(OSError):
                self.directory.rmdir()


def _repeats(keys: np.ndarray) -> dict[int, list[int]]:
    """Positions (ascending) of every value that occurs more than once in a 1-D uint64 array."""
    ordered = np.sort(keys)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    groups: dict[int, list[int]] = {}
    if len(repeated):
        for i in np.flatnonzero(np.isin(keys, repeated)).tolist():
            groups.setdefault(int(keys[i]), []).append(i)
    return groups


class CorpusDeduper:
    """Exact and MinHash-LSH near deduplication across the corpus, in input order.

    Exact: a document whose key equals a kept document's key is a duplicate. Near: a document
    is a near duplicate of a kept one when they share an LSH band and their signatures agree on
    at least ``threshold`` of the positions. State: a ``HashTable`` of the exact keys of kept
    documents, a ``HashTable`` from band hash to the first kept document with it (64-bit hashes
    seeded per band, so bands do not mix) plus a dict of lists for the rare hashes that several
    kept documents share, and the signatures of kept documents (one array block per batch).

    A batch is checked with array operations; only documents that have a candidate (a key or
    band hash already seen, in the state or earlier in the batch) are decided one by one.

    ``memory_mb`` > 0 bounds the state in memory to about that many MB (plus one batch): beyond
    a quarter of it the state is written to ``work_dir`` (module docstring), with the same codes.
    ``work_dir`` (default: a new temporary directory) is created when that first happens;
    ``close`` removes what was written there (the pipeline also removes a killed run's).
    """

    def __init__(
        self,
        exact: bool,
        near: NearDedupConfig | None,
        memory_mb: int = 0,
        work_dir: str | Path | None = None,
    ) -> None:
        self.exact, self.near = exact, near
        self._exact = HashTable(2, values=False)
        self._bands = HashTable(1, values=True)
        self._more: dict[int, list[int]] = {}
        self._more_count = 0
        self._blocks: list[np.ndarray] = []
        self._starts: list[int] = []
        self._count = 0
        if near is not None:
            self._min_equal = near.threshold * near.num_perm
            self._width = _lsh_params(near.threshold, near.num_perm)[0]
        self._budget = max(0, memory_mb) << 20
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self.spilled: SpilledState | None = None
        self.spills = 0
        self._written = 0  # kept documents whose state is on disk

    def _signature(self, idx: int) -> np.ndarray:
        if idx < self._written:
            return self.spilled.signature(idx)
        block = bisect.bisect_right(self._starts, idx) - 1
        return self._blocks[block][idx - self._starts[block]]

    def memory_bytes(self, batch: int = 0) -> int:
        """Bytes of the in-memory part while a batch of ``batch`` more documents is added (tables
        while they grow, signatures, the dict of shared band hashes at ~100 B an entry)."""
        total = self._more_count * 100 + sum(b.nbytes for b in self._blocks)
        if self.exact:
            total += self._exact.peak_bytes(batch)
        if self.near is not None:
            total += self._bands.peak_bytes(batch * self._width) + batch * 4 * self.near.num_perm
        return total

    def _spill(self) -> None:
        """Write the in-memory part out as new sorted runs (and signatures) and empty it."""
        if self.spilled is None:
            directory = self._work_dir or Path(tempfile.mkdtemp(prefix="koneox-dedup-")) / "state"
            num_perm = self.near.num_perm if self.near is not None else 0
            self.spilled = SpilledState(directory, self._budget, num_perm)
        # each part is freed before the next is sorted
        self.spilled.append_signatures(self._blocks)
        self._blocks, self._starts = [], []
        if self.exact:
            records = self._exact.records()
            self._exact = HashTable(2, values=False)
            self.spilled.add_run("exact", records)
        if self.near is not None:
            records = self._bands.records()
            self._bands = HashTable(1, values=True)
            more = [(k, d) for k, docs in self._more.items() for d in docs]
            self._more, self._more_count = {}, 0
            if more:
                records = np.concatenate([records, np.array(more, np.uint64)])
            self.spilled.add_run("bands", records)
        self._written = self._count
        self.spills += 1

    def close(self) -> None:
        """Remove the state written to disk; the deduper is not used after."""
        if self.spilled is not None:
            self.spilled.close()
            if self._work_dir is None:  # the temporary directory made for it
                with contextlib.suppress(OSError):
                    self.spilled.directory.parent.rmdir()
            self.spilled = None

    def __enter__(self) -> CorpusDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _near_on_disk(self, codes: np.ndarray, bands: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """Which documents of the batch (not exact duplicates) are near duplicates of a document
        written to disk. A document's band hashes that the filter lets through are looked up one
        band at a time, and the next only while no candidate has confirmed it: a near duplicate
        usually shares several bands with its original, and one read finds it."""
        near = np.zeros(len(codes), bool)
        if self.spilled is None:
            return near
        live = np.flatnonzero(codes == KEEP)
        maybe = self.spilled.filter.may_contain(bands[live].ravel()).reshape(len(live), bands.shape[1])
        todo = np.flatnonzero(maybe.any(axis=1))
        while len(todo):
            band = maybe[todo].argmax(axis=1)  # the first band not looked up yet
            maybe[todo, band] = False
            found = self.spilled.band_documents(bands[live[todo], band])
            for t, docs in found.items():
                i = int(live[todo[t]])
                sig = signatures[i]
                near[i] = any(np.count_nonzero(self._signature(d) == sig) >= self._min_equal for d in docs)
            todo = todo[~near[live[todo]] & maybe[todo].any(axis=1)]
        return near

    def check(
        self, keys: np.ndarray | None, signatures: np.ndarray | None, bands: np.ndarray | None
    ) -> np.ndarray:
        """Codes (``KEEP``, ``DUPLICATE``, ``NEAR_DUPLICATE``) of a batch of documents in input
        order: ``keys`` ``(n, 16)`` uint8 from ``exact_key``, ``signatures`` ``(n, num_perm)``
        uint32 and ``bands`` ``(n, bands)`` uint64; the arrays of a switched-off step may be None."""
        exact, near = self.exact, self.near is not None
        n = len(keys) if exact else len(signatures) if near else 0
        limit = self._budget * _MEMTABLE_SHARE
        if self._budget and self._count > self._written and self.memory_bytes(n) > limit:
            self._spill()
        disk = self.spilled
        codes = np.zeros(n, np.int8)
        suspects = np.zeros(n, bool)
        if exact:
            words = HashTable.prepare(np.ascontiguousarray(keys).view(np.uint64))  # (n, 2)
            found, exact_end = self._exact.lookup(words)
            if disk is not None:
                rest = np.flatnonzero(found < 0)
                found[rest[disk.exact_found(words[rest])]] = 0
            codes[found >= 0] = DUPLICATE
            exact_groups = _repeats(words[:, 0])
            for group in exact_groups.values():
                suspects[group[1:]] = True
        if near:
            width = bands.shape[1]
            flat = HashTable.prepare(bands.reshape(-1, 1))  # (n * width, 1)
            hits, band_end = self._bands.lookup(flat)
            flat = flat[:, 0]
            band_groups = _repeats(flat)
            later = np.zeros(n * width, bool)
            for group in band_groups.values():
                later[group[1:]] = True
            suspects |= ((hits >= 0) | later).reshape(n, width).any(axis=1)
            # near duplicates of documents written out do not depend on the rest of the batch
            near_disk = self._near_on_disk(codes, flat.reshape(n, width), signatures)
            suspects |= near_disk
        # Documents without any candidate are kept; the others are decided in order.
        for i in np.flatnonzero(suspects & (codes == KEEP)).tolist():
            if exact and (group := exact_groups.get(int(words[i, 0]))):
                key = keys[i].tobytes()
                if any(r < i and codes[r] == KEEP and keys[r].tobytes() == key for r in group):
                    codes[i] = DUPLICATE
                    continue
            if near:
                if near_disk[i]:
                    codes[i] = NEAR_DUPLICATE
                    continue
                stored: set[int] = set()
                batch: set[int] = set()
                for j in range(i * width, (i + 1) * width):
                    if hits[j] >= 0:
                        stored.add(int(hits[j]))
                        stored.update(self._more.get(int(flat[j]), ()))
                    if later[j]:
                        batch.update(r // width for r in band_groups[int(flat[j])] if r // width < i)
                sig = signatures[i]
                others = [self._signature(c) for c in sorted(stored)]
                others += [signatures[r] for r in sorted(batch) if codes[r] == KEEP]
                if any(np.count_nonzero(other == sig) >= self._min_equal for other in others):
                    codes[i] = NEAR_DUPLICATE
        kept = np.flatnonzero(codes == KEEP)
        if exact and len(kept):
            # a kept key is in neither the table nor (earlier) the batch; its search ended at a free slot
            self._exact.insert(words[kept], None, exact_end[kept])
        if near and len(kept):
            positions = (kept[:, None] * width + np.arange(width)).ravel()
            idx = np.repeat(self._count + np.arange(len(kept)), width)
            # a band hash goes into the table once (first kept document); later ones to _more
            extra = hits[positions] >= 0
            if band_groups:
                kept_doc = np.zeros(n, bool)
                kept_doc[kept] = True
                seen = np.zeros(n * width, bool)
                for group in band_groups.values():
                    kept_pos = [p for p in group if kept_doc[p // width]]
                    seen[kept_pos[1:]] = True
                extra |= seen[positions]
            new = ~extra
            self._bands.insert(flat[positions[new], None], idx[new], band_end[positions[new]])
            for k, d in zip(flat[positions[extra]].tolist(), idx[extra].tolist(), strict=True):
                self._more.setdefault(k, []).append(d)
            self._more_count += int(extra.sum())
            self._starts.append(self._count)
            self._blocks.append(signatures[kept])
        self._count += len(kept)
        return codes
