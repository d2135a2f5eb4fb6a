"""Add another byte-level BPE's tokens to a byte-level BPE, as merges applied after its own.

A model's tokenizer M (GPT-NeoX/Pythia, Polyglot-Ko, Llama-3 style: byte-level BPE) gets the
tokens of a source tokenizer S (a koneox tokenizer, or any byte-level BPE) that M lacks. They
are *merges*, not added tokens matched as whole strings, so BPE reaches them inside any text::

    M's merges (ranks 0 .. m-1)  |  appended merges (ranks m ..) that make the new tokens
    old tokens, old ids          |  new tokens, ids from max(M's ids) + 1 on

BPE applies the applicable merge of lowest rank first, and no old merge involves a new token,
so encoding with the extended tokenizer is: M's encoding, then appended merges joining M's
pieces. Every new token is therefore a run of M's pieces of the same text.

**Which tokens.** Candidates are S's merge results absent from M. Under ``script="hangul"``
(the default) only *Hangul-anchored* tokens are candidates: those whose bytes can occur only
in text that holds a Hangul character (``hangul_anchored``). An appended merge produces its
token's bytes, so in text without Hangul none of them ever applies and every id is the same as
before: English, code, numbers, Chinese, Japanese. Tokens are in the GPT-2 byte alphabet
(``byte_symbols``) and may hold part of a UTF-8 character; such a token is anchored when a
character it holds whole is Hangul, or when the start of a character it ends with can only be
a Hangul character's (``EB``, ``EC``, ``ED`` lead bytes; ``EA B0``..``EA BF``; ...). A token of
continuation bytes alone (``B0 80``, the end of 가 and of 䰀) is never anchored: it would change
Chinese text. ``script="any"`` takes every candidate (text of any script may then change).

**Order and reachability.** Candidates are taken most useful first (S's merge rank, or a
frequency ranking from ``token_frequencies``), each after the parts S built it from, so the
new tokens mirror S's structure. For each one the current encoding of its bytes (M's merges
and those appended so far, ``bpe``) gives pieces q1..qk; k = 2 appends the merge (q1, q2). For
k > 2 (a part was not anchored, or M's pieces split the bytes differently than S's) the pieces
are joined by a small binary tree of merges whose inner tokens are anchored too, preferring
inner tokens that S has; those inner tokens are added as well. A token needing more than
``MAX_PIECES`` pieces, or for which no such tree exists, is unreachable and left out.
Appending merges never changes how an earlier added token's bytes encode (the merges that
built it all rank before the new ones), so each added token encodes alone as itself;
``check_reachable`` verifies that with the real tokenizer.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

SCRIPTS = ("hangul", "any")
MAX_PIECES = 6
"""Most pieces a candidate may need joining (binary trees over 6 pieces: 42 to try)."""
HANGUL_BLOCKS = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xAC00, 0xD7FF),  # Hangul Syllables (to D7AF) and Jamo Extended-B
    (0xFFA0, 0xFFDC),  # halfwidth Hangul jamo
)
_SURROGATES = (0xD800, 0xDFFF)
PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog. It's 3:45 p.m. on 2024-03-01.",
    "def extend(vocab: dict[str, int]) -> None:\n    return {k: v + 1 for k, v in vocab.items()}  # ok\n",
    "if (x >= 0x7F && y != NULL) { printf(\"%d\\n\", x); }\n\tfor i in range(10): pass",
    "Price: $1,299.99 (−15%) | 12345678901234567890 | 3.14159e-10 | 1/2 + ¾ = 1¼",
    "https://example.com/path?q=korean+tokenizer&lang=en#section-2 user@example.org",
    "Ελληνικά, Русский язык, français, Deutsch: Größe, naïve café, Ærøskøbing",
    "日本語のテキストとカタカナ、中文文本和标点。䰀 丁 七",
    "ꀀꀁꀂ ꔀ Ꙁ ꙮ ꜰ 😀🎉👍🏽 ∑∫√∞ ≤≥ →←",
    "     indented    with   runs of spaces\n\n\nand blank lines\r\n",
)
"""Text without Hangul that must encode exactly as before under ``script="hangul"``: English,
code, numbers, URLs, other scripts, and characters whose UTF-8 shares lead or continuation
bytes with Hangul (Yi and other EA-led blocks, CJK ideographs, emoji)."""


class VocabExtensionError(ValueError):
    """A tokenizer that is not a byte-level BPE, or options that cannot be honoured."""


# -- bytes and scripts ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """The GPT-2 byte-level alphabet: the character that stands for each byte 0..255.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves; the
    other 68 take U+0100 onwards in byte order (space is ``Ġ``, newline ``Ċ``)."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(0x100 + extra))
            extra += 1
    return tuple(out)


@lru_cache(maxsize=1)
def _symbol_bytes() -> dict[str, int]:
    return {s: b for b, s in enumerate(byte_symbols())}


def token_bytes(token: str) -> bytes:
    """The bytes a byte-level token stands for (``ĠìĺģíĻĶ`` -> b' \\xec\\x98\\x81\\xed\\x99\\x94')."""
    table = _symbol_bytes()
    try:
        return bytes(table[c] for c in token)
    except KeyError as e:
        raise VocabExtensionError(f"token {token!r}: {e.args[0]!r} is not a byte-level symbol") from None


def _is_hangul(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in HANGUL_BLOCKS)


def _span_is_hangul(lo: int, hi: int) -> bool:
    """Every valid code point in [lo, hi] is in a Hangul block (and there is at least one)."""
    spans = [(lo, hi)]
    s_lo, s_hi = _SURROGATES
    if lo <= s_hi and hi >= s_lo:  # surrogates never occur in UTF-8 text
        spans = [s for s in ((lo, s_lo - 1), (s_hi + 1, hi)) if s[0] <= s[1]]
    return bool(spans) and all(any(b_lo <= a and b <= b_hi for b_lo, b_hi in HANGUL_BLOCKS) for a, b in spans)


def _char_length(lead: int) -> int:
    """UTF-8 length of a character from its first byte (0 for a continuation byte)."""
    if lead < 0x80:
        return 1
    if lead < 0xC0:
        return 0
    return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _code_points(prefix: bytes, length: int) -> tuple[int, int]:
    """Lowest and highest code point whose UTF-8 encoding (``length`` bytes) starts with ``prefix``."""
    pad = length - len(prefix)
    value_lo = prefix[0] & (0x7F >> length) if length > 1 else prefix[0]
    value_hi = value_lo
    for b in prefix[1:]:
        value_lo = value_lo << 6 | (b & 0x3F)
        value_hi = value_hi << 6 | (b & 0x3F)
    for _ in range(pad):
        value_lo, value_hi = value_lo << 6, value_hi << 6 | 0x3F
    floor = {1: 0, 2: 0x80, 3: 0x800, 4: 0x10000}[length]  # shorter forms would be overlong
    return max(value_lo, floor), min(value_hi, 0x10FFFF)


def hangul_anchored(data: bytes) -> bool:
    """True when any UTF-8 text holding ``data`` holds a Hangul character.

    ``data`` may start inside a character and end inside one (a byte-level token). It is
    anchored when a character that starts in it is Hangul whole, or, cut off at the end, can
    only be the start of a Hangul character (``b'\\xeb'`` is U+B000..U+BFFF; ``b'\\xea'`` alone is
    not: Yi and Vai start with it too). Bytes before the first lead byte could end any character
    and anchor nothing."""
    i = 0
    while i < len(data):
        n = _char_length(data[i])
        if n == 0:  # continuation bytes of a character that started before the token
            i += 1
            continue
        char = data[i : i + n]
        if any(_char_length(b) != 0 for b in char[1:]):  # not a well-formed start: cannot occur
            i += 1
            continue
        if n > 1 and _span_is_hangul(*_code_points(char, n)):
            return True
        i += len(char)
    return False


def strip_hangul(text: str) -> str:
    """``text`` with its Hangul characters removed (a text of every other script it had)."""
    return "".join(c for c in text if not _is_hangul(ord(c)))


# -- reading tokenizers ---------------------------------------------------------------------------


def load_tokenizer_json(path: str | os.PathLike) -> dict[str, Any]:
    """The ``tokenizer.json`` of a directory (or that file itself) as a dict. A directory with
    only the older files (vocab.json + merges.txt) is read through ``transformers``."""
    path = Path(path)
    file = path if path.is_file() else path / "tokenizer.json"
    if file.is_file():
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise VocabExtensionError(f"{file}: invalid JSON ({e})") from e
    if not path.is_dir():
        raise VocabExtensionError(f"{path}: no such tokenizer directory or tokenizer.json")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # any file set transformers cannot read
        raise VocabExtensionError(f"{path}: no tokenizer.json, and transformers cannot load a tokenizer "
                                  f"from it ({type(e).__name__}: {e})") from e
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise VocabExtensionError(f"{path}: {type(tok).__name__} is not a fast (tokenizers) tokenizer")
    return json.loads(backend.to_str())


def _has_byte_level(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("type") == "ByteLevel" or any(_has_byte_level(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_byte_level(v) for v in node)
    return False


@dataclass
class BPE:
    """The BPE model of a tokenizer.json: vocabulary, merges in rank order, added tokens."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    added: dict[str, int]
    """Added tokens (specials and others matched as whole strings): content -> id."""

    @classmethod
    def of(cls, data: dict[str, Any], where: str) -> BPE:
        """Refuses a tokenizer that is not byte-level BPE, naming ``where``."""
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise VocabExtensionError(f"{where}: model type {model.get('type')!r}, not a BPE")
        if not _has_byte_level(data.get("pre_tokenizer")):
            raise VocabExtensionError(f"{where}: no ByteLevel pre-tokenizer: not a byte-level BPE (a SentencePiece "
                                      "BPE with byte fallback, as Llama 2 uses, cannot be extended this way)")
        vocab = dict(model.get("vocab") or {})
        missing = [s for s in byte_symbols() if s not in vocab]
        if missing:
            raise VocabExtensionError(f"{where}: {len(missing)} of the 256 byte-level symbols are not in the "
                                      f"vocabulary (e.g. {missing[:3]}): not a byte-level BPE")
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
        added = {t["content"]: int(t["id"]) for t in data.get("added_tokens") or []}
        return cls(vocab, merges, added)  # type: ignore[arg-type]

    def ranks(self) -> dict[tuple[str, str], int]:
        return {pair: r for r, pair in enumerate(self.merges)}

    def next_id(self) -> int:
        return max([*self.vocab.values(), *self.added.values()]) + 1


def bpe(
    symbols: Sequence[str], ranks: dict[tuple[str, str], int], more: dict[tuple[str, str], int] | None = None
) -> list[str]:
    """BPE of one pre-token: join the adjacent pair of lowest rank (the leftmost on a tie) until
    none has a rank, as ``tokenizers`` does. ``symbols``: byte-level characters or tokens;
    ``more``: ranks of tentative merges, looked up after ``ranks``."""
    pieces = list(symbols)
    more = more or {}
    while len(pieces) > 1:
        best, at = None, -1
        for i in range(len(pieces) - 1):
            pair = (pieces[i], pieces[i + 1])
            r = ranks.get(pair, more.get(pair))
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        pieces[at : at + 2] = [pieces[at] + pieces[at + 1]]
    return pieces


# -- choosing candidates --------------------------------------------------------------------------


def token_frequencies(source: dict[str, Any], docs: Iterable[str], batch_docs: int = 1024) -> Counter[str]:
    """How often each token of the source tokenizer occurs when it encodes ``docs``."""
    tok = Tokenizer.from_str(json.dumps(source))
    id_to_token = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    counts: Counter[int] = Counter()
    batch: list[str] = []

    def flush() -> None:
        for enc in tok.encode_batch(batch, add_special_tokens=False):
            counts.update(enc.ids)
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) >= batch_docs:
            flush()
    flush()
    return Counter({id_to_token[i]: n for i, n in counts.items()})


def ranked_candidates(
    base: BPE,
    source: BPE,
    script: str = "hangul",
    frequencies: Counter[str] | None = None,
    min_frequency: int = 1,
) -> tuple[list[str], dict[str, int]]:
    """The source's tokens worth adding, most useful first, and counts of what was left out.

    Candidates: results of the source's merges that ``base`` lacks (neither in its vocabulary nor
    among its added tokens); under ``script="hangul"`` only Hangul-anchored ones. Order: the
    source's merge rank, or with ``frequencies`` (from ``token_frequencies``) by *uses*, most
    first (ties by merge rank), dropping those used fewer than ``min_frequency`` times. A token's
    uses are its own occurrences plus those of every token built on it: a part such as ``영``
    rarely stands alone but is needed by ``영화``, ``영상`` ...; ranking by own occurrences
    would spend the budget on long words, each dragging in parts of its own."""
    if script not in SCRIPTS:
        raise VocabExtensionError(f"script {script!r}: choose from {', '.join(SCRIPTS)}")
    rank: dict[str, int] = {}
    parts: dict[str, tuple[str, str]] = {}
    for r, (left, right) in enumerate(source.merges):
        rank.setdefault(left + right, r)
        parts.setdefault(left + right, (left, right))
    absent = [t for t in rank if t not in base.vocab and t not in base.added]
    kept = [t for t in absent if script == "any" or hangul_anchored(token_bytes(t))]
    counts = {"source_merge_results": len(rank), "absent_from_model": len(absent),
              "left_out_by_script": len(absent) - len(kept), "candidates": len(kept)}
    if frequencies is None:
        return kept, counts
    uses = Counter(frequencies)
    for token, (left, right) in reversed(parts.items()):  # a token's total is complete before its parts get it
        if uses[token]:
            uses[left] += uses[token]
            uses[right] += uses[token]
    frequent = [t for t in kept if uses[t] >= min_frequency]
    counts["below_min_frequency"] = len(kept) - len(frequent)
    return sorted(frequent, key=lambda t: (-uses[t], rank[t])), counts


# -- extending ------------------------------------------------------------------------------------


@dataclass
class Extension:
    """The extended tokenizer and what was added."""

    tokenizer_json: dict[str, Any]
    """M's tokenizer.json with the new vocabulary entries and merges (everything else as it was)."""
    added: list[str]
    """New tokens in id order: ``first_id``, ``first_id + 1``, ..."""
    first_id: int
    merges: list[tuple[str, str]]
    """Appended merges, in rank order after M's."""
    from_source: int
    """How many of ``added`` are tokens of the source (the rest are inner tokens needed to reach them)."""
    unreachable: list[str] = field(default_factory=list)
    """Candidates that could not be reached by appended merges, and were left out."""
    capped: bool = False
    """True when ``num_new`` stopped the extension before the candidates ran out."""

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_str(json.dumps(self.tokenizer_json))

    @property
    def vocab_size(self) -> int:
        return self.first_id + len(self.added)


def _trees(pieces: Sequence[str], lo: int, hi: int) -> Iterator[list[tuple[str, str]]]:
    """Every binary tree joining pieces[lo:hi], as its merges in post-order (children first)."""
    if hi - lo == 1:
        yield []
        return
    for mid in range(lo + 1, hi):
        left, right = "".join(pieces[lo:mid]), "".join(pieces[mid:hi])
        for a in _trees(pieces, lo, mid):
            for b in _trees(pieces, mid, hi):
                yield [*a, *b, (left, right)]


class _Builder:
    def __init__(self, base: BPE, source: BPE, script: str, num_new: int | None):
        self.vocab = dict(base.vocab)
        self.ranks = base.ranks()
        self.source_tokens = set(source.vocab)
        self.script = script
        self.num_new = num_new
        self.next_id = base.next_id()
        self.first_id = self.next_id
        self.added: list[str] = []
        self.merges: list[tuple[str, str]] = []
        self.unreachable: list[str] = []
        self.capped = False

    def allowed(self, token: str) -> bool:
        return self.script == "any" or hangul_anchored(token_bytes(token))

    def _plans(self, token: str, pieces: list[str]) -> list[list[tuple[str, str]]]:
        """Trees joining ``pieces`` whose every merge result is allowed, fewest new tokens first,
        then fewest new tokens the source lacks. (A result M has already is no exception: a new
        merge making an old English token from other pieces would change English text.)"""
        scored = []
        for k, merges in enumerate(_trees(pieces, 0, len(pieces))):
            if all(self.allowed(a + b) for a, b in merges):
                inner = {a + b for a, b in merges[:-1] if a + b not in self.vocab}
                scored.append((len(inner), len(inner - self.source_tokens), k, merges))
        return [m for *_, m in sorted(scored, key=lambda s: s[:3])]

    def add(self, token: str) -> bool:
        """Append merges that make ``token`` reachable; False when it is not (or the cap is hit)."""
        if token in self.vocab:
            return True
        pieces = bpe(token, self.ranks)
        if len(pieces) > MAX_PIECES:
            self.unreachable.append(token)
            return False
        for plan in self._plans(token, pieces):
            # a tree may join the same pair twice, or one M (or an earlier token) already merges
            merges = [m for m in dict.fromkeys(plan) if m not in self.ranks]
            new = list(dict.fromkeys(a + b for a, b in merges if a + b not in self.vocab))
            if self.num_new is not None and len(self.added) + len(new) > self.num_new:
                self.capped = True
                return False
            tentative = {pair: len(self.ranks) + k for k, pair in enumerate(merges)}
            if bpe(token, self.ranks, tentative) != [token]:  # the tree's merges fire in another order
                continue
            self.ranks.update(tentative)
            self.merges += merges
            for t in new:
                self.vocab[t] = self.next_id
                self.next_id += 1
                self.added.append(t)
            return True
        self.unreachable.append(token)
        return False


def extend_bpe(
    base_json: dict[str, Any],
    source_json: dict[str, Any],
    order: Sequence[str],
    script: str = "hangul",
    num_new: int | None = None,
    where: tuple[str, str] = ("model tokenizer", "source tokenizer"),
) -> Extension:
    """Append merges to ``base_json`` for the tokens of ``order`` (from ``ranked_candidates``),
    each after the source's parts of it that are candidates too; at most ``num_new`` new
    vocabulary entries (parts and inner tokens included)."""
    base, source = BPE.of(base_json, where[0]), BPE.of(source_json, where[1])
    if num_new is not None and num_new < 0:
        raise VocabExtensionError(f"num_new {num_new}: must be >= 0")
    parts: dict[str, tuple[str, str]] = {}
    for left, right in source.merges:
        parts.setdefault(left + right, (left, right))
    allowed = {t for t in parts if t not in base.vocab and t not in base.added}
    if script == "hangul":
        allowed = {t for t in allowed if hangul_anchored(token_bytes(t))}
    builder = _Builder(base, source, script, num_new)
    done: set[str] = set()

    def visit(token: str) -> None:
        # post-order over the source's merge tree, iteratively (long tokens have deep trees)
        stack = [(token, False)]
        while stack and not builder.capped:
            t, expanded = stack.pop()
            if t in done:
                continue
            if expanded:
                done.add(t)
                builder.add(t)
                continue
            stack.append((t, True))
            for part in reversed(parts.get(t, ())):
                if part in allowed and part not in done:
                    stack.append((part, False))

    for token in order:
        if builder.capped:
            break
        if token in allowed:
            visit(token)
    out = copy.deepcopy(base_json)
    model = out["model"]
    model["vocab"] = {**model["vocab"], **{t: base.next_id() + k for k, t in enumerate(builder.added)}}
    as_strings = bool(model.get("merges")) and isinstance(model["merges"][0], str)
    model["merges"] = list(model.get("merges") or []) + [f"{a} {b}" if as_strings else [a, b]
                                                         for a, b in builder.merges]
    return Extension(
        tokenizer_json=out,
        added=builder.added,
        first_id=builder.first_id,
        merges=builder.merges,
        from_source=sum(t in source.vocab for t in builder.added),
        unreachable=builder.unreachable,
        capped=builder.capped,
    )


def old_pieces(base_json: dict[str, Any], tokens: Sequence[str]) -> list[list[int]]:
    """For each token, the ids of the pieces M's own tokenizer makes of its bytes."""
    base = BPE.of(base_json, "model tokenizer")
    ranks = base.ranks()
    return [[base.vocab[p] for p in bpe(t, ranks)] for t in tokens]


# -- checks ---------------------------------------------------------------------------------------


def check_reachable(ext: Extension) -> dict[str, Any]:
    """Encode each added token alone and count those that come out as that one token: with the
    real tokenizer when its bytes are whole UTF-8 text, else (a part holding a partial
    character, which no text is) with ``bpe`` over the extended merges."""
    tok = ext.tokenizer()
    ranks = {pair: r for r, pair in enumerate(BPE.of(ext.tokenizer_json, "extended tokenizer").merges)}
    text_ids, texts, failed = [], [], []
    partial = partial_ok = 0
    for k, token in enumerate(ext.added):
        try:
            texts.append(token_bytes(token).decode("utf-8"))
            text_ids.append(ext.first_id + k)
        except UnicodeDecodeError:
            partial += 1
            if bpe(token, ranks) == [token]:
                partial_ok += 1
            else:
                failed.append(token)
    encoded = tok.encode_batch(texts, add_special_tokens=False) if texts else []
    text_ok = 0
    for tid, enc in zip(text_ids, encoded, strict=True):
        if enc.ids == [tid]:
            text_ok += 1
        else:
            failed.append(ext.added[tid - ext.first_id])
    return {
        "added": len(ext.added),
        "reachable": text_ok + partial_ok,
        "text_tokens": len(texts),
        "text_tokens_reachable_by_encoding": text_ok,
        "partial_character_tokens": partial,
        "partial_character_tokens_reachable": partial_ok,
        "not_reachable": [decode_token(t) for t in failed[:20]],
    }


def decode_token(token: str) -> str:
    """A token as readable text (partial characters as U+FFFD), for reports."""
    return token_bytes(token).decode("utf-8", "replace")


def changed_documents(old: Tokenizer, new: Tokenizer, docs: Sequence[str]) -> dict[str, Any]:
    """How many of ``docs`` get other ids from ``new`` than from ``old``."""
    changed = []
    for k in range(0, len(docs), 1024):
        batch = list(docs[k : k + 1024])
        before = old.encode_batch(batch, add_special_tokens=False)
        after = new.encode_batch(batch, add_special_tokens=False)
        changed += [k + i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a.ids != b.ids]
    return {"documents": len(docs), "changed": len(changed),
            "changed_fraction": len(changed) / len(docs) if docs else 0.0,
            "changed_examples": [docs[i][:80] for i in changed[:3]]}
