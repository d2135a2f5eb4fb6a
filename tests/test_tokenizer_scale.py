"""`koneox train-tokenizer` at scale: memory refusal, reading only what the sample needs, the
compact marked format, strict readers, completion markers, and the scale benchmark.

Real Korean text from ../shared/corpus/raw (NSMC reviews, help pages) and data/samples.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.stage import IncompleteOutputError, mark_complete, require_complete

REPO = Path(__file__).resolve().parents[1]
RAW = REPO.parent / "shared" / "corpus" / "raw"
SAMPLES = REPO / "data" / "samples"

needs_corpus = pytest.mark.skipif(
    not (RAW / "nsmc_reviews.jsonl.gz").exists(), reason=f"shared corpus not found at {RAW}"
)


def _texts(path: Path, limit: int | None = None) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            if text:
                out.append(text)
                if limit is not None and len(out) >= limit:
                    break
    return out


def _write_jsonl_gz(texts: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    return path


def test_refuses_a_sample_that_does_not_fit_in_memory(tmp_path, capsys):
    from launch.cli import main
    from tokenizer import train_tokenizer
    from tokenizer.config import TokenizerConfig
    from tokenizer.memory import SampleTooLargeError, learn_peak_bytes, max_sample_bytes

    corpus = SAMPLES / "nsmc_reviews.jsonl.gz"  # 7 MB of JSON lines
    budget = 800 * 10**6
    config = TokenizerConfig(memory_budget=budget)
    with pytest.raises(SampleTooLargeError) as err:
        train_tokenizer([corpus], tmp_path / "tok", sample_bytes=5 * 10**6, config=config)
    message = str(err.value)
    fits = max_sample_bytes(budget)
    assert "a training sample of 5.0 MB needs about" in message and "0.80 GB (--memory-budget)" in message
    assert f"Use --sample-bytes {fits // 10**6}M or less, or raise --memory-budget" in message, message
    assert not (tmp_path / "tok").exists()  # refused before anything was read or written
    # the suggested size fits and a bit more does not: the refusal and the advice agree
    assert learn_peak_bytes(fits) <= budget < learn_peak_bytes(int(fits * 1.05))
    # a sample larger than the input is checked at the input's size (7.0 MB), not at 1 GB
    with pytest.raises(SampleTooLargeError, match="a training sample of 7.0 MB needs"):
        train_tokenizer([corpus], tmp_path / "tok", sample_bytes=10**9, config=config)
    # the whole input ('all') is checked too, against its size estimate
    argv = ["train-tokenizer", str(corpus), "--out", str(tmp_path / "cli"), "--sample-bytes", "all"]
    assert main([*argv, "--memory-budget", "100M"]) == 1
    assert "koneox train-tokenizer: error: a training sample of" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


@needs_corpus
def test_reading_stops_when_the_sample_is_full(tmp_path):
    """A 0.3 MB sample from ~60 MB of input reads a few per cent of it, from every input, and
    the sample is the same bytes whatever the number of processes."""
    from tokenizer.morph import strip_markers
    from tokenizer.reader import plan_sources
    from tokenizer.sample import draw_and_mark, read_records

    inputs = [
        RAW / "nsmc_reviews.jsonl.gz",
        RAW / "gimp_help_ko.jsonl.gz",
        RAW / "libreoffice_help_ko.jsonl.gz",
    ]
    total_records = 429_731 + 565 + 2_030
    sources = plan_sources(inputs)
    results = []
    for procs in (1, 2):
        work = tmp_path / f"p{procs}"
        work.mkdir()
        kwargs = {"heldout_bytes": 50_000, "spread": 4.0, "seed": 1234, "text_field": "text"}
        results.append(draw_and_mark(sources, work, sample_bytes=300_000, num_proc=procs, **kwargs))
    one, two = results
    counts = one.counts
    assert counts == two.counts
    assert one.train_path.read_bytes() == two.train_path.read_bytes()
    assert one.heldout_path.read_bytes() == two.heldout_path.read_bytes()
    assert counts["records_read"] < 0.05 * total_records, counts
    assert counts["files_read_to_end"] == 0
    longest = max(len(t.encode()) for t in map(strip_markers, read_records(one.train_path)))
    # about the size asked for: each document joins with probability keep (the rule used when
    # inputs were read whole), so a small sample with long help pages varies by some per cent
    assert 0.8 * 300_000 <= counts["train_bytes"] < 300_000 + longest
    # every input contributed: help pages are HTML, reviews are not
    train = [strip_markers(m) for m in read_records(one.train_path)]
    assert len(train) == counts["train_docs"]
    gimp, office = set(_texts(inputs[1], 200)), set(_texts(inputs[2], 200))
    assert any(t in gimp for t in train) and any(t in office for t in train)
    assert sum("<" not in t for t in train) > counts["train_docs"] / 2


def test_compact_marked_format_round_trips_exactly(tmp_path):
    from tokenizer.morph import MorphemeMarker, strip_markers
    from tokenizer.sample import RECORD, decode_records, encode_records, read_records

    reviews = _texts(SAMPLES / "nsmc_reviews.jsonl.gz", 300)
    pages = _texts(SAMPLES / "help_pages_ko.jsonl.gz", 5)
    marker = MorphemeMarker()
    marked = [marker.mark(t) for t in reviews + pages]
    assert any("\n" in m for m in marked) and any("\x01" in m for m in marked)
    odd = ["", "\n", "줄\n바꿈\r\n끝\n\n", "\x01\x02\x03", "이모지 😀 and 漢字\t탭", "가" * 700_000]
    texts = marked + odd
    blob = encode_records(texts)
    # nothing is escaped: the file is the UTF-8 text plus one 4-byte length per record
    assert len(blob) == sum(len(t.encode()) + RECORD.size for t in texts)
    assert list(decode_records(blob)) == texts
    path = tmp_path / "train.rec"
    path.write_bytes(blob)
    assert list(read_records(path)) == texts  # the 2.1 MB record spans several read blocks
    assert [strip_markers(m) for m in read_records(path)][: len(reviews)] == reviews
    first = list(read_records(path, max_chars=1000))
    assert first == texts[: len(first)] and sum(map(len, first[:-1])) < 1000 <= sum(map(len, first))
    path.write_bytes(blob[:-3])
    with pytest.raises(ValueError, match="truncated record file"):
        list(read_records(path))


def test_corrupt_input_is_an_error_naming_file_and_line(tmp_path):
    from tokenizer import train_tokenizer
    from tokenizer.reader import InputError, iter_documents

    reviews = _texts(SAMPLES / "nsmc_reviews.jsonl.gz", 20_000)
    good = _write_jsonl_gz(reviews, tmp_path / "good.jsonl.gz")
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match=r"truncated\.jsonl\.gz: line \d+: .*truncated or corrupt"):
        list(iter_documents([truncated]))
    # through the workers of a real run too, with the whole input as the sample
    with pytest.raises(InputError, match=r"truncated\.jsonl\.gz: line \d+"):
        train_tokenizer([good, truncated], tmp_path / "tok", sample_bytes=0, num_proc=2)
    assert not (tmp_path / "tok" / "_COMPLETE.json").exists()

    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in reviews[:50]]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(
        "\n".join(lines[:36] + ['{"text": "끝나지 않은'] + lines[36:]) + "\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"bad\.jsonl: line 37: not a UTF-8 JSON line"):
        list(iter_documents([bad_json]))
    no_field = tmp_path / "no_field.jsonl"
    no_field.write_text("\n".join(lines[:3] + ['{"body": "본문"}']) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"no_field\.jsonl: line 4: no 'text' field"):
        list(iter_documents([no_field]))


def test_clean_output_without_marker_is_refused(tmp_path):
    from tokenizer import train_tokenizer
    from tokenizer.reader import InputError, plan_sources

    clean = tmp_path / "clean"
    _write_jsonl_gz(_texts(SAMPLES / "nsmc_reviews.jsonl.gz", 1000), clean / "part-00000.jsonl.gz")
    (clean / "part-00001.jsonl.gz.tmp").write_bytes(b"")  # what a killed cleaner leaves
    with pytest.raises(IncompleteOutputError, match=r"not a finished output of `koneox clean`.*part-00001"):
        train_tokenizer([clean], tmp_path / "tok", num_proc=1)
    with pytest.raises(IncompleteOutputError):
        plan_sources([tmp_path])  # found while walking a parent directory too
    with pytest.raises(IncompleteOutputError):
        plan_sources([clean / "part-00000.jsonl.gz"])  # or a shard named on its own
    mark_complete(clean, "koneox clean", {"shards": ["part-00000.jsonl.gz"]})
    assert [s.path.name for s in plan_sources([tmp_path])] == ["part-00000.jsonl.gz"]
    # a shard added after clean finished is not part of its output
    (clean / "part-00001.jsonl.gz").write_bytes((clean / "part-00000.jsonl.gz").read_bytes())
    with pytest.raises(InputError, match=r"shards differ from its _COMPLETE.json .*not listed: part-00001"):
        plan_sources([clean])
    with pytest.raises(InputError, match=r"not listed: part-00001"):
        plan_sources([clean / "part-00001.jsonl.gz"])
    assert [s.path.name for s in plan_sources([clean / "part-00000.jsonl.gz"])] == ["part-00000.jsonl.gz"]


def test_killed_run_leaves_no_finished_looking_output(tmp_path):
    """SIGKILL mid-run: no marker; the next run clears the leftovers and finishes, marker last."""
    reviews = _texts(SAMPLES / "nsmc_reviews.jsonl.gz")
    corpus = _write_jsonl_gz(reviews, tmp_path / "in" / "reviews.jsonl.gz")
    out = tmp_path / "tok"
    argv = [sys.executable, "-m", "launch.cli", "train-tokenizer", str(corpus), "--out", str(out)]
    argv += ["--vocab-size", "1003", "--sample-bytes", "300K", "--num-proc", "2", "--no-compare"]
    argv += ["--cross-budget", "none"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        not any(out.glob(".koneox-tok-*/train.rec")) and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(IncompleteOutputError, match="koneox train-tokenizer"):
        require_complete(out, "koneox train-tokenizer")
    assert subprocess.run(argv, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    marker = require_complete(out, "koneox train-tokenizer")
    assert sorted(p.name for p in out.iterdir()) == sorted([*marker["files"], "_COMPLETE.json"])
    assert "tokenizer.json" in marker["files"] and marker["vocab_size"] == 1003
    assert marker["train_bytes"] >= 300_000


@needs_corpus
def test_scale_benchmark_quick_runs():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import scale_tokenizer

    rows = scale_tokenizer.measure(quick=True)
    keys = {"stage", "text", "main_cpu_s_per_mb", "worker_cpu_s_per_mb", "implied_workers", "variant"}
    assert all(keys <= set(r) for r in rows)
    assert {(r["variant"], r["text"]) for r in rows} == {
        (v, t) for v in ("before", "after") for t in ("web-like", "short reviews")
    }
    for r in rows:
        assert r["worker_cpu_s_per_mb"] > 0.1, r  # MeCab really ran in the workers
        if r["variant"] == "after":
            assert r["marked_bytes_per_text_byte"] < 1.3, r  # compact records, not JSON escapes
            assert r["learn_peak_rss_mb"] > 0 and r["learn_rss_mb_per_sample_mb"] > 0, r
