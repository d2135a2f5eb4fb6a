"""Escape literal special-token strings, so that text from a crawled page never becomes a
document boundary (``<|endoftext|>``) or a fake PII placeholder (``<|tel|>``) in training data.

Escape, not remove: a space goes after the first character of every occurrence,
``<|endoftext|>`` -> ``< |endoftext|>``, ``[CLS]`` -> ``[ CLS]``. The text stays readable and
keeps every character it had; removing would delete what a page really says about these
strings (tokenizer documentation, chat logs) and could join the pieces around a removed one
into a new special (``<|end<s>oftext|>`` -> ``<|endoftext|>``). An invisible separator
(zero-width space) would be stripped again by the unicode step of a later run and is noise
to the tokenizer. Every position where a string starts gets the space, overlapping and nested
ones included (``<|<|tel|>|>`` -> ``<|< |tel|>|>``, ``<|[CLS]|>`` -> ``< |[ CLS]|>``, each
counted); since no string contains whitespace, one in the output would have started at the
same place in the input, so the output holds none and escaping it again changes nothing.

The step runs in the workers right before pii (after join, so two joined documents cannot
complete a string either), so the pii step's placeholders are the only real ones left.
Running the cleaner again over its own output therefore escapes the placeholders written by
the first run; leave this step out (``--steps``) for text already cleaned by koneox.

Strings: the koneox tokenizer's specials and PII placeholders (REFERENCE §2), every
``<|name|>`` and DeepSeek's ``<｜name｜>`` (GPT-2/NeoX, Qwen, Llama 3, ...), SentencePiece, T5,
Gemma and Llama 2 control tokens, BERT's bracketed ones, plus the configured extras and pii
placeholders. Matching is case-sensitive, as tokenizers match their added tokens.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

from data.clean.config import PIIConfig, SpecialTokensConfig

NAMED: tuple[str, ...] = (
    # koneox: ids 0-3 and the PII placeholders 30000-30002
    "<|bos|>",
    "<|pad|>",
    "<|endoftext|>",
    "<|sep|>",
    "<|acc|>",
    "<|tel|>",
    "<|rrn|>",
    # chat and document markers of other tokenizers (the family pattern covers the rest)
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    # SentencePiece, T5, Gemma, Llama 2
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<mask>",
    "<bos>",
    "<eos>",
    "<sep>",
    "<cls>",
    "<start_of_turn>",
    "<end_of_turn>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    # BERT
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[UNK]",
    "[MASK]",
)
"""Strings escaped and counted by name in the report."""

# Families counted as one entry each in the report (their names are unbounded): <|...|> and
# DeepSeek's fullwidth-bar <｜...｜>, then numbered reserved tokens (T5, BERT, Gemma).
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("<|…|>", r"<[|｜][^\s<>|｜]{1,64}[|｜]>"),
    ("<extra_id_N>", r"<extra_id_\d{1,4}>"),
    ("[unusedN]", r"\[unused\d{1,4}\]"),
    ("<unusedN>", r"<unused\d{1,4}>"),
)


def special_strings(cfg: SpecialTokensConfig, pii: PIIConfig) -> tuple[str, ...]:
    """The named strings plus the configured extras and pii placeholders, checked: a string
    with whitespace, or shorter than two characters, cannot be escaped by a space after its
    first character."""
    extra = [(f"data.clean.special_tokens.extra[{i}]", s) for i, s in enumerate(cfg.extra)]
    extra += [(f"data.clean.pii.{k}", getattr(pii, k)) for k in ("rrn_token", "tel_token", "acc_token")]
    out = list(NAMED)
    for where, s in extra:
        if not isinstance(s, str) or len(s) < 2 or re.search(r"\s", s):
            raise ValueError(f"{where} = {s!r}: a special-token string needs 2+ characters and no whitespace")
        if s not in out:
            out.append(s)
    return tuple(out)


class SpecialTokenEscaper:
    """``SpecialTokenEscaper(strings)(text)`` -> (the text with every string of ``strings`` and
    of the families escaped, escapes by string); set up once, called per document."""

    def __init__(self, strings: tuple[str, ...] = NAMED) -> None:
        self.named = frozenset(strings)
        # Longest first: where two strings start at one position the longer is counted. No
        # groups: then every branch starts with a literal and ``re`` skips ahead to those
        # characters (20x faster on web text than the same alternation with named groups).
        branches = [re.escape(s) for s in sorted(strings, key=len, reverse=True)]
        self.any = re.compile("|".join(branches + [p for _, p in _FAMILIES]))
        self.first = tuple(sorted({s[0] for s in strings} | {"<", "["}))
        self.families = [(label, re.compile(p)) for label, p in _FAMILIES]

    def _label(self, found: str) -> str:
        if found in self.named:
            return found
        return next(label for label, p in self.families if p.fullmatch(found))

    def __call__(self, text: str) -> tuple[str, dict[str, int]]:
        # Nearly every document: a substring test per first character (~1 ms/MB of Korean
        # reviews), at most one scan.
        for c in self.first:
            if c in text:
                break
        else:
            return text, {}
        m = self.any.search(text)
        if m is None:
            return text, {}
        counts: Counter = Counter()
        parts, last = [], 0
        while m is not None:  # every position where a string starts, overlapping ones included
            start = m.start()
            counts[self._label(m.group())] += 1
            parts.append(text[last : start + 1])
            last = start + 1
            m = self.any.search(text, last)
        parts.append(text[last:])
        return " ".join(parts), dict(counts)


@functools.lru_cache(maxsize=8)
def _escaper(strings: tuple[str, ...]) -> SpecialTokenEscaper:
    return SpecialTokenEscaper(strings)


def escape_special_tokens(text: str, strings: tuple[str, ...] = NAMED) -> tuple[str, dict[str, int]]:
    """``text`` with a space after the first character of every special-token string in it,
    and how many of each were escaped (named strings by name, the families by pattern)."""
    return _escaper(strings)(text)
