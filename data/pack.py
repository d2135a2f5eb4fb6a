"""Tokenize cleaned text and pack it into a Megatron ``.bin``/``.idx`` pair plus a JSON report.

One sequence per document, the tokenizer's end-of-document token (``<|endoftext|>``) appended,
so that samples cut across documents (GPT-NeoX style) still show the model where each ends.

Pipeline (streaming, bounded memory)::

    main process                     worker processes (num_proc)          main process
    read files -> chunks of ~1 MB -> parse JSON, encode_batch_fast,   -> write tokens in input
    raw lines / texts                 flatten to (tokens, lengths)        order, lengths to a side
    (at most 2*num_proc in flight)                                         file; .idx built at the end

Inputs: ``.jsonl.gz`` / ``.jsonl`` (one JSON object per line, text in ``text_field``) as written
by ``koneox clean``, ``.parquet`` (column ``text_field``), ``.txt`` (the whole file is one
document), or directories of these (searched recursively, sorted by path; the cleaner's
``rejects-*`` shards are skipped). The reader here is
self-contained; it does not depend on the cleaner's code, only on its output format.

Usage::

    from data.pack import pack
    report = pack(["runs/clean/"], "runs/tokenizer", "runs/data/corpus", num_proc=2)
    report["tokens"], report["bytes_per_token"]
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from data.indexed import IndexedDatasetWriter, best_dtype, bin_path, idx_path

SUFFIXES = (".jsonl.gz", ".jsonl", ".parquet", ".txt")
# `koneox clean --keep-rejects` writes dropped documents next to the kept shards: never pack them.
REJECTS = "rejects-"
EOS_FALLBACK = "<|endoftext|>"
_CHUNK_BYTES = 1 << 20  # raw text per worker task: big enough to amortise IPC, small enough to stream


class PackError(ValueError):
    """Bad input to the packer; the message names the file."""


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand directories into their input files (sorted, so output order is reproducible)."""
    files: list[Path] = []
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
            files.extend(found)
        elif p.is_file():
            if not p.name.endswith(SUFFIXES):
                raise PackError(f"{p}: unsupported input type (expected one of {', '.join(SUFFIXES)})")
            files.append(p)
        else:
            raise PackError(f"{p}: no such file or directory")
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


def load_tokenizer(tokenizer_dir: str | os.PathLike):
    """Load the fast tokenizer of a Hugging Face tokenizer directory and describe its EOS.

    Reads ``tokenizer.json`` with ``tokenizers`` directly (fast to load in every worker);
    a directory with only slow-tokenizer files is converted once through ``transformers``.
    """
    from tokenizers import Tokenizer

    tok_dir = Path(tokenizer_dir)
    if not tok_dir.is_dir():
        raise PackError(f"{tok_dir}: tokenizer directory not found")
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
    info = TokenizerInfo(str(tok_dir), eos, int(eos_id), int(tok.get_vocab_size(with_added_tokens=True)))
    return tok, info


# ---------------------------------------------------------------------------------------------
# Readers: produce work chunks; parsing happens in the workers so it runs in parallel.
# ---------------------------------------------------------------------------------------------

# A chunk is (file, first line number, kind, payload): kind "jsonl" carries whole lines (bytes),
# kind "text" carries a list of already-extracted strings.
Chunk = tuple[str, int, str, object]


def _jsonl_chunks(path: Path) -> Iterator[Chunk]:
    """~1 MB blocks of whole lines. The main process only cuts at newlines (C speed); the
    workers split and parse, so reading never becomes the serial bottleneck."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            carry, first = b"", 1
            while True:
                block = fh.read(_CHUNK_BYTES)
                if not block:
                    break
                cut = block.rfind(b"\n") + 1
                if cut == 0:  # a line longer than the block: keep reading
                    carry += block
                    continue
                blob, carry = carry + block[:cut], block[cut:]
                yield (str(path), first, "jsonl", blob)
                first += blob.count(b"\n")
            if carry.strip():
                yield (str(path), first, "jsonl", carry)
    except (OSError, EOFError) as e:  # truncated gzip, unreadable file
        raise PackError(f"{path}: cannot read ({e})") from e


def _parquet_chunks(path: Path, text_field: str) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise PackError(f"{path}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
    first = 1
    for batch in pf.iter_batches(batch_size=4096, columns=[text_field]):
        texts = batch.column(0).to_pylist()
        yield (str(path), first, "text", texts)
        first += len(texts)


def iter_chunks(files: Sequence[Path], text_field: str) -> Iterator[Chunk]:
    for f in files:
        if f.name.endswith(".parquet"):
            yield from _parquet_chunks(f, text_field)
        elif f.name.endswith(".txt"):
            yield (str(f), 1, "text", [f.read_text(encoding="utf-8")])
        else:
            yield from _jsonl_chunks(f)


def _texts_of(chunk: Chunk, text_field: str) -> list[str]:
    path, first, kind, payload = chunk
    if kind == "text":
        texts = payload
    else:
        lines = payload.split(b"\n")
        try:
            # One json.loads over the whole chunk is about twice as fast as one per line.
            records = json.loads(b"[" + b",".join(ln for ln in lines if ln.strip()) + b"]")
        except (json.JSONDecodeError, UnicodeDecodeError):
            records = []
            for i, ln in enumerate(lines):
                if not ln.strip():
                    continue
                try:
                    records.append(json.loads(ln))
                except json.JSONDecodeError as e:
                    raise PackError(f"{path}:{first + i}: invalid JSON ({e.msg})") from None
                except UnicodeDecodeError:
                    raise PackError(f"{path}:{first + i}: not valid UTF-8") from None
        try:
            texts = [r[text_field] for r in records]
        except (KeyError, TypeError):
            raise PackError(f"{path}: a record near line {first} has no {text_field!r} field") from None
    for t in texts:
        if not isinstance(t, str):
            raise PackError(
                f"{path}: a {text_field!r} value near line {first} is {type(t).__name__}, not text"
            )
    return texts


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

_worker: dict = {}


def _init_worker(tokenizer_dir: str, text_field: str, threads: bool) -> None:
    if not threads:
        # Parallelism comes from the processes; tokenizers' own thread pool would oversubscribe.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok, info = load_tokenizer(tokenizer_dir)
    _worker.update(tok=tok, info=info, text_field=text_field)


def _encode_chunk(chunk: Chunk) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Chunk -> (flat tokens with EOS after each document, lengths, text bytes, max id)."""
    tok, info = _worker["tok"], _worker["info"]
    texts = _texts_of(chunk, _worker["text_field"])
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets packing never needs.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    encs = encode(texts, add_special_tokens=False)
    ids = [e.ids for e in encs]
    for doc in ids:
        doc.append(info.eos_id)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    max_id = int(flat.max()) if len(flat) else -1
    return flat, lengths, nbytes, max_id


# ---------------------------------------------------------------------------------------------
# pack()
# ---------------------------------------------------------------------------------------------


def pack(
    inputs: Sequence[str | os.PathLike],
    tokenizer_dir: str | os.PathLike,
    out_prefix: str | os.PathLike,
    num_proc: int = 1,
    text_field: str = "text",
    progress: bool = True,
) -> dict:
    """Tokenize every document of ``inputs`` and write ``OUT.bin``, ``OUT.idx``, ``OUT.report.json``.

    Documents keep their input order (files sorted within a directory), so packing is
    reproducible and independent of ``num_proc``. Empty documents are kept as a lone EOS so
    that document ``i`` of the output is record ``i`` of the input. Returns the report.
    """
    t0 = time.perf_counter()
    files = find_inputs(inputs)
    _, info = load_tokenizer(tokenizer_dir)
    dtype = best_dtype(info.vocab_size)
    out = str(out_prefix)
    writer = IndexedDatasetWriter(out, dtype)
    n_docs = n_tokens = n_bytes = n_empty = 0
    max_id = -1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=f"pack {Path(out).name}", unit=" docs", unit_scale=True, mininterval=1.0)

    def consume(result: tuple[np.ndarray, np.ndarray, int, int]) -> None:
        nonlocal n_docs, n_tokens, n_bytes, n_empty, max_id
        flat, lengths, nbytes, mid = result
        writer.add_documents(flat, lengths)
        n_docs += len(lengths)
        n_tokens += len(flat)
        n_bytes += nbytes
        n_empty += int((lengths == 1).sum())
        max_id = max(max_id, mid)
        if bar is not None:
            bar.update(len(lengths))
            bar.set_postfix(tokens=f"{n_tokens:,}", refresh=False)

    try:
        chunks = iter_chunks(files, text_field)
        if num_proc <= 1:
            _init_worker(str(tokenizer_dir), text_field, threads=True)
            for chunk in chunks:
                consume(_encode_chunk(chunk))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
            with ProcessPoolExecutor(
                num_proc, ctx, _init_worker, (str(tokenizer_dir), text_field, False)
            ) as pool:
                # Bounded window of in-flight chunks: reading never runs ahead of tokenizing,
                # so memory stays flat, and results are consumed in input order.
                window: deque[Future] = deque()
                for chunk in chunks:
                    window.append(pool.submit(_encode_chunk, chunk))
                    if len(window) >= 2 * num_proc:
                        consume(window.popleft().result())
                while window:
                    consume(window.popleft().result())
        if max_id >= info.vocab_size:
            raise PackError(
                f"{tokenizer_dir}: produced token id {max_id} >= vocabulary size {info.vocab_size}"
            )
        writer.finish()
    except BaseException:
        writer.abort()
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
        "dtype": str(dtype),
        "bin": str(bin_path(out)),
        "idx": str(idx_path(out)),
        "documents": n_docs,
        "empty_documents": n_empty,
        "tokens": n_tokens,
        "text_bytes": n_bytes,
        "bytes_per_token": round(n_bytes / max(n_tokens - n_docs, 1), 4),
        "tokens_per_document": round(n_tokens / max(n_docs, 1), 2),
        "num_proc": num_proc,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(n_tokens / seconds, 1) if seconds > 0 else None,
        "documents_per_second": round(n_docs / seconds, 1) if seconds > 0 else None,
    }
    Path(f"{out}.report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report
