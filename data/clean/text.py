"""Per-document text steps: unicode, html, markup, whitespace, repeats.

Each function takes a string (and optionally its step config) and returns a string, so it
can be used on its own. None of them removes a newline that separates two paragraphs: the
Polyglot-Ko paper lost document structure that way (REFERENCE §1).
"""

from __future__ import annotations

import functools
import html as html_lib
import re
import unicodedata

import regex

from data.clean.config import HtmlConfig, MarkupConfig, RepeatsConfig, UnicodeConfig, WhitespaceConfig

# ---------------------------------------------------------------- unicode

# Line/paragraph separators that are not "\n" become "\n" so later steps see one newline kind.
_NEWLINES = re.compile(r"\r\n|[\r\f\v\x85\u2028\u2029]")
# Control characters (Cc) except \n and \t, plus invisible format characters that only
# break tokenisation (zero-width space, BOM, soft hyphen, word joiner). ZWJ stays: emoji use it.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
# UTF-8 bytes of Korean read as Latin-1/CP1252 look like "ì\x95\x88" or "ë¬¸": a lead byte
# in À-ï followed by a continuation-byte character. Only such documents go to ftfy, which
# repairs only when the re-decoding is unambiguous; that is what "where safe" means here.
_MOJIBAKE_HINT = re.compile(
    r"[\u00c2-\u00ef][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]"
)


def fix_unicode(text: str, cfg: UnicodeConfig | None = None) -> str:
    """NFC-normalise, repair mojibake where safe, remove control characters (keep \\n, \\t)."""
    cfg = cfg or UnicodeConfig()
    if cfg.fix_mojibake and _MOJIBAKE_HINT.search(text):
        import ftfy

        text = ftfy.fix_encoding(text)
    text = _NEWLINES.sub("\n", text)
    text = _CONTROL.sub("", text)
    return unicodedata.normalize(cfg.form, text)


# ---------------------------------------------------------------- html

_HTML_TAG = re.compile(
    r"<(?:!doctype|html|head|body|div|p|br|span|a|table|tr|td|li|ul|ol|h[1-6]|meta|script|style|img)\b",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,7}|#x[0-9a-fA-F]{2,6});")


def looks_like_html(text: str, min_tags: int = 3) -> bool:
    """True when the text has at least ``min_tags`` known HTML tags."""
    return any(count >= min_tags for count, _ in enumerate(_HTML_TAG.finditer(text), start=1))


def html_to_text(text: str, cfg: HtmlConfig | None = None) -> str:
    """Plain text of an HTML document; other text only gets its entities unescaped.

    resiliparse was chosen after measuring on the shared help pages (2,610 pages, 24 MB):
    resiliparse 1,650 pages/s, inscriptis 211/s, trafilatura 56/s. trafilatura's and
    resiliparse's own main-content heuristics dropped headings or whole real pages
    (11 LibreOffice pages came out empty), so boilerplate is removed by explicit CSS
    selectors instead and every block element still becomes a line break.
    """
    cfg = cfg or HtmlConfig()
    if not looks_like_html(text, cfg.min_tags):
        if cfg.unescape_plain and _ENTITY.search(text):
            return html_lib.unescape(text)
        return text
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(text)
    for selector in cfg.drop_selectors:
        for node in tree.document.query_selector_all(selector):
            node.decompose()
    return extract_plain_text(
        tree,
        preserve_formatting=True,
        main_content=False,
        list_bullets=True,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
    )


# ---------------------------------------------------------------- markup remnants

_TAG_ONLY_LINE = re.compile(r"^\s*(?:</?[a-zA-Z][\w:-]*(?:\s[^<>]*)?/?>\s*|<!--.*?-->\s*)+$")
_INLINE_TAG = re.compile(
    r"</?(?:a|b|i|u|em|strong|span|font|div|p|br|hr|img|li|ul|ol|table|tr|td|th|sup|sub|small|big|center|code|pre)"
    r"\b(?:\s[^<>]{0,200})?/?>",
    re.IGNORECASE,
)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# CSS: "selector {", "prop: value;", a lone brace. JS: statements with tell-tale APIs.
_CSS_LINE = re.compile(
    r"^\s*(?:[.#@]?[\w\-\[\]=\"':, >.#*()]+\s*\{[^}]*\}?|[a-z\-]+\s*:\s*[^;:]{1,80};\s*\}?|[{}]+)\s*$"
)
_JS_LINE = re.compile(
    r"(?:\bfunction\s*\w*\s*\(|\bdocument\.(?:write|getElement|querySelector)|\bwindow\.\w+|"
    r"\$\(\s*['\"]|\bvar\s+\w+\s*=|\b(?:let|const)\s+\w+\s*=|=>\s*\{|\}\s*\)\s*;)"
)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((?:https?://|/|\.)[^)\n]*\)")
_MD_EMPH = re.compile(r"(\*\*|__)(?=\S)([^\n]*?\S)\1")
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_MD_FENCE = re.compile(r"^\s*```\w*\s*$")


def _is_code_remnant(line: str) -> bool:
    if _TAG_ONLY_LINE.match(line):
        return True
    # A line with Hangul is prose that happens to mention code; keep it.
    if _HANGUL.search(line):
        return False
    return bool(_CSS_LINE.match(line) or _JS_LINE.search(line))


def strip_markup(text: str, cfg: MarkupConfig | None = None) -> str:
    """Remove lines that are leftover tags or CSS/JS fragments and unwrap markup remnants.

    Lines are removed only when they are code remnants; an empty line left in their place
    keeps the paragraph break, and the whitespace step later caps blank-line runs.
    """
    cfg = cfg or MarkupConfig()
    if "<" in text:
        text = _HTML_COMMENT.sub("", text)
    lines = text.split("\n")
    out = []
    for line in lines:
        if _is_code_remnant(line):
            out.append("")
            continue
        if cfg.strip_inline_tags and "<" in line:
            line = _INLINE_TAG.sub("", line)
        if cfg.markdown:
            if _MD_TABLE_RULE.match(line) or _MD_FENCE.match(line):
                out.append("")
                continue
            if "](" in line:
                line = _MD_LINK.sub(r"\1", _MD_IMAGE.sub(r"\1", line))
            if "**" in line or "__" in line:
                line = _MD_EMPH.sub(r"\2", line)
        out.append(line)
    return "\n".join(out)


# ---------------------------------------------------------------- whitespace

_SPACES = re.compile(r"[^\S\n]+")  # every whitespace except newline (REFERENCE §3)
_SPACE_AROUND_NL = re.compile(r" *\n *")


def normalize_whitespace(text: str, cfg: WhitespaceConfig | None = None) -> str:
    """Collapse spaces/tabs, trim around newlines, cap blank-line runs; lines are never joined."""
    cfg = cfg or WhitespaceConfig()
    text = _SPACES.sub(" ", text)
    text = _SPACE_AROUND_NL.sub("\n", text)
    limit = "\n" * (cfg.max_blank_lines + 1)
    text = _blank_run(cfg.max_blank_lines).sub(limit, text)
    return text.strip("\n ")


# ---------------------------------------------------------------- repeated characters


# Only jamo, syllables and punctuation/symbols are shortened; digits and Latin never are
# (`(\w)\1{2,}` would turn 1000000원 into 100원, REFERENCE §3).
@functools.lru_cache(maxsize=16)
def _run_pattern(chars: str, keep: int) -> regex.Pattern:
    return regex.compile(rf"([{chars}])\1{{{keep},}}")


@functools.lru_cache(maxsize=8)
def _blank_run(max_blank_lines: int) -> re.Pattern:
    return re.compile(rf"\n{{{max_blank_lines + 2},}}")


# Any character three times in a row; documents without one skip the costlier run patterns.
_ANY_TRIPLE = re.compile(r"(.)\1\1", re.DOTALL)


def shorten_repeats(text: str, cfg: RepeatsConfig | None = None) -> str:
    """ㅋㅋㅋㅋ -> ㅋㅋ, 아아아아아 -> 아아아, !!!!!! -> !!!; numbers, URLs and Latin untouched."""
    cfg = cfg or RepeatsConfig()
    if not _ANY_TRIPLE.search(text):
        return text
    for chars, keep in (
        ("\u3131-\u318e", cfg.max_jamo),
        ("\uac00-\ud7a3", cfg.max_syllable),
        ("\\p{P}\\p{So}~^", cfg.max_punct),
    ):
        text = _run_pattern(chars, keep).sub(lambda m, k=keep: m.group(1) * k, text)
    return text
