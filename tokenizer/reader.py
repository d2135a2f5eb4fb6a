"""Streaming document reader for tokenizer training.

Accepts the same inputs as ``koneox clean``: ``.jsonl``, ``.jsonl.gz``, ``.parquet``, ``.txt``
(one document per file), a directory saved with ``datasets.Dataset.save_to_disk``, or a
directory holding any of those (for example the cleaner's sharded output). Documents are
yielded one at a time so the corpus is never held in memory.

Reading one file is ``data.clean.io.read_records`` (the cleaner's reader, so both stages
accept exactly the same formats); this module adds walking directories such as the
cleaner's sharded output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from data.clean.io import Record, read_records

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet", ".txt", ".txt.gz")


# the cleaner's optional rejects shards hold dropped documents: never train on them
_SKIP_PREFIXES = ("rejects-",)


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "state.json").exists()


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve files and directories into the ordered list of sources to read.

    Directories are walked in sorted order so that the document order, and therefore the
    deterministic sample, does not depend on the file system.
    """
    sources: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        if path.is_file():
            if not path.name.endswith(SUPPORTED_SUFFIXES):
                raise ValueError(
                    f"input {path}: unsupported format (expected {', '.join(SUPPORTED_SUFFIXES)})"
                )
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
                raise ValueError(f"input directory {path} holds no {', '.join(SUPPORTED_SUFFIXES)} files")
            sources.extend(found)
    return sources


def iter_documents(inputs: Iterable[str | os.PathLike], text_field: str = "text") -> Iterator[str]:
    """Yield every non-empty document text of ``inputs`` in a stable order.

    Records the cleaner's reader rejects (bad UTF-8, malformed JSON, missing field) are
    skipped: the tokenizer learns from what is readable, and ``koneox clean`` is the stage
    that accounts for bad input.
    """
    for index, source in enumerate(expand_inputs(inputs)):
        for record in read_records(source, index, text_field):
            if isinstance(record, Record) and record.text:
                yield record.text
