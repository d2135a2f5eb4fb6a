"""The input kinds every stage reads (clean, train-tokenizer, pack, eval --bpb), told by name.

Light on purpose (no numpy, no tokenizers): the cleaner, the tokenizer reader and the packer
import it in their worker processes.
"""

from __future__ import annotations

from pathlib import Path

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet", ".txt", ".txt.gz")


class InputError(ValueError):
    """An input that cannot be read as documents; the message names the file and line."""


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
    raise InputError(
        f"input {path}: unsupported format (expected {', '.join(SUPPORTED_SUFFIXES)}, or a saved datasets directory)"
    )
