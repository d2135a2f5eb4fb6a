"""Settings of the cleaning pipeline (the ``data.clean`` section of a koneox config).

Thresholds were measured on ``../shared/corpus/raw`` (see ``data/clean/filters.py`` for the
figures behind each default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from data.config_loader import load_section

STEP_NAMES: tuple[str, ...] = (
    "unicode",
    "html",
    "markup",
    "whitespace",
    "repeats",
    "filter",
    "join",
    "special_tokens",
    "pii",
    "dedup",
    "near_dedup",
)
"""Every step in pipeline order; ``--steps`` picks a subset and the order stays this one."""


@dataclass
class UnicodeConfig:
    enabled: bool = True
    """Run the step: NFC, safe mojibake repair, control characters out (newline and tab kept)."""
    fix_mojibake: bool = True
    """Repair UTF-8 text that was decoded as Latin-1/CP1252 (ftfy), only where a cheap test sees it."""
    form: str = "NFC"
    """Unicode normalisation form; NFC keeps precomposed Hangul syllables (NFKC would also fold ①, ㎏)."""


@dataclass
class HtmlConfig:
    enabled: bool = True
    """Run the step: documents that contain HTML markup become plain text with paragraphs kept."""
    min_tags: int = 3
    """A document counts as HTML when it has at least this many known HTML tags."""
    drop_selectors: list[str] = field(
        default_factory=lambda: [
            "script",
            "style",
            "noscript",
            "template",
            "nav",
            "header",
            "footer",
            "aside",
            "form",
            ".navheader",
            ".navfooter",
            "#DEBUG",
            "#SearchFrame",
            "#DonationFrame",
        ]
    )
    """CSS selectors of boilerplate removed before extraction (navigation, page chrome, scripts)."""
    unescape_plain: bool = True
    """Also unescape HTML entities (``&amp;``, ``&hearts;``) in documents without markup."""


@dataclass
class MarkupConfig:
    enabled: bool = True
    """Run the step: drop lines that are leftover tags or CSS/JS fragments, strip stray inline tags."""
    strip_inline_tags: bool = True
    """Remove tags that survive inside otherwise normal lines (``<b>``, ``</span>``)."""
    markdown: bool = True
    """Unwrap markdown links/images/emphasis and drop table separator lines."""


@dataclass
class WhitespaceConfig:
    enabled: bool = True
    """Run the step: collapse spaces/tabs, trim around newlines, cap blank-line runs (never joins lines)."""
    max_blank_lines: int = 1
    """Longest run of empty lines kept between paragraphs."""


@dataclass
class RepeatsConfig:
    enabled: bool = True
    """Run the step: shorten runs of one Hangul jamo, syllable or punctuation mark."""
    max_jamo: int = 2
    """Longest run of one jamo kept (ㅋㅋㅋㅋ -> ㅋㅋ)."""
    max_syllable: int = 3
    """Longest run of one Hangul syllable kept (아아아아아 -> 아아아)."""
    max_punct: int = 3
    """Longest run of one punctuation mark or symbol kept (!!!!!! -> !!!)."""


@dataclass
class FilterConfig:
    enabled: bool = True
    """Run the step: drop documents by quality rules, each drop recorded with its reason."""
    min_chars: int = 10
    """Fewest non-space characters; NSMC median review is 27 characters, 10% are under 11."""
    max_chars: int = 100_000
    """Most characters (Polyglot's Korean pipeline)."""
    min_hangul_ratio: float = 0.25
    """Least share of Hangul among letters (Latin, Hangul, CJK); docs with fewer than 20 letters are exempt."""
    max_symbol_ratio: float = 0.5
    """Most ``#`` and ellipsis marks per word (10+ words). Polyglot's 0.1 dropped 4,419 NSMC reviews
    (1%), nearly all ordinary reviews written with "..."; 0.5 keeps them and still drops hashtag/ellipsis spam."""
    max_bullet_lines: float = 0.9
    """Most share of lines that start with a bullet."""
    max_ellipsis_lines: float = 0.3
    """Most share of lines that end with an ellipsis (only for documents with at least 5 lines)."""
    repetition_min_words: int = 50
    """Gopher repetition rules apply only from this many words; they misfire on short reviews."""
    max_dup_line_ratio: float = 0.3
    """Gopher: most share of lines that repeat an earlier line."""
    max_dup_line_char_ratio: float = 0.2
    """Gopher: most share of characters in repeated lines."""
    max_top_ngram_ratio: list[float] = field(default_factory=lambda: [0.2, 0.18, 0.16])
    """Gopher: most character share of the most frequent word 2-, 3-, 4-gram."""
    max_dup_ngram_ratio: list[float] = field(default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])
    """Gopher: most character share of repeated word 5..10-grams."""


@dataclass
class JoinConfig:
    enabled: bool = False
    """Run the step: join consecutive short documents that share ``key`` (needs a key)."""
    key: str | None = None
    """Field whose equal values mark documents that belong together (e.g. ``movie_id``)."""
    max_chars: int = 200
    """Documents at least this long are left alone; shorter ones are joined."""
    target_chars: int = 1000
    """A joined document is closed once it reaches this many characters."""
    separator: str = "\n"
    """Text put between joined documents."""


@dataclass
class SpecialTokensConfig:
    enabled: bool = True
    """Run the step: escape every literal special-token string (``<|endoftext|>``, ``<|tel|>``,
    ``<s>``, ``[CLS]`` ...) with a space after its first character (``< |endoftext|>``), so no
    text from the input reaches the tokenizer as a special id; runs after join, just before pii,
    whose placeholders are then the only real ones (``data/clean/specials.py``)."""
    extra: list[str] = field(default_factory=list)
    """More literal strings to escape, e.g. another tokenizer's special tokens (each at least two
    characters, no whitespace). The pii step's placeholders are always escaped."""


@dataclass
class PIIConfig:
    enabled: bool = True
    """Run the step: replace personal identifiers with placeholder tokens."""
    rrn: bool = True
    """Resident registration numbers (date-checked) -> ``rrn_token``."""
    phone: bool = True
    """Korean mobile, landline and +82 numbers -> ``tel_token``."""
    card: bool = True
    """Card numbers (4x4 digits with Luhn check or card context) -> ``acc_token``."""
    account: bool = True
    """Bank account numbers, only next to words like 계좌/입금/은행 -> ``acc_token``."""
    email: bool = True
    """E-mail addresses -> ``email_placeholder``."""
    rrn_token: str = "<|rrn|>"
    """Replacement of a resident registration number (a tokenizer special token)."""
    tel_token: str = "<|tel|>"
    """Replacement of a phone number (a tokenizer special token)."""
    acc_token: str = "<|acc|>"
    """Replacement of a bank account or card number (a tokenizer special token)."""
    email_placeholder: str = "email@example.com"
    """Fixed address that replaces every e-mail address."""
    context_chars: int = 20
    """How many characters before/after a number are searched for account/card/RRN context words."""


@dataclass
class DedupConfig:
    enabled: bool = True
    """Run the step: drop exact duplicates (after casefold and whitespace collapse); the first copy stays."""


@dataclass
class NearDedupConfig:
    enabled: bool = True
    """Run the step: drop near duplicates found by MinHash LSH; the first copy in input order stays."""
    threshold: float = 0.8
    """Jaccard similarity of shingle sets above which a later document is dropped."""
    num_perm: int = 112
    """MinHash permutations (signature length)."""
    ngram: int = 5
    """Character n-gram size of the shingles (spaces removed); suits Korean eojeol-level variation."""
    seed: int = 1
    """Seed of the MinHash permutations."""


@dataclass
class CleanConfig:
    """Every cleaning step can be switched off or tuned here."""

    text_field: str = "text"
    """Name of the field that holds the document text in the input records."""
    shard_docs: int = 100_000
    """Documents per output shard ``part-NNNNN.jsonl.gz``."""
    chunk_docs: int = 2000
    """Documents sent to a worker process at a time (at most about 4 MB of input)."""
    compress_level: int = 1
    """gzip level of the output shards (0-9), applied in the workers. Level 9 cost 76 ms of CPU
    per MB of text (then in the single main process); level 1 costs 14 ms/MB and its shards are
    18-25% larger (measured on web-like text and on short reviews)."""
    dedup_memory_mb: int = 4096
    """Most memory (MB) the exact and near dedup state takes in the main process; 0 = no limit.
    The state costs about 1 KB per kept document; once it would pass a quarter of the budget
    (about 1M documents at the default) it is written to ``OUT/.dedup/`` (about 1 KB per kept
    document on disk, removed at the end) and found again through Bloom filters (half of the
    budget). The output is the same for any budget; dedup then costs 1.3-1.5x the CPU of the
    in-memory state while the budget is at least about 30 B per kept document, more below
    (``benchmarks/clean_scale.py``)."""
    unicode: UnicodeConfig = field(default_factory=UnicodeConfig)
    """Unicode normalisation step."""
    html: HtmlConfig = field(default_factory=HtmlConfig)
    """HTML-to-text step."""
    markup: MarkupConfig = field(default_factory=MarkupConfig)
    """Markup/code remnant removal step."""
    whitespace: WhitespaceConfig = field(default_factory=WhitespaceConfig)
    """Whitespace normalisation step."""
    repeats: RepeatsConfig = field(default_factory=RepeatsConfig)
    """Repeated character shortening step."""
    filter: FilterConfig = field(default_factory=FilterConfig)
    """Quality filter step."""
    join: JoinConfig = field(default_factory=JoinConfig)
    """Short-document joining step."""
    special_tokens: SpecialTokensConfig = field(default_factory=SpecialTokensConfig)
    """Special-token string escaping step."""
    pii: PIIConfig = field(default_factory=PIIConfig)
    """PII masking step."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Exact deduplication step."""
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    """MinHash near deduplication step."""

    def enabled_steps(self) -> list[str]:
        """Names of the steps switched on, in pipeline order."""
        return [name for name in STEP_NAMES if getattr(self, name).enabled]

    def with_steps(self, steps: list[str]) -> CleanConfig:
        """A copy with exactly ``steps`` switched on (the order of ``steps`` does not matter)."""
        unknown = sorted(set(steps) - set(STEP_NAMES))
        if unknown:
            raise ValueError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEP_NAMES)}")
        cfg = dataclasses.replace(self)
        for name in STEP_NAMES:
            setattr(cfg, name, dataclasses.replace(getattr(self, name), enabled=name in steps))
        return cfg


def load_clean_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> CleanConfig:
    """Read the ``data.clean`` section of a koneox YAML config, with dotted ``overrides``
    (``data.clean.filter.min_chars=5``) applied.

    It uses the project's one loader (``data.config_loader``), so errors read as those of
    ``train.config.load_config``, but builds only this section: the whole config imports torch
    (through the model config), which cost ``koneox clean`` 2-7 s at start and put torch into
    the main process and every forked worker.
    """
    return load_section(CleanConfig, "data.clean", path, overrides)
