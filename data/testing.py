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


def english_help_paragraphs(max_bytes: int, path: str | os.PathLike | None = None) -> list[str]:
    """English text without any Hangul: the lines of the LibreOffice help pages
    (``raw/libreoffice_help_ko.jsonl.gz``) that hold no Hangul and read as English (4+ words),
    tags stripped, each line once; one document per page, until ``max_bytes`` characters."""
    import html
    import re

    hangul = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
    docs: list[str] = []
    seen: set[str] = set()
    size = 0
    with gzip.open(path or corpus_dir() / "raw" / "libreoffice_help_ko.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            body = html.unescape(re.sub(r"<[^>]+>", "\n", json.loads(line)["text"]))
            lines = [s.strip() for s in body.split("\n")]
            lines = [s for s in lines if s and s not in seen and not hangul.search(s)
                     and len(re.findall(r"[A-Za-z]{2,}", s)) >= 4]
            seen.update(lines)
            if lines:
                docs.append("\n".join(lines))
                size += sum(len(s) for s in lines)
                if size >= max_bytes:
                    break
    return docs


def train_on_windows(model, data, steps: int, opt, seed: int = 0, sched=None, batch: int = 16, window: int = 128):
    """Plain next-token training of ``model`` on ``steps`` batches of random ``window``-token
    slices of the token stream ``data`` (``batch`` x ``window`` tokens a step, slices drawn with
    ``seed``), stepping ``opt`` (and ``sched``). Used to make small trained models for tests and
    benchmarks."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,), generator=gen)
        rows = torch.stack([data[s : s + window + 1] for s in starts])  # (B, T + 1)
        logits = model(rows[:, :-1])  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model


def mix_in(texts: Sequence[str], pool: Sequence[str], budget_bytes: float, seed: int = 0) -> tuple[list[str], int, int]:
    """``texts`` plus the first documents of ``pool`` taken while fewer than ``budget_bytes`` UTF-8
    bytes of them are in, all shuffled with ``seed``: (mixed texts, documents taken, bytes taken).
    How the extend-vocab test, benchmark and demo give their stand-in English model a little Korean."""
    import random

    mixed, taken, size = list(texts), 0, 0
    for doc in pool:
        if size >= budget_bytes:
            break
        mixed.append(doc)
        taken, size = taken + 1, size + len(doc.encode())
    random.Random(seed).shuffle(mixed)
    return mixed, taken, size


def train_small_model(tokenizer_dir: str | os.PathLike, texts: Sequence[str], out: str | os.PathLike, steps: int,
                      seed: int = 0, warmup: int = 0) -> Path:
    """A 2-layer ``tiny`` GPT-NeoX (hidden 128, 256 positions) trained on ``texts`` with the
    tokenizer in ``tokenizer_dir`` (plain AdamW, lr 3e-3 after ``warmup`` linear steps, no weight
    decay, 16 x 128 tokens a step), saved with that tokenizer as a Hugging Face directory: the
    stand-in for an existing model in the extend-vocab tests, benchmark and demo."""
    import shutil

    import torch
    from tokenizers import Tokenizer

    from model import GPTNeoX, ModelConfig

    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size()
    data = token_stream(tokenizer_dir, texts)
    torch.manual_seed(seed)
    model = GPTNeoX(ModelConfig.from_name("tiny", num_layers=2, vocab_size=vocab, max_position_embeddings=256))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup)) if warmup else None
    train_on_windows(model, data, steps, opt, seed=seed, sched=sched)
    model.save_pretrained(str(out))
    for f in tokenizer_dir.iterdir():
        shutil.copy2(f, out / f.name)
    return out


def clean_document(text: str) -> str:
    """The cleaner's per-document steps with the default settings, for tests and benchmarks that
    need cleaned text without running `koneox clean` (its filters and dedup only drop documents)."""
    from data.clean import (
        CleanConfig,
        fix_unicode,
        html_to_text,
        mask_pii,
        normalize_whitespace,
        shorten_repeats,
        strip_markup,
    )

    cfg = CleanConfig()
    text = fix_unicode(text, cfg.unicode)
    text = html_to_text(text, cfg.html)
    text = strip_markup(text, cfg.markup)
    text = normalize_whitespace(text, cfg.whitespace)
    text = shorten_repeats(text, cfg.repeats)
    return mask_pii(text, cfg.pii)[0]


def token_stream(tokenizer_dir: str | os.PathLike, texts: Sequence[str]):
    """``texts`` encoded with the tokenizer in ``tokenizer_dir``, each followed by
    ``<|endoftext|>``, as one 1-D tensor (how packing lays documents out)."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    eos = tok.token_to_id(EOS)
    stream: list[int] = []
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        stream += [*enc.ids, eos]
    return torch.tensor(stream)
