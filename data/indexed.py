"""Megatron indexed dataset (``PREFIX.bin`` + ``PREFIX.idx``): reader, streaming writer, merge.

The format is the de-facto exchange format of tokenized corpora (Megatron-LM, GPT-NeoX,
Pythia, Polyglot-Ko). ``.bin`` holds the token ids of every sequence back to back, no header,
one dtype. ``.idx`` is little-endian::

    b"MMIDIDX\\x00\\x00"   9-byte magic
    <Q  version = 1
    <B  dtype code        (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16)
    <Q  sequence count    S
    <Q  document count    D + 1   (length of the document index array below)
    int32[S]    sequence lengths in tokens
    int64[S]    byte offset of each sequence in .bin
    int64[D+1]  document index: document d is sequences [doc[d], doc[d+1]); starts at 0, ends at S
    (int8[S]    sequence modes: only in Megatron-LM's multimodal files; accepted and ignored)

koneox writes one sequence per document, so ``doc == arange(S + 1)``; files from Megatron-LM
or GPT-NeoX that split documents into several sequences (sentences) read just the same.

Usage::

    from data.indexed import IndexedDataset, merge
    ds = IndexedDataset("runs/data/nsmc", vocab_size=30003)   # validates, memory-maps
    ds.num_documents, ds.num_tokens, ds[0]                    # first sequence as a numpy array
    merge(["runs/a", "runs/b"], "runs/ab")                    # keeps every document boundary
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count

DTYPE_CODES: dict[int, type[np.generic]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
_CODE_OF = {np.dtype(t): c for c, t in DTYPE_CODES.items()}

# Copying the index arrays in bounded chunks keeps the writer's memory flat for any corpus.
_CHUNK = 1 << 22


class IndexedDatasetError(ValueError):
    """A .bin/.idx pair that cannot be used; the message names the file and what is wrong."""


def best_dtype(vocab_size: int) -> np.dtype:
    """Smallest token dtype for a vocabulary, as Megatron-LM chooses it (uint16 below 65,500)."""
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


def bin_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.idx")


def _strip_suffix(prefix: str | os.PathLike) -> str:
    """Accept ``foo``, ``foo.bin`` or ``foo.idx`` for the same dataset."""
    p = os.fspath(prefix)
    return p[:-4] if p.endswith((".bin", ".idx")) else p


class IndexedDataset:
    """Read-only, memory-mapped view of a ``.bin``/``.idx`` pair.

    Opening checks everything that can be checked from the two files (magic, version,
    dtype, header counts against the file sizes, pointers against lengths, document index
    bounds) and, when ``vocab_size`` is given, that no token id reaches past the vocabulary,
    so a bad file fails here, naming the file, and not in the middle of training.
    Nothing is read into process memory: the arrays below are views of ``mmap``.
    """

    def __init__(
        self,
        prefix: str | os.PathLike,
        vocab_size: int | None = None,
        check_tokens: bool = True,
        validate: bool = True,
    ):
        """``validate=False`` skips the two O(sequences) index checks (header and sizes are still
        checked): for files whose exact version was validated before, e.g. by the rank that
        built the index cache (``data.dataset.IndexCache``), so 256 ranks do not each re-read it."""
        self.prefix = _strip_suffix(prefix)
        self._validate = validate
        self.idx_file, self.bin_file = idx_path(self.prefix), bin_path(self.prefix)
        for f in (self.idx_file, self.bin_file):
            if not f.is_file():
                raise IndexedDatasetError(
                    f"{f}: missing (a packed dataset needs both {self.prefix}.bin and .idx)"
                )
        self._read_index()
        self._check_bin()
        if vocab_size is not None and check_tokens:
            self.check_token_ids(vocab_size)

    def _read_index(self) -> None:
        f = self.idx_file
        size = f.stat().st_size
        if size < _HEADER.size:
            raise IndexedDatasetError(
                f"{f}: {size} bytes, shorter than the {_HEADER.size}-byte header (truncated?)"
            )
        with open(f, "rb") as fh:
            magic, version, code, n_seq, n_doc = _HEADER.unpack(fh.read(_HEADER.size))
        if magic != MAGIC:
            raise IndexedDatasetError(
                f"{f}: bad magic {magic!r}, expected {MAGIC!r} (not a Megatron .idx file)"
            )
        if version != VERSION:
            raise IndexedDatasetError(f"{f}: index version {version}, only version {VERSION} is known")
        if code not in DTYPE_CODES:
            raise IndexedDatasetError(f"{f}: unknown dtype code {code} (known: {sorted(DTYPE_CODES)})")
        dtype = np.dtype(DTYPE_CODES[code])
        if dtype.kind == "f":
            raise IndexedDatasetError(f"{f}: dtype {dtype} (code {code}); token files must hold integers")
        body = n_seq * 4 + n_seq * 8 + n_doc * 8
        # Megatron-LM's multimodal files append one int8 mode per sequence; allow exactly that.
        if size not in (_HEADER.size + body, _HEADER.size + body + n_seq):
            raise IndexedDatasetError(
                f"{f}: {size} bytes, but the header ({n_seq} sequences, {n_doc} document-index entries) "
                f"needs {_HEADER.size + body} (truncated or corrupt)"
            )
        if n_doc < 1:
            raise IndexedDatasetError(f"{f}: empty document index (it must start with 0)")
        self.dtype = dtype
        self.dtype_code = code
        mm = np.memmap(f, mode="r", dtype=np.uint8)
        off = _HEADER.size
        self.lengths = mm[off : off + 4 * n_seq].view(np.int32)
        off += 4 * n_seq
        self.pointers = mm[off : off + 8 * n_seq].view(np.int64)
        off += 8 * n_seq
        self.doc_index = mm[off : off + 8 * n_doc].view(np.int64)
        if self.doc_index[0] != 0 or self.doc_index[-1] != n_seq:
            raise IndexedDatasetError(
                f"{f}: document index runs {self.doc_index[0]}..{self.doc_index[-1]}, expected 0..{n_seq}"
            )
        for lo in range(0, n_doc if self._validate else 0, _CHUNK):
            part = np.asarray(self.doc_index[lo : lo + _CHUNK + 1])
            if (np.diff(part) < 0).any():
                raise IndexedDatasetError(f"{f}: document index is not non-decreasing near entry {lo}")

    def _check_bin(self) -> None:
        n_seq, item = len(self.lengths), self.dtype.itemsize
        bin_size = self.bin_file.stat().st_size
        expected = 0 if self._validate else bin_size - bin_size % item
        # Pointers must be the running sum of the lengths: anything else means the .idx
        # belongs to another .bin or one of them was rewritten. Checked in bounded chunks.
        for lo in range(0, n_seq if self._validate else 0, _CHUNK):
            lens = np.asarray(self.lengths[lo : lo + _CHUNK], dtype=np.int64)
            if (lens < 0).any():
                raise IndexedDatasetError(f"{self.idx_file}: negative sequence length near sequence {lo}")
            want = expected + np.concatenate(([0], np.cumsum(lens[:-1] * item)))
            if not np.array_equal(np.asarray(self.pointers[lo : lo + _CHUNK]), want):
                raise IndexedDatasetError(
                    f"{self.idx_file}: sequence pointers disagree with the lengths near sequence {lo} (corrupt index)"
                )
            expected += int(lens.sum()) * item
        if bin_size != expected:
            raise IndexedDatasetError(
                f"{self.bin_file}: {bin_size} bytes, but {self.idx_file} describes {expected} bytes "
                f"({expected // item} {self.dtype} tokens): truncated, or .bin and .idx do not belong together"
            )
        self.num_tokens = expected // item
        # np.memmap cannot map an empty file; an empty dataset simply has no tokens.
        self.tokens = (
            np.memmap(self.bin_file, mode="r", dtype=self.dtype)
            if bin_size
            else np.zeros(0, dtype=self.dtype)
        )

    def check_token_ids(self, vocab_size: int) -> bool:
        """Raise if any token id is negative or >= ``vocab_size``. Returns whether the tokens were
        read (streamed in chunks): not when the dtype cannot hold a bad id, nor when the pack's
        ``PREFIX.stats.json`` vouches for this ``.bin`` with ids in range. Stats that report an
        id out of range are checked by the scan, which names the first bad token."""
        if np.iinfo(self.dtype).max < vocab_size and np.iinfo(self.dtype).min >= 0:
            return False  # the dtype cannot even hold a bad id
        stats = read_stats(self.prefix)  # None unless it describes this very .bin (bin_bytes)
        try:
            vouched = stats is not None and int(stats["max_token_id"]) < vocab_size and int(stats["min_token_id"]) >= 0
        except (KeyError, TypeError, ValueError):
            vouched = False
        if vouched:
            return False
        for lo in range(0, self.num_tokens, 1 << 24):
            part = self.tokens[lo : lo + (1 << 24)]
            hi_id, lo_id = int(part.max()), int(part.min())
            if hi_id >= vocab_size or lo_id < 0:
                bad = hi_id if hi_id >= vocab_size else lo_id
                pos = lo + int(np.argmax(part == bad))
                raise IndexedDatasetError(
                    f"{self.bin_file}: token id {bad} at token {pos} is outside the vocabulary of {vocab_size} "
                    "(packed with another tokenizer?)"
                )
        return True

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    @functools.cached_property
    def one_sequence_per_document(self) -> bool:
        """Whether document d is exactly sequence d (the layout koneox writes): then the document
        index need not be consulted. Checked once, in chunks."""
        if self.num_documents != self.num_sequences:
            return False
        n = len(self.doc_index)
        return all(
            np.array_equal(self.doc_index[lo : lo + _CHUNK], np.arange(lo, min(lo + _CHUNK, n)))
            for lo in range(0, n, _CHUNK)
        )

    @property
    def num_documents(self) -> int:
        return len(self.doc_index) - 1

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, i: int) -> np.ndarray:
        """Token ids of sequence ``i`` (a read-only view into the memory map)."""
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.tokens[start : start + int(self.lengths[i])]

    def document(self, d: int) -> np.ndarray:
        """Token ids of document ``d`` (all of its sequences, concatenated)."""
        s0, s1 = int(self.doc_index[d]), int(self.doc_index[d + 1])
        if s0 == s1:
            return np.zeros(0, dtype=self.dtype)
        start = int(self.pointers[s0]) // self.dtype.itemsize
        end = int(self.pointers[s1 - 1]) // self.dtype.itemsize + int(self.lengths[s1 - 1])
        return self.tokens[start:end]


class IndexedDatasetWriter:
    """Streaming writer: memory stays flat however many documents are added.

    Tokens go straight to ``PREFIX.bin.tmp`` and sequence lengths to a side file; ``finish()``
    assembles the ``.idx`` by streaming that side file in chunks and renames both files into
    place, so an interrupted run never leaves a pair that looks valid.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type):
        self.prefix = _strip_suffix(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF:
            raise ValueError(f"dtype {self.dtype} has no Megatron code")
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp = Path(f"{self.prefix}.bin.tmp")
        self._len_tmp = Path(f"{self.prefix}.lengths.tmp")
        # Held open across add_documents() calls and closed in finish()/abort().
        self._bin = open(self._bin_tmp, "wb")  # noqa: SIM115
        self._len = open(self._len_tmp, "wb")  # noqa: SIM115
        self.num_documents = 0
        self.num_tokens = 0

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents given as one flat token array and the length of each document."""
        lengths = np.asarray(lengths, dtype=np.int32)
        if int(lengths.sum(dtype=np.int64)) != len(tokens):
            raise ValueError("lengths do not add up to the number of tokens")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._len.write(lengths.tobytes())
        self.num_documents += len(lengths)
        self.num_tokens += len(tokens)

    def add_document(self, tokens: Sequence[int] | np.ndarray) -> None:
        arr = np.asarray(tokens, dtype=self.dtype)
        self.add_documents(arr, np.array([len(arr)], dtype=np.int32))

    def finish(self) -> None:
        self._bin.close()
        self._len.close()
        n = self.num_documents
        idx_tmp = Path(f"{self.prefix}.idx.tmp")
        with open(idx_tmp, "wb") as out:
            out.write(_HEADER.pack(MAGIC, VERSION, _CODE_OF[self.dtype], n, n + 1))
            lengths = np.memmap(self._len_tmp, mode="r", dtype=np.int32) if n else np.zeros(0, np.int32)
            for lo in range(0, n, _CHUNK):
                out.write(np.asarray(lengths[lo : lo + _CHUNK]).tobytes())
            offset = 0  # running byte offset carried from one chunk to the next
            for lo in range(0, n, _CHUNK):
                nbytes = np.asarray(lengths[lo : lo + _CHUNK], dtype=np.int64) * self.dtype.itemsize
                ends = np.cumsum(nbytes) + offset
                out.write((ends - nbytes).tobytes())
                offset = int(ends[-1])
            # One sequence per document: the document index is 0..n.
            for lo in range(0, n + 1, _CHUNK):
                out.write(np.arange(lo, min(lo + _CHUNK, n + 1), dtype=np.int64).tobytes())
            del lengths
        os.replace(self._bin_tmp, bin_path(self.prefix))
        os.replace(idx_tmp, idx_path(self.prefix))
        self._len_tmp.unlink()

    def abort(self) -> None:
        """Close and delete the temporary files (used when packing fails)."""
        for fh in (self._bin, self._len):
            fh.close()
        for p in (self._bin_tmp, self._len_tmp, Path(f"{self.prefix}.idx.tmp")):
            p.unlink(missing_ok=True)


def verify_token_ids(prefixes: Sequence[str | os.PathLike], vocab_size: int, stamp: Path | None = None) -> int:
    """Check every dataset for token ids outside ``vocab_size``; return how many files were scanned.

    A ``.bin`` with a matching ``PREFIX.stats.json`` (from `koneox pack`) is checked against the
    largest and smallest id recorded there, without reading it. With ``stamp`` (a JSON file), a
    ``.bin`` whose size and modification time match the stamp's record for this vocabulary size
    is not scanned again either, so a restart of a 1 TB run costs nothing; the stamp is updated
    after each file that passes."""
    import json

    seen: dict = {}
    if stamp is not None and stamp.is_file():
        try:
            seen = json.loads(stamp.read_text())
        except ValueError:
            seen = {}
    scanned = 0
    for prefix in prefixes:
        # Only the tokens are read here; the index is validated where it is used (data.dataset).
        ds = IndexedDataset(prefix, validate=False)
        st = ds.bin_file.stat()
        key = str(ds.bin_file.resolve())
        record = [st.st_size, st.st_mtime_ns, vocab_size]
        if seen.get(key) == record:
            continue
        if not ds.check_token_ids(vocab_size):
            continue
        scanned += 1
        if stamp is not None:
            seen[key] = record
            tmp = stamp.with_name(stamp.name + ".tmp")
            tmp.write_text(json.dumps(seen, indent=1) + "\n")
            os.replace(tmp, stamp)
    return scanned


def merge(prefixes: Sequence[str | os.PathLike], out_prefix: str | os.PathLike) -> dict:
    """Concatenate packed datasets into one, keeping every document boundary.

    GPT-NeoX's ``merge_file_`` appends the lengths but not the document index, so the merged
    file claims to hold a single document (REFERENCE §4). Here each input's document index is
    shifted by the number of sequences already written, which also keeps multi-sequence
    documents from Megatron-LM files intact. Streams: memory does not grow with the inputs.
    """
    if not prefixes:
        raise ValueError("merge needs at least one input prefix")
    parts = [IndexedDataset(p) for p in prefixes]
    dtype = parts[0].dtype
    for p in parts[1:]:
        if p.dtype != dtype:
            raise IndexedDatasetError(
                f"{p.idx_file}: dtype {p.dtype} differs from {parts[0].idx_file} ({dtype})"
            )
    out = _strip_suffix(out_prefix)
    if any(out == p.prefix for p in parts):
        raise ValueError(f"merge output {out} would overwrite one of its inputs")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    n_seq = sum(p.num_sequences for p in parts)
    n_doc = sum(p.num_documents for p in parts)
    item = dtype.itemsize
    with open(f"{out}.bin.tmp", "wb") as fb:
        for p in parts:
            for lo in range(0, p.num_tokens, 1 << 24):
                fb.write(np.asarray(p.tokens[lo : lo + (1 << 24)]).tobytes())
    with open(f"{out}.idx.tmp", "wb") as fi:
        fi.write(_HEADER.pack(MAGIC, VERSION, _CODE_OF[dtype], n_seq, n_doc + 1))
        for p in parts:
            for lo in range(0, p.num_sequences, _CHUNK):
                fi.write(np.asarray(p.lengths[lo : lo + _CHUNK]).tobytes())
        byte_base = 0
        for p in parts:
            for lo in range(0, p.num_sequences, _CHUNK):
                fi.write((np.asarray(p.pointers[lo : lo + _CHUNK]) + byte_base).tobytes())
            byte_base += p.num_tokens * item
        seq_base = 0
        fi.write(np.zeros(1, dtype=np.int64).tobytes())
        for p in parts:
            # Skip each input's leading 0: it is the previous input's closing entry.
            for lo in range(1, p.num_documents + 1, _CHUNK):
                fi.write((np.asarray(p.doc_index[lo : lo + _CHUNK]) + seq_base).tobytes())
            seq_base += p.num_sequences
    os.replace(f"{out}.bin.tmp", bin_path(out))
    os.replace(f"{out}.idx.tmp", idx_path(out))
    return {
        "inputs": [p.prefix for p in parts],
        "documents": n_doc,
        "sequences": n_seq,
        "tokens": sum(p.num_tokens for p in parts),
        "dtype": str(dtype),
    }


def write_stats(prefix: str | os.PathLike, stats: dict) -> Path:
    """Write ``PREFIX.stats.json`` atomically; `koneox pack` calls it after ``.bin``/``.idx``.

    Fields: num_documents, num_tokens, max_token_id, min_token_id, bin_bytes, dtype
    ("uint16"/"int32"), tokenizer (path), vocab_size, kept_added_tokens (the added tokens that
    document text may encode to); per-shard packs add ``source``."""
    import json

    from data.stage import write_text_atomic

    path = Path(f"{_strip_suffix(prefix)}.stats.json")
    write_text_atomic(path, json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    return path


def read_stats(prefix: str | os.PathLike) -> dict | None:
    """``PREFIX.stats.json``, or None when it is missing, unreadable, or stale: its bin_bytes
    must equal the size of ``PREFIX.bin``."""
    import json

    p = _strip_suffix(prefix)
    try:
        stats = json.loads(Path(f"{p}.stats.json").read_text(encoding="utf-8"))
        if int(stats["bin_bytes"]) != bin_path(p).stat().st_size:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stats
