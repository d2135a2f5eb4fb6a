"""Crash-safe outputs shared by the data stages (clean, train-tokenizer, pack).

Every file a stage writes appears under its final name only when it is complete, and a stage's
output directory counts as finished only once its completion marker exists, which is written
last. The next stage refuses a directory without the marker, naming it, instead of reading
whatever a killed run left behind::

    with atomic_path(out / "part-00003.jsonl.gz") as tmp:   # write tmp; renamed on success
        write_shard(tmp)
    mark_complete(out, "koneox clean", {"shards": 4})        # last: out/_COMPLETE.json
    require_complete(out, "koneox clean")                    # in the next stage

A marker records the producing command, when it finished and any summary the stage wants the
next one to see (e.g. the list of shards it wrote, so a stray extra file is noticed too).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARKER = "_COMPLETE.json"
TMP_SUFFIX = ".tmp"


class IncompleteOutputError(RuntimeError):
    """A stage's output directory is not (or no longer) a finished output."""


def tmp_path(path: str | os.PathLike) -> Path:
    """The temporary name ``path`` is written under before the rename (same directory)."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds,
    delete it when the block raises (including KeyboardInterrupt and SystemExit)."""
    path = Path(path)
    tmp = tmp_path(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete leftovers of a killed run (``*.tmp``) in ``directory``; returns what was removed."""
    removed = sorted(Path(directory).glob(f"*{TMP_SUFFIX}"))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def start_work_dir(directory: str | os.PathLike, prefix: str) -> Path:
    """Open ``directory`` for a stage that builds its files in a work directory and renames them
    in: create it, clear its marker, remove a killed run's temporaries and ``prefix*`` work
    directories, and return a fresh work directory inside it (the caller removes it)."""
    import shutil
    import tempfile

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    clear_marker(out)
    remove_temporaries(out)
    for stale in out.glob(f"{prefix}*"):  # work directory of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=out))


def clear_marker(directory: str | os.PathLike) -> None:
    """Call before a stage starts changing ``directory``: it is not complete until marked again."""
    (Path(directory) / MARKER).unlink(missing_ok=True)


def mark_complete(directory: str | os.PathLike, producer: str, summary: dict[str, Any] | None = None) -> Path:
    """Write the completion marker of ``directory`` (atomically, last)."""
    marker = Path(directory) / MARKER
    record = {"producer": producer, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(summary or {})}
    write_text_atomic(marker, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return marker


def read_marker(directory: str | os.PathLike) -> dict[str, Any] | None:
    marker = Path(directory) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))


def require_complete(directory: str | os.PathLike, producer: str) -> dict[str, Any]:
    """The marker of ``directory``, or IncompleteOutputError saying what is missing and why."""
    directory = Path(directory)
    record = read_marker(directory)
    if record is None:
        leftovers = sorted(p.name for p in directory.glob(f"*{TMP_SUFFIX}"))
        hint = f" (it holds unfinished files: {', '.join(leftovers[:3])})" if leftovers else ""
        raise IncompleteOutputError(
            f"{directory}: no {MARKER}: this is not a finished output of `{producer}`{hint}; "
            f"rerun `{producer}` to complete it"
        )
    return record
