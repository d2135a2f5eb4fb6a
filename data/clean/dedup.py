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
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re

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
        end = (keys[:, 0] & np.uint64(mask)).astype(np.int64)
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
        slots = (keys[:, 0] & np.uint64(mask)).astype(np.int64) if start is None else start.copy()
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
        home = (used[:, 0] & np.uint64(capacity - 1)).astype(np.int64)
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
    """

    def __init__(self, exact: bool, near: NearDedupConfig | None) -> None:
        self.exact, self.near = exact, near
        self._exact = HashTable(2, values=False)
        self._bands = HashTable(1, values=True)
        self._more: dict[int, list[int]] = {}
        self._blocks: list[np.ndarray] = []
        self._starts: list[int] = []
        self._count = 0
        if near is not None:
            self._min_equal = near.threshold * near.num_perm

    def _signature(self, idx: int) -> np.ndarray:
        block = bisect.bisect_right(self._starts, idx) - 1
        return self._blocks[block][idx - self._starts[block]]

    def check(
        self, keys: np.ndarray | None, signatures: np.ndarray | None, bands: np.ndarray | None
    ) -> np.ndarray:
        """Codes (``KEEP``, ``DUPLICATE``, ``NEAR_DUPLICATE``) of a batch of documents in input
        order: ``keys`` ``(n, 16)`` uint8 from ``exact_key``, ``signatures`` ``(n, num_perm)``
        uint32 and ``bands`` ``(n, bands)`` uint64; the arrays of a switched-off step may be None."""
        exact, near = self.exact, self.near is not None
        n = len(keys) if exact else len(signatures) if near else 0
        codes = np.zeros(n, np.int8)
        suspects = np.zeros(n, bool)
        if exact:
            words = HashTable.prepare(np.ascontiguousarray(keys).view(np.uint64))  # (n, 2)
            found, exact_end = self._exact.lookup(words)
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
        # Documents without any candidate are kept; the others are decided in order.
        for i in np.flatnonzero(suspects & (codes == KEEP)).tolist():
            if exact and (group := exact_groups.get(int(words[i, 0]))):
                key = keys[i].tobytes()
                if any(r < i and codes[r] == KEEP and keys[r].tobytes() == key for r in group):
                    codes[i] = DUPLICATE
                    continue
            if near:
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
            self._starts.append(self._count)
            self._blocks.append(signatures[kept])
            self._count += len(kept)
        return codes
