"""PII masking for Korean text: RRN, phone, card, bank account, e-mail.

Rules that keep false positives down (REFERENCE §3):
- numbers are delimited by digit lookarounds ``(?<!\\d)``/``(?!\\d)``, never ``\\b`` (Hangul
  is ``\\w``, so ``번호는010-1234-5678`` has no word boundary before the 0);
- an RRN needs a valid birth date for its century digit; without the hyphen it also needs
  a valid mod-11 check digit or a context word (주민...), since any 13-digit id would match;
- a phone number needs a real Korean prefix (010, 02, 031, +82 ...); only mobile numbers may
  be written without separators, so a bare 9-11 digit run (amount, date) is never a phone;
- a card number needs a Luhn check or a context word (카드); an account number always needs a
  context word (계좌, 입금, a bank name) near it, so dates like ``2024-01-15`` stay.
Masks are applied RRN, card, phone, account, e-mail; placeholders have no digits, so a later
rule cannot match inside an earlier replacement.
"""

from __future__ import annotations

import calendar
import re

from data.clean.config import PIIConfig

PII_TYPES: tuple[str, ...] = ("rrn", "card", "phone", "account", "email")
"""Counted types, in the order they are masked."""

_RRN = re.compile(r"(?<![\d-])(\d{2})(\d{2})(\d{2})(\s?[-–]\s?)?([1-8])(\d{6})(?![\d-])")
_RRN_CONTEXT = re.compile(r"주민|등록번호|RRN|생년월일", re.IGNORECASE)

_CARD = re.compile(
    r"(?<![\d-])(?:\d{4}([- ])\d{4}\1\d{4}\1\d{4}|\d{16}|3[47]\d{2}([- ])\d{6}\2\d{5})(?![\d-])"
)
_DIGIT = re.compile(r"\d")
_NON_DIGIT = re.compile(r"\D")
_CARD_CONTEXT = re.compile(r"카드|card|결제|신용|체크", re.IGNORECASE)

_SEP = r"(?:[-. ]|\)\s?)"  # 02-, 02., 02 , 031)
_PHONE = re.compile(
    r"(?<![\d.-])(?:"
    r"\+82[-. ]?(?:\(0\))?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?\d{3,4}[-. ]?\d{4}"  # +82 10 1234 5678
    r"|\(?01[016789]\)?" + _SEP + r"?\d{3,4}[-. ]?\d{4}"  # 010-1234-5678, 01012345678
    r"|\(?0(?:2|[3-6][1-5]|70|80|50\d)\)?" + _SEP + r"\d{3,4}[-. ]\d{4}"  # 02-123-4567, 031)123-4567
    r")(?![\d.]?\d)"
)

_ACCOUNT = re.compile(r"(?<![\d-])(?:\d{2,6}-){1,4}\d{2,7}(?![\d-])|(?<!\d)\d{10,14}(?!\d)")
_ACCOUNT_CONTEXT = re.compile(
    r"계좌|입금|송금|이체|예금주|무통장|은행|뱅크|농협|신협|수협|새마을금고|우체국|"
    r"신한|국민은|KB|IBK|SC제일|씨티|account|bank",
    re.IGNORECASE,
)

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9])"
)


def _has_context(text: str, start: int, end: int, pattern: re.Pattern, window: int) -> bool:
    return bool(pattern.search(text, max(0, start - window), min(len(text), end + window)))


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


def mask_pii(text: str, cfg: PIIConfig | None = None) -> tuple[str, dict[str, int]]:
    """Replace PII in ``text``; returns the new text and the count of each type replaced."""
    cfg = cfg or PIIConfig()
    counts = dict.fromkeys(PII_TYPES, 0)
    # Cheap gate: each number type needs a minimum count of digits in the document.
    digit_count = len(_DIGIT.findall(text))
    window = cfg.context_chars

    if cfg.rrn and digit_count >= 13:

        def rrn(m: re.Match) -> str:
            yy, mm, dd, sep, s, rest = m.groups()
            if not valid_rrn_date(yy, mm, dd, s):
                return m.group(0)
            if not sep:
                digits = yy + mm + dd + s + rest
                if not (
                    rrn_checksum_ok(digits) or _has_context(text, m.start(), m.end(), _RRN_CONTEXT, window)
                ):
                    return m.group(0)
            counts["rrn"] += 1
            return cfg.rrn_token

        text = _RRN.sub(rrn, text)

    if cfg.card and digit_count >= 15:

        def card(m: re.Match) -> str:
            digits = _NON_DIGIT.sub("", m.group(0))
            # A bare 16-digit run is as likely an order or product number: context required.
            separated = len(digits) != len(m.group(0))
            if not (
                (separated and luhn_ok(digits))
                or _has_context(text, m.start(), m.end(), _CARD_CONTEXT, window)
            ):
                return m.group(0)
            counts["card"] += 1
            return cfg.acc_token

        text = _CARD.sub(card, text)

    if cfg.phone and digit_count >= 9:

        def phone(m: re.Match) -> str:
            counts["phone"] += 1
            return cfg.tel_token

        text = _PHONE.sub(phone, text)

    if cfg.account and digit_count >= 10:

        def account(m: re.Match) -> str:
            digits = sum(ch.isdigit() for ch in m.group(0))
            if not 10 <= digits <= 16 or not _has_context(text, m.start(), m.end(), _ACCOUNT_CONTEXT, window):
                return m.group(0)
            counts["account"] += 1
            return cfg.acc_token

        text = _ACCOUNT.sub(account, text)

    if cfg.email and "@" in text:

        def email(m: re.Match) -> str:
            counts["email"] += 1
            return cfg.email_placeholder

        text = _EMAIL.sub(email, text)
    return text, counts
