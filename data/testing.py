"""Helpers shared by the data tests and ``benchmarks/pack.py``: real text, a tiny tokenizer.

Usage::

    from data.testing import corpus_dir, read_texts, train_tiny_tokenizer
    texts = read_texts(corpus_dir() / "raw" / "nsmc_reviews.jsonl.gz", limit=5000)
    train_tiny_tokenizer(texts, "runs/tiny_tok", vocab_size=2000)
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

EOS = "<|endoftext|>"


def corpus_dir() -> Path:
    """``../shared/corpus`` next to the repository (may not exist outside the project machines)."""
    return Path(__file__).resolve().parents[2] / "shared" / "corpus"


def read_texts(path: str | os.PathLike, limit: int | None = None, field: str = "text") -> list[str]:
    """First ``limit`` non-empty texts of a .jsonl(.gz), NFC-normalised as the cleaner leaves them."""
    opener = gzip.open if str(path).endswith(".gz") else open
    out: list[str] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            text = unicodedata.normalize("NFC", json.loads(line)[field]).strip()
            if text:
                out.append(text)
                if limit is not None and len(out) >= limit:
                    break
    return out


def write_jsonl_gz(texts: Sequence[str], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return path


def train_tiny_tokenizer(texts: Sequence[str], out_dir: str | os.PathLike, vocab_size: int = 2000) -> Path:
    """Byte-level BPE (GPT-NeoX style, ``<|endoftext|>`` = EOS) saved as a Hugging Face directory.

    Byte-level with no normaliser, so decoding gives back the exact input text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out = Path(out_dir)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS).save_pretrained(str(out))
    return out
