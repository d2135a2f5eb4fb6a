"""Tokenize cleaned text and pack it into Megatron ``.bin``/``.idx`` files plus JSON reports.

One sequence per document, the tokenizer's end-of-document token (``<|endoftext|>``) appended,
so that samples cut across documents (GPT-NeoX style) still show the model where each ends.

Document text is encoded with the tokenizer's special tokens split: a literal ``<|endoftext|>``,
``<|sep|>``, ``<s>`` ... in the text becomes ordinary tokens (``<|``, ``endoftext``, ``|>``),
so the appended EOS is the only one in a document. The PII placeholders ``<|acc|>``,
``<|tel|>``, ``<|rrn|>`` are the exception: they stay one id each. ``koneox clean`` escapes
every literal placeholder of its input before its pii step writes the real ones, so in its
output a placeholder is always a masked number; in text that did not go through it a typed
``<|tel|>`` cannot be told from a written one and becomes the placeholder id as well.

Pipeline (streaming, bounded memory). The main process hands out small task descriptors and
copies finished token files; the workers read, decompress, parse, encode and check::

    main process                        worker processes (num_proc)            main process
    tasks: (file) for .jsonl.gz  ->  read + gunzip / seek to the range, ->  append task parts in
           (file, byte range) .jsonl      parse JSON, encode_batch_fast,       input order to
           (file, row groups) .parquet    check ids < vocab, uint16/int32  ->  PREFIX.bin.tmp; .idx,
    (at most 2*num_proc in flight)        PREFIX.part-N.{bin,lengths}.tmp      stats, report at end

With fewer ``.jsonl.gz`` files than ``4 * num_proc`` the main process gunzips them itself and
sends 4 MB blocks of lines, so one big file still keeps every worker busy. Output is
byte-identical for any ``num_proc`` and any task split: documents are encoded independently
and written in input order.

``pack_per_shard`` writes one dataset per input file (``OUT/NAME.bin/.idx/.stats.json``) and
skips, on a rerun, the shards already finished, so a killed run only redoes unfinished shards;
``merge_packed`` joins them into the file ``pack`` would have written.

Every output appears under its final name only when complete (``*.tmp`` until then). A
dataset's ``PREFIX.stats.json`` (token counts, smallest and largest id, ``bin_bytes``) is
written last; SIGTERM stops the workers, deletes every temporary file and raises
``PackInterrupted``.

Inputs: ``.jsonl.gz`` / ``.jsonl`` (one JSON object per line, text in ``text_field``) as written
by ``koneox clean``, ``.parquet`` (column ``text_field``), ``.txt`` (the whole file is one
document), or directories of these (searched recursively, sorted by path; the cleaner's
``rejects-*`` shards are skipped). A directory holding ``part-*.jsonl.gz`` is the cleaner's
output and must carry its completion marker. The reader here is self-contained; it does not
depend on the cleaner's code, only on its output format.

Usage::

    from data.pack import pack, pack_per_shard, merge_packed
    report = pack(["runs/clean/"], "runs/tokenizer", "runs/data/corpus", num_proc=2)
    report["tokens"], report["max_token_id"]
    pack_per_shard(["runs/clean/"], "runs/tokenizer", "runs/data/shards", num_proc=2)  # resumable
    merge_packed(["runs/data/shards"], "runs/data/corpus")                              # same bytes
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from data.indexed import (
    IndexedDatasetWriter,
    best_dtype,
    bin_path,
    idx_path,
    merge,
    read_stats,
    write_stats,
)
from data.stage import (
    MARKER,
    TMP_SUFFIX,
    IncompleteOutputError,
    clear_marker,
    mark_complete,
    read_marker,
    remove_temporaries,
    require_complete,
    tmp_path,
    write_text_atomic,
)

SUFFIXES = (".jsonl.gz", ".jsonl", ".parquet", ".txt")
# `koneox clean --keep-rejects` writes dropped documents next to the kept shards: never pack them.
REJECTS = "rejects-"
# A directory with shards named like this is `koneox clean` output: it must be marked complete.
CLEAN_SHARD = "part-*.jsonl.gz"
CLEAN_PRODUCER = "koneox clean"
PACK_PRODUCER = "koneox pack"
# What `koneox train-tokenizer` leaves in its output directory (tokenizer.train; not imported here,
# to keep worker start-up light): its marker's producer, its report, and its work directory.
TOKENIZER_PRODUCER = "koneox train-tokenizer"
# finished model directories whose tokenizer files pack may use directly (model/extend_vocab.py,
# model/chat_vector.py; not imported here, to keep the workers light)
MODEL_PRODUCERS = ("koneox extend-vocab", "koneox chat-vector")
TOKENIZER_REPORT = "tokenizer_report.json"
TOKENIZER_WORK_PREFIX = ".koneox-tok-"
EOS_FALLBACK = "<|endoftext|>"
# What `koneox clean`'s pii step writes (tokenizer.train.PII_TOKENS, not imported: see above):
# the only added tokens document text may encode to.
PII_PLACEHOLDERS = ("<|acc|>", "<|tel|>", "<|rrn|>")

_PIECE_BYTES = 1 << 20  # text a worker parses and encodes at once
_GZ_READ = 256 << 10  # compressed bytes per zlib call in a worker (~1 MB of text)
_MAIN_GZ_READ = 1 << 20  # ... in the main process, when it gunzips: ~3-4 MB of text per task
_RANGE_BYTES = 16 << 20  # byte range per task of an uncompressed .jsonl
_WHOLE_FILES_PER_PROC = 4  # at least this many .jsonl.gz files per worker: workers gunzip them
_IDX_HEADER = 34  # .idx header bytes: magic 9, version 8, dtype code 1, two counts 8 + 8


class PackError(ValueError):
    """Bad input to the packer; the message names the file (and line, where there is one)."""


class PackInterrupted(BaseException):
    """SIGTERM stopped the packer; temporary files are gone, finished per-shard outputs kept.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` swallows it."""


def _check_clean_output(directory: Path, shards: set[str], whole: bool = True) -> None:
    """Refuse a `koneox clean` output without its marker, or whose shards differ from the ones
    the marker lists (a shard deleted, or a stray one added, after clean finished). With
    ``whole=False`` (shards named one by one) only shards the marker does not list are refused."""
    try:
        record = require_complete(directory, CLEAN_PRODUCER)
    except IncompleteOutputError as e:
        raise PackError(str(e)) from None
    listed = record.get("shards")
    if isinstance(listed, list) and all(isinstance(s, str) for s in listed):
        missing, extra = sorted(set(listed) - shards) if whole else [], sorted(shards - set(listed))
        if missing or extra:
            raise PackError(
                f"{directory}: shards differ from its {MARKER} (missing: {', '.join(missing) or 'none'}; "
                f"not listed: {', '.join(extra) or 'none'}); rerun `{CLEAN_PRODUCER}`"
            )


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand directories into their input files (sorted, so output order is reproducible).

    A directory (searched recursively) that holds ``part-*.jsonl.gz`` shards is `koneox clean`
    output: without its completion marker it is refused, so a killed clean is never packed; so
    is a ``part-*.jsonl.gz`` named on its own whose directory's marker is missing or does not
    list it."""
    files: list[Path] = []
    named_shards: dict[Path, set[str]] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and f.name.endswith(SUFFIXES) and not f.name.startswith(REJECTS)
            )
            if not found:
                raise PackError(f"{p}: directory holds no input files ({', '.join(SUFFIXES)})")
            for d in sorted({f.parent for f in found if f.match(CLEAN_SHARD)}):
                _check_clean_output(d, {f.name for f in found if f.parent == d and f.match(CLEAN_SHARD)})
            files.extend(found)
        elif p.is_file():
            if not p.name.endswith(SUFFIXES):
                raise PackError(f"{p}: unsupported input type (expected one of {', '.join(SUFFIXES)})")
            if p.match(CLEAN_SHARD):
                named_shards.setdefault(p.parent, set()).add(p.name)
            files.append(p)
        else:
            raise PackError(f"{p}: no such file or directory")
    for directory, names in sorted(named_shards.items()):
        _check_clean_output(directory, names, whole=False)
    return files


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


@dataclass
class TokenizerInfo:
    path: str
    eos_token: str
    eos_id: int
    vocab_size: int
    kept_tokens: list[str]  # added tokens text encodes to: the PII placeholders in the vocabulary
    split_ids: dict[int, str]  # added tokens encoded as ordinary text; never inside a document


def _control_like(content: str) -> bool:
    """Shaped like a control token (``<...>``, ``[...]``) rather than text (whitespace runs)."""
    return len(content) >= 3 and content[0] in "<[" and content[-1] in ">]"


def split_specials(tok):
    """``tok`` set up to encode document text: every added token that is special, or shaped like
    one, is encoded as ordinary text (``encode_special_tokens``), except the PII placeholders,
    which stay single ids (made non-special where a tokenizer marks them special). Other added
    tokens (e.g. whitespace runs) keep their ids. Returns the tokenizer, the kept placeholders
    and the split tokens by id."""
    from tokenizers import Tokenizer

    added = tok.get_added_tokens_decoder()
    kept = [p for p in PII_PLACEHOLDERS if p in {t.content for t in added.values()}]
    split = {
        i: t.content
        for i, t in added.items()
        if t.content not in PII_PLACEHOLDERS and (t.special or _control_like(t.content))
    }
    if any(t.special != (i in split) for i, t in added.items()):
        state = json.loads(tok.to_str())
        for entry in state["added_tokens"]:
            entry["special"] = entry["id"] in split
        tok = Tokenizer.from_str(json.dumps(state))
    tok.encode_special_tokens = True
    return tok, kept, split


def _eos_from_configs(tok_dir: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = tok_dir / name
        if f.is_file():
            eos = json.loads(f.read_text(encoding="utf-8")).get("eos_token")
            if isinstance(eos, dict):  # older transformers store AddedToken dicts
                eos = eos.get("content")
            if eos:
                return str(eos)
    return None


def _require_finished_tokenizer(tok_dir: Path) -> None:
    """Refuse a `koneox train-tokenizer` output that did not finish (killed while its files were
    moved into place, or a rerun killed over an older output): it has no marker but holds the
    trainer's work directory or report. A directory without any of these is a tokenizer from
    elsewhere (any Hugging Face tokenizer directory) and is used as it is."""
    record = read_marker(tok_dir)
    if record is None:
        traces = [p.name for p in tok_dir.iterdir()
                  if p.name.startswith(TOKENIZER_WORK_PREFIX) or p.name == TOKENIZER_REPORT
                  or p.name.endswith(TMP_SUFFIX)]
        if traces:
            raise PackError(
                f"{tok_dir}: no {MARKER}: `{TOKENIZER_PRODUCER}` did not finish writing this directory "
                f"(it holds {', '.join(sorted(traces)[:3])}); rerun `{TOKENIZER_PRODUCER}`"
            )
        return
    if record.get("producer") in MODEL_PRODUCERS:
        return  # a finished model directory that carries its tokenizer (e.g. an extended vocabulary)
    if record.get("producer") != TOKENIZER_PRODUCER:
        raise PackError(f"{tok_dir}: {MARKER} was written by {record.get('producer')!r}, not a tokenizer")
    missing = [name for name in record.get("files", []) if not (tok_dir / name).is_file()]
    if missing:
        raise PackError(
            f"{tok_dir}: files listed in {MARKER} are missing: {', '.join(missing)}; rerun `{TOKENIZER_PRODUCER}`"
        )


def load_tokenizer(tokenizer_dir: str | os.PathLike):
    """Load the fast tokenizer of a Hugging Face tokenizer directory, set up to encode document
    text (``split_specials``), and describe its EOS and added tokens.

    Reads ``tokenizer.json`` with ``tokenizers`` directly (fast to load in every worker);
    a directory with only slow-tokenizer files is converted once through ``transformers``.
    """
    from tokenizers import Tokenizer

    tok_dir = Path(tokenizer_dir)
    if not tok_dir.is_dir():
        raise PackError(f"{tok_dir}: tokenizer directory not found")
    _require_finished_tokenizer(tok_dir)
    if (tok_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    else:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(tok_dir))
        if not getattr(hf, "is_fast", False):
            raise PackError(f"{tok_dir}: no tokenizer.json and no fast tokenizer could be built")
        tok = hf.backend_tokenizer
    eos = _eos_from_configs(tok_dir) or EOS_FALLBACK
    eos_id = tok.token_to_id(eos)
    if eos_id is None:
        raise PackError(f"{tok_dir}: end-of-document token {eos!r} is not in the vocabulary")
    tok, kept, split = split_specials(tok)
    size = int(tok.get_vocab_size(with_added_tokens=True))
    info = TokenizerInfo(str(tok_dir), eos, int(eos_id), size, kept, split)
    return tok, info


# ---------------------------------------------------------------------------------------------
# Tasks: what the main process hands out. Only "lines" tasks carry text; the others name a file
# (and a byte range or row groups) that the worker reads itself.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    path: str
    kind: str  # "jsonl.gz" whole file | "jsonl" byte range | "lines" given | "parquet" row groups | "txt"
    start: int = 0  # jsonl, lines: first byte (of the uncompressed text); parquet: first row group
    stop: int | None = None  # jsonl: a line starting before this byte is ours; parquet: row group stop
    payload: bytes = b""  # "lines": text from byte `start` of the uncompressed file, cut anywhere
    skip: int = 0  # "lines": bytes of payload that end the previous task's last line
    tail: bytes = b""  # "lines": what follows payload up to the end of its last line


def _kind(path: Path) -> str:
    return next(s for s in SUFFIXES if path.name.endswith(s))[1:]


def whole_file_task(path: Path) -> Task:
    return Task(str(path), _kind(path))


def _main_read_blocks(path: Path) -> Iterator[Task]:
    """Tasks of a .jsonl.gz gunzipped here (the only text the main process touches: used when
    there are too few files to give every worker whole files).

    Each task is one chunk of zlib output as it comes, not re-cut at a line end (that would
    copy every byte twice more): a task owns the lines that start in its chunk; ``skip`` is the
    end of a line begun in the chunk before, ``tail`` the end of its own last line, taken from
    the chunks after. Lines are not counted here; a worker counts them if an error needs one."""
    chunks = _gunzip(path, _MAIN_GZ_READ)
    ahead: deque[bytes] = deque()

    def peek(i: int) -> bytes | None:
        while len(ahead) <= i:
            if (chunk := next(chunks, None)) is None:
                return None
            ahead.append(chunk)
        return ahead[i]

    offset, skip = 0, 0
    while (cur := peek(0)) is not None:
        ahead.popleft()
        tail: list[bytes] = []
        if skip < len(cur) and not cur.endswith(b"\n"):
            i = 0
            while (nxt := peek(i)) is not None:
                end = nxt.find(b"\n") + 1
                tail.append(nxt[:end] if end else nxt)
                if end:
                    break
                i += 1
        if skip < len(cur):
            yield Task(str(path), "lines", start=offset, payload=cur, skip=skip, tail=b"".join(tail))
        offset += len(cur)
        nxt = None if cur.endswith(b"\n") else peek(0)
        skip = 0 if nxt is None else nxt.find(b"\n") + 1 or len(nxt)


def plan_tasks(files: Sequence[Path], num_proc: int, text_field: str) -> Iterator[Task]:
    """Tasks in input order; cheap for the main process except the few-big-.jsonl.gz case."""
    gz = sum(f.name.endswith(".jsonl.gz") for f in files)
    workers_gunzip = num_proc <= 1 or gz >= _WHOLE_FILES_PER_PROC * num_proc
    for f in files:
        kind = _kind(f)
        if kind == "jsonl.gz":
            yield from ([whole_file_task(f)] if workers_gunzip else _main_read_blocks(f))
        elif kind == "jsonl":
            size = f.stat().st_size
            for lo in range(0, max(size, 1), _RANGE_BYTES):
                yield Task(str(f), "jsonl", lo, min(lo + _RANGE_BYTES, size))
        elif kind == "parquet":
            groups = _parquet_file(f, text_field).metadata.num_row_groups
            for g in range(groups):
                yield Task(str(f), "parquet", g, g + 1)
        else:
            yield whole_file_task(f)


# ---------------------------------------------------------------------------------------------
# Reading (in the workers): a task -> pieces of ~1 MB of texts, each with a way to name where
# document j of the piece came from (file:line) for error messages.
# ---------------------------------------------------------------------------------------------

Piece = tuple[list[str], Callable[[int], str]]


def _read_error(path: str | os.PathLike, e: BaseException) -> PackError:
    return PackError(f"{path}: cannot read ({e}): truncated or corrupt; nothing was skipped")


def _gunzip(path: str | os.PathLike, read: int = _GZ_READ) -> Iterator[bytes]:
    """Decompressed chunks of a gzip file, every member of it (concatenated shards are one file).

    zlib itself checks each member's CRC-32 and length, with less Python around it than the
    ``gzip`` module (half the main process's cost per MB when it gunzips). A file that ends
    inside a member, or holds anything but gzip members (zero padding aside), is an error."""
    try:
        with open(path, "rb") as fh:
            d, fed = zlib.decompressobj(31), False
            while raw := fh.read(read):
                while raw:
                    if not fed and not (raw := raw.lstrip(b"\0")):
                        break
                    fed = True
                    if out := d.decompress(raw):
                        yield out
                    if not d.eof:
                        break
                    raw, d, fed = d.unused_data, zlib.decompressobj(31), False  # the next member
            if fed and not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
    except (OSError, EOFError, zlib.error) as e:
        raise _read_error(path, e) from e


def _line_blocks(chunks: Iterator[bytes], size: int) -> Iterator[tuple[int, bytes]]:
    """Re-cut a byte stream into (offset, whole lines) blocks of about ``size`` bytes."""
    pending: list[bytes] = []
    have = offset = 0
    for chunk in chunks:
        pending.append(chunk)
        have += len(chunk)
        if have < size:
            continue
        buf = b"".join(pending)
        cut = buf.rfind(b"\n") + 1
        if cut == 0:  # a line longer than the block: keep reading
            pending = [buf]
            continue
        yield offset, buf[:cut]
        offset += cut
        rest = buf[cut:]
        pending, have = ([rest] if rest else []), len(rest)
    buf = b"".join(pending)
    if buf.strip():
        yield offset, buf


def _text_chunks(path: str) -> Iterator[bytes]:
    if path.endswith(".gz"):
        yield from _gunzip(path)
        return
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            yield chunk


def _count_lines(path: str, offset: int) -> int:
    """Newlines in the first ``offset`` bytes of the (uncompressed) text; only for errors."""
    n = 0
    for chunk in _text_chunks(path):
        n += chunk.count(b"\n", 0, offset)
        offset -= len(chunk)
        if offset <= 0:
            break
    return n


class _Lines:
    """A block of whole JSON lines; the line number of its first line may be known only lazily
    (blocks cut by the main process, byte ranges: counted when an error needs it)."""

    def __init__(self, path: str, blob: bytes, first_line: int | None, offset: int = 0):
        self.path, self.blob, self._first, self._offset = path, blob, first_line, offset

    def line(self, i: int) -> int:
        if self._first is None:
            self._first = _count_lines(self.path, self._offset) + 1
        return self._first + i


def _cut_lines(path: str, blob: bytes, offset: int) -> Iterator[_Lines]:
    """Split a block of lines (at byte ``offset`` of the file) into ~_PIECE_BYTES pieces."""
    lo = 0
    while lo < len(blob):
        hi = blob.rfind(b"\n", lo, lo + _PIECE_BYTES) + 1 if lo + _PIECE_BYTES < len(blob) else len(blob)
        if hi <= lo:  # one line longer than a piece
            hi = blob.find(b"\n", lo) + 1 or len(blob)
        yield _Lines(path, blob[lo:hi], None, offset + lo)
        lo = hi


def _gzip_lines(path: str) -> Iterator[_Lines]:
    first = 1
    for offset, blob in _line_blocks(_gunzip(path), _PIECE_BYTES):
        yield _Lines(path, blob, first, offset)
        first += blob.count(b"\n")


def _range_lines(path: str, start: int, stop: int) -> Iterator[_Lines]:
    """The lines of an uncompressed file that start in [start, stop)."""
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            if fh.read(1) != b"\n":
                fh.readline()  # the line running across `start` belongs to the previous range
        pos = fh.tell()
        offset, carry = pos, b""
        while pos < stop:
            block = fh.read(min(_PIECE_BYTES, stop - pos))
            if not block:
                break
            pos += len(block)
            if pos >= stop and not block.endswith(b"\n"):
                block += fh.readline()  # finish the line that starts before `stop`
            buf = carry + block
            cut = buf.rfind(b"\n") + 1
            if cut == 0 and pos < stop:
                carry = buf
                continue
            cut = cut or len(buf)
            yield _Lines(path, buf[:cut], None, offset)
            offset += cut
            carry = buf[cut:]
        if carry.strip():
            yield _Lines(path, carry, None, offset)


def _texts_of(lines: _Lines, text_field: str) -> tuple[list[str], Callable[[int], str]]:
    rows = lines.blob.split(b"\n")
    kept = [r for r in rows if r.strip()]

    def where(j: int) -> str:  # document j -> "file:line"
        nonblank = [i for i, r in enumerate(rows) if r.strip()]
        return f"{lines.path}:{lines.line(nonblank[j])}"

    try:
        # One json.loads over the whole piece is about twice as fast as one per line.
        records = json.loads(b"[" + b",".join(kept) + b"]")
        if len(records) != len(kept):  # a line holding two values: find it below
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        records = []
        for i, r in enumerate(rows):
            if not r.strip():
                continue
            try:
                records.append(json.loads(r))
            except json.JSONDecodeError as e:
                raise PackError(f"{lines.path}:{lines.line(i)}: invalid JSON ({e.msg})") from None
            except UnicodeDecodeError:
                raise PackError(f"{lines.path}:{lines.line(i)}: not valid UTF-8") from None
    try:
        texts = [r[text_field] for r in records]
    except (KeyError, TypeError):
        j = next(j for j, r in enumerate(records) if not isinstance(r, dict) or text_field not in r)
        raise PackError(f"{where(j)}: record has no {text_field!r} field") from None
    for j, t in enumerate(texts):
        if not isinstance(t, str):
            raise PackError(f"{where(j)}: {text_field!r} is {type(t).__name__}, not text")
    return texts, where


def _parquet_file(path: str | os.PathLike, text_field: str):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError for broken files
        raise _read_error(path, e) from e
    if text_field not in pf.schema_arrow.names:
        raise PackError(f"{path}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
    return pf


def _parquet_pieces(task: Task, text_field: str) -> Iterator[Piece]:
    import pyarrow as pa

    pf = _parquet_file(task.path, text_field)
    stop = pf.metadata.num_row_groups if task.stop is None else task.stop
    row = 1 + sum(pf.metadata.row_group(g).num_rows for g in range(task.start))
    batches = pf.iter_batches(batch_size=1024, row_groups=range(task.start, stop), columns=[text_field])
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as e:  # a truncated or corrupt page
            raise _read_error(task.path, e) from e
        if batch is None:
            return
        texts = batch.column(0).to_pylist()

        def where(j: int, first: int = row) -> str:
            return f"{task.path}: row {first + j}"

        for j, t in enumerate(texts):
            if not isinstance(t, str):
                raise PackError(f"{where(j)}: {text_field!r} is {type(t).__name__}, not text")
        yield texts, where
        row += len(texts)


def iter_pieces(task: Task, text_field: str) -> Iterator[Piece]:
    if task.kind == "txt":
        try:
            text = Path(task.path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise PackError(f"{task.path}: not valid UTF-8") from None
        yield [text], lambda j: f"{task.path} (the whole file is one document)"
        return
    if task.kind == "parquet":
        yield from _parquet_pieces(task, text_field)
        return
    if task.kind == "jsonl.gz":
        blocks = _gzip_lines(task.path)
    elif task.kind == "lines":
        text = task.payload[task.skip :] + task.tail
        blocks = _cut_lines(task.path, text, task.start + task.skip)
    else:
        stop = Path(task.path).stat().st_size if task.stop is None else task.stop
        blocks = _range_lines(task.path, task.start, stop)
    while True:
        try:
            lines = next(blocks, None)
        except OSError as e:
            raise _read_error(task.path, e) from e
        if lines is None:
            return
        yield _texts_of(lines, text_field)


# ---------------------------------------------------------------------------------------------
# Encoding (workers, or the main process when num_proc == 1)
# ---------------------------------------------------------------------------------------------

_worker: dict = {}


def _load_state(tokenizer_dir: str, text_field: str) -> None:
    tok, info = load_tokenizer(tokenizer_dir)
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets packing never needs.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    split_ids = np.array(sorted(info.split_ids), dtype=np.int64)
    dtype = best_dtype(info.vocab_size)
    _worker.update(encode=encode, info=info, dtype=dtype, text_field=text_field, split_ids=split_ids)


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a SIGKILLed main process: a rerun would find it still writing."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _init_worker(tokenizer_dir: str, text_field: str, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # The main process handles SIGTERM/SIGINT and stops the workers itself; a signal sent to
    # the whole process group simply ends a worker (its files are the main process's to delete).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Parallelism comes from the processes; tokenizers' own thread pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _load_state(tokenizer_dir, text_field)


def _encode(texts: list[str], where: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Texts -> (flat tokens in the dataset dtype with EOS after each document, int32 lengths,
    smallest id, largest id).

    Ids are checked against the vocabulary before the cast, so uint16 never wraps one around,
    and no split special token's id may come out of the text (the EOS appended here aside)."""
    info = _worker["info"]
    ids = [e.ids for e in _worker["encode"](texts, add_special_tokens=False)]
    for doc in ids:
        doc.append(info.eos_id)
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum(dtype=np.int64)))
    lo, hi = (int(flat.min()), int(flat.max())) if len(flat) else (-1, -1)
    if len(_worker["split_ids"]):
        ends = np.cumsum(lengths, dtype=np.int64)
        special = np.isin(flat, _worker["split_ids"])
        special[ends - 1] = False  # the EOS appended above
        if special.any():
            pos = int(np.argmax(special))
            doc = int(np.searchsorted(ends, pos, side="right"))
            raise PackError(
                f"{where(doc)}: the text encoded to special token id {int(flat[pos])} "
                f"({info.split_ids[int(flat[pos])]!r}) although special tokens are split: the model "
                f"of {info.path} makes that id from ordinary text"
            )
    if hi >= info.vocab_size:
        pos = int(np.argmax(flat >= info.vocab_size))
        doc = int(np.searchsorted(np.cumsum(lengths, dtype=np.int64), pos, side="right"))
        raise PackError(
            f"{where(doc)}: token id {int(flat[pos])} >= vocabulary size {info.vocab_size} of "
            f"{info.path} (its added tokens leave a gap in the ids?)"
        )
    return flat.astype(_worker["dtype"]), lengths, lo, hi


@dataclass
class Counts:
    """What a task (or a whole pack) wrote."""

    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    empty: int = 0
    min_id: int = -1  # -1: no tokens yet
    max_id: int = -1

    def add(self, other: Counts) -> None:
        if other.tokens:
            self.min_id = other.min_id if not self.tokens else min(self.min_id, other.min_id)
            self.max_id = max(self.max_id, other.max_id)
        self.documents += other.documents
        self.tokens += other.tokens
        self.text_bytes += other.text_bytes
        self.empty += other.empty


def run_task(task: Task, sink) -> Counts:
    """Read, encode and append one task to ``sink`` (anything with ``add_documents``)."""
    counts = Counts()
    for texts, where in iter_pieces(task, _worker["text_field"]):
        tokens, lengths, lo, hi = _encode(texts, where)
        sink.add_documents(tokens, lengths)
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        counts.add(Counts(len(lengths), len(tokens), nbytes, int((lengths == 1).sum()), lo, hi))
    return counts


class _PartWriter:
    """A worker's output for one task: ``BASE.bin.tmp`` (tokens) and ``BASE.lengths.tmp``."""

    def __init__(self, base: str):
        self.bin, self.len = tmp_path(f"{base}.bin"), tmp_path(f"{base}.lengths")
        self._b = open(self.bin, "wb")  # noqa: SIM115  (closed in close())
        self._l = open(self.len, "wb")  # noqa: SIM115

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self._b.write(tokens.tobytes())
        self._l.write(lengths.tobytes())

    def close(self) -> None:
        self._b.close()
        self._l.close()


def _task_to_part(task: Task, base: str) -> Counts:
    part = _PartWriter(base)
    try:
        counts = run_task(task, part)
    except BaseException:
        part.close()
        part.bin.unlink(missing_ok=True)
        part.len.unlink(missing_ok=True)
        raise
    part.close()
    return counts


def _append_part(writer: IndexedDatasetWriter, base: str) -> None:
    """Copy a finished part into the output (in chunks: memory stays flat) and delete it."""
    b, ln = tmp_path(f"{base}.bin"), tmp_path(f"{base}.lengths")
    item = writer.dtype.itemsize
    with open(ln, "rb") as fl, open(b, "rb") as fb:
        while lens := fl.read(4 << 20):
            lengths = np.frombuffer(lens, dtype=np.int32)
            want = int(lengths.sum(dtype=np.int64)) * item
            tokens = fb.read(want)
            if len(tokens) != want:
                raise PackError(f"{b}: part file shorter than its lengths (disk full?)")
            writer.add_documents(np.frombuffer(tokens, dtype=writer.dtype), lengths)
    b.unlink()
    ln.unlink()


# ---------------------------------------------------------------------------------------------
# Signals and the worker pool
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into PackInterrupted in the main thread, so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish undisturbed
        raise PackInterrupted(f"stopped by {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _pool(num_proc: int, tokenizer_dir: str | os.PathLike, text_field: str) -> ProcessPoolExecutor:
    import multiprocessing as mp

    ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(num_proc, ctx, _init_worker, (str(tokenizer_dir), text_field, os.getpid()))


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now (not after their current, possibly hour-long, task) and reap them,
    so no worker writes a file after the caller has deleted the temporaries."""
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    procs = list((getattr(pool, "_processes", None) or {}).values())
    if kill is not None:
        kill()
    for p in procs:
        p.kill()
    pool.shutdown(wait=True, cancel_futures=True)
    for p in procs:
        p.join()


def _progress(enabled: bool, desc: str, unit: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit=unit, unit_scale=True, mininterval=1.0)


def _stats(counts: Counts, dtype: np.dtype, info: TokenizerInfo, tokenizer_dir) -> dict:
    """The ``PREFIX.stats.json`` record (see data.indexed.write_stats)."""
    return {
        "num_documents": counts.documents,
        "num_tokens": counts.tokens,
        "max_token_id": counts.max_id,
        "min_token_id": counts.min_id,
        "bin_bytes": counts.tokens * dtype.itemsize,
        "dtype": str(dtype),
        "tokenizer": str(Path(tokenizer_dir).resolve()),
        "vocab_size": info.vocab_size,
        "kept_added_tokens": info.kept_tokens,
    }


# ---------------------------------------------------------------------------------------------
# pack(): one dataset
# ---------------------------------------------------------------------------------------------


def _leftovers(out: str) -> list[Path]:
    """Temporary files a killed ``pack`` to this prefix may have left."""
    p = Path(out)
    fixed = [tmp_path(f"{out}{ext}") for ext in (".bin", ".idx", ".lengths", ".stats.json", ".report.json")]
    parts = p.parent.glob(f"{glob.escape(p.name)}.part-*.tmp") if p.parent.is_dir() else []
    return [f for f in (*fixed, *parts) if f.exists()]


def pack(
    inputs: Sequence[str | os.PathLike],
    tokenizer_dir: str | os.PathLike,
    out_prefix: str | os.PathLike,
    num_proc: int = 1,
    text_field: str = "text",
    progress: bool = True,
) -> dict:
    """Tokenize every document of ``inputs`` into ``OUT.bin``, ``OUT.idx``, ``OUT.stats.json``
    and ``OUT.report.json`` (in that order, each renamed into place when complete).

    Documents keep their input order (files sorted within a directory), so packing is
    reproducible and independent of ``num_proc``. Empty documents are kept as a lone EOS so
    that document ``i`` of the output is record ``i`` of the input. Returns the report.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    files = find_inputs(inputs)
    _, info = load_tokenizer(tokenizer_dir)
    dtype = best_dtype(info.vocab_size)
    out = str(out_prefix)
    for f in _leftovers(out):
        f.unlink()
    writer = IndexedDatasetWriter(out, dtype)
    total = Counts()
    n_tasks = 0
    bar = _progress(progress, f"pack {Path(out).name}", " docs")

    def consume(counts: Counts) -> None:
        nonlocal n_tasks
        total.add(counts)
        n_tasks += 1
        if bar is not None:
            bar.update(counts.documents)
            bar.set_postfix(tokens=f"{total.tokens:,}", refresh=False)

    pool = None
    with _sigterm_raises():
        try:
            tasks = plan_tasks(files, num_proc, text_field)
            if num_proc <= 1:
                _load_state(str(tokenizer_dir), text_field)
                for task in tasks:
                    consume(run_task(task, writer))
            else:
                pool = _pool(num_proc, tokenizer_dir, text_field)
                # Bounded window of in-flight tasks: reading never runs far ahead of writing,
                # so memory and temporary disk stay flat, and parts are appended in input order.
                window: deque[tuple[str, Future]] = deque()

                def take() -> None:
                    base, fut = window.popleft()
                    counts = fut.result()
                    _append_part(writer, base)
                    consume(counts)

                for i, task in enumerate(tasks):
                    base = f"{out}.part-{i:06d}"
                    window.append((base, pool.submit(_task_to_part, task, base)))
                    while window and (len(window) >= 2 * num_proc or window[0][1].done()):
                        take()
                while window:
                    take()
                pool.shutdown()
                pool = None
            # The old sidecar describes the old .bin; without the old .idx, a kill between the
            # two renames leaves a .bin that plainly has no index, not a mismatched pair.
            for f in (Path(f"{out}.stats.json"), idx_path(out)):
                f.unlink(missing_ok=True)
            writer.finish()
            write_stats(out, _stats(total, dtype, info, tokenizer_dir))
        except BaseException:
            if pool is not None:
                _kill_pool(pool)
            writer.abort()
            for f in _leftovers(out):
                f.unlink(missing_ok=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        report = {
            "stage": "pack",
            "inputs": [str(f) for f in files],
            "tokenizer": str(tokenizer_dir),
            "eos_token": info.eos_token,
            "eos_id": info.eos_id,
            "vocab_size": info.vocab_size,
            "kept_added_tokens": info.kept_tokens,
            "split_added_tokens": sorted(info.split_ids.values()),
            "dtype": str(dtype),
            "bin": str(bin_path(out)),
            "idx": str(idx_path(out)),
            "stats": f"{out}.stats.json",
            "documents": total.documents,
            "empty_documents": total.empty,
            "tokens": total.tokens,
            "max_token_id": total.max_id,
            "min_token_id": total.min_id,
            "text_bytes": total.text_bytes,
            "bytes_per_token": round(total.text_bytes / max(total.tokens - total.documents, 1), 4),
            "tokens_per_document": round(total.tokens / max(total.documents, 1), 2),
            "num_proc": num_proc,
            "tasks": n_tasks,
            "seconds": round(seconds, 3),
            "main_cpu_seconds": round(time.process_time() - cpu0, 3),
            "tokens_per_second": round(total.tokens / seconds, 1) if seconds > 0 else None,
            "documents_per_second": round(total.documents / seconds, 1) if seconds > 0 else None,
        }
        write_text_atomic(f"{out}.report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


# ---------------------------------------------------------------------------------------------
# pack_per_shard(): one dataset per input file, resumable
# ---------------------------------------------------------------------------------------------


def shard_name(path: Path) -> str:
    """``part-00003.jsonl.gz`` -> ``part-00003``."""
    return path.name[: -len(next(s for s in SUFFIXES if path.name.endswith(s)))]


def _source(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def shard_complete(prefix: Path, source: dict, want: dict) -> dict | None:
    """The stats of a finished shard, or None: the sidecar must exist, describe this .bin (size)
    and an .idx of the right size, and name the same tokenizer, dtype, kept added tokens (a
    shard packed before special tokens were split has none listed) and source file."""
    stats = read_stats(prefix)
    if stats is None or not idx_path(prefix).is_file():
        return None
    n = stats.get("num_documents", -1)
    idx_bytes = _IDX_HEADER + 4 * n + 8 * n + 8 * (n + 1)
    same = all(stats.get(k) == want[k] for k in ("tokenizer", "vocab_size", "dtype", "kept_added_tokens"))
    if not same or stats.get("source") != source or idx_path(prefix).stat().st_size != idx_bytes:
        return None
    return stats


def _task_to_shard(task: Task, prefix: str, extra: dict) -> dict:
    """Worker: pack one input file into its own dataset; the sidecar is written last."""
    info = _worker["info"]
    writer = IndexedDatasetWriter(prefix, _worker["dtype"])
    try:
        counts = run_task(task, writer)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    stats = {**_stats(counts, writer.dtype, info, extra["tokenizer"]), "source": extra["source"]}
    write_stats(prefix, stats)
    return {**stats, "text_bytes": counts.text_bytes, "empty_documents": counts.empty}


def pack_per_shard(
    inputs: Sequence[str | os.PathLike],
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_proc: int = 1,
    text_field: str = "text",
    progress: bool = True,
) -> dict:
    """Pack each input file into ``OUT_DIR/NAME.bin/.idx/.stats.json`` (NAME: the file name
    without its suffix), skipping the shards a previous run finished, then write
    ``OUT_DIR/report.json`` and, last, the completion marker listing the shards in input order.

    A shard is finished when its stats sidecar exists and matches its ``.bin``/``.idx`` sizes,
    the tokenizer and the source file's size and mtime. A bad input file does not stop the
    others: every failure is reported, by file, in one PackError at the end (and no marker).
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    files = find_inputs(inputs)
    _, info = load_tokenizer(tokenizer_dir)
    dtype = best_dtype(info.vocab_size)
    out = Path(out_dir)
    names: dict[str, Path] = {}
    for f in files:
        name = shard_name(f)
        if name in names:
            raise PackError(f"{f} and {names[name]} would both be written to {out / name}: rename one")
        names[name] = f
    out.mkdir(parents=True, exist_ok=True)
    clear_marker(out)
    remove_temporaries(out)
    want = {
        "tokenizer": str(Path(tokenizer_dir).resolve()),
        "vocab_size": info.vocab_size,
        "dtype": str(dtype),
        "kept_added_tokens": info.kept_tokens,
    }
    done: dict[str, dict] = {}
    todo: list[tuple[str, Task, dict]] = []
    for name, f in names.items():
        source = _source(f)
        stats = shard_complete(out / name, source, want)
        if stats is not None:
            done[name] = {**stats, "skipped": True}
            continue
        for ext in (".stats.json", ".idx", ".bin"):  # unfinished leftovers of a killed run
            Path(f"{out / name}{ext}").unlink(missing_ok=True)
        todo.append((name, whole_file_task(f), {"tokenizer": tokenizer_dir, "source": source}))
    failures: dict[str, str] = {}
    bar = _progress(progress, f"pack {out.name}", " shards")

    def finished(name: str, get: Callable[[], dict]) -> None:
        try:
            done[name] = {**get(), "skipped": False}
        except PackError as e:
            failures[name] = str(e)
        if bar is not None:
            bar.update(1)

    pool = None
    with _sigterm_raises():
        try:
            if num_proc <= 1 or len(todo) <= 1:
                _load_state(str(tokenizer_dir), text_field)
                for name, task, extra in todo:
                    finished(name, lambda t=task, n=name, x=extra: _task_to_shard(t, str(out / n), x))
            else:
                pool = _pool(min(num_proc, len(todo)), tokenizer_dir, text_field)
                futures = {pool.submit(_task_to_shard, t, str(out / n), x): n for n, t, x in todo}
                for fut in as_completed(futures):
                    finished(futures[fut], fut.result)
                pool.shutdown()
                pool = None
        except BaseException:
            if pool is not None:
                _kill_pool(pool)
            remove_temporaries(out)
            raise
        finally:
            if bar is not None:
                bar.close()
        if failures:
            raise PackError(
                f"{len(failures)} of {len(names)} shards failed ({len(done)} finished are kept; fix the "
                "input and rerun to pack only the rest): " + "; ".join(failures.values())
            )
        order = list(names)
        total = Counts()
        for name in order:
            s = done[name]
            total.add(Counts(s["num_documents"], s["num_tokens"], 0, 0, s["min_token_id"], s["max_token_id"]))
        seconds = time.perf_counter() - t0
        report = {
            "stage": "pack",
            "mode": "per-shard",
            "tokenizer": str(tokenizer_dir),
            "eos_token": info.eos_token,
            "eos_id": info.eos_id,
            "vocab_size": info.vocab_size,
            "kept_added_tokens": info.kept_tokens,
            "split_added_tokens": sorted(info.split_ids.values()),
            "dtype": str(dtype),
            "out": str(out),
            "shards": len(order),
            "packed": sum(not done[n]["skipped"] for n in order),
            "skipped": sum(done[n]["skipped"] for n in order),
            "documents": total.documents,
            "tokens": total.tokens,
            "max_token_id": total.max_id,
            "min_token_id": total.min_id,
            "num_proc": num_proc,
            "seconds": round(seconds, 3),
            "main_cpu_seconds": round(time.process_time() - cpu0, 3),
            "per_shard": [{"name": n, "input": str(names[n]), **done[n]} for n in order],
        }
        write_text_atomic(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        mark_complete(
            out,
            PACK_PRODUCER,
            {
                "shards": order,
                "documents": total.documents,
                "tokens": total.tokens,
                "max_token_id": total.max_id,
            },
        )
    return report


def expand_packed(items: Sequence[str | os.PathLike]) -> list[str]:
    """Dataset prefixes: a directory written by ``pack_per_shard`` stands for its shards in input
    order (it must carry its completion marker); anything else is a prefix."""
    prefixes: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            try:
                record = require_complete(p, PACK_PRODUCER)
            except IncompleteOutputError as e:
                raise PackError(str(e)) from None
            prefixes += [str(p / name) for name in record.get("shards", [])]
        else:
            prefixes.append(os.fspath(item))
    return prefixes


def merge_packed(items: Sequence[str | os.PathLike], out_prefix: str | os.PathLike) -> dict:
    """Concatenate packed datasets (prefixes, or ``pack_per_shard`` directories) keeping every
    document boundary; when every input has a current stats sidecar from the same tokenizer,
    the merged one gets a sidecar too."""
    prefixes = expand_packed(items)
    out = str(out_prefix)
    Path(f"{out}.stats.json").unlink(missing_ok=True)
    report = merge(prefixes, out)
    parts = [read_stats(p) for p in prefixes]
    same = ("tokenizer", "vocab_size", "dtype", "kept_added_tokens")
    if (
        parts
        and all(s is not None for s in parts)
        and all(all(s.get(k) == parts[0].get(k) for k in same) for s in parts)
    ):
        total = Counts()
        for s in parts:
            total.add(Counts(s["num_documents"], s["num_tokens"], 0, 0, s["min_token_id"], s["max_token_id"]))
        stats = {
            "num_documents": total.documents,
            "num_tokens": total.tokens,
            "max_token_id": total.max_id,
            "min_token_id": total.min_id,
            "bin_bytes": bin_path(out).stat().st_size,
            **{k: parts[0][k] for k in same if k in parts[0]},
        }
        write_stats(out, stats)
        report.update(max_token_id=total.max_id, min_token_id=total.min_id, stats=f"{out}.stats.json")
    return report
