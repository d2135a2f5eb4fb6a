"""How well a tokenizer compresses text and how often its tokens straddle morphemes.

Definitions (used in the report and the README):

- **bytes per token**: UTF-8 bytes of the held-out text divided by the number of tokens.
- **cross-morpheme token rate**: among tokens that cover at least one Hangul character,
  the share whose non-whitespace characters belong to two or more MeCab morphemes of that
  text (``지가`` in ``아버지|가``; also ``다.`` in ``했다|.``). Whitespace belongs to no
  morpheme, so a leading space (``␣영화``) never makes a token cross.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from tokenizer.morph import hangul_mask, morpheme_index


@dataclass
class TokenStats:
    """Per-token-id counts over a text sample, plus the two headline figures."""

    bytes: int
    tokens: int
    hangul_tokens: int
    cross_tokens: int
    hangul_count: np.ndarray
    """Per vocabulary id: occurrences covering Hangul."""
    cross_count: np.ndarray
    """Per vocabulary id: occurrences covering Hangul that straddle a morpheme boundary."""
    token_count: np.ndarray
    """Per vocabulary id: all occurrences."""

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens, 1)

    @property
    def cross_morpheme_rate(self) -> float:
        return self.cross_tokens / max(self.hangul_tokens, 1)

    def summary(self) -> dict[str, float | int]:
        return {
            "bytes": self.bytes,
            "tokens": self.tokens,
            "bytes_per_token": round(self.bytes_per_token, 4),
            "hangul_tokens": self.hangul_tokens,
            "cross_morpheme_tokens": self.cross_tokens,
            "cross_morpheme_rate": round(self.cross_morpheme_rate, 4),
        }


def measure(tokenizer: Tokenizer, marked_docs: Sequence[str], batch_docs: int = 2048) -> TokenStats:
    """Encode the original text of ``marked_docs`` (see ``tokenizer.morph``) and count."""
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    hangul_count = np.zeros(vocab, dtype=np.int64)
    cross_count = np.zeros(vocab, dtype=np.int64)
    token_count = np.zeros(vocab, dtype=np.int64)
    total_bytes = total_tokens = 0
    for lo in range(0, len(marked_docs), batch_docs):
        texts, id_arrays = zip(*(morpheme_index(m) for m in marked_docs[lo : lo + batch_docs]), strict=True)
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        # one long coordinate system for the whole batch: document k starts at base[k]
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        base = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        ids = np.concatenate(id_arrays)
        id_base = 0
        for k, arr in enumerate(id_arrays):  # make morpheme indices increase across documents
            if arr.size:
                ids[base[k] : base[k] + arr.size][arr >= 0] += id_base
                id_base += int(arr.max()) + 1
        hangul = np.concatenate([hangul_mask(t) for t in texts])
        n = ids.size
        # first morpheme at or after i, and last morpheme at or before i (whitespace skipped)
        pos = np.where(ids >= 0, np.arange(n), n)
        nxt_pos = np.minimum.accumulate(pos[::-1])[::-1]
        ids_ext = np.concatenate((ids, [np.iinfo(np.int64).max]))
        first_after = ids_ext[nxt_pos]
        pos = np.where(ids >= 0, np.arange(n), -1)
        prv_pos = np.maximum.accumulate(pos)
        last_before = np.where(prv_pos >= 0, ids[np.maximum(prv_pos, 0)], -1)
        hangul_cum = np.concatenate(([0], np.cumsum(hangul, dtype=np.int64)))

        token_ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
        offsets = np.concatenate(
            [np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) + base[k] for k, e in enumerate(encodings)]
        )
        starts, ends = offsets[:, 0], offsets[:, 1]
        nonempty = ends > starts
        s, e = starts[nonempty], ends[nonempty] - 1
        tid = token_ids[nonempty]
        covers_hangul = hangul_cum[e + 1] - hangul_cum[s] > 0
        crosses = covers_hangul & (first_after[s] < last_before[e])
        hangul_count += np.bincount(tid[covers_hangul], minlength=vocab)
        cross_count += np.bincount(tid[crosses], minlength=vocab)
        token_count += np.bincount(token_ids, minlength=vocab)
        total_tokens += token_ids.size
        total_bytes += sum(len(t.encode("utf-8")) for t in texts)
    return TokenStats(
        bytes=total_bytes,
        tokens=total_tokens,
        hangul_tokens=int(hangul_count.sum()),
        cross_tokens=int(cross_count.sum()),
        hangul_count=hangul_count,
        cross_count=cross_count,
        token_count=token_count,
    )
