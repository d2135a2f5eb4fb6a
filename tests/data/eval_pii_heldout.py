"""Measure data.clean.mask_pii on the held-out set tests/data/pii_heldout.jsonl.

Run from the project root:  python tests/data/eval_pii_heldout.py [path/to/set.jsonl]

Positives are scored as
  found         output == expected
  wrong_type    masked in the right place but with another placeholder (e.g. a phone as <|acc|>)
  partly        output changed but differs from expected (part of the item left, or extra text eaten);
                "leaks" marks those where a 3+ digit group / the e-mail local part of the item survives
  missed        output == input
Negatives are "touched" when output != text.  Policy types (service numbers, already-masked items)
are reported on their own and left out of the headline touched share.

``score(load())`` returns the same numbers for tests (tests/test_clean_pii.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from data.clean import mask_pii  # noqa: E402

DEFAULT = Path(__file__).with_name("pii_heldout.jsonl")
TYPES = ["rrn", "phone", "account", "card", "email"]
POLICY_NEG = {"service_number", "masked_rrn", "masked_card", "masked_phone"}
PLACEHOLDERS = ["<|rrn|>", "<|tel|>", "<|acc|>", "email@example.com"]


def anon(s: str) -> str:
    for p in PLACEHOLDERS:
        s = s.replace(p, "<PII>")
    return s


def leaks(rec: dict, out: str) -> bool:
    """Does a recognisable piece of the item survive in the output (where expected has none)?"""
    item, exp, got = (unicodedata.normalize("NFKC", x) for x in (rec["item"], rec["expected"], out))
    if rec["type"] == "email":
        pieces = [item.split("@")[0]] if "@" in item else []
    else:
        pieces = re.findall(r"\d{3,}", item)
    return any(p in got and p not in exp for p in pieces)


def classify_pos(rec: dict, out: str) -> str:
    if out == rec["expected"]:
        return "found"
    if out == rec["text"]:
        return "missed"
    if anon(out) == anon(rec["expected"]):
        return "wrong_type"
    return "partly"


def pct(a: int, b: int) -> str:
    return f"{a}/{b} = {a / b:.3f}" if b else "0/0"


def show(title: str, rows: list[tuple[dict, str, str]]) -> None:
    print(f"\n=== {title} ({len(rows)}) ===")
    for rec, out, note in rows:
        tags = ",".join(rec.get("tags", []))
        print(f"- {rec['id']} [{rec['type']}{'; ' + tags if tags else ''}]{' ' + note if note else ''}")
        print(f"    text:     {rec['text']}")
        print(f"    expected: {rec['expected']}")
        print(f"    got:      {out}")


def load(path: str | Path = DEFAULT) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Score:
    """Counts of one run over the set. ``pos_stats[type]`` / ``pos_stats["_plain"]`` (positives not
    tagged "obfuscated") count found / wrong_type / partly / missed and n; ``neg_stats[type]``
    counts n and touched; ``pos_bad`` / ``neg_bad`` hold (record, output, note) of the failures."""

    pos_stats: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    tag_stats: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    neg_stats: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    pos_bad: list[tuple[dict, str, str]] = field(default_factory=list)
    neg_bad: list[tuple[dict, str, str]] = field(default_factory=list)

    def recall(self, kind: str = "_plain") -> float:
        """Share found of one type's positives, or of all non-obfuscated ones ("_plain")."""
        s = self.pos_stats[kind]
        return s["found"] / s["n"] if s["n"] else 1.0

    def touched(self, policy: bool = False) -> tuple[int, int]:
        """(touched, n) of the hard negatives, or of the policy types when ``policy``."""
        rows = [s for k, s in self.neg_stats.items() if (k in POLICY_NEG) == policy]
        return sum(s["touched"] for s in rows), sum(s["n"] for s in rows)

    def per_type(self) -> str:
        """found/n of each type's positives, then of all non-obfuscated ones ("_plain")."""
        return "; ".join(
            f"{t} {self.pos_stats[t]['found']}/{self.pos_stats[t]['n']}" for t in [*TYPES, "_plain"]
        )


def score(recs: list[dict], mask: Callable[[str], tuple[str, dict]] = mask_pii) -> Score:
    sc = Score()
    pos_stats, tag_stats, neg_stats = sc.pos_stats, sc.tag_stats, sc.neg_stats
    for rec in recs:
        out, _counts = mask(rec["text"])
        if rec["kind"] == "positive":
            cls = classify_pos(rec, out)
            pos_stats[rec["type"]][cls] += 1
            pos_stats[rec["type"]]["n"] += 1
            for tag in rec.get("tags", []) or ["(none)"]:
                tag_stats[tag][cls] += 1
                tag_stats[tag]["n"] += 1
            if "obfuscated" not in rec.get("tags", []):
                pos_stats["_plain"][cls] += 1
                pos_stats["_plain"]["n"] += 1
            if cls != "found":
                note = cls + (" (leaks)" if cls == "partly" and leaks(rec, out) else "")
                sc.pos_bad.append((rec, out, note))
        else:
            touched = out != rec["text"]
            neg_stats[rec["type"]]["n"] += 1
            neg_stats[rec["type"]]["touched"] += touched
            if touched:
                sc.neg_bad.append((rec, out, ""))
    return sc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    args = ap.parse_args()
    recs = load(args.path)
    sc = score(recs)
    pos_stats, tag_stats, neg_stats = sc.pos_stats, sc.tag_stats, sc.neg_stats
    pos_bad, neg_bad = sc.pos_bad, sc.neg_bad

    print(f"set: {args.path}  ({len(recs)} records)")
    print("\n--- positives: recall (found = output equals expected) ---")
    print(f"{'type':10} {'n':>4} {'found':>6} {'wrong':>6} {'partly':>7} {'missed':>7}  recall")
    total = Counter()
    for t in TYPES:
        s = pos_stats[t]
        total.update(s)
        print(
            f"{t:10} {s['n']:>4} {s['found']:>6} {s['wrong_type']:>6} {s['partly']:>7} {s['missed']:>7}"
            f"  {pct(s['found'], s['n'])}"
        )
    print(
        f"{'overall':10} {total['n']:>4} {total['found']:>6} {total['wrong_type']:>6} {total['partly']:>7}"
        f" {total['missed']:>7}  {pct(total['found'], total['n'])}"
    )
    p = pos_stats["_plain"]
    print(f"overall without 'obfuscated' positives: {pct(p['found'], p['n'])}")
    print(
        "any masking at all (found+wrong_type+partly): "
        f"{pct(total['found'] + total['wrong_type'] + total['partly'], total['n'])}"
    )

    print("\n--- positives by tag ---")
    for tag in sorted(tag_stats):
        s = tag_stats[tag]
        print(f"  {tag:16} {pct(s['found'], s['n'])}")

    print("\n--- negatives ---")
    (t_core, n_core), (t_pol, n_pol) = sc.touched(), sc.touched(policy=True)
    n_all, t_all = n_core + n_pol, t_core + t_pol
    print(f"touched (hard negatives, policy types excluded): {pct(t_core, n_core)}")
    print(f"touched (policy types: {', '.join(sorted(POLICY_NEG))}): {pct(t_pol, n_pol)}")
    print(f"touched (all negatives): {pct(t_all, n_all)}")
    for k in sorted(neg_stats, key=lambda k: (-neg_stats[k]["touched"], k)):
        s = neg_stats[k]
        if s["touched"]:
            print(f"  {k:32} {s['touched']}/{s['n']}")

    show("positives not found (missed / partly / wrong_type)", pos_bad)
    show("negatives touched", neg_bad)


if __name__ == "__main__":
    main()
