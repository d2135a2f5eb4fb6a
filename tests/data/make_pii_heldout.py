"""Build tests/data/pii_heldout.jsonl, a held-out evaluation set for data.clean.mask_pii.

The set was written independently of the masker and of its tuning cases: the templates below are
hand-written (community posts, classifieds, shopping Q&A, notices, reviews) or taken verbatim from
../shared/corpus (NSMC reviews, LibreOffice/GIMP help, National Assembly bills; tagged "corpus").
All PII here is fake but well-formed: RRNs carry a real birth date and a valid mod-11 check digit,
card numbers pass the Luhn check, account numbers follow each bank's usual grouping.

Labelling policy (also in the report):
  * phone (positive): mobile 010/011/016-019, landlines with an area code 02/031-064 (whoever owns
    them: a shop's landline cannot be told apart from a home line), 070 internet phones, and Korean
    numbers in international form (+82 10-..., +82-2-...).
  * service_number (negative): nationwide representative numbers 15xx/16xx/18xx-xxxx (1588, 1577,
    1544, 1600, 1644, 1661, 1899...), 080 toll-free numbers, short codes (112, 114, 119, 1330).
    They belong to companies/agencies, not persons.  The evaluator reports them separately.
  * masked_rrn / masked_card / masked_phone (negative): already-masked items such as
    900101-1******; nothing personal is left to hide.  Also reported separately.
  * not in the set: foreign (non-+82) numbers, 050x safe numbers, bank "lifetime" accounts that
    reuse a phone number: their correct placeholder is a matter of policy.
  * card numbers use the <|acc|> placeholder, like accounts.
  * records tagged "obfuscated" (골뱅이, (at), 공일공) are positives a regex masker is not expected
    to catch; the evaluator prints recall with and without them.

Run:  python tests/data/make_pii_heldout.py   (deterministic; rewrites the .jsonl next to it)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("pii_heldout.jsonl")
PLACEHOLDER = {
    "rrn": "<|rrn|>",
    "phone": "<|tel|>",
    "account": "<|acc|>",
    "card": "<|acc|>",
    "email": "email@example.com",
}

rng = random.Random(20240115)


# ---------------------------------------------------------------- number helpers


def digits(n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def rrn_check(body12: str) -> int:
    weights = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    s = sum(int(d) * w for d, w in zip(body12, weights, strict=True))
    return (11 - s % 11) % 10


def rrn(birth: str, gender: int) -> str:
    """Birth date YYMMDD + gender digit + 5 random digits + valid mod-11 check digit."""
    body = birth + str(gender) + digits(5)
    return f"{body[:6]}-{body[6:]}{rrn_check(body)}"


def rrn_valid(num: str) -> bool:
    d = "".join(c for c in num if c.isdigit())
    return len(d) == 13 and rrn_check(d[:12]) == int(d[12])


def luhn_ok(num: str) -> bool:
    d = [int(c) for c in num if c.isdigit()][::-1]
    total = sum(x if i % 2 == 0 else (x * 2 - 9 if x * 2 > 9 else x * 2) for i, x in enumerate(d))
    return total % 10 == 0


def luhn_card(prefix: str, length: int = 16) -> str:
    """Random Luhn-valid card number (digits only) starting with prefix."""
    body = prefix + digits(length - len(prefix) - 1)
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError


def group(num: str, sizes: tuple[int, ...], sep: str = "-") -> str:
    out, i = [], 0
    for s in sizes:
        out.append(num[i : i + s])
        i += s
    assert i == len(num), (num, sizes)
    return sep.join(out)


def mobile(prefix: str = "010", mid: int = 4, sep: str = "-") -> str:
    return sep.join([prefix, digits(mid, "23456789"), digits(4)])


def landline(area: str, mid: int = 3, sep: str = "-") -> str:
    return sep.join([area, digits(mid, "2345678"), digits(4)])


def fullwidth(s: str) -> str:
    table = {ord(c): chr(ord(c) + 0xFEE0) for c in "0123456789@.-abcdefghijklmnopqrstuvwxyz"}
    return s.translate(table)


def fullwidth_digits(s: str) -> str:
    return s.translate({ord(c): chr(ord(c) + 0xFEE0) for c in "0123456789"})


def ean13_check(d12: str) -> int:
    return (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(d12)) % 10) % 10


def brn(first9: str) -> str:
    """사업자등록번호 3-2-5 with the official check digit."""
    w = [1, 3, 7, 1, 3, 7, 1, 3, 5]
    s = sum(int(d) * x for d, x in zip(first9, w, strict=True)) + int(first9[8]) * 5 // 10
    return group(first9 + str((10 - s % 10) % 10), (3, 2, 5))


def corp_no(first12: str) -> str:
    """법인등록번호 6-7 with its check digit (weights 1,2,1,2...)."""
    s = sum(int(d) * (1 if i % 2 == 0 else 2) for i, d in enumerate(first12))
    return group(first12 + str((10 - s % 10) % 10), (6, 7))


# ---------------------------------------------------------------- records

records: list[dict] = []


def pos(typ: str, template: str, item: str, *tags: str) -> None:
    text = template.format(item)
    assert text.count(item) == 1, (template, item)
    expected = text.replace(item, PLACEHOLDER[typ])
    n = sum(1 for r in records if r["kind"] == "positive" and r["type"] == typ) + 1
    records.append(
        {
            "id": f"pos-{typ}-{n:03d}",
            "kind": "positive",
            "type": typ,
            "text": text,
            "item": item,
            "expected": expected,
            "tags": list(tags),
        }
    )


def neg(typ: str, text: str, item: str, *tags: str) -> None:
    assert item in text, (text, item)
    n = sum(1 for r in records if r["kind"] == "negative") + 1
    records.append(
        {
            "id": f"neg-{n:03d}",
            "kind": "negative",
            "type": typ,
            "text": text,
            "item": item,
            "expected": text,
            "tags": list(tags),
        }
    )


# ---------------------------------------------------------------- positives: phone

m = mobile
pos("phone", "혹시 지갑 주우신 분은 {} 로 연락 부탁드립니다. 사례하겠습니다.", m())
pos("phone", "{}로 문자 주세요~ 전화는 회사라 잘 못 받아요ㅠ", m(), "particle", "start")
pos("phone", "판매자 연락처: {} (오후 6시 이후 통화 가능)", m())
pos("phone", "직거래 원하시면 {}번으로 문자주세요. 택배거래 안 합니다.", m(), "particle")
pos("phone", "네고 불가. 연락처{} 카톡X", m(), "glued")
pos("phone", "{}로 연락주시면 바로 답장드릴게요", m(sep="."), "dots", "particle", "start")
pos("phone", "급하시면 {}으로 전화 주세요!!", m(sep=" "), "spaces", "particle")
pos("phone", "{} 여기로 입금확인 문자 부탁드려요", m().replace("-", ""), "nohyphen", "start")
pos(
    "phone",
    "사장님 번호가 {}이에요. 예약은 전화로만 받으신대요",
    m().replace("-", ""),
    "nohyphen",
    "particle",
)
pos("phone", "연락처 : {} (부재시 문자)", m(sep=" - "), "spaces")
pos("phone", "분양 문의는 {}로 해주세요", fullwidth(m()), "fullwidth", "particle")
pos("phone", "담당자 ☎ {}", fullwidth_digits(m()), "fullwidth")
pos("phone", "아이폰 13 미개봉 팝니다 {} 문자만 받아요", m(sep="ㅡ"), "hangul_dash")
pos("phone", "해외에서 거실 때는 {} 로 걸어주세요.", "+82 " + m()[1:], "intl")
pos("phone", "WhatsApp/카톡 모두 {}입니다", "+82-" + m()[1:], "intl", "particle")
pos("phone", "Contact: {} (Korea, KakaoTalk available)", "+82" + m()[1:].replace("-", ""), "intl", "nohyphen")
pos("phone", "사무실 {}로 전화하시면 됩니다.", "(02) " + landline("02")[3:], "parens", "particle")
pos("phone", "예약문의 {} 평일 10시~18시", "02)" + landline("02", 4)[3:], "parens")
pos("phone", "병원 직통은 {}로 바뀌었어요", landline("02", 4), "particle")
pos("phone", "주소: 경기도 성남시 분당구 정자일로 95 / TEL {}", landline("031"))
pos("phone", "부산 본점 {}, 서면점도 있어요", landline("051"))
pos("phone", "제주 애월 독채펜션 예약 {} (카톡 상담 가능)", landline("064"))
pos("phone", "대전 유성구 본사 {} 담당 김대리", "042)" + landline("042")[4:], "parens")
pos("phone", "상담은 {} 로 해주세요", "070-" + digits(4, "2345678") + "-" + digits(4), "070")
pos("phone", "인터넷전화 {}번 입니다", "070 " + digits(4, "2345678") + " " + digits(4), "070", "spaces")
pos("phone", "아직도 {} 쓰시는 분 계신가요? 아버지 번호입니다 ㅎㅎ", m("011", 3), "old_prefix")
pos("phone", "제 폰 번호 {}는 이제 안 써요", m("016", 3), "old_prefix", "particle")
pos("phone", "{} 010으로 안 바꾸고 버티는 중", m("017", 4), "old_prefix", "start")
pos("phone", "연락은 {}로 부탁드립니다", m("019", 3), "old_prefix", "particle")
pos("phone", "H.P: {}", m("018", 3), "old_prefix")
pos("phone", "홍길동({})님 앞으로 보내주세요", m(), "parens")
pos("phone", "전화번호는 {}입니다.", m(), "particle")
pos("phone", "구옥 매매합니다 연락처 {} 주인 직거래", m().replace("-", ")", 1), "parens")
pos("phone", "문의사항 있으시면 {}(문자만) 남겨주세요", m(sep="–"), "unicode_dash")
pos("phone", "국회예산정책처 법안비용추계1팀 예산분석관 김 태 완 ({})", "02-788-4649", "corpus")
pos("phone", "Tel.{} (평일 9시~6시)", landline("02"), "glued")
pos("phone", "{} 카톡 추가해 주세요", "(010) " + m()[4:], "parens", "start")
pos("phone", "Mobile {} / Seoul office", "+82 (0)" + m()[1:], "intl", "parens")
pos("phone", "Office: {} (Seoul)", "+82 2-" + landline("02", 4)[3:], "intl")
pos("phone", "국제전화로는 {} 로 거시면 됩니다", "82-" + m()[1:], "intl")
pos("phone", "매장 전화 {} 로 주세요", landline("02", 4).replace("-", ""), "nohyphen")
pos("phone", "{} 번호로 예약 받습니다", landline("031", 4).replace("-", ""), "nohyphen", "start")
pos("phone", "연락처 {} 로 문자주세요", m(sep="·"), "unicode_dash")
pos("phone", "당근 거래 {} 문자 주세요", m(sep="―"), "unicode_dash")
pos("phone", "연락처: {}", m(sep="−"), "unicode_dash")
pos("phone", "<td>담당자</td><td>{}</td>", m(), "html")
pos("phone", '<a href="tel:{}">전화 걸기</a>', m().replace("-", ""), "html", "nohyphen")
pos("phone", "휴대폰 {} 입니다", m(sep=". "), "dots", "spaces")
pos("phone", "폰 {} 문자주세요", m()[:3] + " " + m()[4:], "spaces")
pos("phone", "{}/김민지 (인수자)", m(), "start")
pos("phone", "폰번 {} 카톡 아이디도 같아요", "공일공-" + digits(4, "2345678") + "-" + digits(4), "obfuscated")
pos("phone", "번호 남길게요 {} 연락주세요", "010 일이삼사 오육칠팔", "obfuscated")

# ---------------------------------------------------------------- positives: rrn

pos("rrn", "주민등록번호: {}", rrn("900101", 1))
pos(
    "rrn",
    "신청서에 주민번호 {} 이렇게 띄어서 썼더니 반려됐어요",
    rrn("850315", 2).replace("-", " - "),
    "spaces",
)
pos("rrn", "주민등록번호 {} 로 조회해도 안 나와요", rrn("770708", 1).replace("-", " -"), "spaces")
pos(
    "rrn", "주민번호 {}로 가입 시도했는데 오류나요", rrn("920229", 2).replace("-", "- "), "spaces", "particle"
)
pos("rrn", "본인 주민번호 {} 맞는지 확인 부탁드립니다", rrn("881111", 1).replace("-", ""), "nohyphen")
pos(
    "rrn",
    "{}이 제 주민번호인데 왜 본인인증이 안되죠",
    rrn("951003", 2).replace("-", ""),
    "nohyphen",
    "particle",
    "start",
)
pos("rrn", "주민등록번호 {}", fullwidth(rrn("830521", 1)), "fullwidth")
pos("rrn", "아이 주민번호가 {}인데 2000년대생은 3으로 시작하는 거 맞죠?", rrn("150806", 3), "particle")
pos("rrn", "딸 주민등록번호 {} 입니다. 예방접종 기록 조회 부탁드려요", rrn("190214", 4))
pos("rrn", "외국인등록번호 {}로 통장 개설 가능한가요?", rrn("880212", 5), "foreigner", "particle")
pos("rrn", "외국인등록번호: {} (베트남 국적)", rrn("960930", 6), "foreigner")
pos("rrn", "성명: 김민수 / 주민등록번호: {} / 주소: 서울특별시 마포구 월드컵북로 400", rrn("711204", 1))
pos("rrn", "{} 이 번호로 조회가 안 돼요 ㅠㅠ", rrn("931122", 2), "start")
pos("rrn", "주민번호 {}를 적으라는데 개인정보 괜찮은 건가요", rrn("000101", 3), "particle")
pos("rrn", "신청인 박영희(주민등록번호 {})는 다음과 같이 신청합니다.", rrn("680505", 2), "parens")
pos("rrn", "보호자 주민번호({}) 기재 필수", rrn("640817", 1), "parens")
pos("rrn", "주민번호 {}ㅋㅋ 이거 적는 사이트 믿어도 되나", rrn("990720", 1).replace("-", "ㅡ"), "hangul_dash")
pos("rrn", "고객님의 주민등록번호는 {}입니다. 본인 확인 후 진행하겠습니다.", rrn("560103", 1), "particle")
pos("rrn", "주민:{}", rrn("870430", 2), "glued")
pos("rrn", "위임인 이순자 {} 위 사람에게 권한을 위임합니다", rrn("521225", 2))
pos("rrn", "아버지 주민번호가 {}이고 어머니는 기억이 안나요", rrn("600601", 1), "particle")
pos("rrn", "주민등록번호 뒷자리까지 {}으로 입력했습니다", rrn("030915", 4), "particle")
pos("rrn", "연말정산 부양가족 {} 추가했어요", rrn("100102", 3))
pos("rrn", "{}", rrn("801010", 1), "alone")
pos("rrn", "등본상 주민등록번호 {} 와 일치하지 않습니다", fullwidth_digits(rrn("910505", 2)), "fullwidth")
pos("rrn", "RRN {} (Korean resident registration number)", rrn("750228", 1))
pos("rrn", "주민등록번호 {} (띄어쓰기로 구분)", rrn("890712", 1).replace("-", " "), "spaces")
pos("rrn", "<td>주민등록번호</td><td>{}</td>", rrn("740325", 2), "html")
pos("rrn", "주민번호 {} 적어서 보냈어요", rrn("980101", 1).replace("-", "―"), "unicode_dash")
pos("rrn", "주민등록번호 {} 입니다", rrn("661111", 2).replace("-", "－"), "fullwidth")
pos("rrn", "진짜 명작이다. 아 참 경품 당첨되신 분 주민번호 {} 확인했습니다", rrn("820318", 2), "corpus_mix")

# ---------------------------------------------------------------- positives: account


def acct(sizes: tuple[int, ...], prefix: str = "", sep: str = "-") -> str:
    n = sum(sizes)
    return group(prefix + digits(n - len(prefix)), sizes, sep)


pos("account", "국민 {} 홍길동 입금 후 문자 주세요", acct((6, 2, 6)))
pos("account", "국민은행 {}로 입금해주세요", acct((6, 2, 6)).replace("-", ""), "nohyphen", "particle")
pos("account", "KB국민 {} (예금주 김철수)", acct((6, 2, 6), "4798"))
pos("account", "신한 {} 예금주 이영희", acct((3, 3, 6), "110"))
pos(
    "account",
    "신한은행 {}로 보내주시면 됩니다",
    acct((3, 3, 6), "110").replace("-", ""),
    "nohyphen",
    "particle",
)
pos("account", "입금계좌: 신한 {} 예금주 홍길동", acct((3, 3, 6), "100"))
pos("account", "우리은행 {} 박지민", acct((4, 3, 6), "1002"))
pos("account", "우리 {} 으로 보내주세요", acct((4, 3, 6), "1002", " "), "spaces")
pos("account", "하나은행 {}", acct((3, 6, 5)))
pos("account", "하나 {}로 선입금 부탁드립니다", acct((3, 6, 3), "620"), "particle")
pos("account", "농협 {} 김순자", acct((3, 4, 4, 2), "302"))
pos("account", "농협 {}으로 회비 입금 바랍니다", acct((3, 4, 4, 2), "351"), "particle")
pos("account", "NH농협 {} (모임통장)", acct((3, 4, 4, 2), "301").replace("-", ""), "nohyphen")
pos("account", "카카오뱅크 {} 최지우", acct((4, 2, 7), "3333"))
pos("account", "카뱅 {} 입금되면 바로 발송해요", acct((4, 2, 7), "3333").replace("-", ""), "nohyphen")
pos("account", "카카오뱅크 {}로 보내주세요", acct((4, 2, 7), "3333"), "particle")
pos("account", "카뱅{} 예금주 정우성", acct((4, 2, 7), "3333"), "glued")
pos("account", "토스뱅크 {} 김토스", acct((4, 4, 4), "1000"))
pos("account", "토스 {} 로 송금해주세요", acct((4, 4, 4), "1000", " "), "spaces")
pos("account", "토스뱅크 {}으로 부탁드려요", acct((4, 4, 4), "1000").replace("-", ""), "nohyphen", "particle")
pos("account", "기업은행 {} 주식회사 한빛", acct((3, 6, 2, 3)))
pos("account", "IBK {}로 잔금 입금 예정입니다", acct((3, 6, 2, 3)), "particle")
pos("account", "우체국 {} 홍길동", acct((6, 2, 6)))
pos("account", "새마을금고 {} 이장님 명의", acct((4, 4, 4, 1), "9002"))
pos("account", "케이뱅크 {}", acct((3, 3, 6), "100"))
pos("account", "SC제일은행 {} 예금주 한지민", acct((3, 2, 6)))
pos("account", "씨티은행 {}", acct((3, 6, 3)))
pos("account", "부산은행 {} 동창회 총무", acct((3, 4, 4, 2), "101"))
pos("account", "대구은행 {} 입금 확인 후 배송", acct((3, 2, 6, 1), "508"))
pos("account", "수협 {}", acct((4, 4, 4), "1010"))
pos("account", "신협 {}로 후원해 주세요", acct((3, 3, 6), "131"), "particle")
pos("account", "경남은행 {} 예금주 (주)바다상사", acct((3, 4, 4, 2), "207"))
pos("account", "국민 {} 입금자명 꼭 적어주세요", fullwidth(acct((6, 2, 6))), "fullwidth")
pos("account", "계좌 {} 신한이에요", acct((3, 3, 6), "110", " "), "spaces", "no_bank_before")
pos("account", "후원계좌 : 농협 {} (사)희망나눔", acct((3, 4, 4, 2), "301"))
pos("account", "입금은 {}로 해주세요 (카카오뱅크)", acct((4, 2, 7), "3333"), "no_bank_before", "particle")
pos("account", "신한 {} 회비 3만원씩", acct((3, 3, 6), "110", "ㅡ"), "hangul_dash")
pos("account", "중고나라 거래 계좌번호 {}인데 사기 조회 부탁드려요", acct((6, 2, 6)), "particle")
pos("account", "국) {} 홍길동", acct((6, 2, 6)), "bank_abbrev")
pos("account", "농) {} 김영수", acct((3, 4, 4, 2), "352"), "bank_abbrev")
pos("account", "(신한){} 예금주 오세훈", acct((3, 3, 6), "110"), "glued")
pos("account", "{} 카뱅 예금주 이수진", acct((4, 2, 7), "3333", " "), "spaces", "start", "no_bank_before")
pos("account", "신한 {} 으로 부탁", acct((3, 3, 6), "110", "."), "dots")
pos("account", "회비는 {} 여기로 보내줘!", acct((4, 3, 6), "1002"), "context_free")
pos("account", "입금처 {} (예금주 김하나)", acct((3, 6, 5)), "no_bank_before")
pos("account", "농협{} 예금주 박농부", acct((3, 4, 4, 2), "302"), "glued")
pos("account", "국민 {} 입금 부탁해요", acct((6, 2, 6), "", " "), "spaces")
pos("account", "환불계좌: 하나 {} 김하나", acct((3, 6, 5)).replace("-", ""), "nohyphen")

# ---------------------------------------------------------------- positives: card

c16 = luhn_card
pos("card", "카드번호 {}로 결제했는데 승인이 안 나요", group(c16("4512"), (4, 4, 4, 4)), "particle")
pos("card", "신용카드 번호 {} 유효기간 08/27", group(c16("5412"), (4, 4, 4, 4), " "), "spaces")
pos("card", "{} 이 카드 분실신고 했어요", group(c16("4017"), (4, 4, 4, 4)), "start")
pos("card", "카드번호: {}", c16("9410"), "nohyphen")
pos("card", "아멕스 {} 해외결제 막혔어요", group(c16("3765", 15), (4, 6, 5)), "amex")
pos("card", "JCB 카드 {} 일본 여행 때 썼던 카드", group(c16("3561"), (4, 4, 4, 4)))
pos("card", "은련카드 {}로 결제 가능한가요?", group(c16("6243"), (4, 4, 4, 4)), "particle")
pos("card", "마스터카드 {} 입니다", group(c16("2221"), (4, 4, 4, 4)))
pos("card", "카드번호 {}", fullwidth(group(c16("4901"), (4, 4, 4, 4))), "fullwidth")
pos("card", "결제카드 ({}) 변경 요청드립니다", group(c16("5243"), (4, 4, 4, 4)), "parens")
pos("card", "카드번호가 {}인데 해외결제 되나요?", group(c16("5310"), (4, 4, 4, 4)), "particle")
pos("card", "법인카드 {}을 등록해 주세요", group(c16("4665"), (4, 4, 4, 4)), "particle")
pos("card", "BC카드 {} 할부 3개월로요", group(c16("9490"), (4, 4, 4, 4)))
pos("card", "체크카드 {} 분실했습니다. 정지 부탁드려요", c16("4048"), "nohyphen")
pos("card", "현대카드 번호 알려드릴게요 {}", group(c16("4221"), (4, 4, 4, 4), "."), "dots")
pos("card", "card no. {} exp 11/26", group(c16("4532"), (4, 4, 4, 4), " "), "spaces")
pos("card", "카드 {} 로 자동이체 걸어놨어요", group(c16("5585"), (4, 4, 4, 4)))
pos("card", "삼성카드{} 결제 취소 부탁드립니다", group(c16("5365"), (4, 4, 4, 4)), "glued")
pos("card", "롯데카드 {}으로 결제했어요", group(c16("4579"), (4, 4, 4, 4), " "), "spaces", "particle")
pos("card", "해외 직구할 때 {} 이 번호 입력했는데 도용당한 듯", group(c16("4386"), (4, 4, 4, 4)))
pos("card", "카드번호 {} CVC는 따로 보내드릴게요", group(c16("5137"), (4, 4, 4, 4), "ㅡ"), "hangul_dash")
pos("card", "[주문정보] 결제수단: 신용카드 {} / 일시불", group(c16("4890"), (4, 4, 4, 4)))
pos("card", "아멕스 플래티넘 {}", c16("3747", 15), "amex", "nohyphen")
pos("card", "하나카드 {} 연회비 환불 문의", group(c16("9420"), (4, 4, 4, 4), " "), "spaces")
pos("card", "카드번호는 {}입니다.", group(c16("4123"), (4, 4, 4, 4)), "particle")
pos("card", "아멕스 카드 {} 결제 오류", group(c16("3782", 15), (4, 6, 5), " "), "amex", "spaces")
pos("card", "{} 아멕스 골드 분실", c16("3400", 15), "amex", "nohyphen", "start")
pos("card", "다이너스 {} 해외 가맹점", group(c16("3056", 14), (4, 6, 4), " "), "diners", "spaces")
pos(
    "card",
    "카드번호 {} 입력했어요",
    (lambda n: f"{n[:4]} {n[4:8]}-{n[8:12]} {n[12:]}")(c16("4512")),
    "mixed_sep",
)
pos("card", "카드 {} 로 결제", group(c16("4916"), (4, 4, 4, 4), "－"), "fullwidth")
pos("card", "카드번호 : {}", group(c16("5522"), (4, 4, 4, 4), " - "), "spaces")
pos("card", "<td>카드번호</td><td>{}</td>", group(c16("4092"), (4, 4, 4, 4)), "html")
pos("card", "결제 {} 확인 부탁드립니다", c16("5409"), "nohyphen", "context_free")
pos(
    "card", "우리카드 {} 분실 신고 접수 완료", fullwidth_digits(group(c16("5289"), (4, 4, 4, 4))), "fullwidth"
)

# ---------------------------------------------------------------- positives: email

pos("email", "자료 필요하신 분은 {}으로 메일 주세요", "hong.gildong@naver.com", "particle")
pos("email", "{} 로 이력서 보내주시면 검토 후 연락드립니다", "gildong99@hanmail.net", "start")
pos("email", "문의: {}", "help.koneox@gmail.com")
pos("email", "{}이나 카톡으로 연락주세요", "jiyoung_kim@daum.net", "particle", "start")
pos("email", "어제 {}에 자소서 보냈는데 답이 없네요", "minsu-lee@nate.com", "particle")
pos("email", "카카오메일 {} 로 보내주세요", "sunny1004@kakao.com")
pos("email", "학교 메일은 {}입니다", "s2023123@snu.ac.kr", "particle")
pos("email", "지도교수님 메일 {} 로 보내면 돼", "hong@cs.kaist.ac.kr", "subdomain")
pos("email", "공동연구 문의는 {}로 부탁드립니다.", "jkim@mail.hanyang.ac.kr", "subdomain", "particle")
pos("email", "쇼핑몰 가입할 때 {} 이렇게 쓰면 스팸 추적 가능해요", "park.minji+shopping@gmail.com", "plus")
pos("email", "{}로 뉴스레터 구독 신청했어요", "hongzzang+newsletter@naver.com", "plus", "particle", "start")
pos("email", "대표메일 {}", "HongGD@Naver.com", "caps")
pos("email", "메일주소 {} 으로 보내주세요", "hong1234＠naver.com", "fullwidth")
pos("email", "담당 주무관 <{}>", "lee.sj@korea.kr", "brackets")
pos("email", "예산분석관 김 태 완 ({})", "tanzania@assembly.go.kr", "corpus", "parens")
pos("email", "채용 문의 mailto:{}", "recruit@koneox.co.kr")
pos("email", "지원서는 {} 로 제출해 주십시오.", "hiring@careers.hanbit-soft.co.kr", "subdomain")
pos("email", "{}는 제 옛날 메일이에요", "1004angel@hanmail.net", "particle", "start")
pos("email", "아이디가 생일이라 {}예요", "19901231@naver.com", "numeric_local", "particle")
pos("email", "{} 로 보내시면 돼요", "a.b.c@daum.net")
pos("email", "스마트스토어 CS: {} (평일 09-18시)", "cs@shop.dalbit-mall.co.kr", "subdomain")
pos("email", "이메일 주소는 {} 입니다", "kim_minjae.92@gmail.com")
pos(
    "email",
    "진짜 명품영화다 근데 견자때문에 진짜 몰입도 떨어진다 팬카페 가입문의 {}",
    "nsmc.fan@gmail.com",
    "corpus_mix",
)
pos("email", "아웃룩은 {}로 만들었어요", "sunny_day@outlook.kr", "particle")
pos("email", "보내실 곳: {}.", "choi.mj@hanmail.net", "sentence_end")
pos("email", "{}에게 참조로 넣어주세요", "team-lead@corp.koneox.com", "subdomain", "particle", "start")
pos("email", "결과는 {}으로요!!", "gd.hong@gmail.com", "particle")
pos("email", "E-mail:{}", "hong.gd@naver.com", "glued")
pos("email", "메일({})로 주시면 바로 확인할게요", "jh.choi@hanmail.net", "parens")
pos("email", "ID: hong1234 / 메일 {}", "hong1234@nate.com")
pos("email", "이드라마못보면못살껏같아요♥ㅠㅠ 굿즈 문의 {}", "kimtan.love@naver.com", "corpus_mix")
pos("email", "개발 관련 제보는 {} 로", "dev+bugs@koneox.io", "plus")
pos("email", "이메일 {} 확인 부탁드립니다", fullwidth("hong@naver.com"), "fullwidth")
pos("email", "이메일{} 로 연락주세요", "hong.minji@naver.com", "glued")
pos("email", "메일은{}로 주세요", "minji0301@daum.net", "glued", "particle")
pos("email", '"{}" 로 보내주세요', "jsyoon@gmail.com", "quotes")
pos("email", "「{}」로 접수 바랍니다", "apply@dalbit.or.kr", "brackets", "particle")
pos("email", "MAIL: {}", "HONG.GILDONG@NAVER.COM", "caps")
pos("email", "개인 메일 {} 로", "me@hongdev.me", "new_tld")
pos("email", "블로그 협업 문의 {} 입니다", "collab@koneox.dev", "new_tld")
pos("email", "중국 거래처 메일 {}", "wang.li@163.com", "numeric_domain")
pos("email", "https://shop.example.kr/order?email={}&ref=1 링크 눌렀더니", "buyer01@naver.com", "url")
pos("email", "중고샵 문의 {}", "2nd-hand.shop@gmail.com", "numeric_local")
pos("email", "메일 주소는 {} 이에요", "hong @ naver.com", "obfuscated")
pos("email", "연락 {}", "hong@naver dot com", "obfuscated")
pos("email", "메일은 {} 입니다(스팸 때문에 이렇게 씀)", "hong 골뱅이 naver.com", "obfuscated")
pos("email", "연락처 {}", "hong(at)gmail.com", "obfuscated")
pos("email", "작성자 {} 2024.01.15", "o.sunmi@cs.snu.ac.kr", "subdomain")

# ---------------------------------------------------------------- negatives

# dates (some verbatim NSMC reviews)
neg("date", "2024-01-15 관람. 명작입니다. 짐 캐리 연기도 좋았습니다", "2024-01-15")
neg("date", "2023.12.25 크리스마스에 가족이랑 봤는데 다들 울었어요", "2023.12.25")
neg("date", "작성일 2024. 3. 2. 오후 3:15 조회 128", "2024. 3. 2.")
neg("date", "2024/01/15 배송 출발했다고 떴는데 아직이네요", "2024/01/15")
neg("date", "20240115 기준으로 재고 업데이트했습니다", "20240115")
neg("date", "24.01.15 방문 후기입니다. 웨이팅 30분", "24.01.15")
neg("date", "행사 기간: 2024-03-01 ~ 2024-12-31 (소진 시 조기 종료)", "2024-03-01 ~ 2024-12-31")
neg("date", "2024-01-15 14:30:00 결제 완료 알림이 왔어요", "2024-01-15 14:30:00")
neg("date", "부칙 <헌법 제10호, 1987.10.29.> 부칙보기", "1987.10.29.", "corpus")
neg("date", "생년월일(8자리) 19900101 형식으로 입력하세요", "19900101")
neg("date", "공지 ２０２４－０１－１５ 서버 점검 안내", "２０２４－０１－１５", "fullwidth")
neg("date", "2015.02.21 진켈리는 못하는게 뭘까. 50년대 뮤지컬이라니.. 최고", "2015.02.21", "corpus")
neg("date", "2013.10.24. 이 개봉일로 되어있습니다. 만점드림", "2013.10.24.", "corpus")
neg("date", "lucky엘(fndl****) 2012.12.10 14:17 신고", "2012.12.10 14:17", "corpus")
neg("date", "<2013.01.16> 이요 님들..", "2013.01.16", "corpus")
neg("date", "별을 줄수가 없네2013/9/24 생방송 부담감인가? 무리수...", "2013/9/24", "corpus")
neg("date", "○ ’09. 12. 29 파견 연장동의안 국회 가결", "’09. 12. 29", "corpus")
neg("date", "유효기간 2025.12.31까지 사용 가능한 쿠폰입니다", "2025.12.31")
neg("date", "예를 들어, 01.01.99와 15.01.99를 입력하면 14일 간격이 사용됩니다.", "01.01.99", "corpus")
neg("date", "제조일자 2023-11-08 / 유통기한 2024-11-07", "2023-11-08")

# amounts
neg("amount", "총 결제금액 1,234,567원 (배송비 포함)", "1,234,567원")
neg("amount", "중고 시세가 12,345,678원까지 떨어졌네요", "12,345,678원")
neg("amount", "보증금 ₩1,500,000 월세 ₩550,000", "₩1,500,000")
neg("amount", "모임 회비 총 3,333,000원 모였습니다", "3,333,000원")
neg("amount", "수리비 견적이 1,010,000원 나왔어요 ㄷㄷ", "1,010,000원")
neg("amount", "정가 1,588,000원 → 할인가 1,290,000원", "1,588,000원")
neg("amount", "올해 예산은 123,456,789,012원으로 편성되었다", "123,456,789,012원")
neg("amount", "환율 적용 후 USD 1,234.56 청구됐어요", "USD 1,234.56")
neg("amount", "연봉 4,500만원에 성과급 별도", "4,500만원")
neg("amount", "적금 만기 수령액 10,012,345원 찍혔다", "10,012,345원")
neg("amount", "입금액 110,123,456원 확인했습니다", "110,123,456원")
neg(
    "amount",
    "이거 보지말고 옆 극장 가세요 영화제목잘확인해보고 영화봅시다 4,000원아깝다",
    "4,000원",
    "corpus",
)
neg("amount", "보증금 1000/월세 50 관리비 별도", "1000/월세 50")
neg("amount", "카카오뱅크 26주적금은 1,000원부터 시작해요", "1,000원")
neg("amount", "계좌 이체 한도 5,000,000원으로 상향했어요", "5,000,000원")
neg("amount", "누적 매출 2,019,123,456원 달성!", "2,019,123,456원")
neg("amount", "가격: 19,900원 / 2개 구매시 35,800원", "19,900원")

# times
neg("time", "점심시간 12:30 ~ 13:30 에는 전화 상담이 불가합니다", "12:30 ~ 13:30")
neg("time", "영업시간 10:00-22:00 (라스트오더 21:30)", "10:00-22:00")
neg("time", "정말 보고 싶었는데 드디어 EBS에서 한답니다. EBS낮 12:10 ~2: 20", "12:10 ~2: 20", "corpus")
neg("time", "ㅋㅋ 1:09:55부터 딸기때문에 토할뻔", "1:09:55", "corpus")
neg("time", "러닝타임 2:15:30이라 화장실 미리 다녀오세요", "2:15:30")
neg("time", "평일 09:00~18:00 / 토요일 09:00~13:00", "09:00~18:00")
neg("time", "마감 24:00까지 접수 가능", "24:00")
neg("time", "기록 2:03:45.12 로 개인 최고기록 경신", "2:03:45.12")

# versions
neg("version", "업데이트 1.2.3 버전에서 버그 수정됨", "1.2.3")
neg("version", "윈도우 v10.0.19045 에서 설치 오류가 납니다", "v10.0.19045")
neg("version", "iOS 17.2.1 업데이트 후 배터리 광탈", "17.2.1")
neg(
    "version",
    "Example: ' LibreOffice 7.4.1.2 (The Document Foundation, Debian and Ubuntu) '",
    "7.4.1.2",
    "corpus",
)
neg("version", "The operating system's release. Example: ' 5.8.0-44-generic '", "5.8.0-44-generic", "corpus")
neg("version", "크롬 120.0.6099.130 버전에서 확인했어요", "120.0.6099.130")
neg("version", "OS 빌드 19045.3803 입니다", "19045.3803")
neg("version", "안드로이드 14 (UP1A.231005.007) 업데이트 완료", "UP1A.231005.007")
neg("version", "펌웨어 1.0.0.1234로 올리면 해결됩니다", "1.0.0.1234")
neg("version", "Python 3.11.4 / torch 2.1.2+cu121 환경입니다", "2.1.2+cu121")
neg("version", "김프 2.10.12 이상 버전에서 사용 가능", "2.10.12")


# ISBN / barcodes
def isbn13(first12: str) -> str:
    return first12 + str(ean13_check(first12))


i1 = isbn13("978890112345")
neg(
    "isbn", f"ISBN {i1[:3]}-{i1[3:5]}-{i1[5:8]}-{i1[8:12]}-{i1[12]} 중고책 팝니다", group(i1, (3, 2, 3, 4, 1))
)
i2 = isbn13("978893643412")
neg("isbn", f"ISBN {i2} (양장본)", i2)
i3 = isbn13("979115123456")
neg("isbn", f"도서 정보: ISBN {group(i3, (3, 2, 5, 2, 1))}, 정가 18,000원", group(i3, (3, 2, 5, 2, 1)))
i4 = isbn13("979116224012")
neg("isbn", f"ISBN: {i4}", i4)
neg("isbn", "ISBN 89-7065-123-X 절판된 책이라 구하기 힘들어요", "89-7065-123-X")
i5 = isbn13("978895596312")
neg("isbn", f"{i5} 이 책 재입고 언제 되나요?", i5)
e1 = isbn13("880123456789")
assert not rrn_valid(e1)
neg("barcode", f"상품 바코드 {e1} 찍어보면 국산이에요", e1)
e2 = isbn13("880912345678")
assert not rrn_valid(e2)
neg("barcode", f"바코드번호: {e2}", e2)
e3 = isbn13("880456789012")
assert not rrn_valid(e3)
neg("barcode", f"제품코드 {e3} (KAN 코드)", e3)

# order numbers
o1 = "2024011512345678"
assert not luhn_ok(o1)
neg("order_number", "주문번호 20240115-0012345 배송 언제 되나요?", "20240115-0012345")
neg("order_number", f"주문번호: {o1} 취소 요청합니다", o1)
neg("order_number", "쿠팡 주문번호 12000123456789 반품 접수했어요", "12000123456789")
neg("order_number", "주문번호 ORD-20240115-123456 확인 부탁드립니다", "ORD-20240115-123456")
neg("order_number", "주문번호 1000-2345-6789 로 교환 신청했어요", "1000-2345-6789")
neg("order_number", "11번가 주문번호 202401151234567 입금 확인 부탁드려요", "202401151234567")
neg("order_number", "예약번호 1234567890 으로 체크인하시면 됩니다", "1234567890")
neg("order_number", "접수번호 2024-0115-001 처리 중입니다", "2024-0115-001")
neg("order_number", "주문번호(110123456789) 환불 처리 완료", "110123456789")
neg("order_number", "스마트스토어 주문번호 2024011534567890 교환 문의", "2024011534567890")
assert not luhn_ok("2024011534567890")
neg("order_number", "상품주문번호 3333012345678 확인 바랍니다", "3333012345678")

# tracking numbers
neg("tracking_number", "CJ대한통운 운송장번호 6789-1234-5678 조회가 안돼요", "6789-1234-5678")
neg("tracking_number", "송장번호 567812349012 입니다", "567812349012")
neg("tracking_number", "우체국 등기번호 6012345678901 로 조회하세요", "6012345678901")
assert not rrn_valid("6012345678901")
neg("tracking_number", "한진택배 송장 5012-3456-7890 이에요", "5012-3456-7890")
neg("tracking_number", "롯데택배 2345 6789 0123 배송중으로 나와요", "2345 6789 0123")
neg("tracking_number", "로젠택배 운송장 12345678901 입니다", "12345678901")
neg("tracking_number", "EMS EE123456789KR 통관 중이래요", "EE123456789KR")
neg("tracking_number", "운송장번호 010123456789 (CJ대한통운)", "010123456789")
neg("tracking_number", "택배 송장번호: 6341-0123-4567-8", "6341-0123-4567-8")
neg("tracking_number", "우체국택배 6865123456789 조회하면 배달완료라는데 못받았어요", "6865123456789")
assert not rrn_valid("6865123456789")

# business / corporate registration numbers
neg("business_registration_number", f"사업자등록번호 {brn('123456789')} 대표 홍길동", brn("123456789"))
neg(
    "business_registration_number",
    f"사업자번호: {brn('214881234').replace('-', '')}",
    brn("214881234").replace("-", ""),
)
neg(
    "business_registration_number", f"상호: 달빛상회 | 사업자 등록번호 : {brn('110811234')}", brn("110811234")
)
neg(
    "business_registration_number",
    f"사업자등록번호({brn('617860123')}) 확인 후 세금계산서 발행",
    brn("617860123"),
)
neg("business_registration_number", f"{brn('305280456')} 사업자 조회해보니 폐업이네요", brn("305280456"))
neg(
    "business_registration_number",
    f"사업자 {brn('220870567')} / 통신판매업신고 제2024-서울강남-01234호",
    brn("220870567"),
)
neg("mail_order_registration", "통신판매업신고번호 제2024-서울강남-01234호", "제2024-서울강남-01234호")
for first12 in ("110111123456", "134511012345", "284211000123"):
    cn = corp_no(first12)
    assert not rrn_valid(cn)
    neg("corporate_registration_number", f"법인등록번호 {cn} (주)한빛소프트", cn)

# model numbers
neg("model_number", "갤럭시 S24 울트라 SM-S928N 자급제 팝니다", "SM-S928N")
neg("model_number", "RTX 4090 중고 시세 얼마인가요", "RTX 4090")
neg("model_number", "LG 65UR9300KNA 벽걸이 설치 문의", "65UR9300KNA")
neg("model_number", "삼성 노트북 NT950XGK-KC51S 배터리 교체", "NT950XGK-KC51S")
neg("model_number", "i7-13700K 에 보드는 B760 쓰고 있어요", "i7-13700K")
neg("model_number", "모델명 KJ-55X80L 리모컨 호환되나요", "KJ-55X80L")
neg("model_number", "맥북 MLY33KH/A 미개봉", "MLY33KH/A")
neg("model_number", "필터 품번 2024-0115-03 맞는지 확인 부탁", "2024-0115-03")
neg("model_number", "다이슨 V15 SV47 정품 배터리", "SV47")
neg("model_number", "냉장고 RF85C9111AP 도어 소음", "RF85C9111AP")

# scores, ranges, statistics
neg("score", "9.6점 정도 생각했는데 반올림 해서 10점 줍니다.", "9.6점", "corpus")
neg("score", "평점 8.76 / 10 받을 만한 영화", "8.76 / 10")
neg("score", "어제 경기 3:2 역전승 미쳤다", "3:2")
neg("score", "114-108로 이겼다 연장 접전", "114-108")
neg("score", "100점 만점에 85점 나왔어요", "85점")
neg("score", "시청률 12.3% 찍었네요", "12.3%")
neg("score", "토익 955점 / 오픽 IH", "955점")
neg("year_range", "2019-2024 시즌 통산 기록", "2019-2024")
neg("year_range", "한국전쟁(1950~1953) 배경 영화", "1950~1953")
neg("year_range", "2010-2015년 사이에 나온 차량만 해당", "2010-2015년")
neg("year_range", "1999-2000 시즌 챔피언", "1999-2000")
neg("year_range", "2023–2024 시즌권 판매", "2023–2024")
neg("count", "누적 관객 10,123,456명 돌파", "10,123,456명")
neg("count", "인구 51,740,000명 중 절반이 수도권", "51,740,000명")
neg("count", "조회수 1,012,345,678회 뮤비", "1,012,345,678회")
neg("count", "이런걸 560만 관객이나 봤다는게... 참...", "560만", "corpus")

# coordinates / network / postal
neg("coordinates", "좌표 37.5665, 126.9780 (서울시청)", "37.5665, 126.9780")
neg("coordinates", "위도 33.4996 경도 126.5312 근처 캠핑 가능", "33.4996")
neg("coordinates", "GPS (37.497942, 127.027621) 강남역", "37.497942, 127.027621")
neg("coordinates", "N 37°33'58.9\" E 126°58'41.1\"", "37°33'58.9\"")
neg("ip_address", "공유기 관리자 페이지 192.168.0.1 접속이 안 돼요", "192.168.0.1")
neg("ip_address", "    ip_address = '192.168.0.14'", "192.168.0.14", "corpus")
neg("ip_address", "서버 주소 211.234.123.45:8080 으로 접속", "211.234.123.45:8080")
neg("ip_address", "IPv6 주소 2001:db8:85a3::8a2e:370:7334 설정", "2001:db8:85a3::8a2e:370:7334")
neg("ip_address", "DNS 1.1.1.1 이랑 8.8.8.8 중 뭐가 빠름?", "8.8.8.8")
neg("postal_code", "(우)04524 서울특별시 중구 세종대로 110", "04524")
neg("postal_code", "우편번호 135-080 은 옛날 번호예요", "135-080")
neg("postal_code", "제주특별자치도 서귀포시 (63309)", "63309")
neg("postal_code", "우편번호: 06236", "06236")
neg("address", "서울 강남구 테헤란로 123, 4층 401호", "123, 4층 401호")
neg("address", "래미안 101동 1203호 택배 보관 부탁", "101동 1203호")
neg("address", "역삼동 823-12번지 주차 가능", "823-12번지")
neg("address", "서울특별시 강남구 강남대로 396 강남역 11번 출구", "396")

# service numbers (policy: not personal)
neg("service_number", "고객센터 1588-1234 로 문의하세요", "1588-1234")
neg("service_number", "1577-1234 로 전화하니 상담원 연결까지 20분 걸림", "1577-1234")
neg("service_number", "카드 분실신고는 1544-5678으로", "1544-5678")
neg("service_number", "배달앱 고객센터 1600-1234 (24시간)", "1600-1234")
neg("service_number", "대표번호 1644-1234 (평일 09시~18시)", "1644-1234")
neg("service_number", "예약센터 1661-1234 운영시간 9시-18시", "1661-1234")
neg("service_number", "1899-1234 여기 번호 맞나요?", "1899-1234")
neg("service_number", "무료수신거부 080-123-4567", "080-123-4567")
neg("service_number", "(광고) 수신거부 080-023-4567 로 전화주세요", "080-023-4567")
neg("service_number", "번호 모를 땐 114에 물어보세요", "114")
neg("service_number", "관광안내 1330 은 외국어도 됩니다", "1330")
neg("service_number", "국민은행 고객센터 1588-9999 계좌 관련 문의", "1588-9999")
neg("service_number", "☎15881234 (유료)", "15881234")

# already-masked items (policy)
neg("masked_rrn", "주민번호 900101-1****** 형식으로 표시됩니다", "900101-1******")
neg("masked_rrn", "주민등록번호 : 850315-2●●●●●●", "850315-2●●●●●●")
neg("masked_card", "승인 국민카드 9410-****-****-1234 45,000원 일시불", "9410-****-****-1234")
neg("masked_card", "신한카드(1234) 승인 12,900원 GS25", "신한카드(1234)")
neg("masked_phone", "주문자 010-****-5678 배송 출발", "010-****-5678")
neg("masked_phone", "당첨자 발표: 김*수 010-12**-5678", "010-12**-5678")

# law, patents, case numbers
neg("law_reference", "법률 제12345호로 공포되었다", "제12345호")
neg("law_reference", "의안번호 2101234 결혼중개업의 관리에 관한 법률 일부개정법률안", "2101234")
neg("law_reference", "가. 관련법령 : 헌법 제5조 제1항, 제60조 제2항", "제60조 제2항", "corpus")
neg("law_reference", "10. 제10조의2제1항을 위반하여 신상정보가 거짓임을 알면서도", "제10조의2제1항", "corpus")
neg("law_reference", "대통령령 제34567호 시행령 개정", "제34567호")
neg("case_number", "사건번호 2023가합12345 손해배상 청구", "2023가합12345")
neg("case_number", "대법원 2024도1234 판결 참조", "2024도1234")
neg("patent_number", "특허 제10-1234567호 등록 완료!", "10-1234567")
neg("patent_number", "출원번호 10-2023-0123456 심사 중", "10-2023-0123456")
neg("patent_number", "디자인등록 제30-1234567호", "30-1234567")

# timestamps, math, identifiers
neg("timestamp", "created_at: 1705276800 (unix time)", "1705276800")
ts = "1705276800123"
assert not rrn_valid(ts)
neg("timestamp", f"로그 타임스탬프 {ts} ms 기준", ts)
neg("timestamp", "IMG_20240115_123045.jpg 파일이 안 열려요", "IMG_20240115_123045.jpg")
neg("math", "Long 변수는 -2147483648에서 2147483647까지의 범위를 가집니다.", "-2147483648", "corpus")
neg(
    "math",
    "상수 PI의 값을 14번째 소수점 이하 자릿수까지 표시하여 3.14159265358979를 반환합니다.",
    "3.14159265358979",
    "corpus",
)
neg(
    "math",
    "값 범위는 -922337203685477.5808에서 +922337203685477.5807까지입니다.",
    "-922337203685477.5808",
    "corpus",
)
neg("math", "상수 e의 값은 약 2.71828182845904입니다.", "2.71828182845904", "corpus")
neg("math", "Long 변수(-2.147.483.648 - 2.147.483.647)", "-2.147.483.648 - 2.147.483.647", "corpus")
neg("math", "는 PI/2에 대한 Calc의 정의에 따라 1.5707963267949를 반환합니다.", "1.5707963267949", "corpus")
neg("math", "2의 40제곱은 1099511627776 입니다", "1099511627776")
neg(
    "uuid",
    "request id 123e4567-e89b-12d3-a456-426614174000 로그 확인",
    "123e4567-e89b-12d3-a456-426614174000",
)
neg("hash", "커밋 3f9a1c2d 에서 회귀 발생", "3f9a1c2d")
neg("doi", "doi:10.1016/j.cell.2024.01.015 논문 참고", "10.1016/j.cell.2024.01.015")
neg("url_id", "https://blog.naver.com/dalbit_cafe/223345678901 여기 후기 참고", "223345678901")
neg("url_id", "기사 링크 https://n.news.naver.com/article/001/0014456789", "001/0014456789")
neg("url_id", "https://cafe.naver.com/joonggonara/1012345678 이 글 사기 같아요", "1012345678")
neg("stock_code", "삼성전자(005930) 오늘 또 내렸네", "005930")
neg("stock_code", "종목코드 035420 네이버", "035420")
neg("gift_card_pin", "문화상품권 PIN 1234-5678-9012-345678 사용 완료된 거래요", "1234-5678-9012-345678")
neg("coupon_code", "쿠폰번호 ABCD-1234-EFGH-5678 입력하세요", "ABCD-1234-EFGH-5678")
sn = "1234-5678-9012-3456"
assert not luhn_ok(sn)
neg("serial_number", f"정품 인증 시리얼 {sn} 가 이미 사용 중이래요", sn)
neg("serial_number", "S/N: C02XK1ZJJG5J 맥북 시리얼", "C02XK1ZJJG5J")

# e-mail look-alikes
neg(
    "git_ssh_url",
    "git clone git@github.com:koneox/koneox.git 하면 권한 오류",
    "git@github.com:koneox/koneox.git",
)
neg("package_spec", "npm install react@18.2.0 로 버전 고정하세요", "react@18.2.0")
neg("package_spec", "pip 말고 brew install python@3.11 쓰세요", "python@3.11")
neg("image_name", "레티나용 icon@2x.png 파일도 같이 올려주세요", "icon@2x.png")
neg("css", "@media (max-width: 768px) 에서 메뉴가 깨져요", "@media")
neg("package_spec", "@types/node 설치했는데도 에러", "@types/node")
neg("social_handle", "인스타 @koneox_official 팔로우하면 추첨", "@koneox_official")
neg("code", "자바 @Override 어노테이션 빼먹음", "@Override")
neg("email_template", "이메일 형식: 아이디@도메인 (예: 영문, 숫자만 가능)", "아이디@도메인")

# misc
neg("resolution", "모니터 해상도 1920x1080 에서 글씨가 작아요", "1920x1080")
neg("resolution", "4K 3840×2160 60Hz 지원", "3840×2160")
neg("cas_number", "에탄올 CAS 64-17-5, 물 CAS 7732-18-5", "7732-18-5")
neg("bible_verse", "요한복음 3:16 말씀 묵상", "3:16")
neg("standard", "ISO 8601 날짜 형식과 IEC 62368-1:2018 인증", "62368-1:2018")
neg("flight_train", "KTX 101호 3호차 12A석 양도합니다", "101호")
neg("flight_train", "대한항공 KE0017편 인천-LA 출발", "KE0017")
neg("size", "키 170/65 인데 M 사이즈 맞을까요?", "170/65")
neg("area", "전용 84.99㎡ (25.7평) 남향", "84.99㎡")
neg("age_range", "10~20대 여성 타깃 신제품", "10~20대")
neg("bank_code", "은행코드 004 (국민은행), 088 (신한은행)", "004")
neg("bare_prefix", "010 번호 이동하면서 갤럭시 S23 으로 바꿨어요", "010")
neg("bus_route", "광역버스 M4102 타면 강남까지 40분", "M4102")
neg("sports_record", "100m 9.58초 세계기록은 언제 깨질까", "9.58초")

# more hard negatives: user@host strings, checksum collisions, numbers without separators
neg("shell_prompt", "root@server:~$ ls -al 하면 권한 없음 뜸", "root@server")
neg("ssh_target", "ssh ubuntu@192.168.0.10 으로 접속이 안 됩니다", "ubuntu@192.168.0.10")
neg(
    "docker_digest",
    "nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31 이미지 고정",
    "nginx@sha256",
)
imei = luhn_card("35693803", 15)
neg("imei", f"IMEI {imei} 분실폰 조회", imei, "checksum_collision")
lo = luhn_card("20240116", 16)
neg("order_number", f"주문번호 {lo} 배송 문의드려요", lo, "checksum_collision")
rc = rrn("880512", 1).replace("-", "")
neg("tracking_number", f"우체국 등기번호 {rc} 조회 결과 없음", rc, "checksum_collision")
neg("amount", "송금액 1234567원 맞나요?", "1234567원")
neg("amount", "전세금 350000000원 일시 지급", "350000000원")
neg("amount", "총 자산 1,000,000,000,000원 규모", "1,000,000,000,000원")
neg("amount", "매매가 3333만원 협의 가능", "3333만원")
neg("date", "이벤트 기간 (2024.01.15 ~ 2024.02.14)", "2024.01.15 ~ 2024.02.14")
neg("date", "기간 20240115-20240214 동안 적용", "20240115-20240214")
neg("date", "2024년 1월 15일 (월) 14:00 설명회", "2024년 1월 15일")
neg("lottery", "로또 1102회 당첨번호 3, 11, 17, 25, 33, 42 보너스 7", "3, 11, 17, 25, 33, 42")
neg("ratio", "16:9 비율 모니터 추천", "16:9")
neg("standard", "ISO 9001:2015 인증 획득", "9001:2015")
neg("document_number", "공문 제2024-0115호 참고", "제2024-0115호")
neg("document_number", "문서번호 2024-00123 처리완료", "2024-00123")
neg("property_registry_number", "등기부등본 고유번호 1146-1996-123456 발급", "1146-1996-123456")
neg("property_registry_number", "부동산 고유번호 1101-2011-004567 열람", "1101-2011-004567")
neg("gift_card_pin", "상품권 번호 4012 5678 9012 3457 등록이 안 돼요", "4012 5678 9012 3457")
assert not luhn_ok("4012567890123457")
neg("class_year", "02학번 선배님들 아직 계신가요", "02학번")
neg("address", "오피스텔 1101호 계약 만료", "1101호")
neg("score", "어제 2-2 무승부로 끝남", "2-2")
neg("time", "AM 10:30 ~ PM 07:00 운영", "AM 10:30 ~ PM 07:00")
neg("service_number", "KB국민카드 고객센터 1588-1688 연결이 안 돼요", "1588-1688")
neg("service_number", "화재는 119 신고", "119")
neg("version", "2024-01-15-release 태그로 배포", "2024-01-15-release")

# ---------------------------------------------------------------- write


def main() -> None:
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    with OUT.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    npos = sum(r["kind"] == "positive" for r in records)
    print(f"wrote {len(records)} records ({npos} positive, {len(records) - npos} negative) to {OUT}")


if __name__ == "__main__":
    main()
