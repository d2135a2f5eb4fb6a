"""PII masking for Korean text: RRN, phone, card, bank account, e-mail.

Korean writes particles straight after numbers and addresses (``010-1234-5678로``,
``메일주소는name@example.co.kr입니다``), and Hangul is ``\\w``, so ``\\b`` is useless here
(REFERENCE §3). Every pattern is delimited by ASCII lookarounds instead: a number must not
continue into another digit, or into a digit after a separator (``2024.010-...``); an
e-mail address must not continue into an ASCII address character.

What reaches this step is NFC text, so full-width forms (``０１０－１２３４``, ``＠``) and
dash/space variants are still there, and middle dots (``010·1234·5678``) that some write for
separators. They are folded to ASCII (a middle dot to ``.``) one code point for one before
matching, so a match's offsets are offsets in the original text, and only the masked spans
change; a full-width number that is not PII stays full-width.

Rules that keep dates, amounts, versions, ISBNs, order numbers and times untouched:

- an RRN needs a real date for its century digit (``880230-1...`` is no RRN); without the
  hyphen it also needs a valid mod-11 check digit or a 주민/등록번호 label nearby;
- a phone number needs a Korean prefix (010, 02, 031, +82 ...). A mobile number may be
  written without separators; a bare landline (``0262360730``) needs a phone word as its
  nearest label (전화, 연락처, 문의, tel ...) or ``번호``/``문자`` right after it (``... 번호로
  예약``) and no unit after it, so a bare 9-12 digit run (amount, date, id) is not a phone;
- a card number (4-4-4-4, Amex 4-6-5) needs a Luhn check with separators, or a card label;
  the forms that other numbers share need both: Amex as 15 bare digits, Diners 4-6-4, and
  4-4-4-4 with mixed separators (``4512 5219-9282 0579``);
- an account number (digit groups joined by ``-``, spaces or ``.``, or a bare 10-14 digit run)
  needs an account label (계좌, 입금, a bank name; a short bank name, also ``국)``, ``농)`` ...,
  only right next to a grouped number), is never followed by a unit (``원``, ``명``, ``%``)
  and is never a bare run starting with a date. Dotted groups also need one group of 4+
  digits and no date at the start (``12.345.678.901``, ``211.234.123.45``, ``2024.01.15.1430``
  are no accounts). Without any label, a hyphenated number is an account only in the usual
  grouping (3-4 groups, the first of 3-6 digits, not all of 4 digits like a voucher PIN,
  11-14 digits, no date) with ``보내`` nearby (``1002-212-534797 여기로 보내줘``);
- the label nearest before a number (within ``context_chars``) decides what it is:
  ``주문번호``, ``송장번호``, ``ISBN``, ``사업자등록번호``, ``모델명``, ``시리얼`` ... keep an RRN-,
  card- or account-shaped number; a phone number is kept only when such a label is right
  before it (``주문번호: 010-...``), since "주문 시 010-1234-5678로 연락" is a phone number.
  A parcel word (택배, 우체국택배, 등기, 소포, 배송) keeps an account-shaped number and a
  bare 13-digit run (a tracking number: ``우체국택배 6865123456789``), not a phone number;
- ``user@host:path`` (an scp or git remote) and ``git@...`` are no e-mail addresses, nor is a
  file name (``icon@2x.png``).

Policy, where the held-out set (tests/data/pii_heldout.jsonl) counts a case as non-personal:
080 free-call numbers are masked like any area code (only a company's number is lost, and an
080 number needs the same rules as the others), and so are half-masked RRNs
(``900101-1******``: the birth date is left, masking it is harmless). Nationwide
representative numbers (1588-xxxx ...) and short codes (114) have no area code and stay.
Obfuscated forms (공일공, 골뱅이, ``hong @ naver.com``, ``(at)``, ``dot com``) are not matched.

Types are matched in the order of ``PII_TYPES``; a span taken by one type is blanked for the
later ones (placeholders have no digits, so nothing can match inside a replacement).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Iterator

from data.clean.config import PIIConfig

PII_TYPES: tuple[str, ...] = ("rrn", "card", "phone", "account", "email")
"""Counted types, in the order they are masked."""

_DEFAULT = PIIConfig()
_ZEROS = dict.fromkeys(PII_TYPES, 0)

# ---- folding: full-width forms, dashes and spaces to ASCII, one code point for one ----------

_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\u3161"  # ‐ ‑ ‒ – — ― − ﹘ ﹣ ㅡ
_DOTS = "\u00b7\u2027\u30fb\uff65"  # · ‧ ・ ･ between digit groups: "010·1234·5678"
_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_FOLD = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}  # ！..～ -> !..~ (digits, letters, ＠)
_FOLD.update(dict.fromkeys(map(ord, _DASHES), "-"))
_FOLD.update(dict.fromkeys(map(ord, _SPACES), " "))
_FOLD.update(dict.fromkeys(map(ord, _DOTS), "."))
# Only the runs of such characters are translated: str.translate costs ~100 ns a character on
# non-ASCII text, and a middle dot or a no-break space is common in documents with no PII.
# "[...][...]*", not "[...]+": a pattern that starts with a plain class is scanned for it fast.
_FOLDED = "[\uff01-\uff5e" + _DASHES + _SPACES + _DOTS + "]"
_TO_FOLD = re.compile(_FOLDED + _FOLDED + "*")


def _fold(m: re.Match) -> str:
    return m.group().translate(_FOLD)


# A document without an ASCII or full-width digit and without an at sign has nothing to mask.
_GATE = re.compile("[0-9@\uff10-\uff19\uff20]")
_BLANK = "\x00"  # fills a masked span for the later types: not a digit, letter or separator

# ---- patterns (run on folded text, so ASCII classes are enough) -----------------------------

# Every number pattern starts with a plain character class and checks what lies before it
# right after that character: a pattern that starts with a lookbehind makes the regex engine
# try every position of the text (5x slower on digit-heavy help pages).


def _first(char: str) -> str:
    """``char`` starting a number: not after a digit, nor after a digit and a separator."""
    return rf"{char}(?<!\d{char})(?<!\d[-.]{char})"


_D = _first(r"\d")
_NA = r"(?!\d)(?![-.]\d)"  # the number ends here
_MASK = "*xX\u25cf\u25cb"  # ● ○: "880515-1******" (the repeats step makes it "880515-1**")

_RRN = re.compile(
    rf"({_D}\d)(\d\d)(\d\d)"
    rf"(?:( {{0,2}}- {{0,2}})([1-8])(\d{{6}}|[{_MASK}]{{2,6}})|( ?)([1-8])(\d{{6}}))"
    rf"(?![\d{_MASK}])(?![-.]\d)",
    re.ASCII,
)

_CSEP = r"(?: ?[-.] ?| )"
_CARD = re.compile(
    # 4-4-4-4 (one separator kind), 16 digits, Amex 4-6-5
    rf"{_D}(?:\d{{3}}( ?[-.] ?| )\d{{4}}\1\d{{4}}\1\d{{4}}|\d{{15}}|(?<=3)[47]\d\d( ?- ?| )\d{{6}}\2\d{{5}}"
    # forms that also need a card label: Amex as 15 bare digits, Diners 4-6-4, 4-4-4-4 with
    # mixed separators ("4512 5219-9282 0579")
    rf"|(?P<labelled>(?<=3)[47]\d{{13}}|(?<=3)(?:0[0-5]|[689]\d)\d(?P<dsep> ?- ?| )\d{{6}}(?P=dsep)\d{{4}}"
    rf"|\d{{3}}{_CSEP}\d{{4}}{_CSEP}\d{{4}}{_CSEP}\d{{4}})"
    rf"){_NA}",
    re.ASCII,
)

_SEP = r"(?: {0,2}[-.] {0,2}| {1,3})"  # 010-1234, 010 - 1234, 010.1234, 010 1234, "010  1234"
_AREA_CODES = r"2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|80|50[2-8]"  # Seoul, provinces, 070, 080, 050x
_MOBILE_CODES = r"1[016789]"
_REST = rf"\d{{3,4}}{_SEP}?\d{{4}}"  # subscriber number, separator optional
_REST_SEP = rf"\d{{3,4}}{_SEP}\d{{4}}"  # subscriber number, separator required
_PLUS, _PAREN, _ZERO, _EIGHT = _first(r"\+"), _first(r"\("), _first("0"), _first("8")
_PHONE_FORMS = (
    # +82 10 1234 5678, +82-2-123-4567, +82 (0)10-1234-5678, +821012345678
    rf"{_PLUS} ?82 ?-? ?(?:\(0\) ?)?(?:{_MOBILE_CODES}|{_AREA_CODES}){_SEP}?{_REST}",
    # 82-10-1234-5678: a mobile number with the country code but no plus, separators required
    rf"{_EIGHT}2{_SEP}{_MOBILE_CODES}{_SEP}{_REST_SEP}",
    # (02) 123-4567, (010)1234-5678
    rf"{_PAREN}0(?:{_AREA_CODES}|{_MOBILE_CODES})\) ?{_REST_SEP}",
    # 010-1234-5678, 010)1234-5678, 010 1234 5678, 010.1234.5678, 01012345678
    rf"{_ZERO}{_MOBILE_CODES}(?:\) ?|{_SEP})?{_REST}",
    # 02-123-4567, 031)123-4567, 064.712.3456, 0505-123-4567: landlines need separators ...
    rf"{_ZERO}(?:{_AREA_CODES})(?:\) ?|{_SEP}){_REST_SEP}",
    # ... or a phone word nearby (checked in _is_phone): "매장 전화 0262360730"; never inside a
    # name ("shared0211040000xml")
    rf"{_ZERO}(?<![A-Za-z_]0)(?:{_AREA_CODES})\d{{7,8}}",
)
# Every form starts with a literal character (a group would hide it), so the regex engine jumps
# from one "0", "+", "(" or "8" to the next instead of trying every position.
_PHONE = re.compile("(?:" + "|".join(_PHONE_FORMS) + ")" + _NA, re.ASCII)
# After a bare landline: "0316387239 번호로 예약", "0262360730로 문자"
_TEL_AFTER = re.compile(r"[\s).,]{0,3}(?:(?:으로|로|번으로|번)\s?)?(?:번호|문자)")

# Digit groups joined by one separator kind (3-3-6, 6-2-6, 4-4-4-2, 3-6-2-3, 4-4-4-1 ...: "-", spaces
# or "."), or a bare run
_ACCOUNT = re.compile(
    rf"{_D}(?:\d{{1,5}}( ?- ?| |\.)(?:\d{{2,6}}\1){{0,3}}\d{{1,7}}|\d{{9,13}}){_NA}", re.ASCII
)
# A bank's short name right before or after a grouped number ("국민 123456-01-234567"); alone
# these are common words (하나 "one", 우리 "we"), so they count only next to the number.
_BANK_SHORT = "국민|하나|우리|기업|카뱅|토스|케뱅|대구|부산|경남|광주|전북|제주|산업"
# Classifieds shorten further, with a bracket: "국) 076892-80-538151", "농) 352-7604-0364-34".
_BANK_ABBR = "국|농|신|우|하|기|수|새|씨"
_BANK_BEFORE = re.compile(rf"(?:(?:{_BANK_SHORT})(?:[ :(]|\) ?)?|(?<![가-힣])(?:{_BANK_ABBR})\) ?)$")
_BANK_AFTER = re.compile(rf"[ (]?(?:{_BANK_SHORT})")
# An amount, count or measure, not an account: "1234 5678 90원", "12345678901명".
# The unit must end its word or take a particle: "만 원", "원을", but not "만나다", "분위기", "배우".
_UNIT_AFTER = re.compile(
    r" ?(?:원|만|억|천|달러|명|개|건|회|점|%|배|주년|년|개월|월|일|시간|시|분|초)"
    r"(?:을|를|이|가|은|는|의|에|에서|으로|로|과|와|도|만|씩|짜리|정도|이상|이하|까지|부터|이나|입니다|이다|어치|쯤|째)?"
    r"(?![가-힣])"
)
# "보내줘" near a hyphenated number with no label at all: "회비는 1002-212-534797 여기로 보내줘"
_SEND = re.compile("보내")
# A bare run starting with a date is a timestamp or an order number: 20240115143000.
_DATE_START = re.compile(r"(?:19[5-9]\d|20[0-4]\d)(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")

# "icon@2x.png" is a file name: a "top-level domain" that is a file extension is no address.
_FILE_EXT = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "pdf", "txt", "md", "csv"}
    | {"json", "xml", "yaml", "yml", "html", "htm", "css", "js", "ts", "py", "java", "cpp", "zip", "gz"}
    | {"tar", "rar", "wav", "avi", "mkv", "mov", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods"}
)
# "git@github.com:koneox/koneox.git": an SSH/scp target (user@host:path), not an address.
_SCP_PATH = re.compile(r":(?:[~/]|[A-Za-z0-9_.-]+/)")
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![A-Za-z0-9])"
)


def _emails(text: str) -> Iterator[re.Match]:
    """``_EMAIL`` matches, tried only where an ``@`` is (scanning every letter costs 5x more).

    The local part starts after the last character that cannot be in one, skipping punctuation
    that cannot start one: "보낼게요.joon@naver.com" is an address after a full stop."""
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start <= 64 and text[start - 1] in _LOCAL:
            start -= 1
        m = None
        if start == 0 or text[start - 1] not in _LOCAL:  # else the local part is too long
            while start < at and text[start] in ".%+-":
                start += 1
            m = _EMAIL.match(text, start)
        if m:
            yield m
        at = text.find("@", m.end() if m else at + 1)


# ---- labels: the word nearest before a number says what it is --------------------------------

_LABELS = re.compile(
    r"(?P<veto>(?:사업자|법인|차량|의안|사건|주문|송장|운송장|상품|제품|모델|일련|시리얼|접수|예약|승인|인증|회원"
    r"|관리|문서|우편|고유|쿠폰|바코드|부품|특허|출원|등기)\s?(?:등록)?번호"
    r"|주문|송장|운송장|품번|모델명|시리얼|라이[선센]스|제품\s?키|쿠폰|바코드|(?:상품|제품|품목)\s?코드"
    r"|(?<![A-Za-z])(?i:isbn|issn|doi|s/n|serial|model|order|invoice|tracking)(?![A-Za-z]))"
    r"|(?P<rrn>주민|외국인\s?등록|등록번호|생년월일|(?<![A-Za-z])RRN(?![A-Za-z]))"
    r"|(?P<card>카드|신용|체크|결제|아[멕맥]스|다이너스|(?<![A-Za-z])(?i:card|visa|master|amex|diners|jcb)(?![A-Za-z]))"
    r"|(?P<courier>우체국(?=\s?(?:택배|등기|소포))|택배|등기|소포|배송)"
    r"|(?P<account>계좌|입금|송금|이체|예금주|무통장|은행|뱅크|농협|신협|수협|새마을금고|우체국|신한|저축"
    r"|(?<![A-Za-z])(?:KB|IBK|NH|SC|(?i:account|bank))(?![A-Za-z])|씨티)"
    r"|(?P<phone>전화|연락|휴대|핸드폰|폰|문의|팩스|(?<![A-Za-z])(?i:tel|phone|mobile|fax|hp|call)(?![A-Za-z]))"
)
"""Labels that name the number after them. ``veto``: a number that is not personal (order,
invoice, ISBN, business registration ...); the compounds come first so that "사업자등록번호"
is one veto, not a veto and then a "등록번호" (RRN) label at a later position. ``courier``: a
parcel or registered mail ("우체국택배 6865123456789" is a tracking number, not a 우체국
account); it keeps an account-shaped number but not a phone number ("택배 기사님 010-...")."""


# A label that ends right before a number: up to a colon, a bracket and spaces in between.
_NUMBER_LABEL = re.compile(rf"(?:{_LABELS.pattern})[\s:.(#]{{0,3}}$")


def _label(text: str, start: int, end: int, window: int) -> str | None:
    """Kind of the label nearest before ``text[start:end]`` within ``window`` characters, else
    of the first one after it (``123-45-678901 농협``), else None."""
    before = list(_LABELS.finditer(text, max(0, start - window), start))
    last = before[-1] if before else _LABELS.search(text, end, end + window)
    return last.lastgroup if last else None


def _has_label(text: str, start: int, end: int, window: int, kind: str) -> bool:
    lo, hi = max(0, start - window), end + window
    return any(m.lastgroup == kind for m in _LABELS.finditer(text, lo, hi))


def valid_rrn_date(yy: str, mm: str, dd: str, century_digit: str) -> bool:
    """True when YYMMDD is a real date in the century the 7th digit encodes."""
    century = {"1": 1900, "2": 1900, "5": 1900, "6": 1900, "3": 2000, "4": 2000, "7": 2000, "8": 2000}
    year = century[century_digit] + int(yy)
    month, day = int(mm), int(dd)
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def rrn_checksum_ok(digits: str) -> bool:
    """Mod-11 check digit of RRNs issued before October 2020."""
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    total = sum(int(d) * w for d, w in zip(digits[:12], weights, strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def luhn_ok(digits: str) -> bool:
    """Luhn check of a card number."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def ean13_ok(digits: str) -> bool:
    """Check digit of an EAN-13 barcode (weights 1, 3, 1, 3 ... from the left)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == int(digits[12])


def _digits(s: str) -> str:
    return "".join(ch for ch in s if "0" <= ch <= "9")


def _is_rrn(text: str, m: re.Match, window: int) -> bool:
    yy, mm, dd, hyphen, s, rest, _, s_bare, rest_bare = m.groups()
    if hyphen is None:
        s, rest = s_bare, rest_bare
    label = _label(text, m.start(), m.end(), window)
    if not valid_rrn_date(yy, mm, dd, s) or label == "veto":
        return False
    if hyphen is not None or _has_label(text, m.start(), m.end(), window, "rrn"):
        return True
    # No hyphen and no label: any 13-digit id would do, so the check digit must hold, and
    # Korean barcodes (EAN-13 with prefix 880), which can pass it too, are left alone, and so
    # is a parcel's tracking number ("우체국택배 8805121886837").
    digits = yy + mm + dd + s + rest
    return (
        label != "courier" and rrn_checksum_ok(digits) and not (digits.startswith("880") and ean13_ok(digits))
    )


def _is_card(text: str, m: re.Match, window: int) -> bool:
    digits = _digits(m.group(0))
    if m.group("labelled"):  # 15 bare digits, Diners 4-6-4, mixed separators: label and Luhn
        return luhn_ok(digits) and _label(text, m.start(), m.end(), window) == "card"
    label = _label(text, m.start(), m.end(), window)
    if label == "card":
        return True
    # A bare 16-digit run is as likely an order or product number: a card label is required.
    return label != "veto" and len(digits) != len(m.group(0)) and luhn_ok(digits)


def _is_phone(text: str, m: re.Match, window: int) -> bool:
    # A phone number is kept only when a number label names it right before ("주문번호: 010-...");
    # "주문 시 010-1234-5678로 연락" is a phone number.
    label = _NUMBER_LABEL.search(text, max(0, m.start() - 16), m.start())
    if label is not None and label.lastgroup == "veto":
        return False
    raw = m.group(0)
    if not raw.isdigit() or raw[1] == "1":  # separators, or a bare mobile number
        return True
    # A bare landline is a 9-12 digit run starting with 0: only a phone word makes it a number
    # to call ("매장 전화 0262360730", "0316387239 번호로 예약"); never an amount ("...원").
    if _UNIT_AFTER.match(text, m.end()):
        return False
    near = _label(text, m.start(), m.end(), window)
    return near == "phone" or (near is None and bool(_TEL_AFTER.match(text, m.end())))


def _is_account(text: str, m: re.Match, window: int) -> bool:
    raw = m.group(0)
    digits = _digits(raw)
    if not 10 <= len(digits) <= 16 or _UNIT_AFTER.match(text, m.end()):
        return False
    sep = m.group(1)
    bare = sep is None
    if bare and _DATE_START.match(raw):
        return False
    # "12.345.678.901" (thousands), "211.234.123.45" (an IP address), "2024.01.15.1430" (a date)
    # are no accounts: a dotted account has a group of 4+ digits and does not start with a date
    if sep == "." and (max(map(len, raw.split("."))) < 4 or _DATE_START.match(digits)):
        return False
    label = _label(text, m.start(), m.end(), window)
    if label == "account":
        return True
    if label is None and "-" in raw:
        # No label at all, but a transfer verb: "회비는 1002-212-534797 여기로 보내줘". Only the
        # usual account grouping: 3-4 groups, the first of 3-6 digits, not all of 4 digits (a
        # voucher PIN), 11-14 digits, not starting with a date.
        groups = [g.strip() for g in raw.split("-")]
        if (
            len(groups) in (3, 4)
            and 11 <= len(digits) <= 14
            and 3 <= len(groups[0]) <= 6
            and any(len(g) != 4 for g in groups)
            and not _DATE_START.match(digits)
            and _SEND.search(text, max(0, m.start() - window), m.end() + window)
        ):
            return True
    # A short bank name vouches only for a grouped number and never against a veto label:
    # "예약번호 9150443487 하나에" is a reservation number followed by "one of".
    return (
        not bare
        and label != "veto"
        and bool(
            _BANK_BEFORE.search(text, max(0, m.start() - 4), m.start()) or _BANK_AFTER.match(text, m.end())
        )
    )


def _is_email(text: str, m: re.Match, window: int) -> bool:
    if m.group(1).lower() in _FILE_EXT:
        return False
    # "git@github.com:koneox/koneox.git", "ssh -T git@github.com": a git or scp remote
    return not (m.group(0).startswith("git@") or _SCP_PATH.match(text, m.end()))


_Check = Callable[[str, re.Match, int], bool]
"""Decides whether a pattern's match (in the folded text, with the label window) is PII."""


def mask_pii(text: str, cfg: PIIConfig | None = None) -> tuple[str, dict[str, int]]:
    """Replace PII in ``text``; returns the new text and the count of each type replaced."""
    cfg = cfg or _DEFAULT
    counts = _ZEROS.copy()
    if not _GATE.search(text):
        return text, counts
    work = _TO_FOLD.sub(_fold, text)
    n_digits = sum(map(work.count, "0123456789"))  # each number type needs this many at least
    window = cfg.context_chars
    spans: list[tuple[int, int, str]] = []

    def run(kind: str, matches: Iterable[re.Match], token: str, accept: _Check) -> None:
        nonlocal work
        found = [m.span() for m in matches if accept(work, m, window)]
        if not found:
            return
        counts[kind] += len(found)
        spans.extend((a, b, token) for a, b in found)
        parts, pos = [], 0
        for a, b in found:
            parts += [work[pos:a], _BLANK * (b - a)]
            pos = b
        parts.append(work[pos:])
        work = "".join(parts)

    if cfg.rrn and n_digits >= 7:  # 7: a masked "880515-1******"
        run("rrn", _RRN.finditer(work), cfg.rrn_token, _is_rrn)
    if cfg.card and n_digits >= 14:  # 14: Diners
        run("card", _CARD.finditer(work), cfg.acc_token, _is_card)
    if cfg.phone and n_digits >= 9:
        run("phone", _PHONE.finditer(work), cfg.tel_token, _is_phone)
    if cfg.account and n_digits >= 10:
        run("account", _ACCOUNT.finditer(work), cfg.acc_token, _is_account)
    if cfg.email and "@" in work:
        run("email", _emails(work), cfg.email_placeholder, _is_email)
    if not spans:
        return text, counts
    spans.sort()
    out, pos = [], 0
    for a, b, token in spans:
        out += [text[pos:a], token]
        pos = b
    out.append(text[pos:])
    return "".join(out), counts
