"""Drawing the training sample and marking it with MeCab, many workers per main process.

::

    plan    main     sizes from file sizes and gzip trailers (no record read); each input is read
                     from its start for  read_fraction x its size,  read_fraction =
                     min(1, spread x sample_bytes / total size), so about spread x sample_bytes
                     are read in all, spread over every input (a one-document .txt file is read
                     or skipped whole, by the hash of its index)
    draw    workers  one task per input: read and check every record up to its share; non-empty
                     texts to a compact file, their sizes to an array
    hash    workers  u = unit_hash(seed, k) for the k-th document read (ranges of 256k)
    select  main     numpy over the arrays, the rule used before inputs were read in part (so an
                     input read whole gives the same sample as then): u < h is held out, h =
                     min(0.05, heldout_bytes / text read); the others with (u - h) / (1 - h) <
                     keep join the sample in input order until it holds sample_bytes, keep =
                     sample_bytes / (text read x (1 - h))
    mark    workers  chunks of ~1 MiB of chosen text: MeCab marks, returned as compact bytes
            main     writes the returned bytes in input order: train.rec, heldout.rec

The main process touches no text: per MB of sample it unpickles and writes about one MB of
bytes and does a few array operations, so one main process feeds far more MeCab workers than a
machine has cores (``benchmarks/scale_tokenizer.py`` measures the ratio). The sample depends only on the inputs,
their sizes, the seed and ``sample_bytes``, never on the number of processes, and reading stops
at each input's share instead of running to the end of a 1 TB corpus. When the shares hold
less text than the sample needs (the sizes overestimate the text: JSON fields, escapes), all
inputs are drawn again with larger shares. The sample is spread over inputs, not within one:
each input contributes from its start, so a corpus should come as many shards (as ``koneox
clean`` writes it), not as one huge file.

Compact record format (``.rec``): each record is a 4-byte little-endian byte length followed by
that many bytes of UTF-8; nothing is escaped, so texts with newlines and the U+0001..U+0003
morpheme markers round-trip exactly and the file is as large as the text plus 4 bytes a record.
"""

from __future__ import annotations

import collections
import hashlib
import multiprocessing as mp
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenizer.morph import MorphemeMarker
from tokenizer.reader import Source, iter_records

RECORD = struct.Struct("<I")
"""Length prefix of one compact record."""
_READ_BLOCK = 1 << 20
_CHUNK_BYTES = 1 << 20  # chosen text per mark task: large enough that IPC per byte is negligible
_HASH_DOCS = 1 << 18  # documents per hashing task


def unit_hash(seed: int, *key: int | str) -> float:
    """A stable number in [0, 1) per key: the same sample on every machine."""
    digest = hashlib.blake2b(":".join(map(str, (seed, *key))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def encode_records(texts: Iterable[str]) -> bytes:
    """Texts as compact records (see the module docstring)."""
    out = bytearray()
    for text in texts:
        data = text.encode("utf-8")
        out += RECORD.pack(len(data))
        out += data
    return bytes(out)


def decode_records(data: bytes | memoryview) -> Iterator[str]:
    pos, end = 0, len(data)
    while pos < end:
        (n,) = RECORD.unpack_from(data, pos)
        pos += RECORD.size
        yield bytes(data[pos : pos + n]).decode("utf-8")
        pos += n


def read_records(path: str | Path, max_chars: int | None = None) -> Iterator[str]:
    """The texts of a compact record file, in order; stops once ``max_chars`` were yielded."""
    seen = 0
    with open(path, "rb") as fh:
        buf = b""
        while True:
            block = fh.read(_READ_BLOCK)
            if not block:
                if buf:
                    raise ValueError(f"{path}: truncated record file ({len(buf)} stray bytes at the end)")
                return
            buf += block
            pos = 0
            while pos + RECORD.size <= len(buf):
                (n,) = RECORD.unpack_from(buf, pos)
                if pos + RECORD.size + n > len(buf):
                    break
                text = buf[pos + RECORD.size : pos + RECORD.size + n].decode("utf-8")
                pos += RECORD.size + n
                yield text
                seen += len(text)
                if max_chars is not None and seen >= max_chars:
                    return
            buf = buf[pos:]


@dataclass
class SampleResult:
    """What drawing and marking did (goes into the quality report)."""

    train_path: Path
    heldout_path: Path
    counts: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- workers

_marker: MorphemeMarker | None = None


def _draw(task: tuple) -> dict[str, Any]:
    """Read one input up to its budget: non-empty texts to a compact file, their sizes to an array."""
    index, source, text_field, budget, work = task
    sizes = array("I")
    info = {"records": 0, "bytes_read": 0, "to_end": budget != 0}
    with open(work / f"cand-{index:05d}.rec", "wb") as out:
        if budget != 0:
            for _, nbytes, text in iter_records(source, text_field):
                if budget is not None and info["bytes_read"] >= budget:
                    info["to_end"] = False
                    break
                info["records"] += 1
                info["bytes_read"] += nbytes
                if text:
                    data = text.encode("utf-8")
                    out.write(RECORD.pack(len(data)) + data)
                    sizes.append(len(data))
    (work / f"cand-{index:05d}.n").write_bytes(sizes.tobytes())
    return info


def _hash_range(task: tuple[int, int, int]) -> bytes:
    """``unit_hash`` of the documents numbered ``start .. start + count - 1`` (float64 bytes)."""
    seed, start, count = task
    return array("d", (unit_hash(seed, k) for k in range(start, start + count))).tobytes()


def _mark(task: tuple[Path, int, int, bytes, int]) -> tuple[bytes, int, int, int]:
    """MeCab-mark the chosen records of one chunk of a compact file.

    Returns the marked records (compact bytes), and the documents, text bytes and
    misaligned documents among them.
    """
    global _marker
    if _marker is None:
        _marker = MorphemeMarker()
    path, start, end, mask_bits, count = task
    with open(path, "rb") as fh:
        fh.seek(start)
        buf = fh.read(end - start)
    chosen = np.unpackbits(np.frombuffer(mask_bits, dtype=np.uint8), count=count).astype(bool).tolist()
    out = bytearray()
    docs = text_bytes = 0
    misaligned = _marker.misaligned
    pos = 0
    for k in range(count):
        (n,) = RECORD.unpack_from(buf, pos)
        pos += RECORD.size
        if chosen[k]:
            marked = _marker.mark(buf[pos : pos + n].decode("utf-8")).encode("utf-8")
            out += RECORD.pack(len(marked))
            out += marked
            docs += 1
            text_bytes += n
        pos += n
    return bytes(out), docs, text_bytes, _marker.misaligned - misaligned


# ------------------------------------------------------------------------------------------- main


def _ordered(pool: Any, fn: Callable, tasks: Iterable, window: int) -> Iterator[Any]:
    """``fn`` over ``tasks`` on ``pool`` (inline when None), results in task order, at most
    ``window`` tasks in flight (so results waiting for a slow one cannot pile up)."""
    if pool is None:
        yield from map(fn, tasks)
        return
    pending: collections.deque = collections.deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _pool(num_proc: int) -> Any:
    if num_proc <= 1:
        return None
    ctx = mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork")
    return ctx.Pool(num_proc)


def _mark_tasks(path: Path, sizes: np.ndarray, chosen: np.ndarray, chunk: int) -> Iterator[tuple]:
    """Tasks over consecutive records of ``path``, each holding about ``chunk`` bytes of chosen text."""
    if not chosen.any():
        return
    ends = np.cumsum(sizes.astype(np.int64) + RECORD.size)
    weight = np.where(chosen, sizes, 0).astype(np.int64)
    before = np.cumsum(weight) - weight  # chosen bytes ahead of each record
    starts = np.concatenate(([0], np.flatnonzero(np.diff(before // chunk)) + 1, [sizes.size]))
    for first, last in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        if chosen[first:last].any():
            bits = np.packbits(chosen[first:last]).tobytes()
            yield path, int(ends[first - 1]) if first else 0, int(ends[last - 1]), bits, last - first


def draw_and_mark(
    sources: list[Source],
    work: Path,
    *,
    sample_bytes: int | None,
    heldout_bytes: int,
    spread: float,
    seed: int,
    text_field: str,
    num_proc: int,
) -> SampleResult:
    """Draw the held-out documents and the training sample from ``sources`` and mark both.

    Writes ``work/train.rec`` and ``work/heldout.rec`` (compact records of marked text, each in
    input order). The rule over the documents read is the one used before inputs were read in
    part, so an input read whole gives the same sample as then: document ``k`` (counting
    non-empty documents in input order) has ``u = unit_hash(seed, k)``; ``u < h`` is held out,
    ``h = min(0.05, heldout_bytes / text read)``; the others with ``(u - h) / (1 - h) < keep``,
    ``keep = sample_bytes / (text read x (1 - h))``, join the sample in input order until it
    holds ``sample_bytes`` (it may end a little short: keep is an expectation).
    """
    total = sum(s.size for s in sources)
    read_fraction = 1.0 if sample_bytes is None else min(1.0, spread * sample_bytes / max(total, 1))
    pool = _pool(num_proc)
    window = 2 * max(num_proc, 1)
    try:
        while True:
            budgets: list[int | None] = []
            for index, source in enumerate(sources):
                if read_fraction >= 1.0:
                    budgets.append(None)
                elif source.kind == "txt":  # one document: read it whole or not at all
                    budgets.append(None if unit_hash(seed, "file", index) < read_fraction else 0)
                else:
                    budgets.append(int(np.ceil(read_fraction * source.size)))
            tasks = [
                (i, s, text_field, b, work) for i, (s, b) in enumerate(zip(sources, budgets, strict=True))
            ]
            drawn = list(_ordered(pool, _draw, tasks, window))
            sizes = [np.fromfile(work / f"cand-{i:05d}.n", dtype=np.uint32) for i in range(len(sources))]
            text_read = sum(int(n.sum()) for n in sizes)
            held_rate = min(0.05, heldout_bytes / max(text_read, 1))
            if (
                sample_bytes is None
                or text_read * (1 - held_rate) >= sample_bytes
                or read_fraction >= 1.0
                or all(d["to_end"] for d in drawn)
            ):
                break
            # the sizes overestimated the text (JSON fields, escapes): read further, same rule
            read_fraction = min(1.0, read_fraction * 1.5 * sample_bytes / max(text_read * (1 - held_rate), 1))

        n = np.concatenate(sizes)
        ranges = [(seed, start, min(_HASH_DOCS, n.size - start)) for start in range(0, n.size, _HASH_DOCS)]
        u = np.frombuffer(b"".join(_ordered(pool, _hash_range, ranges, window)), dtype=np.float64)
        held = u < held_rate
        keep = 1.0 if sample_bytes is None else min(1.0, sample_bytes / max(text_read * (1 - held_rate), 1))
        train = ~held & ((u - held_rate) / (1 - held_rate) < keep)
        if sample_bytes is not None:  # in input order, until the sample is full
            ahead = np.cumsum(np.where(train, n, 0), dtype=np.int64) - np.where(train, n, 0)
            train &= ahead < sample_bytes
        bounds = np.cumsum([0, *map(len, sizes)])
        chosen_bytes = int(n[train | held].sum())
        chunk = int(min(_CHUNK_BYTES, max(1 << 16, chosen_bytes // (4 * max(num_proc, 1)))))
        counts: dict[str, Any] = {
            "files": len(sources),
            "estimated_bytes": total,
            "read_fraction": round(read_fraction, 6),
            "records_read": sum(d["records"] for d in drawn),
            "bytes_read": sum(d["bytes_read"] for d in drawn),
            "files_read_to_end": sum(d["to_end"] for d in drawn),
            "documents_read": int(n.size),
            "text_bytes_read": text_read,
            "train_docs": 0,
            "train_bytes": 0,
            "heldout_docs": 0,
            "heldout_bytes": 0,
            "misaligned": 0,
        }

        def run(kind: str, mask: np.ndarray, path: Path) -> None:
            def tasks() -> Iterator[tuple]:
                for i in range(len(sources)):
                    chosen = mask[bounds[i] : bounds[i + 1]]
                    yield from _mark_tasks(work / f"cand-{i:05d}.rec", sizes[i], chosen, chunk)

            with open(path, "wb") as out:
                for blob, docs, text_bytes, misaligned in _ordered(pool, _mark, tasks(), window):
                    out.write(blob)
                    counts[f"{kind}_docs"] += docs
                    counts[f"{kind}_bytes"] += text_bytes
                    counts["misaligned"] += misaligned

        result = SampleResult(work / "train.rec", work / "heldout.rec", counts)
        run("train", train, result.train_path)
        run("heldout", held, result.heldout_path)
    except BaseException:
        if pool is not None:
            pool.terminate()
            pool.join()
        raise
    if pool is not None:
        pool.close()
        pool.join()  # waited-for workers: their CPU time shows in RUSAGE_CHILDREN
    for i in range(len(sources)):
        for suffix in (".rec", ".n"):
            (work / f"cand-{i:05d}{suffix}").unlink(missing_ok=True)
    return result
