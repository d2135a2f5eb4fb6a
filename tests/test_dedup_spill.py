"""Dedup within ``data.clean.dedup_memory_mb``: a budget so small that the state spills to disk
at every batch (and its runs merge) gives the same codes as the in-memory state, the same shards
through ``clean_files`` for any num_proc, resumes after a kill, and leaves no work directory."""

from __future__ import annotations

import gzip
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data.clean import CleanConfig, clean_files
from data.clean import output as clean_output
from data.clean.config import NearDedupConfig, load_clean_config
from data.clean.dedup import (
    BloomFilter,
    CorpusDeduper,
    SpilledState,
    band_key_matrix,
    exact_key,
    minhash_matrix,
)
from data.clean.pipeline import DEDUP_DIR, CleanInterrupted

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
TIMING = ("seconds", "docs_per_s", "mb_per_s", "docs_per_s_per_core", "mb_per_s_per_core", "step_cpu_seconds")


from test_clean_scale import _head  # noqa: E402  (the same head-of-sample helper)


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl.gz"))}


def _report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {k: v for k, v in report.items() if k not in (*TIMING, "num_proc", "config")}


def test_bloom_filter_and_sorted_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    keys = np.sort(rng.integers(1, 2**64, 20_000, dtype=np.uint64))
    bloom = BloomFilter(4096)
    bloom.add_sorted(keys[:5000])
    assert bloom.may_contain(keys[:5000]).all()
    bloom.fold()  # half the size: still no false negatives
    assert bloom.nbytes == 2048 and bloom.may_contain(keys[:5000]).all()

    # runs of (key, document) with repeated keys, merged across levels; lookups find every record
    state = SpilledState(tmp_path / "state", 1 << 20, num_perm=4)
    records = []
    for spill in range(20):
        fresh = keys[spill * 1000 : (spill + 1) * 1000]
        repeated = keys[rng.integers(0, 1000, 50)]  # keys of the first spill again
        batch = np.stack([np.r_[fresh, repeated], np.full(1050, spill, np.uint64)], axis=1)
        records.append(batch)
        state.add_run("bands", rng.permutation(batch))
    assert state.merges >= 2 and len(state.runs["bands"]) < 20
    wanted = np.r_[keys[::7], rng.integers(1, 2**64, 500, dtype=np.uint64)]  # present and absent
    found = state.band_documents(wanted)
    every = np.concatenate(records)
    for i, key in enumerate(wanted.tolist()):
        expected = sorted(every[every[:, 0] == key, 1].tolist())
        assert sorted(found.get(i, [])) == expected, i
    state.close()


@pytest.fixture(scope="module")
def stream() -> dict:
    """Real reviews plus exact repeats (also after casefold) and near ones (a word more)."""
    with gzip.open(SAMPLES / "nsmc_reviews.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in itertools.islice(f, 6000)]
    long = [t for t in texts if len(t) > 60][:300]
    copies = texts[:300] + [t.upper() + " " for t in texts[300:500]] + [t + " 진짜" for t in long]
    copies = [copies[i] for i in np.random.default_rng(1).permutation(len(copies))]
    # half the copies in the middle (some before their original), half at the end
    texts = texts[:3000] + copies[: len(copies) // 2] + texts[3000:] + copies[len(copies) // 2 :]
    cfg = NearDedupConfig()
    sigs = minhash_matrix(texts, cfg)
    return {
        "keys": np.frombuffer(b"".join(map(exact_key, texts)), np.uint8).reshape(-1, 16),
        "sigs": sigs,
        "bands": band_key_matrix(sigs, cfg),
        "cfg": cfg,
    }


def _codes(stream: dict, exact: bool, near: bool, size: int, memory_mb: int, work_dir: Path | None):
    deduper = CorpusDeduper(exact, stream["cfg"] if near else None, memory_mb=memory_mb, work_dir=work_dir)
    n = len(stream["sigs"])
    codes = [
        deduper.check(
            stream["keys"][i : i + size] if exact else None,
            stream["sigs"][i : i + size] if near else None,
            stream["bands"][i : i + size] if near else None,
        )
        for i in range(0, n, size)
    ]
    info = (deduper.spills, deduper.spilled.merges if deduper.spilled else 0)
    deduper.close()
    return np.concatenate(codes), info


@pytest.mark.parametrize(
    "exact,near", [(True, True), (True, False), (False, True)], ids=["both", "exact", "near"]
)
def test_spilled_state_gives_the_same_codes(stream: dict, tmp_path: Path, exact: bool, near: bool) -> None:
    expected, _ = _codes(stream, exact, near, 500, memory_mb=0, work_dir=None)
    if exact:
        assert (expected == 1).sum() >= 500
    if near:
        assert (expected == 2).sum() >= 150
    for size in (40, 700):
        work = tmp_path / f"work-{size}"
        got, (spills, merges) = _codes(stream, exact, near, size, memory_mb=1, work_dir=work)
        assert spills >= 8 and merges >= 1, (spills, merges)  # a spill per batch, runs merged
        assert (got == expected).all(), (size, np.flatnonzero(got != expected)[:10])
        assert not work.exists()
    # a budget that holds everything never touches the disk
    work = tmp_path / "big"
    got, (spills, _) = _codes(stream, exact, near, 700, memory_mb=256, work_dir=work)
    assert spills == 0 and (got == expected).all() and not work.exists()


def _counting(method, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return method(*args, **kwargs)

    return counted


def _config(memory_mb: int) -> CleanConfig:
    return CleanConfig(shard_docs=700, chunk_docs=150, dedup_memory_mb=memory_mb)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run with the state in memory (no limit)."""
    tmp = tmp_path_factory.mktemp("spill")
    with gzip.open(SAMPLES / "nsmc_reviews.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in itertools.islice(f, 3500)]
    copies = [dict(d) for d in docs[:400]] + [
        {**d, "text": d["text"] + " 진짜"} for d in docs if len(d["text"]) > 60
    ]
    copies = [copies[i] for i in np.random.default_rng(2).permutation(len(copies))]
    docs = docs[:1500] + copies[: len(copies) // 2] + docs[1500:] + copies[len(copies) // 2 :]
    planted = tmp / "planted.jsonl.gz"
    with gzip.open(planted, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    inputs = [planted, _head(tmp, "help_pages_ko", 20)]
    out = tmp / "memory"
    report = clean_files(inputs, out, _config(0), keep_rejects=True)
    assert report["dropped"]["duplicate"] > 300 and report["dropped"]["near_duplicate"] > 100
    assert len(report["shards"]) >= 4
    return {"inputs": inputs, "out": out, "tmp": tmp}


def test_clean_files_spilling_gives_the_same_shards(reference: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    spills = []
    monkeypatch.setattr(SpilledState, "add_run", _counting(SpilledState.add_run, spills))
    out = reference["tmp"] / "spilled"
    report = clean_files(reference["inputs"], out, _config(1), num_proc=2, keep_rejects=True)
    assert len(spills) >= 20  # exact and band runs of every batch (dedup runs in the main process)
    assert report["config"]["dedup_memory_mb"] == 1
    assert _shards(out) == _shards(reference["out"])
    assert _report(out) == _report(reference["out"])
    assert not (out / DEDUP_DIR).exists()


def test_resume_with_spilling(reference: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while spilling; the rerun rebuilds the spilled state from the kept shards, with
    another budget (it is not part of the job's identity), and gives the same bytes."""
    out = reference["tmp"] / "resumed"
    original = clean_output.write_text_atomic

    def write(path: Path, text: str) -> None:
        original(path, text)
        if Path(path).name == clean_output.progress_name(2):
            assert (out / DEDUP_DIR).is_dir()  # the state was on disk when it stopped
            raise CleanInterrupted(signal.SIGTERM)

    with monkeypatch.context() as m:
        m.setattr(clean_output, "write_text_atomic", write)
        with pytest.raises(CleanInterrupted, match="3 complete shard"):
            clean_files(reference["inputs"], out, _config(1), keep_rejects=True)
    assert not (out / DEDUP_DIR).exists()  # removed on the way out
    logged: list[str] = []
    clean_files(reference["inputs"], out, _config(2), keep_rejects=True, log=logged.append)
    assert logged and logged[0].startswith("resuming after 3 complete shard(s)")
    assert _shards(out) == _shards(reference["out"])
    assert _report(out) == _report(reference["out"])
    assert not (out / DEDUP_DIR).exists()


def test_work_dir_of_a_killed_run_is_removed_by_the_next(reference: dict) -> None:
    tmp = reference["tmp"]
    config = tmp / "spill.yaml"
    config.write_text("data:\n  clean:\n    shard_docs: 700\n    chunk_docs: 150\n    dedup_memory_mb: 1\n")
    assert load_clean_config(config).dedup_memory_mb == 1
    out = tmp / "killed"
    command = [
        sys.executable, "-m", "launch.cli", "clean", *map(str, reference["inputs"]), "--out", str(out),
        "--config", str(config), "--num-proc", "1", "--keep-rejects", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "_progress-00001.json").exists() or not list((out / DEDUP_DIR).glob("*.bin")):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=60)
    assert list((out / DEDUP_DIR).glob("*.bin"))  # SIGKILL leaves the spilled state behind
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming after" in done.stderr
    assert not (out / DEDUP_DIR).exists()
    assert _shards(out) == _shards(reference["out"])
    assert _report(out) == _report(reference["out"])


def test_negative_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dedup_memory_mb"):
        clean_files([_head(tmp_path, "nsmc_reviews", 10)], tmp_path / "out", CleanConfig(dedup_memory_mb=-1))


def test_scale_benchmark_quick(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import clean_scale

    rows = clean_scale.measure([20_000], memory_mb=8, work_dir=str(tmp_path))
    memory, bounded = rows
    assert bounded["spills"] > 0 and memory["spills"] == 0
    assert memory["codes_sha256"] == bounded["codes_sha256"]
    for r in rows:
        assert r["exact_found"] == r["exact_planted"] > 1000
        assert r["near_findable_found"] == r["near_findable"] > 1000 and r["unique_dropped"] == 0
    assert not list(tmp_path.iterdir())  # the spilled state was removed
