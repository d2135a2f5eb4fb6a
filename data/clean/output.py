"""Writing the cleaned shards crash-safely, and finding where a killed run can resume.

Shards are gzip JSON Lines made of several gzip members (any gzip reader reads them as one
stream). A member is cut after the first line that brings it to ``MEMBER_BYTES`` and at the
end of a shard, so where members start depends only on the sequence of output lines, not on
``num_proc``, batching or where a run was resumed: the bytes are the same every time. Members
are compressed by the worker pool (``compress``) and written in order by the main process, each
shard under ``part-NNNNN.jsonl.gz.tmp`` until it is complete (``data/stage.py``).

Every complete output shard is followed by a small progress file ``_progress-NNNNN.json``
(written atomically after the shard's rename): how far into the input that shard's last
document reaches, and the running counts up to there. A rerun of the same job (same
fingerprint: config, inputs, options, code) keeps the shards that have one and carries on after
the last; anything else in the directory is an unfinished leftover and is removed::

    part-00000.jsonl.gz  _progress-00000.json   kept, counts up to input position p0
    part-00001.jsonl.gz  _progress-00001.json   kept, ... p1
    part-00002.jsonl.gz                         no progress file: removed, redone from p1

With ``keep_rejects``, ``rejects-NNNNN.jsonl.gz`` files hold at most ``shard_docs`` dropped
documents each and one also ends wherever an output shard ends, so they resume the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from data.stage import tmp_path, write_text_atomic

MEMBER_BYTES = 1 << 20
"""Uncompressed bytes of output lines per gzip member (the last member of a shard is shorter)."""
PROGRESS = "_progress-"
REPORTS = ("report.json", "report.md")


class Pending(Protocol):
    """A compression job: ``multiprocessing.pool.AsyncResult`` or an already finished one."""

    def ready(self) -> bool: ...

    def get(self) -> bytes: ...


class Done:
    def __init__(self, value: bytes) -> None:
        self.value = value

    def ready(self) -> bool:
        return True

    def get(self) -> bytes:
        return self.value


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.jsonl.gz"


def progress_name(index: int) -> str:
    return f"{PROGRESS}{index:05d}.json"


class _Stream:
    """One kind of shard (part or rejects): the member being filled and the shard it belongs to."""

    def __init__(self, prefix: str, index: int, cap: int | None) -> None:
        self.prefix, self.index, self.cap = prefix, index, cap
        self.buffer: list[bytes] = []
        self.size = 0  # bytes in buffer
        self.lines = 0  # lines in the current shard, buffered ones included


class ShardOutput:
    """Output lines in, finished shards out: members go to ``compress`` (a pool job), and
    ``drain`` writes what came back, in order, renaming each shard when its last member is in."""

    def __init__(
        self,
        out: Path,
        compress: Callable[[bytes], Pending],
        part_index: int,
        rejects_index: int | None,
        rejects_cap: int,
        max_pending: int,
    ) -> None:
        self.out, self.compress, self.max_pending = out, compress, max_pending
        self.part = _Stream("part", part_index, None)
        self.rejects = _Stream("rejects", rejects_index, rejects_cap) if rejects_index is not None else None
        # ("data", prefix, index, Pending, close) or ("progress", record)
        self._queue: deque[tuple] = deque()
        self._open: dict[str, Any] = {}

    # ---- main process: lines in -------------------------------------------------------------

    def add(self, stream: _Stream, data: bytes, lengths: np.ndarray) -> None:
        """Append lines (``data``, the byte length of each in ``lengths``) to ``stream``."""
        ends = np.cumsum(lengths)
        pos = first = 0
        while first < len(ends):
            stop = len(ends) if stream.cap is None else min(len(ends), first + stream.cap - stream.lines)
            # the first line with which the member reaches MEMBER_BYTES, or the last that fits the shard
            j = min(int(np.searchsorted(ends, pos + MEMBER_BYTES - stream.size, "left")), stop - 1)
            end = int(ends[j])
            stream.buffer.append(data[pos:end])
            stream.size += end - pos
            stream.lines += j + 1 - first
            pos, first = end, j + 1
            if stream.cap is not None and stream.lines >= stream.cap:
                self._member(stream, close=True)
            elif stream.size >= MEMBER_BYTES:
                self._member(stream, close=False)
        self.drain(self.max_pending)

    def end_shard(self, progress: dict[str, Any]) -> None:
        """Close the current output shard (and rejects file), then record ``progress`` for it."""
        progress["index"], progress["shard"] = self.part.index, shard_name("part", self.part.index)
        self._member(self.part, close=True)
        if self.rejects is not None:
            self._member(self.rejects, close=True)
            progress["rejects_files"] = self.rejects.index
        self._queue.append(("progress", progress))
        self.drain(self.max_pending)

    def finish(self) -> None:
        """Close the last shards and write everything still pending."""
        self._member(self.part, close=True)
        if self.rejects is not None:
            self._member(self.rejects, close=True)
        self.drain(0)

    def _member(self, stream: _Stream, close: bool) -> None:
        if stream.buffer:
            job = self.compress(b"".join(stream.buffer))
            self._queue.append(("data", stream.prefix, stream.index, job, close))
        elif close and stream.lines:
            self._queue.append(("data", stream.prefix, stream.index, None, True))
        if close and stream.lines:
            stream.index += 1
            stream.lines = 0
        stream.buffer, stream.size = [], 0

    # ---- main process: bytes out ------------------------------------------------------------

    def drain(self, pending: int) -> None:
        """Write finished members in order, waiting for them while more than ``pending`` are queued."""
        while self._queue:
            item = self._queue[0]
            if (
                item[0] == "data"
                and item[3] is not None
                and len(self._queue) <= pending
                and not item[3].ready()
            ):
                return
            self._queue.popleft()
            if item[0] == "progress":
                record = item[1]
                record["bytes"] = (self.out / record["shard"]).stat().st_size
                write_text_atomic(
                    self.out / progress_name(record["index"]), json.dumps(record, ensure_ascii=False) + "\n"
                )
                continue
            _, prefix, index, job, close = item
            name = shard_name(prefix, index)
            if job is not None:
                if prefix not in self._open:
                    self._open[prefix] = open(tmp_path(self.out / name), "wb")  # noqa: SIM115 (closed below)
                self._open[prefix].write(job.get())
            if close:
                self._open.pop(prefix).close()
                os.replace(tmp_path(self.out / name), self.out / name)

    def abort(self) -> None:
        """Close unfinished shards (the caller removes the temporaries)."""
        for f in self._open.values():
            f.close()
        self._open.clear()
        self._queue.clear()


# ---- resuming ---------------------------------------------------------------------------------


def fingerprint(inputs: list[Path], settings: dict[str, Any]) -> str:
    """What a resumed run must share with the killed one: input files (path, size, mtime),
    settings (config and options) and the cleaning code itself."""
    files = []
    for path in inputs:
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files.append([str(path), [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in members]])
    code = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        code.update(source.read_bytes())
    blob = json.dumps(
        {"inputs": files, "settings": settings, "code": code.hexdigest()}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _exists(path: Path, size: int | None = None) -> bool:
    return path.is_file() and (size is None or path.stat().st_size == size)


def completed_shards(out: Path, fp: str) -> tuple[list[dict[str, Any]], bool]:
    """Progress records of the shards a killed run of the same job completed, in order, and
    whether ``out`` holds progress of a different job (then nothing may be kept)."""
    records: list[dict[str, Any]] = []
    for path in sorted(out.glob(f"{PROGRESS}*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            break
        if record.get("fingerprint") != fp:
            return [], True
        rejects_ok = all(
            _exists(out / shard_name("rejects", i)) for i in range(record.get("rejects_files") or 0)
        )
        if (
            record.get("index") != len(records)
            or path.name != progress_name(len(records))
            or not _exists(out / record["shard"], record.get("bytes"))
            or not rejects_ok
        ):
            break
        records.append(record)
    return records, False


def remove_outputs(out: Path, keep_parts: int = 0, keep_rejects: int = 0) -> list[str]:
    """Delete shards, rejects and progress files beyond the kept ones, and the reports; returns
    the names removed."""
    removed = []
    for path in sorted(out.iterdir()):
        name = path.name
        index = None
        for prefix, keep in (("part-", keep_parts), ("rejects-", keep_rejects), (PROGRESS, keep_parts)):
            if name.startswith(prefix) and name.endswith((".jsonl.gz", ".json")):
                digits = name[len(prefix) :].split(".")[0]
                index = int(digits) if digits.isdigit() else None
                if index is None or index >= keep:
                    path.unlink()
                    removed.append(name)
                break
        else:
            if name in REPORTS:
                path.unlink()
                removed.append(name)
    return removed
