"""Per-document cleaning steps on real text from ../shared/corpus."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from data.clean import (
    fix_unicode,
    html_to_text,
    normalize_whitespace,
    quality_reason,
    shorten_repeats,
    strip_markup,
)

RAW = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "raw"


def _read(name: str, limit: int | None = None) -> list[dict]:
    path = RAW / f"{name}.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared corpus not found at {path}")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if limit and len(out) >= limit:
                break
    return out


def _clean_html(raw: str) -> str:
    return normalize_whitespace(strip_markup(html_to_text(fix_unicode(raw))))


def test_html_keeps_paragraphs_and_drops_boilerplate() -> None:
    docs = _read("libreoffice_help_ko") + _read("gimp_help_ko", 100)
    headings = on_own_line = 0
    for doc in docs:
        raw = doc["text"]
        text = _clean_html(raw)
        assert not re.search(r"</?(?:div|span|p|a|script|style|h\d|table|td|body)\b[^>]*>", text), doc["path"]
        if len(text) > 300:
            # block elements became line breaks: prose never collapses into one line
            assert "\n\n" in text, doc["path"]
        h1 = re.search(r"<h1\b[^>]*>(.*?)</h1>", raw, re.S | re.I)
        if h1:
            heading = " ".join(re.sub(r"<[^>]+>", "", h1.group(1)).split())
            headings += 1
            on_own_line += heading in text.split("\n")
    # headings survive as their own line (block element -> line break)
    assert headings > 1000 and on_own_line / headings > 0.95, (on_own_line, headings)
    pie = next(d for d in docs if d["path"].endswith("schart/01/type_pie.html"))
    text = _clean_html(pie["text"])
    assert text.startswith("원형 차트 유형\n\n")  # heading kept, page chrome (header, index) gone
    assert "\n\n원형\n\n원형 차트에서는 데이터 값을" in text
    assert "LibreOffice 7.4 Help" not in text and "Help content debug info" not in text
    assert "polyfills" not in text and "Index" not in text


def test_html_entities_and_plain_text_untouched() -> None:
    review = next(d["text"] for d in _read("nsmc_reviews") if "&hearts;" in d["text"])
    assert "♥" in html_to_text(review) and "&hearts;" not in html_to_text(review)
    for doc in _read("nsmc_reviews", 2000):
        if "&" not in doc["text"]:
            assert html_to_text(doc["text"]) == doc["text"]


def test_whitespace_never_joins_or_drops_lines_on_law_text() -> None:
    for doc in _read("ko_law_bills"):
        raw = fix_unicode(doc["text"])
        out = normalize_whitespace(raw)
        before = [" ".join(line.split()) for line in raw.split("\n") if line.strip()]
        after = [line for line in out.split("\n") if line.strip()]
        assert before == after
        assert "\n\n\n" not in out and "  " not in out and " \n" not in out and "\n " not in out


def test_repeats_shorten_jamo_and_punctuation_only() -> None:
    docs = [d["text"] for d in _read("nsmc_reviews", 50_000)]
    changed = 0
    for text in docs:
        out = shorten_repeats(text)
        changed += out != text
        assert not re.search(r"([ㄱ-ㅎㅏ-ㅣ])\1\1", out)
        assert not re.search(r"([!?.~])\1\1\1", out)
        # digits and Latin words are never shortened
        assert re.findall(r"\d+", out) == re.findall(r"\d+", text)
        assert re.findall(r"[A-Za-z]+", out) == re.findall(r"[A-Za-z]+", text)
    assert changed > 1000
    assert shorten_repeats("ㅋㅋㅋㅋㅋ 대박!!!!!! 1000000원 www.naver.com") == "ㅋㅋ 대박!!! 1000000원 www.naver.com"


def test_unicode_repairs_mojibake_and_keeps_newlines() -> None:
    text = "\n".join(d["text"] for d in _read("nsmc_reviews", 5))
    broken = text.encode("utf-8").decode("latin-1")
    assert fix_unicode(broken) == text
    assert fix_unicode("가\x00나\u200b다\r\n라\t마") == "가나다\n라\t마"
    decomposed = "\u1100\u1161\u11a8"  # 각 as conjoining jamo
    assert fix_unicode(decomposed) == "각"


def test_markup_remnants_removed_korean_prose_kept() -> None:
    text = "본문 첫 줄\n<div class='x'></div>\n.nav { color: red; }\nvar x = document.getElementById('a');\n<b>굵은</b> 글씨\n**강조** 와 [링크](https://a.b)\n|---|---|\n변수 var 를 설명하는 줄"
    out = normalize_whitespace(strip_markup(text))
    assert out == "본문 첫 줄\n\n굵은 글씨\n강조 와 링크\n\n변수 var 를 설명하는 줄"


def test_filter_reasons_on_real_text() -> None:
    reviews = [d["text"] for d in _read("nsmc_reviews", 20_000)]
    reasons = [quality_reason(t) for t in reviews]
    kept = sum(r is None for r in reasons)
    assert kept / len(reviews) > 0.8  # the Korean thresholds keep ordinary reviews
    assert {r for r in reasons if r} <= {"empty", "too_short", "hangul_ratio", "symbol_ratio", "top_ngram"}
    law = [d["text"] for d in _read("ko_law_bills")]
    assert all(quality_reason(normalize_whitespace(fix_unicode(t))) is None for t in law[:5])
    assert quality_reason("Shut up. Marriage is beautiful thing... really a good movie to watch") == "hangul_ratio"
    assert quality_reason("좋아") == "too_short"
    spam = "\n".join(["최고의 영화 추천합니다 꼭 보세요"] * 20)
    assert quality_reason(spam) == "dup_line_ratio"
