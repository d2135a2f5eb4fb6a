"""Document quality filter: returns the reason a document is dropped, or None to keep it.

Defaults (``FilterConfig``) start from the anchors in REFERENCE §3 (Polyglot's Korean
pipeline and Gopher) and were checked on ``../shared/corpus/raw``; the figures are printed
by ``python benchmarks/clean.py --filter-stats`` and quoted in the README section.
The main adaptation for Korean: Gopher's repetition rules only run on documents with at
least ``repetition_min_words`` words, because on short reviews one repeated eojeol already
makes up more than 20% of the characters (datatrove's rules dropped 89% of NSMC).
"""

from __future__ import annotations

import re
from collections import Counter

from data.clean.config import FilterConfig

_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")
# Letters of the scripts seen in Korean web text: Latin, Hangul, CJK, kana, Greek, Cyrillic.
_LETTER = re.compile(
    r"[A-Za-z\u00c0-\u024f\u0370-\u04ff\u1100-\u11ff\u3040-\u30ff\u3131-\u318e\u4e00-\u9fff\uac00-\ud7a3]"
)
_BULLET = re.compile(r"^\s*[•●◦○▪■□◆◇\-*·‣⁃]\s")
_ELLIPSIS_END = re.compile(r"(?:\.\.\.|…)\s*$")
_SYMBOLS = re.compile(r"#|\.\.\.|…")

REASONS: tuple[str, ...] = (
    "empty",
    "too_short",
    "too_long",
    "hangul_ratio",
    "symbol_ratio",
    "bullet_lines",
    "ellipsis_lines",
    "dup_line_ratio",
    "dup_line_char_ratio",
    "top_ngram",
    "dup_ngram",
)
"""Every reason ``quality_reason`` can return, in the order the rules are checked."""


def hangul_ratio(text: str) -> float:
    """Share of Hangul among letters of any script (digits, punctuation and spaces don't count)."""
    letters = len(_LETTER.findall(text))
    return len(_HANGUL.findall(text)) / letters if letters else 0.0


def _top_ngram_share(words: list[str], n: int, total_chars: int) -> float:
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0.0
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(len(w) for w in gram) * count / total_chars


def _dup_ngram_share(words: list[str], n: int, total_chars: int) -> float:
    """Characters covered by n-grams that occur more than once (overlaps counted once)."""
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            for j in range(i, i + n):
                covered[j] = True
        else:
            seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c) / total_chars


def repetition_reason(text: str, cfg: FilterConfig) -> str | None:
    """Gopher's line and word n-gram repetition rules (Rae et al. 2021, table A1)."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) > 1:
        seen: set[str] = set()
        dup_lines = dup_chars = 0
        for line in lines:
            if line in seen:
                dup_lines += 1
                dup_chars += len(line)
            seen.add(line)
        if dup_lines / len(lines) > cfg.max_dup_line_ratio:
            return "dup_line_ratio"
        if dup_chars / max(1, sum(len(line) for line in lines)) > cfg.max_dup_line_char_ratio:
            return "dup_line_char_ratio"
    words = text.split()
    total = sum(len(w) for w in words)
    for n, limit in zip((2, 3, 4), cfg.max_top_ngram_ratio, strict=False):
        if _top_ngram_share(words, n, total) > limit:
            return "top_ngram"
    for n, limit in zip(range(5, 11), cfg.max_dup_ngram_ratio, strict=False):
        if _dup_ngram_share(words, n, total) > limit:
            return "dup_ngram"
    return None


def quality_reason(text: str, cfg: FilterConfig | None = None, check_length: bool = True) -> str | None:
    """The first rule the document breaks (a name from ``REASONS``), or None to keep it.

    ``check_length=False`` skips ``too_short`` (used for documents that the join step may
    still merge into a longer one).
    """
    cfg = cfg or FilterConfig()
    stripped = text.strip()
    if not stripped:
        return "empty"
    n_chars = len(stripped) - stripped.count(" ") - stripped.count("\n")
    if check_length and n_chars < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    letters = len(_LETTER.findall(stripped))
    if letters >= 20 and len(_HANGUL.findall(stripped)) / letters < cfg.min_hangul_ratio:
        return "hangul_ratio"
    words = stripped.split()
    if len(_SYMBOLS.findall(stripped)) / len(words) > cfg.max_symbol_ratio and len(words) >= 10:
        return "symbol_ratio"
    lines = [line for line in stripped.split("\n") if line.strip()]
    if len(lines) >= 5:
        if sum(1 for line in lines if _BULLET.match(line)) / len(lines) > cfg.max_bullet_lines:
            return "bullet_lines"
        if sum(1 for line in lines if _ELLIPSIS_END.search(line)) / len(lines) > cfg.max_ellipsis_lines:
            return "ellipsis_lines"
    if len(words) >= cfg.repetition_min_words:
        return repetition_reason(stripped, cfg)
    return None
