"""The whole pipeline: accounting on every input (and a corrupted one), determinism across
process counts, near dedup on LibreOffice pages, join, step selection, CLI and config."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from data.clean import CleanConfig, StrictInputError, clean_files, load_clean_config
from data.clean.dedup import shingles
from launch.cli import main as koneox

RAW = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "raw"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared corpus not found at {path}")
    return path


def _head(name: str, n: int, tmp: Path) -> Path:
    """First n lines of a shared corpus file, as a smaller .jsonl.gz."""
    out = tmp / f"{name}.head{n}.jsonl.gz"
    with gzip.open(_need(RAW / f"{name}.jsonl.gz"), "rb") as src, gzip.open(out, "wb") as dst:
        dst.writelines(itertools.islice(src, n))
    return out


def _corrupted(tmp: Path) -> tuple[Path, dict[int, str]]:
    """Real review lines mixed with every kind of bad record; returns path and line -> reason."""
    with gzip.open(_need(RAW / "nsmc_reviews.jsonl.gz"), "rb") as f:
        good = list(itertools.islice(f, 200))
    bad = {
        3: (b'{"text": "\xed\x95\x9c\xff\xfe broken", "movie_id": "1"}\n', "invalid_utf8"),
        10: (b'{"text": "unterminated\n', "malformed_json"),
        20: (b'{"title": "no text field"}\n', "missing_text_field"),
        30: (b'{"text": 12345}\n', "non_string_text"),
        40: (b'["a", "list"]\n', "not_an_object"),
        50: (b"\n", "malformed_json"),
    }
    lines = []
    expected = {}
    for i, line in enumerate(good, start=1):
        if i in bad:
            lines.append(bad[i][0])
            expected[len(lines)] = bad[i][1]
        lines.append(line)
    payload = gzip.compress(b"".join(lines), mtime=0)
    path = tmp / "corrupted.jsonl.gz"
    # Cut the gzip stream short: the reader must report it and keep what it read.
    path.write_bytes(payload[: int(len(payload) * 0.9)])
    return path, expected


def _identity(report: dict) -> None:
    assert report["accounting_holds"]
    assert (
        report["documents_in"] == report["kept"] + sum(report["dropped"].values()) + report["rejected_input"]
    )
    assert report["documents_in"] == sum(i["records"] for i in report["inputs"])


def _output_docs(out: Path) -> list[dict]:
    docs = []
    for shard in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            docs.extend(json.loads(line) for line in f)
    return docs


def test_accounting_on_every_input_and_a_corrupted_one(tmp_path: Path) -> None:
    inputs = [
        _need(RAW / "debian_faq_ko.jsonl.gz"),
        _need(RAW / "gimp_help_ko.jsonl.gz"),
        _need(RAW / "ko_law_bills.jsonl.gz"),
        _need(RAW / "libreoffice_help_ko.jsonl.gz"),
        _head("nsmc_reviews", 20_000, tmp_path),
    ]
    corrupted, expected = _corrupted(tmp_path)
    for path in [*inputs, corrupted]:
        out = tmp_path / f"out-{path.name}"
        report = clean_files([path], out, keep_rejects=True, num_proc=2)
        _identity(report)
        docs = _output_docs(out)
        assert len(docs) == report["output_documents"] == report["kept"]
        with gzip.open(out / "rejects-00000.jsonl.gz", "rt", encoding="utf-8") as f:
            rejects = [json.loads(line) for line in f]
        assert len(rejects) == report["dropped_total"]
        assert all(r["reason"] in report["dropped"] for r in rejects)
        assert (out / "report.md").read_text(encoding="utf-8").count("holds") == 1
    # the corrupted file: every bad line listed with file and line, the truncation too
    listed = {item["line"]: item["reason"] for item in report["rejected_items"]}
    assert {line: listed.get(line) for line in expected} == expected
    assert list(listed.values()).count("corrupt_file") == 1
    assert all(item["file"] == str(corrupted) for item in report["rejected_items"])
    assert report["rejected_input"] == len(expected) + 1
    assert 100 < report["kept"] < 200

    with pytest.raises(StrictInputError, match=r"corrupted\.jsonl\.gz:3: invalid_utf8"):
        clean_files([corrupted], tmp_path / "strict", strict=True)


def test_same_output_for_any_num_proc(tmp_path: Path) -> None:
    inputs = [_head("nsmc_reviews", 6000, tmp_path), _head("libreoffice_help_ko", 300, tmp_path)]
    cfg = CleanConfig(shard_docs=2000, chunk_docs=500)
    r1 = clean_files(inputs, tmp_path / "p1", cfg, num_proc=1, keep_rejects=True)
    r2 = clean_files(inputs, tmp_path / "p2", cfg, num_proc=2, keep_rejects=True)
    names = sorted(p.name for p in (tmp_path / "p1").glob("*.jsonl.gz"))
    assert len(names) >= 4 and names == sorted(p.name for p in (tmp_path / "p2").glob("*.jsonl.gz"))
    for name in names:
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name
    for key in ("kept", "dropped", "pii", "output_documents"):
        assert r1[key] == r2[key]


def test_near_dedup_finds_libreoffice_near_duplicates(tmp_path: Path) -> None:
    path = _need(RAW / "libreoffice_help_ko.jsonl.gz")
    steps = ["unicode", "html", "markup", "whitespace", "dedup", "near_dedup"]
    report = clean_files([path], tmp_path / "o", steps=steps, keep_rejects=True, num_proc=2)
    _identity(report)
    with gzip.open(tmp_path / "o" / "rejects-00000.jsonl.gz", "rt", encoding="utf-8") as f:
        near = [json.loads(line) for line in f if '"near_duplicate"' in line]
    near = [r for r in near if r["reason"] == "near_duplicate"]
    assert len(near) >= 20, report["dropped"]
    kept = _output_docs(tmp_path / "o")
    kept_sets = [set(shingles(d["text"], 5)) for d in kept]
    order = {d["path"]: i for i, d in enumerate(kept)}
    for r in near[:15]:
        s = set(shingles(r["text"], 5))
        best = max(range(len(kept_sets)), key=lambda i: len(s & kept_sets[i]) / len(s | kept_sets[i]))
        jaccard = len(s & kept_sets[best]) / len(s | kept_sets[best])
        assert jaccard > 0.6, (r["path"], kept[best]["path"], jaccard)
        assert r["path"] not in order  # the dropped copy is not in the output
    # deterministic choice: the kept copy comes first in input order
    with gzip.open(path, "rt", encoding="utf-8") as f:
        paths = [json.loads(line)["path"] for line in f]
    position = {p: i for i, p in enumerate(paths)}
    for r in near[:5]:
        s = set(shingles(r["text"], 5))
        twins = [d for d, ks in zip(kept, kept_sets, strict=True) if len(s & ks) / len(s | ks) > 0.8]
        assert all(position[t["path"]] < position[r["path"]] for t in twins)


def test_join_short_reviews_by_movie(tmp_path: Path) -> None:
    path = _head("nsmc_reviews", 5000, tmp_path)
    cfg = CleanConfig()
    cfg.join.enabled, cfg.join.key, cfg.join.target_chars = True, "movie_id", 500
    report = clean_files([path], tmp_path / "j", cfg, num_proc=2)
    _identity(report)
    docs = _output_docs(tmp_path / "j")
    joined = [d for d in docs if d.get("joined_docs", 1) > 1]
    assert joined and report["merged_by_join"] > 1000
    assert sum(d.get("joined_docs", 1) for d in docs) == report["kept"]
    for d in joined:
        assert d["text"].count("\n") >= d["joined_docs"] - 1
    # without join the short reviews are dropped as too_short; with it most survive
    plain = clean_files([path], tmp_path / "nj")
    assert report["dropped"].get("too_short", 0) < plain["dropped"]["too_short"] / 5


def test_steps_selection_and_cli(tmp_path: Path) -> None:
    path = _head("libreoffice_help_ko", 50, tmp_path)
    report = clean_files([path], tmp_path / "s", steps=["unicode", "whitespace"])
    assert report["steps"] == ["unicode", "whitespace"]
    assert any("<html" in d["text"] or "<!DOCTYPE" in d["text"] for d in _output_docs(tmp_path / "s"))
    with pytest.raises(ValueError, match="unknown step"):
        clean_files([path], tmp_path / "x", steps=["bogus"])

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "data:\n  clean:\n    filter:\n      min_chars: 5\n    near_dedup:\n      threshold: 0.9\n"
    )
    out = tmp_path / "cli"
    rc = koneox(
        [
            "clean",
            str(path),
            "--out",
            str(out),
            "--num-proc",
            "2",
            "--steps",
            "html,whitespace,filter",
            "--config",
            str(cfg_file),
            "--keep-rejects",
            "--no-progress",
        ]
    )
    assert rc == 0
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["config"]["filter"]["min_chars"] == 5 and saved["steps"] == ["html", "whitespace", "filter"]
    assert (out / "report.md").exists() and saved["accounting_holds"]


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  clean:\n    filter:\n      min_chars: many\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*data\.clean\.filter\.min_chars"):
        load_clean_config(bad)
    bad.write_text("data:\n  clean:\n    pii:\n      phones: true\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*data\.clean\.pii\.phones"):
        load_clean_config(bad)
