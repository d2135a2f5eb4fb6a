"""Build ``pii_cases.jsonl``: PII items and hard negatives written into real Korean sentences.

    python tests/data/make_pii_cases.py [--corpus ../shared/corpus/raw] [--out tests/data/pii_cases.jsonl] [--seed N]

Carriers are real sentences from the shared corpus (NSMC reviews, law bills, GIMP/LibreOffice/
Debian help pages) without digits or ``@``, so the only thing to mask is what was inserted.
Each case inserts one phrase (a label, the item, a particle, often attached with no space) at a
word boundary of its own carrier. Lines are::

    {"id": "pos-phone-017", "kind": "positive" | "negative", "type": "phone" | "date" | ...,
     "format": "mobile_dots", "split": "tune" | "heldout", "source": "nsmc:10275182",
     "item": "010.3456.7890", "text": "...", "expected": "..."}

``type`` of a positive is the PII type it must be counted as; ``expected`` is ``text`` with the
item replaced by its placeholder (for a negative: ``text`` itself). ``split`` is a fixed rule,
the parity of the first byte of sha1(id): rules are tuned on "tune" and judged on "heldout".

Deterministic: a fixed seed and the corpus files read in order; the generated file is checked
in so the tests do not depend on this script or on randomness.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from data.clean.text import html_to_text  # noqa: E402  (help pages are HTML)

SEED = 20240115
RRN, TEL, ACC, EMAIL = "<|rrn|>", "<|tel|>", "<|acc|>", "email@example.com"
TOKEN = {"rrn": RRN, "phone": TEL, "card": ACC, "account": ACC, "email": EMAIL}

# ---- carriers -------------------------------------------------------------------------------

# No digits, no @, nothing the markup/whitespace/repeats steps would change, mostly Hangul.
_UNSAFE = re.compile(r"[0-9０-９@＠<>&*_`#\[\]|~\\{}]|\s\s|(.)\1\1|^\s|\s$")
_HANGUL = re.compile(r"[가-힣]")


def _carrier_ok(s: str) -> bool:
    letters = len(s.replace(" ", ""))
    return 20 <= len(s) <= 140 and not _UNSAFE.search(s) and len(_HANGUL.findall(s)) >= 0.5 * letters


def load_carriers(corpus: Path) -> dict[str, list[tuple[str, str]]]:
    """(source, sentence) per corpus, in file order."""
    out: dict[str, list[tuple[str, str]]] = {"nsmc": [], "law": [], "help": []}
    with gzip.open(corpus / "nsmc_reviews.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if _carrier_ok(d["text"]):
                out["nsmc"].append((f"nsmc:{d['review_id']}", d["text"]))
            if len(out["nsmc"]) >= 20_000:
                break
    with gzip.open(corpus / "ko_law_bills.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            text = re.sub(r"\s+", " ", json.loads(line)["text"])
            for j, s in enumerate(re.split(r"(?<=다\.) ", text)):
                if _carrier_ok(s.strip()):
                    out["law"].append((f"law:{i}:{j}", s.strip()))
    for name in ("gimp_help_ko", "libreoffice_help_ko", "debian_faq_ko"):
        with gzip.open(corpus / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                for j, s in enumerate(html_to_text(json.loads(line)["text"]).split("\n")):
                    if _carrier_ok(s.strip()):
                        out["help"].append((f"{name}:{i}:{j}", s.strip()))
    return out


# ---- value helpers --------------------------------------------------------------------------

_FULL = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


def fullwidth(s: str) -> str:
    """ASCII -> full-width forms (０１０－１２３４, ｈｏｎｇ＠ｎａｖｅｒ．ｃｏｍ)."""
    return s.translate(_FULL)


def digits(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def ean13_complete(rng: random.Random, prefix: str) -> str:
    body = prefix + digits(rng, 12 - len(prefix))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def rrn_digits(rng: random.Random, foreign: bool = False, checksum: bool = False) -> str:
    year = rng.randint(1950, 2019)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    s = rng.choice("12" if year < 2000 else "34")
    if foreign:
        s = str(int(s) + 4)
    body = f"{year % 100:02d}{month:02d}{day:02d}{s}" + digits(rng, 5)
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    check = (11 - sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11) % 10
    return body + (str(check) if checksum else digits(rng, 1))


def group(d: str, sizes: tuple[int, ...], sep: str = "-") -> str:
    parts, pos = [], 0
    for n in sizes:
        parts.append(d[pos : pos + n])
        pos += n
    return sep.join(parts)


def date(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1990, 2024), rng.randint(1, 12), rng.randint(1, 28)


# ---- positives: (format, value maker, phrase templates) -------------------------------------

# A phrase is a template with {v} for the item; labels and particles are written the way Korean
# web text writes them, often attached with no space.
Maker = Callable[[random.Random], str]


def _mobile(rng: random.Random) -> list[str]:
    return ["010", digits(rng, 4, "23456789"), digits(rng, 4)]


AREAS = ["02", "02", "031", "032", "033", "041", "042", "043", "044", "051", "052", "053", "054", "055"]
AREAS += ["061", "062", "063", "064", "070", "0505", "080"]


def _landline(rng: random.Random) -> list[str]:
    return [rng.choice(AREAS), digits(rng, rng.choice([3, 4]), "23456789"), digits(rng, 4)]


PHONE_PHRASES = [
    "연락처는 {v}로 주세요",
    "번호는{v}입니다",
    "전화 {v}",
    "{v}으로 연락 주세요",
    "문의는{v}로",
    "핸드폰 {v} 이고",
    "폰번호{v}에게 문자",
    "{v} 로 전화주시면",
    "Tel. {v}",
    "연락처({v})",
    "담당자 {v}이며",
    "{v}까지 문자주세요",
    "☎{v}",
    "HP: {v}",
    "{v}(본인)",
    "{v}번으로 전화",
    "{v}이나 메일로",
    "연락 바랍니다 {v}.",
    "{v}/김민수",
    "휴대전화:{v}",
]
PHONE_FORMATS: list[tuple[str, Maker]] = [
    ("mobile_hyphen", lambda r: "-".join(_mobile(r))),
    ("mobile_dots", lambda r: ".".join(_mobile(r))),
    ("mobile_spaces", lambda r: " ".join(_mobile(r))),
    ("mobile_bare", lambda r: "".join(_mobile(r))),
    (
        "mobile_old_3digit",
        lambda r: f"{r.choice(['011', '016', '017', '019'])}-{digits(r, 3, '23456789')}-{digits(r, 4)}",
    ),
    ("mobile_paren", lambda r: "({}){}-{}".format(*_mobile(r))),
    ("mobile_hyphen_spaced", lambda r: " - ".join(_mobile(r))),
    ("mobile_fullwidth", lambda r: fullwidth("-".join(_mobile(r)))),
    ("landline_hyphen", lambda r: "-".join(_landline(r))),
    ("landline_paren_space", lambda r: "({}) {}-{}".format(*_landline(r))),
    ("landline_close_paren", lambda r: "{}){}-{}".format(*_landline(r))),
    ("landline_dots", lambda r: ".".join(_landline(r))),
    ("landline_spaces", lambda r: " ".join(_landline(r))),
    ("landline_fullwidth", lambda r: fullwidth("({}) {}-{}".format(*_landline(r)))),
    ("intl_mobile_spaces", lambda r: "+82 10 {} {}".format(*_mobile(r)[1:])),
    ("intl_mobile_hyphen", lambda r: "+82-10-{}-{}".format(*_mobile(r)[1:])),
    ("intl_landline", lambda r: "+82-2-{}-{}".format(digits(r, 3, "23456789"), digits(r, 4))),
    ("intl_no_plus", lambda r: "82-10-{}-{}".format(*_mobile(r)[1:])),
    ("mobile_dots_spaced", lambda r: ". ".join(_mobile(r))),
    ("mobile_paren_spaces", lambda r: "({}) {} {}".format(*_mobile(r))),
    ("mobile_jamo_dash", lambda r: "ㅡ".join(_mobile(r))),
    ("landline_050x_4digit", lambda r: f"050{r.choice('2345678')}-{digits(r, 4, '23456789')}-{digits(r, 4)}"),
    ("landline_hyphen_spaced", lambda r: " - ".join(_landline(r))),
]

RRN_PHRASES = [
    "주민번호 {v}",
    "주민등록번호는{v}이고",
    "제 주민번호는 {v}입니다",
    "{v} 으로 조회",
    "등록번호: {v}",
    "주민번호{v}를 적어",
    "{v}이며",
    "본인 {v} 확인",
    "주민등록번호 앞자리와 뒷자리 {v}",
    "외국인등록번호 {v}",
]
RRN_FORMATS: list[tuple[str, Maker]] = [
    ("hyphen", lambda r: group(rrn_digits(r), (6, 7))),
    ("hyphen_spaces", lambda r: group(rrn_digits(r), (6, 7), " - ")),
    ("hyphen_space_after", lambda r: group(rrn_digits(r), (6, 7), "- ")),
    ("foreign", lambda r: group(rrn_digits(r, foreign=True), (6, 7))),
    ("fullwidth", lambda r: fullwidth(group(rrn_digits(r), (6, 7)))),
    ("en_dash", lambda r: group(rrn_digits(r), (6, 7), "\u2013")),
    ("masked_tail", lambda r: group(rrn_digits(r)[:7] + "******", (6, 7))),
    ("masked_tail_x", lambda r: group(rrn_digits(r)[:7] + "xxxxxx", (6, 7))),
    ("jamo_dash", lambda r: group(rrn_digits(r), (6, 7), "ㅡ")),
    ("bare_labelled", lambda r: rrn_digits(r)),
    ("bare_checksum", lambda r: rrn_digits(r, checksum=True)),
]


def _bank(name: str, sizes: tuple[int, ...]) -> tuple[str, Maker]:
    return name, lambda r: group(digits(r, sum(sizes), "123456789"), sizes)


ACCOUNT_BANKS = [
    ("국민은행", (6, 2, 6)),
    ("신한은행", (3, 3, 6)),
    ("우리은행", (4, 3, 6)),
    ("하나은행", (3, 6, 5)),
    ("농협", (3, 4, 4, 2)),
    ("농협은행", (6, 2, 6)),
    ("기업은행", (3, 6, 2, 3)),
    ("카카오뱅크", (4, 2, 7)),
    ("토스뱅크", (4, 4, 4)),
    ("케이뱅크", (3, 3, 6)),
    ("SC제일은행", (3, 2, 6)),
    ("우체국", (6, 2, 6)),
    ("새마을금고", (4, 4, 4, 1)),
    ("신협", (3, 3, 6)),
    ("수협", (3, 2, 6)),
    ("부산은행", (3, 4, 4, 2)),
    ("국민", (6, 2, 6)),
    ("우리", (4, 3, 6)),
    ("하나", (3, 6, 5)),
    ("기업", (3, 6, 2, 3)),
    ("카뱅", (4, 2, 7)),
    ("신한", (3, 2, 6)),
    ("KB국민", (3, 2, 4, 3)),
    ("IBK기업은행", (3, 6, 2, 3)),
    ("NH농협", (3, 4, 4, 2)),
]
ACCOUNT_PHRASES = [
    "{bank} {v}으로 입금해 주세요",
    "입금계좌: {bank} {v}",
    "{bank}{v} 예금주 홍길동",
    "계좌번호는 {v}({bank})입니다",
    "{v} {bank} 김민수",
    "{bank} 계좌 {v}로 송금",
    "환불은 {bank} {v}이고",
    "무통장입금 {v} {bank}",
    "{bank} {v} 홍길동으로 보내주세요",
    "후원계좌 {bank} {v}",
    "{bank}:{v}",
]

CARD_PHRASES = [
    "카드번호 {v}",
    "{v}로 결제했는데",
    "신용카드 {v}이고",
    "체크카드{v}으로",
    "제 카드 {v} 입니다",
    "{v} 카드로 결제",
    "결제카드 {v}",
    "카드 번호는{v}이고 유효기간은",
]
CARD_PREFIXES = ["4", "51", "52", "53", "54", "55", "35", "9410", "6250"]

EMAIL_USERS = ["hong", "kim.minsu", "lee_jiwon", "park-sy", "choi89", "jung.h.k", "kang+news", "yoon_2"]
EMAIL_USERS += ["name_1", "seo.ji_hoon", "hanbit+shop", "ADMIN", "webmaster", "m.kim-23", "sj_lee.dev"]
EMAIL_USERS += ["Hong.GilDong", "a.b.c", "_kim", "0824jh", "x"]
EMAIL_DOMAINS = [
    "naver.com",
    "gmail.com",
    "daum.net",
    "hanmail.net",
    "kakao.com",
    "nate.com",
    "example.co.kr",
]
EMAIL_DOMAINS += ["korea.ac.kr", "mail.snu.ac.kr", "assembly.go.kr", "cs.kaist.ac.kr", "my-company.co.kr"]
EMAIL_DOMAINS += [
    "lists.example.or.kr",
    "sub.mail.example.com",
    "hotmail.com",
    "Naver.Com",
    "mail2.hanbit.kr",
]
EMAIL_DOMAINS += ["seoul.go.kr", "yonsei-univ.ac.kr", "hanmir.info"]
EMAIL_PHRASES = [
    "메일주소는{v}입니다",
    "{v}으로 메일 주세요",
    "이메일 {v}로 보내주세요",
    "메일은{v}이고",
    "문의: {v}",
    "<{v}>",
    "({v})",
    "{v} 로 연락",
    "저에게 {v}에게 보내",
    "메일 {v}",
    "mailto:{v}",
    "연락은 {v}.",
    "{v}, 또는 전화",
    "E-mail:{v}",
]


def _email(rng: random.Random) -> str:
    user = rng.choice(EMAIL_USERS)
    if rng.random() < 0.4:
        user += str(rng.randint(1, 9999))
    return f"{user}@{rng.choice(EMAIL_DOMAINS)}"


EMAIL_FORMATS: list[tuple[str, Maker]] = [
    ("plain", _email),
    ("fullwidth_at", lambda r: _email(r).replace("@", "＠")),
    ("fullwidth_all", lambda r: fullwidth(_email(r))),
]


def positives(rng: random.Random) -> list[tuple[str, str, str, str]]:
    """(type, format, item, phrase) for every positive."""
    out = []
    for fmt, make in PHONE_FORMATS:
        for _ in range(5):
            item, phrase = make(rng), rng.choice(PHONE_PHRASES)
            if (
                "(" in item or ")" in item
            ) and "({v})" in phrase:  # "((02) 123-4567)": which bracket is whose is unclear
                phrase = "전화 {v}"
            out.append(("phone", fmt, item, phrase))
    for fmt, make in RRN_FORMATS:
        for _ in range(5):
            phrases = RRN_PHRASES[:3] + RRN_PHRASES[-2:] if fmt == "bare_labelled" else RRN_PHRASES
            out.append(("rrn", fmt, make(rng), rng.choice(phrases)))
    for bank, sizes in ACCOUNT_BANKS:
        fmt = "-".join(map(str, sizes))
        for _ in range(3):
            item = group(digits(rng, sum(sizes), "123456789"), sizes)
            out.append(("account", fmt, item, rng.choice(ACCOUNT_PHRASES).replace("{bank}", bank)))
    for fmt, sep in (("bare_labelled", ""), ("spaces", " "), ("fullwidth", "-")):
        for _ in range(4):
            sizes = rng.choice([s for _, s in ACCOUNT_BANKS])
            item = group(digits(rng, sum(sizes), "123456789"), sizes, sep)
            item = fullwidth(item) if fmt == "fullwidth" else item
            phrase = rng.choice(["계좌 {v}로 이체", "입금 계좌는{v}입니다", "계좌번호 {v}"])
            out.append(("account", fmt, item, phrase))
    for i in range(42):
        prefix = CARD_PREFIXES[i % len(CARD_PREFIXES)]
        number = luhn_complete(rng, prefix, 16)
        fmt, item = [
            ("4-4-4-4_hyphen", group(number, (4, 4, 4, 4))),
            ("4-4-4-4_spaces", group(number, (4, 4, 4, 4), " ")),
            ("16_bare", number),
            ("fullwidth", fullwidth(group(number, (4, 4, 4, 4)))),
            ("amex_4-6-5", group(luhn_complete(rng, "37", 15), (4, 6, 5))),
            ("4-4-4-4_dots", group(number, (4, 4, 4, 4), ".")),
            ("labelled_no_luhn", group(digits(rng, 16, "4569"), (4, 4, 4, 4))),
        ][i % 7]
        out.append(("card", fmt, item, rng.choice(CARD_PHRASES)))
    for fmt, make in EMAIL_FORMATS:
        for _ in range(24 if fmt == "plain" else 6):
            out.append(("email", fmt, make(rng), rng.choice(EMAIL_PHRASES)))
    return out


# ---- hard negatives: (type, phrase with the item already in it) -----------------------------


def negatives(rng: random.Random) -> list[tuple[str, str, str]]:
    """(type, format, phrase) for every hard negative; the phrase must come out unchanged."""
    out: list[tuple[str, str, str]] = []

    def add(kind: str, fmt: str, n: int, make: Callable[[], str]) -> None:
        out.extend((kind, fmt, make()) for _ in range(n))

    def d() -> tuple[int, int, int]:
        return date(rng)

    def years(span: int) -> tuple[int, int]:
        y = rng.randint(1900, 2023 - span)
        return y, y + span

    add("date", "dots", 4, lambda: "{}.{:02d}.{:02d}에 봤는데".format(*d()))
    add("date", "hyphen", 4, lambda: "개봉일 {}-{:02d}-{:02d}".format(*d()))
    add("date", "slash", 2, lambda: "{}/{:02d}/{:02d}부터".format(*d()))
    add("date", "korean_dots", 3, lambda: "{}. {}. {}. 발의".format(*d()))
    add("date", "short_year", 2, lambda: "{:02d}.{:02d}.{:02d} 기준".format(d()[0] % 100, *d()[1:]))
    add("date", "bare_8", 3, lambda: "{}{:02d}{:02d}자로".format(*d()))
    add(
        "date", "datetime", 3, lambda: "{}-{:02d}-{:02d} {:02d}:{:02d}에".format(*d(), rng.randint(0, 23), 30)
    )
    add("date", "range", 3, lambda: "{}.{:02d}.{:02d}~{}.{:02d}.{:02d} 기간".format(*d(), *d()))
    add("date", "account_context", 4, lambda: "입금일 {}-{:02d}-{:02d}".format(*d()))
    add("date", "account_context_time", 3, lambda: "이체 {}.{:02d}.{:02d} {:02d}:{:02d}".format(*d(), 14, 5))
    add(
        "date",
        "timestamp_14",
        3,
        lambda: "입금 확인 {}{:02d}{:02d}{:02d}{:02d}{:02d}".format(*d(), 13, 45, 9),
    )
    add("amount", "commas", 4, lambda: f"{rng.randint(10**6, 10**9):,}원")
    add("amount", "commas_deposit", 4, lambda: f"{rng.randint(10**6, 10**10):,}원을 입금")
    add("amount", "bare_won_account", 4, lambda: f"입금액 {digits(rng, rng.randint(10, 12), '123456789')}원")
    add("amount", "bare_won", 3, lambda: f"총 {digits(rng, rng.randint(7, 11), '123456789')}원")
    add("amount", "man_won", 2, lambda: f"{rng.randint(100, 9999):,}만 원 이체")
    add("amount", "dollar", 2, lambda: f"{rng.randint(10**5, 10**9):,} 달러")
    add("version", "v_semver", 4, lambda: f"v{rng.randint(1, 12)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}")
    add("version", "four_part", 3, lambda: f"버전 10.0.{digits(rng, 5, '12')}.{digits(rng, 4)}")
    add(
        "version",
        "release",
        3,
        lambda: f"{rng.randint(1, 7)}.{rng.randint(0, 9)}.{rng.randint(0, 9)} 업데이트 후",
    )
    add("isbn", "isbn13_hyphen", 4, lambda: f"ISBN 978-89-{digits(rng, 4)}-{digits(rng, 3)}-{digits(rng, 1)}")
    add("isbn", "isbn13_bare", 3, lambda: f"ISBN {luhn_complete(rng, '97911', 13)}")
    add("isbn", "isbn10", 2, lambda: f"ISBN 89-{digits(rng, 4)}-{digits(rng, 3)}-{digits(rng, 1)}")
    add("isbn", "unlabelled", 2, lambda: f"979-11-{digits(rng, 4)}-{digits(rng, 3)}-{digits(rng, 1)}에서")
    add("order", "bare_16", 3, lambda: f"주문번호 {digits(rng, 16, '123456789')}")
    add("order", "date_7", 3, lambda: "주문번호: {}{:02d}{:02d}-{}".format(*d(), digits(rng, 7)))
    add(
        "order",
        "rrn_shaped",
        4,
        lambda: "주문번호 {:02d}{:02d}{:02d}-{}".format(d()[0] % 100, *d()[1:], digits(rng, 7, "1234")),
    )
    add(
        "order",
        "invoice_4_4_4",
        3,
        lambda: f"송장번호 {digits(rng, 4, '56')}-{digits(rng, 4)}-{digits(rng, 4)}",
    )
    add("order", "tracking_bare", 3, lambda: f"운송장번호 {digits(rng, 12, '56')} 배송")
    add("order", "card_shaped", 3, lambda: "주문번호 " + group(luhn_complete(rng, "4", 16), (4, 4, 4, 4)))
    add(
        "order",
        "account_shaped",
        3,
        lambda: f"입금 확인 후 주문번호 {digits(rng, 4, '2')}-{digits(rng, 4)}-{digits(rng, 6)}로 발송",
    )
    add("order", "reservation", 2, lambda: f"예약번호 {digits(rng, 10, '123456789')}")
    add("time", "hh_mm", 3, lambda: f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}에 시작")
    add("time", "range", 3, lambda: f"영업시간 {rng.randint(8, 10):02d}:00-{rng.randint(16, 21):02d}:00")
    add("time", "bank_hours", 2, lambda: "은행 영업시간 09:00-16:00")
    add(
        "time",
        "hh_mm_ss",
        2,
        lambda: f"러닝타임 {rng.randint(1, 2)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}",
    )
    add(
        "business_number",
        "1588",
        4,
        lambda: f"고객센터 {rng.choice(['1588', '1544', '1577', '1600'])}-{digits(rng, 4)}",
    )
    add("business_number", "bare", 2, lambda: f"대표번호 {rng.choice(['1588', '1544'])}{digits(rng, 4)}")
    add("phone_like", "short", 3, lambda: rng.choice(["112에 신고", "119 불러", "114에 물어봐"]))
    add(
        "phone_like",
        "date_dd_mm_yyyy",
        3,
        lambda: f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}-{d()[0]} 공개",
    )
    add("phone_like", "decimal", 2, lambda: f"0.{digits(rng, 3)}.{digits(rng, 4)}")
    add("phone_like", "short_mobile", 3, lambda: f"010-{digits(rng, 4)} 까지만")
    add("phone_like", "room", 2, lambda: f"제{rng.randint(101, 999)}호 {rng.randint(10, 99)}동")
    add("postal", "labelled", 3, lambda: f"우편번호 {digits(rng, 5, '0123456')}")
    add("postal", "woo", 2, lambda: f"(우){digits(rng, 5, '0123456')}")
    add("year", "year", 3, lambda: f"{rng.randint(1950, 2024)}년작")
    add("year", "season", 3, lambda: "{}-{} 시즌".format(*years(1)))
    add("year", "range_long", 2, lambda: "{}-{}년 사이".format(*years(rng.randint(1, 30))))
    add("score", "points", 3, lambda: f"{rng.randint(1, 10)}점")
    add("score", "decimal", 3, lambda: f"평점 {rng.randint(1, 9)}.{rng.randint(10, 99)}으로")
    add("score", "ratio", 2, lambda: f"{rng.randint(1, 10)}/10")
    add("product", "model", 3, lambda: f"모델명 SM-G{digits(rng, 3)}N")
    add("product", "ean_880", 4, lambda: f"바코드 {ean13_complete(rng, '880')}")
    add("product", "ean_880_unlabelled", 3, lambda: f"{ean13_complete(rng, '880')} 상품")
    add("product", "part_number", 3, lambda: f"품번 {digits(rng, 4)}-{digits(rng, 4)}-{digits(rng, 4)}")
    add(
        "product", "license_key", 3, lambda: "라이선스 키 " + group(luhn_complete(rng, "5", 16), (4, 4, 4, 4))
    )
    add("product", "serial", 3, lambda: "시리얼 " + group(digits(rng, 16), (4, 4, 4, 4)))
    add("percent", "decimal", 3, lambda: f"{rng.randint(0, 99)}.{rng.randint(0, 9)}%")
    add("percent", "int", 2, lambda: f"{rng.randint(1, 100)}% 할인")
    add("count", "viewers", 3, lambda: f"관객 {rng.randint(10**6, 2 * 10**7):,}명")
    add("count", "bare_viewers", 3, lambda: f"누적 관객 {digits(rng, rng.randint(7, 11), '123456789')}명")
    add("count", "views", 2, lambda: f"조회수 {digits(rng, rng.randint(6, 10), '123456789')}회")
    add("model_number", "cpu", 2, lambda: f"i7-{digits(rng, 5, '1')}K")
    add("model_number", "gpu", 2, lambda: f"RTX {rng.choice(['3060', '3080', '4090'])}")
    add("model_number", "tv", 2, lambda: f"LG {rng.choice(['55', '65', '75'])}UP{digits(rng, 4)}")
    add(
        "law", "article", 3, lambda: f"제{rng.randint(1, 99)}조제{rng.randint(1, 9)}항제{rng.randint(1, 9)}호"
    )
    add("law", "bill_number", 2, lambda: f"의안번호 {rng.randint(1000, 99999)}")
    add("law", "law_number", 2, lambda: f"법률 제{digits(rng, 5)}호")
    add("network", "ip", 2, lambda: f"IP 192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    add("network", "coords", 2, lambda: f"37.{digits(rng, 4)}, 126.{digits(rng, 4)}")
    add(
        "rrn_like",
        "bad_month",
        3,
        lambda: f"{digits(rng, 2)}{rng.randint(13, 19)}{rng.randint(10, 28)}-{digits(rng, 7, '1234')}",
    )
    add("rrn_like", "feb_30", 2, lambda: f"{digits(rng, 2, '5678')}0230-{digits(rng, 7, '12')}")
    add(
        "rrn_like",
        "corporate",
        3,
        lambda: "법인등록번호 {:02d}{:02d}{:02d}-{}".format(
            rng.randint(10, 99), *d()[1:], digits(rng, 7, "1")
        ),
    )
    add(
        "rrn_like",
        "business",
        3,
        lambda: f"사업자등록번호 {digits(rng, 3)}-{digits(rng, 2)}-{digits(rng, 5)}",
    )
    add("rrn_like", "date8_7", 2, lambda: "{}{:02d}{:02d}-{}".format(*d(), digits(rng, 7, "1234")))
    add("email_like", "mention", 3, lambda: f"@{rng.choice(EMAIL_USERS).lower()} 님")
    add(
        "email_like",
        "npm",
        2,
        lambda: f"lodash@{rng.randint(1, 4)}.{rng.randint(0, 17)}.{rng.randint(0, 21)}",
    )
    add("email_like", "retina", 2, lambda: f"icon@{rng.randint(2, 3)}x.png 파일")
    add("email_like", "no_tld", 2, lambda: f"{rng.choice(EMAIL_USERS)}@localhost")
    add("email_like", "spelled", 2, lambda: f"{rng.choice(['hong', 'kim'])} at naver dot com")
    add("email_like", "domain_only", 2, lambda: "@naver.com 계정만")
    add("emoticon", "dash_jamo", 2, lambda: f"{rng.randint(1, 10)}점ㅡㅡ")
    add("card_context", "amount", 3, lambda: f"카드 결제 금액 {rng.randint(10**4, 10**8):,}원")
    add("card_context", "expiry", 2, lambda: f"카드 유효기간 {rng.randint(1, 12):02d}/{rng.randint(24, 30)}")
    add("card_context", "approval", 2, lambda: f"카드 승인번호 {digits(rng, 8)}")
    add("card_context", "installment", 2, lambda: f"신용카드 {rng.randint(2, 12)}개월 할부")
    add("card_context", "date", 2, lambda: "결제일 {}-{:02d}-{:02d}".format(*d()))
    add("card_context", "points", 2, lambda: f"체크카드 포인트 {rng.randint(1000, 10**6):,}점")
    add("account_context", "balance", 3, lambda: f"계좌 잔액 {rng.randint(10**5, 10**9):,}원")
    add("account_context", "fee", 2, lambda: f"송금 수수료 {rng.choice([500, 1000, 1500])}원")
    add(
        "account_context",
        "limit_bare",
        3,
        lambda: f"이체 한도 {digits(rng, rng.randint(8, 11), '123456789')}원",
    )
    add(
        "account_context",
        "bank_phone",
        2,
        lambda: f"은행 고객센터 {rng.choice(['1588', '1599', '1644'])}-{digits(rng, 4)}",
    )
    add("account_context", "bank_code", 2, lambda: f"은행 코드 {rng.choice(['004', '088', '020', '081'])}")
    add("account_context", "customers", 2, lambda: f"은행 고객 {digits(rng, 10, '123456789')}명")
    add(
        "account_context",
        "transfer_ref",
        2,
        lambda: "이체 번호 {}{:02d}{:02d}{}".format(*d(), digits(rng, 6)),
    )
    add(
        "account_context",
        "deposit_datetime",
        2,
        lambda: "입금 {}.{:02d}.{:02d} {:02d}:{:02d}".format(*d(), 9, 30),
    )
    add("sports", "score", 2, lambda: f"{rng.randint(90, 120)}-{rng.randint(90, 120)}로 승리")
    add("sports", "set_score", 2, lambda: f"{rng.randint(0, 3)}-{rng.randint(0, 3)} 무승부")
    add("ratio", "aspect", 2, lambda: rng.choice(["16:9 화면", "21:9 비율", "4:3으로"]))
    add("ratio", "resolution", 2, lambda: rng.choice(["1920x1080 해상도", "3840*2160", "2560x1440으로"]))
    add("reference", "bible", 2, lambda: f"요한복음 {rng.randint(1, 21)}:{rng.randint(1, 40)}")
    add("reference", "document_number", 2, lambda: f"제{d()[0]}-{digits(rng, 5)}호")
    add("reference", "case_number", 2, lambda: f"{d()[0]}가합{digits(rng, 5)}")
    add(
        "lottery",
        "numbers",
        2,
        lambda: " ".join(str(n) for n in sorted(rng.sample(range(1, 46), 6))) + " 당첨",
    )
    add("phone_like", "zero_version", 2, lambda: f"v0.{rng.randint(1, 9)}.{digits(rng, 4)}")
    add("phone_like", "masked_phone", 2, lambda: "010-****-" + digits(rng, 4))
    add("phone_like", "time_range_zero", 2, lambda: f"02:{rng.randint(10, 59)}~05:{rng.randint(10, 59)}")
    return out


# ---- assembling ----------------------------------------------------------------------------


def _insert(carrier: str, phrase: str, rng: random.Random) -> tuple[str, int]:
    """Carrier with the phrase at a random word boundary; returns the text and the phrase start."""
    words = carrier.split(" ")
    k = rng.randint(0, len(words))
    head = " ".join(words[:k])
    text = " ".join(p for p in (head, phrase, " ".join(words[k:])) if p)
    return text, (len(head) + 1 if head else 0)


def split_of(case_id: str) -> str:
    return "heldout" if hashlib.sha1(case_id.encode()).digest()[0] % 2 else "tune"


def build(corpus: Path, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    pools = load_carriers(corpus)
    for pool in pools.values():
        rng.shuffle(pool)
    # Half the carriers from reviews, a quarter each from help pages and law bills (while they last).
    order = ["nsmc", "help", "nsmc", "law"]
    used = dict.fromkeys(pools, 0)

    def carrier(i: int) -> tuple[str, str]:
        name = order[i % len(order)]
        if used[name] >= len(pools[name]):
            name = "nsmc"
        used[name] += 1
        return pools[name][used[name] - 1]

    cases = []
    counters: dict[str, int] = {}
    for kind_type, fmt, item, phrase, kind in [
        (t, f, it, p, "positive") for t, f, it, p in positives(rng)
    ] + [(t, f, p, p, "negative") for t, f, p in negatives(rng)]:
        n = counters[f"{kind}-{kind_type}"] = counters.get(f"{kind}-{kind_type}", 0) + 1
        case_id = f"{kind[:3]}-{kind_type}-{n:03d}"
        source, sentence = carrier(len(cases))
        filled = phrase.replace("{v}", item) if kind == "positive" else phrase
        text, at = _insert(sentence, filled, rng)
        if kind == "positive":
            start = at + phrase.index("{v}")
            expected = text[:start] + TOKEN[kind_type] + text[start + len(item) :]
        else:
            expected = text
        cases.append(
            {
                "id": case_id,
                "kind": kind,
                "type": kind_type,
                "format": fmt,
                "split": split_of(case_id),
                "source": source,
                "item": item,
                "text": text,
                "expected": expected,
            }
        )
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=HERE.parents[2] / "shared" / "corpus" / "raw")
    ap.add_argument("--out", type=Path, default=HERE / "pii_cases.jsonl")
    ap.add_argument("--seed", type=int, default=SEED, help="another seed gives fresh values and carriers")
    args = ap.parse_args()
    cases = build(args.corpus, args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    kinds = {k: sum(c["kind"] == k for c in cases) for k in ("positive", "negative")}
    print(f"{args.out}: {len(cases)} cases, {kinds}")


if __name__ == "__main__":
    main()
