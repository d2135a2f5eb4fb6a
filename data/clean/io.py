"""Reading raw inputs record by record, with every bad record reported instead of raised.

``read_records`` yields ``Record`` (a usable document) or ``BadInput`` (file, line, reason)
for each line of a ``.jsonl``/``.jsonl.gz`` file, each row of a ``.parquet`` file or saved
``datasets`` directory, and each ``.txt`` file as one document. Line numbers are 1-based;
rows of parquet/datasets inputs are numbered the same way.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def input_kind(path: Path) -> str:
    """'jsonl', 'parquet', 'txt' or 'datasets' (a directory saved with ``save_to_disk``)."""
    name = path.name.lower()
    if path.is_dir():
        return "datasets"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".txt", ".txt.gz")):
        return "txt"
    raise ValueError(
        f"{path}: unsupported input (use .jsonl[.gz], .parquet, .txt or a saved datasets directory)"
    )


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


def _read_jsonl(path: Path, file: int, text_field: str) -> Iterator[Record | BadInput]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for raw in f:
                line_no += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield BadInput(file, line_no, "invalid_utf8", str(e)[:120])
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    yield BadInput(file, line_no, "malformed_json", str(e)[:120])
                    continue
                yield _from_mapping(obj, text_field, file, line_no)
    except (OSError, EOFError, zlib.error) as e:
        # A truncated or corrupt gzip stream: everything after line_no is unreadable.
        yield BadInput(file, line_no + 1, "corrupt_file", f"{type(e).__name__}: {e}"[:160])


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
