"""Bits per byte of a model on documents (``koneox eval MODEL --bpb FILE_OR_DIR``).

    bpb = (sum over documents of -log p(document)) / ln 2 / (sum of the documents' UTF-8 bytes)

Bits per byte compares models with different tokenizers: the denominator is the text, not
the tokens. Inputs are what ``koneox clean`` and the tokenizer trainer read (tokenizer/reader.py):
.jsonl[.gz] (field ``text``), .txt (one document per file), .parquet, a saved ``datasets``
directory, or a directory of those (a ``koneox clean`` output must be complete). Each path is
read once even if named twice; empty documents are skipped.

Each document is tokenized alone (no special tokens) and its first token is conditioned on the
prefix token: EOS by default (else BOS), because packing puts EOS between documents, so that is
how a koneox model saw every document start in training and a BOS it never saw would only add
noise to each document's first token. ``prefix="bos"`` (BOS, else EOS) is the harness's choice
for rolling log-likelihoods, for models trained with a BOS at each document start. A document
longer than the model window W is scored with a sliding window of stride S (default W // 2)::

    sequence   p t1 t2 ... tn                 (p = prefix token)
    window 0   input p..t(W-1)       scores t1..tW        (all of them)
    window k   input t(kS)..t(kS+W-1) scores the targets not scored yet (the last S)

so every token is predicted exactly once, each with at least W - S tokens of context after the
first window. The windows of many documents are batched together (train/eval/scoring.py).
``limit_bytes``: documents are taken in order until their bytes reach the limit (the last one
whole, so the total may pass it by less than one document).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from train.eval.kobest_data import sha256_file
from train.eval.scoring import loglikelihoods, prefix_token_id, resolve_max_length
from train.eval.templates import EvalError

# windows scored per call of the scorer (bounds the memory of token lists for large corpora)
_CHUNK_WINDOWS = 2048


def windows(tokens: Sequence[int], prefix: int, window: int, stride: int) -> Iterator[tuple[list[int], list[int]]]:
    """(context, continuation) token lists that score every token of ``tokens`` exactly once."""
    if not 0 < stride <= window:
        raise EvalError(f"stride {stride} must be in 1..window ({window})")
    full = [prefix, *tokens]
    begin, scored = 0, 1  # window start; index in `full` of the next target to score
    while scored < len(full):
        end = min(begin + window + 1, len(full))
        yield full[begin:scored], full[scored:end]
        scored, begin = end, begin + stride


def document_prefix_id(tokenizer: Any, prefix: str = "eos") -> int:
    """The id a document's first token is conditioned on: ``prefix`` ("eos" or "bos"), else the other."""
    if prefix not in ("eos", "bos"):
        raise EvalError(f"prefix {prefix!r}: use 'eos' or 'bos'")
    if prefix == "bos":
        return prefix_token_id(tokenizer)
    tid = tokenizer.eos_token_id
    return int(tid) if tid is not None else prefix_token_id(tokenizer)


def _documents(paths: Sequence[str | os.PathLike], text_field: str) -> Iterator[tuple[Path, str]]:
    from tokenizer.reader import InputError, expand_inputs, iter_records

    try:
        seen: set[Path] = set()
        for path in expand_inputs(paths):
            key = Path(path).resolve()
            if key in seen:
                continue
            seen.add(key)
            for _, _, text in iter_records(path, text_field):
                if text:
                    yield Path(path), text
    except InputError as e:
        raise EvalError(str(e)) from None


def bits_per_byte(
    model: Any,
    tokenizer: Any,
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    limit_bytes: int | None = None,
    batch_size: int | str = "auto",
    max_length: int | None = None,
    stride: int | None = None,
    text_field: str = "text",
    progress: bool = True,
    prefix: str = "eos",
) -> dict[str, Any]:
    """Bits per byte (and nats per token) of ``model`` on the documents of ``paths``.

    ``prefix``: the token each document is conditioned on, ``"eos"`` or ``"bos"`` (the other one
    when the tokenizer lacks it).
    """
    start = time.perf_counter()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    window = int(max_length or resolve_max_length(model, tokenizer))
    stride = int(stride or max(1, window // 2))
    prefix_id = document_prefix_id(tokenizer, prefix)
    if limit_bytes is not None and limit_bytes <= 0:
        raise EvalError(f"limit_bytes {limit_bytes}: must be positive")

    nats = 0.0
    n_bytes = n_tokens = n_docs = n_windows = 0
    files: dict[Path, int] = {}
    pending: list[tuple[list[int], list[int]]] = []

    def flush() -> None:
        nonlocal nats, n_windows
        if pending:
            nats -= float(loglikelihoods(model, pending, window, batch_size, progress=progress,
                                         desc=f"bpb ({n_docs} docs)").sum())
            n_windows += len(pending)
            pending.clear()

    for path, text in _documents(paths, text_field):
        if limit_bytes is not None and n_bytes >= limit_bytes:
            break
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        pending.extend(windows(ids, prefix_id, window, stride))
        n_docs += 1
        n_tokens += len(ids)
        n_bytes += len(text.encode("utf-8"))
        files[path] = files.get(path, 0) + 1
        if len(pending) >= _CHUNK_WINDOWS:
            flush()
    flush()
    if n_docs == 0:
        raise EvalError(f"{', '.join(map(str, paths))}: no non-empty documents")
    return {
        "bits_per_byte": nats / math.log(2) / n_bytes,
        "nats_per_token": nats / n_tokens,
        "token_perplexity": math.exp(min(nats / n_tokens, 700.0)),
        "nats": nats,
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes_per_token": n_bytes / n_tokens,
        "documents": n_docs,
        "windows": n_windows,
        "window": window,
        "stride": stride,
        "prefix": prefix,
        "prefix_token_id": prefix_id,
        "limit_bytes": limit_bytes,
        "files": [{"path": str(p), "sha256": sha256_file(p), "documents": n} if p.is_file()
                  else {"path": str(p), "documents": n} for p, n in files.items()],
        "seconds": round(time.perf_counter() - start, 2),
    }
