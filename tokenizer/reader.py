"""Training documents for the tokenizer: finding the inputs, sizing them cheaply, reading records.

Accepts the same inputs as ``koneox clean``: ``.jsonl``, ``.jsonl.gz``, ``.parquet``, ``.txt``
(one document per file), a directory saved with ``datasets.Dataset.save_to_disk``, or a
directory holding any of those. A directory holding ``part-*.jsonl.gz`` is a ``koneox clean``
output and is read only when its completion marker is there (``data.stage.require_complete``;
a killed cleaner leaves shards that look finished) and lists exactly the shards found.

Sizing an input never reads its records: the estimate of its uncompressed size comes from the
file size, the gzip trailer (or the compression ratio of its first MiB) or parquet metadata.

Nothing is skipped silently. A truncated or corrupt gzip stream, a line that is not UTF-8 JSON,
a record that is not an object or lacks a string text field is an ``InputError`` naming the
file and line; ``koneox clean`` is the stage that accounts for bad records and drops them.
Blank lines and empty texts are not errors: there is simply no document there.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data.formats import SUPPORTED_SUFFIXES, InputError, input_kind
from data.stage import MARKER, require_complete

CLEAN_PRODUCER = "koneox clean"
CLEAN_SHARDS = "part-*.jsonl.gz"

# the cleaner's optional rejects shards hold dropped documents: never train on them
_SKIP_PREFIXES = ("rejects-",)
# ratio probe for gzip files whose trailer cannot give the size (multi-member or over 4 GiB)
_PROBE_BYTES = 1 << 20
# a gzip trailer holds the size mod 2**32: trusted only while this ratio keeps it below 4 GiB
_MAX_GZIP_RATIO = 12


@dataclass(frozen=True)
class Source:
    """One input to read: a file, or a saved ``datasets`` directory."""

    path: Path
    kind: str
    """'jsonl', 'txt', 'parquet' or 'datasets'."""
    size: int
    """Estimated bytes of its records, uncompressed (JSON lines as written; text for the others)."""


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "state.json").exists()


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve files and directories into the ordered list of sources to read.

    Directories are walked in sorted order so that the document order, and therefore the
    deterministic sample, does not depend on the file system. Every directory found holding
    ``part-*.jsonl.gz`` must be a finished ``koneox clean`` output.
    """
    sources: list[Path] = []
    named_shards: dict[Path, set[str]] = {}
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        if path.is_file():
            input_kind(path)
            if path.match(CLEAN_SHARDS):  # a clean shard named on its own: its run must have finished
                named_shards.setdefault(path.parent, set()).add(path.name)
            sources.append(path)
        elif _is_saved_dataset(path):
            sources.append(path)
        else:
            found = [
                p
                for p in sorted(path.rglob("*"))
                if (
                    p.is_file()
                    and p.name.endswith(SUPPORTED_SUFFIXES)
                    and not p.name.startswith(_SKIP_PREFIXES)
                )
                or (p.is_dir() and _is_saved_dataset(p))
            ]
            if not found:
                raise InputError(f"input directory {path} holds no {', '.join(SUPPORTED_SUFFIXES)} files")
            for shard_dir in sorted({p.parent for p in found if p.match(CLEAN_SHARDS)}):
                _check_clean_output(shard_dir, {p.name for p in found if p.parent == shard_dir})
            sources.extend(found)
    for shard_dir, names in sorted(named_shards.items()):
        _check_clean_output(shard_dir, names, whole=False)
    return sources


def _check_clean_output(directory: Path, names: set[str], whole: bool = True) -> None:
    """A `koneox clean` output must be finished, and hold exactly the shards its marker lists
    (none deleted, none added after it finished); shards named one by one (``whole=False``)
    must be among those it lists."""
    record = require_complete(directory, CLEAN_PRODUCER)
    listed = record.get("shards")
    if isinstance(listed, list) and all(isinstance(name, str) for name in listed):
        shards = {n for n in names if Path(n).match(CLEAN_SHARDS)}
        missing = sorted(set(listed) - shards) if whole else []
        extra = sorted(shards - set(listed))
        if missing or extra:
            raise InputError(
                f"{directory}: shards differ from its {MARKER} (missing: {', '.join(missing) or 'none'}; "
                f"not listed: {', '.join(extra) or 'none'}); rerun `{CLEAN_PRODUCER}`"
            )


def _gzip_size(path: Path) -> int:
    """Uncompressed size of a gzip file without decompressing it all.

    The trailer's ISIZE is the size mod 2**32 of the last member; it is trusted when it is a
    plausible ratio for one member below 4 GiB (a truncated file ends in arbitrary bytes).
    Otherwise the compression ratio of the first MiB is used.
    """
    packed = path.stat().st_size
    if packed < 18:
        return packed
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    if packed <= isize <= packed * _MAX_GZIP_RATIO < 2**32:
        return isize
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as fh:
        head = fh.read(_PROBE_BYTES)
    try:
        out = len(decomp.decompress(head))
    except zlib.error as e:
        raise InputError(f"{path}: not a readable gzip file ({e})") from e
    used = len(head) - len(decomp.unconsumed_tail) - len(decomp.unused_data)
    return int(packed * out / max(used, 1))


def _parquet_size(path: Path, text_field: str) -> int:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # pyarrow raises its own error types for a damaged footer
        raise InputError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            if column.path_in_schema == text_field:
                total += column.total_uncompressed_size
    return total


def estimate_size(path: Path, kind: str, text_field: str = "text") -> int:
    """Cheap estimate of the uncompressed bytes of one input (no record is read)."""
    if kind == "datasets":
        return sum(p.stat().st_size for p in path.rglob("*.arrow"))
    if kind == "parquet":
        return _parquet_size(path, text_field)
    if path.name.lower().endswith(".gz"):
        return _gzip_size(path)
    return path.stat().st_size


def plan_sources(inputs: Iterable[str | os.PathLike], text_field: str = "text") -> list[Source]:
    """The inputs in reading order, each with its estimated size."""
    out = []
    for path in expand_inputs(inputs):
        kind = input_kind(path)
        out.append(Source(path, kind, estimate_size(path, kind, text_field)))
    return out


def _text_of(obj: object, text_field: str, where: str) -> str:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    if text_field not in obj:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise InputError(f"{where}: no {text_field!r} field (keys: {keys})")
    text = obj[text_field]
    if not isinstance(text, str):
        raise InputError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def _jsonl_records(path: Path, text_field: str) -> Iterator[tuple[int, int, str]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line = 0
    try:
        with opener(path, "rb") as fh:
            for raw in fh:
                line += 1
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                    raise InputError(f"{path}: line {line}: not a UTF-8 JSON line ({e})") from None
                yield line, len(raw), _text_of(obj, text_field, f"{path}: line {line}")
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(
            f"{path}: line {line + 1}: unreadable ({type(e).__name__}: {e}); the file is truncated or corrupt"
        ) from None


def _txt_records(path: Path) -> Iterator[tuple[int, int, str]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(
            f"{path}: unreadable ({type(e).__name__}: {e}); the file is truncated or corrupt"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 ({e})") from None
    yield 1, len(raw), text


def _column_records(batches: Iterator, path: Path, text_field: str) -> Iterator[tuple[int, int, str]]:
    row = 0
    for column in batches:
        for value in column:
            row += 1
            if not isinstance(value, str):
                raise InputError(
                    f"{path}: row {row}: field {text_field!r} is {type(value).__name__}, not a string"
                )
            yield row, len(value.encode("utf-8")), value


def _parquet_records(path: Path, text_field: str) -> Iterator[tuple[int, int, str]]:
    import pyarrow.parquet as pq

    def batches() -> Iterator[list]:
        pf = pq.ParquetFile(path)
        if text_field not in pf.schema_arrow.names:
            raise InputError(
                f"{path}: no {text_field!r} column (columns: {', '.join(pf.schema_arrow.names[:8])})"
            )
        for batch in pf.iter_batches(batch_size=4096, columns=[text_field]):
            yield batch.column(0).to_pylist()

    try:
        yield from _column_records(batches(), path, text_field)
    except InputError:
        raise
    except Exception as e:  # pyarrow's own error types for damaged pages
        raise InputError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None


def _datasets_records(path: Path, text_field: str) -> Iterator[tuple[int, int, str]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    splits = [ds[name] for name in sorted(ds)] if isinstance(ds, DatasetDict) else [ds]

    def batches() -> Iterator[list]:
        for split in splits:
            if text_field not in split.column_names:
                raise InputError(
                    f"{path}: no {text_field!r} column (columns: {', '.join(split.column_names[:8])})"
                )
            for batch in split.select_columns([text_field]).iter(batch_size=4096):
                yield batch[text_field]

    yield from _column_records(batches(), path, text_field)


def iter_records(source: Source | Path, text_field: str = "text") -> Iterator[tuple[int, int, str]]:
    """``(line, bytes, text)`` for every record of one input, in file order.

    ``line`` is the 1-based line (or row) number, ``bytes`` what reading it consumed
    (the JSON line; the text's UTF-8 for the other formats). Raises ``InputError``.
    """
    path = source.path if isinstance(source, Source) else Path(source)
    kind = source.kind if isinstance(source, Source) else input_kind(path)
    if kind == "jsonl":
        return _jsonl_records(path, text_field)
    if kind == "txt":
        return _txt_records(path)
    if kind == "parquet":
        return _parquet_records(path, text_field)
    return _datasets_records(path, text_field)


def iter_documents(inputs: Iterable[str | os.PathLike], text_field: str = "text") -> Iterator[str]:
    """Every non-empty document text of ``inputs`` in a stable order (raises ``InputError``)."""
    for path in expand_inputs(inputs):
        for _, _, text in iter_records(path, text_field):
            if text:
                yield text
