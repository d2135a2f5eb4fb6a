"""Fertility of a tokenizer on documents: measures that compare across vocabularies.

    tokens per word  = tokens / whitespace-separated words   (lower is better)
    bytes per token  = UTF-8 bytes / tokens                   (higher is better)

Both count the documents' own tokens (no special tokens), so two tokenizers of different sizes
compare on the same text; bits per byte (train/eval/bpb.py) is the model-side counterpart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` of a transformers fast tokenizer, of koneox's evaluation
    tokenizer (``train.eval.fast_load.Tokenizer``), or the tokenizer itself."""
    for attr in ("backend_tokenizer", "backend"):
        inner = getattr(tokenizer, attr, None)
        if inner is not None and hasattr(inner, "encode_batch"):
            return inner
    return tokenizer


def fertility(tokenizer: Any, docs: Iterable[str], batch_docs: int = 1024) -> dict[str, float | int]:
    """Tokens per whitespace word and bytes per token of ``tokenizer`` over ``docs``."""
    backend = _backend(tokenizer)
    n_docs = n_words = n_tokens = n_bytes = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal n_tokens
        n_tokens += sum(len(e.ids) for e in backend.encode_batch(batch, add_special_tokens=False))
        batch.clear()

    for doc in docs:
        n_docs += 1
        n_words += len(doc.split())
        n_bytes += len(doc.encode("utf-8"))
        batch.append(doc)
        if len(batch) >= batch_docs:
            flush()
    flush()
    return {
        "documents": n_docs,
        "words": n_words,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "tokens_per_word": n_tokens / n_words if n_words else 0.0,
        "bytes_per_token": n_bytes / n_tokens if n_tokens else 0.0,
    }
