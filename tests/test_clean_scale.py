"""``koneox clean`` at scale: killed runs (SIGKILL, SIGTERM) leave no finished-looking output
and resume to the same bytes and report; dedup does not depend on batching; the batched
transfer gives the same shards for any num_proc; the compression level; the benchmark runs."""

from __future__ import annotations

import gzip
import itertools
import json
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from data.clean import CleanConfig, clean_files
from data.clean import output as clean_output
from data.clean.config import NearDedupConfig
from data.clean.dedup import CorpusDeduper, band_key_matrix, exact_key, minhash_matrix
from data.clean.pipeline import CleanInterrupted
from data.stage import MARKER, IncompleteOutputError, require_complete

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
# how fast and with how many processes a run went: the rest of the report must be identical
TIMING = (
    "seconds",
    "docs_per_s",
    "mb_per_s",
    "docs_per_s_per_core",
    "mb_per_s_per_core",
    "step_cpu_seconds",
    "num_proc",
)


def _head(tmp: Path, name: str, n: int) -> Path:
    out = tmp / f"{name}.head{n}.jsonl.gz"
    if not out.exists():
        with gzip.open(SAMPLES / f"{name}.jsonl.gz", "rb") as src, gzip.open(out, "wb") as dst:
            dst.writelines(itertools.islice(src, n))
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.endswith(".jsonl.gz")}


def _report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {k: v for k, v in report.items() if k not in TIMING}


def _same_output(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert list(fa) == list(fb)
    for name in fa:
        assert fa[name] == fb[name], name
    assert _report(a) == _report(b)
    assert (b / MARKER).exists() and not list(b.glob("_progress-*")) and not list(b.glob("*.tmp"))


# ---- killed runs, resumed ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A CLI run over real reviews and help pages (HTML), with small shards, run uninterrupted once."""
    tmp = tmp_path_factory.mktemp("job")
    config = tmp / "clean.yaml"
    config.write_text("data:\n  clean:\n    shard_docs: 400\n    chunk_docs: 200\n")
    inputs = [_head(tmp, "nsmc_reviews", 4500), _head(tmp, "help_pages_ko", 20)]

    def command(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "launch.cli", "clean", *map(str, inputs), "--out", str(out),
            "--config", str(config), "--num-proc", "2", "--keep-rejects", "--no-progress",
        ]  # fmt: skip

    reference = tmp / "reference"
    done = subprocess.run(command(reference), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(_report(reference)["shards"]) >= 6
    return {"command": command, "reference": reference, "tmp": tmp}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_is_refused_then_resumes_to_the_same_bytes(job: dict, sig: signal.Signals) -> None:
    out = job["tmp"] / f"killed-{sig.name}"
    proc = subprocess.Popen(job["command"](out), cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "_progress-00001.json").exists():  # two shards complete: mid-run
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)

    # Nothing looks finished: no marker, no report; the next stage refuses the directory.
    assert not (out / MARKER).exists() and not (out / "report.json").exists()
    with pytest.raises(IncompleteOutputError, match="no _COMPLETE.json"):
        require_complete(out, "koneox clean")
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert "rerun the same command to resume" in stderr
        assert not list(out.glob("*.tmp"))  # it finished nothing new and left nothing half-written
    else:
        assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in out.glob("_progress-*.json"))
    assert len(done) >= 2
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*.jsonl.gz")}
    finished = [f"part-{i:05d}.jsonl.gz" for i in range(len(done))]

    rerun = subprocess.run(job["command"](out), cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming after {len(done)} complete shard(s)" in rerun.stderr
    for name in finished:  # the finished shards were kept, not written again
        assert (out / name).stat().st_ino == kept[name][0] and (out / name).stat().st_mtime_ns == kept[name][
            1
        ]
    _same_output(job["reference"], out)
    record = require_complete(out, "koneox clean")
    assert record["shards"] == _report(out)["shards"]


class _Stop:
    """Raises CleanInterrupted (as the SIGTERM handler does) right after a given progress file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, index: int) -> None:
        original = clean_output.write_text_atomic

        def write(path: Path, text: str) -> None:
            original(path, text)
            if Path(path).name == clean_output.progress_name(index):
                raise CleanInterrupted(signal.SIGTERM)

        monkeypatch.setattr(clean_output, "write_text_atomic", write)


def test_resume_with_join_and_a_changed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Join merges runs across the resume point correctly; another config never resumes."""
    inputs = [_head(tmp_path, "nsmc_reviews", 6000), SAMPLES / "ko_law_bills.jsonl.gz"]
    cfg = CleanConfig(shard_docs=100, chunk_docs=250)
    cfg.join.enabled, cfg.join.key, cfg.join.target_chars = True, "movie_id", 400
    reference = clean_files(inputs, tmp_path / "ref", cfg, keep_rejects=True)
    assert reference["merged_by_join"] > 1000 and len(reference["shards"]) >= 4

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _Stop(m, 2)
        with pytest.raises(CleanInterrupted, match="3 complete shard"):
            clean_files(inputs, out, cfg, keep_rejects=True)
    logged: list[str] = []
    clean_files(inputs, out, cfg, keep_rejects=True, num_proc=2, log=logged.append)
    assert logged and logged[0].startswith("resuming after 3 complete shard(s)")
    _same_output(tmp_path / "ref", out)

    # a killed run, then the same command with another threshold: starts over, never mixes
    other = CleanConfig(shard_docs=100, chunk_docs=250)
    other.filter.min_chars = 5
    with monkeypatch.context() as m:
        _Stop(m, 1)
        with pytest.raises(CleanInterrupted):
            clean_files(inputs, out, cfg)
    logged.clear()
    fresh = clean_files(inputs, out, other, log=logged.append)
    assert any("starting over" in line for line in logged)
    clean_files(inputs, tmp_path / "other", other)
    _same_output(tmp_path / "other", out)
    assert fresh["kept"] != reference["kept"]


def test_dedup_does_not_depend_on_batching() -> None:
    """The batched dedup equals a plain one-document-at-a-time reference for any batch size,
    which is what makes resumed runs (whose first batch starts mid-way) byte-identical."""
    with gzip.open(SAMPLES / "nsmc_reviews.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in itertools.islice(f, 6000)]
    long = [t for t in texts if len(t) > 60][:200]
    # exact repeats (also after casefold), and near ones (a word more)
    texts += texts[:300] + [t.upper() + " " for t in texts[300:500]] + [t + " 진짜" for t in long]
    cfg = NearDedupConfig()
    sigs = minhash_matrix(texts, cfg)
    bands = band_key_matrix(sigs, cfg)
    keys = np.frombuffer(b"".join(map(exact_key, texts)), np.uint8).reshape(-1, 16)

    seen: set[bytes] = set()
    tables: list[dict[int, list[int]]] = [{} for _ in range(bands.shape[1])]
    kept_sigs: list[np.ndarray] = []
    expected = []
    for i in range(len(texts)):
        candidates = {c for t, b in zip(tables, bands[i].tolist(), strict=True) for c in t.get(b, ())}
        if keys[i].tobytes() in seen:
            expected.append(1)
        elif any(np.count_nonzero(kept_sigs[c] == sigs[i]) >= 0.8 * cfg.num_perm for c in candidates):
            expected.append(2)
        else:
            expected.append(0)
            for t, b in zip(tables, bands[i].tolist(), strict=True):
                t.setdefault(b, []).append(len(kept_sigs))
            kept_sigs.append(sigs[i])
            seen.add(keys[i].tobytes())
    expected = np.array(expected)
    assert (expected == 1).sum() >= 500 and (expected == 2).sum() >= 100
    for size in (7, 500, len(texts)):
        dedup = CorpusDeduper(True, cfg)
        got = np.concatenate(
            [
                dedup.check(keys[i : i + size], sigs[i : i + size], bands[i : i + size])
                for i in range(0, len(texts), size)
            ]
        )
        assert (got == expected).all(), (size, np.flatnonzero(got != expected)[:10])


def _members(path: Path) -> int:
    data, members = path.read_bytes(), 0
    while data:
        d = zlib.decompressobj(wbits=31)
        d.decompress(data)
        data, members = d.unused_data, members + 1
    return members


def test_same_shards_for_any_num_proc_with_many_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clean_output, "MEMBER_BYTES", 16 << 10)  # forked workers inherit it
    inputs = [_head(tmp_path, "nsmc_reviews", 5000), _head(tmp_path, "help_pages_ko", 40)]
    cfg = CleanConfig(shard_docs=1500, chunk_docs=300)
    r1 = clean_files(inputs, tmp_path / "p1", cfg, num_proc=1, keep_rejects=True)
    r2 = clean_files(inputs, tmp_path / "p2", cfg, num_proc=2, keep_rejects=True)
    assert r1["shards"] == r2["shards"] and len(r1["shards"]) >= 3
    assert _files(tmp_path / "p1") == _files(tmp_path / "p2")
    assert {k: v for k, v in r1.items() if k not in TIMING} == {
        k: v for k, v in r2.items() if k not in TIMING
    }
    first = tmp_path / "p2" / r2["shards"][0]
    assert _members(first) >= 5  # many gzip members, read back as one stream
    with gzip.open(first, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    assert len(docs) == 1500 and all(d["text"] and "movie_id" in d for d in docs)
    rejects = tmp_path / "p2" / r2["rejects"][0]
    with gzip.open(rejects, "rt", encoding="utf-8") as f:
        first_reject = json.loads(f.readline())
    assert list(first_reject)[:4] == ["reason", "file", "line", "text"]


def test_compress_level_key(tmp_path: Path) -> None:
    from data.clean.config import load_clean_config

    path = _head(tmp_path, "nsmc_reviews", 3000)
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  clean:\n    compress_level: 9\n")
    cfg9 = load_clean_config(config)
    assert cfg9.compress_level == 9 and CleanConfig().compress_level == 1
    r1 = clean_files([path], tmp_path / "l1", CleanConfig())
    r9 = clean_files([path], tmp_path / "l9", cfg9)
    a, b = tmp_path / "l1" / r1["shards"][0], tmp_path / "l9" / r9["shards"][0]
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    assert b.stat().st_size < 0.9 * a.stat().st_size
    assert r9["config"]["compress_level"] == 9
    with pytest.raises(ValueError, match="compress_level"):
        clean_files([path], tmp_path / "bad", CleanConfig(compress_level=11))


def test_scale_benchmark_quick() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import scale_clean

    rows = scale_clean.measure(quick=True)
    assert {r["text"] for r in rows} == {"web-like", "short reviews"}
    for r in rows:
        assert r["stage"] == "clean" and r["variant"] in ("before", "after")
        assert r["implied_workers"] > 0 and r["main_cpu_s_per_mb"] > 0 and r["worker_cpu_s_per_mb"] > 0
    assert {r["variant"] for r in rows} >= {"after"}


# ---- a corpus split across machines ------------------------------------------------------------


def _texts(out: Path) -> list[str]:
    texts = []
    for shard in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def test_split_across_machines_then_one_dedup_pass_equals_one_run(tmp_path: Path) -> None:
    """The README's recipe for a corpus too big for one machine: clean disjoint groups of inputs
    separately (dedup within each group), then one dedup-only pass over all their shards, in
    group order. With exact dedup the kept documents are those of one run over everything."""
    head = _head(tmp_path, "nsmc_reviews", 6000)
    with gzip.open(head, "rb") as f:
        lines = f.readlines()
    groups = []
    for i, part in enumerate((lines[:3500], lines[3500:])):
        groups.append(tmp_path / f"group{i}.jsonl.gz")
        with gzip.open(groups[-1], "wb") as f:
            f.writelines(part)
    steps = ["unicode", "html", "markup", "whitespace", "repeats", "filter", "pii", "dedup"]
    one = clean_files(groups, tmp_path / "one", steps=steps)
    parts = [clean_files([g], tmp_path / f"machine{i}", steps=steps) for i, g in enumerate(groups)]
    shards = [p for i in range(2) for p in sorted((tmp_path / f"machine{i}").glob("part-*.jsonl.gz"))]
    final = clean_files(shards, tmp_path / "all", steps=["dedup"])
    assert final["dropped"].get("duplicate", 0) > 0  # duplicates across the groups were found
    assert _texts(tmp_path / "all") == _texts(tmp_path / "one")
    dropped_in_parts = sum(sum(p["dropped"].values()) for p in parts)
    assert one["kept"] == final["kept"] and one["documents_in"] == sum(p["documents_in"] for p in parts)
    assert sum(one["dropped"].values()) == dropped_in_parts + sum(final["dropped"].values())
