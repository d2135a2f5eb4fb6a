"""Reading raw inputs record by record, with every bad record reported instead of raised.

``read_records`` yields ``Record`` (a usable document) or ``BadInput`` (file, line, reason)
for each line of a ``.jsonl``/``.jsonl.gz`` file, each row of a ``.parquet`` file or saved
``datasets`` directory, and each ``.txt`` file as one document. Line numbers are 1-based;
rows of parquet/datasets inputs are numbered the same way.

``read_batches`` is what the cleaning pipeline's main process uses: for JSON Lines it only
decompresses and cuts the file at line ends (``RawLines``, bytes), and the worker that gets a
batch decodes it with ``parse_lines``, so JSON parsing never runs in the main process.
Record ``line`` is also the number of records of its file read up to and including it, which
is how a resumed run skips what a killed one already accounted for.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.formats import input_kind

BAD_INPUT_REASONS: tuple[str, ...] = (
    "invalid_utf8",
    "malformed_json",
    "not_an_object",
    "missing_text_field",
    "non_string_text",
    "corrupt_file",
)
"""Every reason a raw record can be rejected for."""


@dataclass
class Record:
    """One usable input document."""

    text: str
    extras: dict[str, Any]
    file: int
    line: int


@dataclass
class BadInput:
    """One input record that could not be read as a document."""

    file: int
    line: int
    reason: str
    detail: str


def _from_mapping(obj: Any, text_field: str, file: int, line: int) -> Record | BadInput:
    if not isinstance(obj, dict):
        return BadInput(file, line, "not_an_object", type(obj).__name__)
    if text_field not in obj:
        return BadInput(file, line, "missing_text_field", f"keys: {', '.join(map(str, list(obj)[:8]))}")
    text = obj[text_field]
    if not isinstance(text, str):
        return BadInput(file, line, "non_string_text", type(text).__name__)
    extras = {k: v for k, v in obj.items() if k != text_field and k != "text"}
    return Record(text, extras, file, line)


def _parse_line(raw: bytes, text_field: str, file: int, line_no: int) -> Record | BadInput:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadInput(file, line_no, "invalid_utf8", str(e)[:120])
    try:
        obj = json.loads(line)
    except ValueError as e:
        return BadInput(file, line_no, "malformed_json", str(e)[:120])
    return _from_mapping(obj, text_field, file, line_no)


def _corrupt(file: int, line_no: int, e: BaseException) -> BadInput:
    # A truncated or corrupt gzip stream: everything after line_no is unreadable.
    return BadInput(file, line_no + 1, "corrupt_file", f"{type(e).__name__}: {e}"[:160])


def _read_jsonl(path: Path, file: int, text_field: str) -> Iterator[Record | BadInput]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for raw in f:
                line_no += 1
                yield _parse_line(raw, text_field, file, line_no)
    except (OSError, EOFError, zlib.error) as e:
        yield _corrupt(file, line_no, e)


def _read_txt(path: Path, file: int) -> Iterator[Record | BadInput]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        yield BadInput(file, 1, "corrupt_file", f"{type(e).__name__}: {e}"[:160])
        return
    try:
        yield Record(raw.decode("utf-8"), {"path": path.name}, file, 1)
    except UnicodeDecodeError as e:
        yield BadInput(file, 1, "invalid_utf8", str(e)[:120])


def _read_parquet(path: Path, file: int, text_field: str) -> Iterator[Record | BadInput]:
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                row += 1
                yield _from_mapping(obj, text_field, file, row)
    except (OSError, ValueError) as e:
        yield BadInput(file, row + 1, "corrupt_file", f"{type(e).__name__}: {e}"[:160])


def _read_datasets(path: Path, file: int, text_field: str) -> Iterator[Record | BadInput]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    splits = [ds[name] for name in sorted(ds)] if isinstance(ds, DatasetDict) else [ds]
    row = 0
    for split in splits:
        for obj in split:
            row += 1
            yield _from_mapping(obj, text_field, file, row)


def read_records(path: str | Path, file: int, text_field: str = "text") -> Iterator[Record | BadInput]:
    """Every record of one input, in file order; ``file`` is the input's index in the run."""
    path = Path(path)
    kind = input_kind(path)
    if kind == "jsonl":
        return _read_jsonl(path, file, text_field)
    if kind == "txt":
        return _read_txt(path, file)
    if kind == "parquet":
        return _read_parquet(path, file, text_field)
    return _read_datasets(path, file, text_field)


@dataclass
class RawLines:
    """``count`` consecutive raw lines of one JSON Lines input, starting at 1-based ``first_line``."""

    file: int
    first_line: int
    count: int
    data: bytes


def parse_lines(batch: RawLines, text_field: str = "text") -> list[Record | BadInput]:
    """The records of a ``RawLines`` batch, exactly as ``read_records`` reads those lines."""
    data, out, start = batch.data, [], 0
    for i in range(batch.count):
        end = data.find(b"\n", start) + 1 or len(data)
        out.append(_parse_line(data[start:end], text_field, batch.file, batch.first_line + i))
        start = end
    return out


_READ_BYTES = 1 << 18  # compressed (or plain) bytes read at a time
_OUT_BYTES = 4 << 20  # most decompressed bytes per step


def _chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a file in pieces, gzip members one after another; a truncated
    or corrupt stream raises (``EOFError``, ``zlib.error``) after everything before the damage.

    zlib directly rather than ``gzip.open``: ``GzipFile.read1`` hands back about 30 KB at a time
    and checks the CRC in Python, which cost the main process a third of its reading time.
    """
    with open(path, "rb") as f:
        if not path.name.lower().endswith(".gz"):
            while chunk := f.read(_READ_BYTES):
                yield chunk
            return
        inflate, data, started = zlib.decompressobj(wbits=31), b"", False
        while True:
            if not data:
                data = f.read(_READ_BYTES)
                if not data:
                    if started:
                        raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                    return
            started = True
            out = inflate.decompress(data, _OUT_BYTES)
            data = inflate.unconsumed_tail
            if out:
                yield out
            if inflate.eof:  # the next member, after any zero padding
                data = (inflate.unused_data + data).lstrip(b"\0")
                inflate, started = zlib.decompressobj(wbits=31), False


def _jsonl_batches(
    path: Path, file: int, skip: int, max_records: int, max_bytes: int
) -> Iterator[RawLines | list[BadInput]]:
    """Cut a JSON Lines file into ``RawLines`` of at most ``max_records`` lines and about
    ``max_bytes`` bytes, without looking inside the lines; the first ``skip`` lines are passed over."""
    line_no = 0  # complete lines consumed (skipped or batched)
    parts: list[bytes] = []
    count = size = 0

    def emit() -> RawLines:
        nonlocal parts, count, size
        batch = RawLines(file, line_no - count + 1, count, b"".join(parts))
        parts, count, size = [], 0, 0
        return batch

    def take(block: bytes, ends: np.ndarray) -> Iterator[RawLines]:
        """Consume the complete lines of ``block``; ``ends`` are the offsets after each newline."""
        nonlocal line_no, count, size
        pos = i = 0
        if line_no < skip:
            i = min(skip - line_no, len(ends))
            line_no += i
            pos = int(ends[i - 1]) if i else 0
        while i < len(ends):
            # lines i..k-1 fit: at most max_records lines and, beyond the first, max_bytes bytes
            k = min(len(ends), i + max_records - count)
            k = max(i + 1, min(k, int(np.searchsorted(ends, pos + max_bytes - size, "right"))))
            end = int(ends[k - 1])
            parts.append(block[pos:end])
            count += k - i
            size += end - pos
            line_no += k - i
            pos, i = end, k
            if count >= max_records or size >= max_bytes:
                yield emit()

    pending: list[bytes] = []  # the start of a line not yet ended
    try:
        for chunk in _chunks(path):
            newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
            if not len(newlines):
                pending.append(chunk)
                continue
            head = b"".join(pending)
            block = head + chunk if head else chunk
            pending = [chunk[int(newlines[-1]) + 1 :]]
            yield from take(block, newlines + (len(head) + 1))
    except (OSError, EOFError, zlib.error) as e:
        if count:
            yield emit()
        if line_no + 1 > skip:
            yield [_corrupt(file, line_no, e)]
        return
    last = b"".join(pending)
    if last:  # a last line without a newline
        yield from take(last, np.array([len(last)]))
    if count:
        yield emit()


def read_batches(
    path: str | Path,
    file: int,
    text_field: str,
    skip: int = 0,
    max_records: int = 2000,
    max_bytes: int = 4 << 20,
) -> Iterator[RawLines | list[Record | BadInput]]:
    """Batches of one input in file order for the cleaning workers, the first ``skip`` records
    left out: ``RawLines`` for JSON Lines, lists of at most ``max_records`` records otherwise."""
    path = Path(path)
    if input_kind(path) == "jsonl":
        yield from _jsonl_batches(path, file, skip, max_records, max_bytes)
        return
    batch: list[Record | BadInput] = []
    for n, rec in enumerate(read_records(path, file, text_field), start=1):
        if n <= skip:
            continue
        batch.append(rec)
        if len(batch) >= max_records:
            yield batch
            batch = []
    if batch:
        yield batch
