"""`koneox pack` at scale: workers read their own input, ids checked, crash safety, resumable shards.

Real Korean text (NSMC reviews, law texts, help pages) from the shared corpus; kill tests run the
real command in a subprocess and signal it after its first finished shard appears.
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

import numpy as np
import pytest

from data import pack as pack_mod
from data.indexed import IndexedDataset, read_stats
from data.pack import PackError, merge_packed, pack, pack_per_shard
from data.stage import MARKER, mark_complete
from data.testing import corpus_dir, read_texts, train_tiny_tokenizer, write_jsonl_gz

REPO = Path(__file__).resolve().parents[1]
CORPUS = corpus_dir()
pytestmark = pytest.mark.skipif(not (CORPUS / "raw").is_dir(), reason=f"shared corpus not found at {CORPUS}")
N_SHARDS = 6


@pytest.fixture(scope="module")
def docs() -> list[str]:
    raw = CORPUS / "raw"
    return (
        read_texts(raw / "nsmc_reviews.jsonl.gz", limit=12_000)
        + read_texts(raw / "ko_law_bills.jsonl.gz")
        + read_texts(raw / "gimp_help_ko.jsonl.gz", limit=20)
    )


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, docs) -> Path:
    return train_tiny_tokenizer(docs[:4000] + docs[-31:], tmp_path_factory.mktemp("tok"), vocab_size=2000)


def _shards(docs: list[str], where: Path, n: int = N_SHARDS, complete: bool = True) -> Path:
    """A `koneox clean`-like output: n part-*.jsonl.gz shards (interleaved so every shard mixes
    long and short documents) and, when complete, its marker."""
    for s in range(n):
        write_jsonl_gz(docs[s::n], where / f"part-{s:05d}.jsonl.gz")
    if complete:
        mark_complete(where, "koneox clean")
    return where


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory, docs) -> Path:
    return _shards(docs, tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, clean_dir, tok_dir) -> Path:
    """Uninterrupted single-process pack of clean_dir: every other path must give these bytes."""
    out = tmp_path_factory.mktemp("ref") / "all"
    pack([clean_dir], tok_dir, out, num_proc=1, progress=False)
    return out


def _same(a: Path | str, b: Path | str) -> bool:
    return all(Path(f"{a}{ext}").read_bytes() == Path(f"{b}{ext}").read_bytes() for ext in (".bin", ".idx"))


def test_byte_identical_for_num_proc_and_every_reader(
    clean_dir, reference, docs, tok_dir, tmp_path, monkeypatch
):
    # 8 shards >= 4 per worker: the workers gunzip whole files
    eight = _shards(docs, tmp_path / "eight", n=8)
    pack([eight], tok_dir, tmp_path / "e1", num_proc=1, progress=False)
    rep = pack([eight], tok_dir, tmp_path / "e2", num_proc=2, progress=False)
    assert rep["tasks"] == 8 and _same(tmp_path / "e1", tmp_path / "e2")
    # 6 shards with 2 workers: the main process gunzips; tiny zlib reads cut lines anywhere,
    # long help pages across several chunks
    monkeypatch.setattr(pack_mod, "_MAIN_GZ_READ", 2048)
    monkeypatch.setattr(pack_mod, "_PIECE_BYTES", 20_000)
    rep = pack([clean_dir], tok_dir, tmp_path / "blocks", num_proc=2, progress=False)
    assert rep["tasks"] > 20 * N_SHARDS and _same(tmp_path / "blocks", reference)
    # the shards concatenated into one file (gzip members back to back), read in a worker
    monkeypatch.setattr(pack_mod, "_GZ_READ", 4096)
    cat = tmp_path / "cat.jsonl.gz"
    cat.write_bytes(b"".join(p.read_bytes() for p in sorted(clean_dir.glob("part-*.jsonl.gz"))))
    pack_per_shard([cat], tok_dir, tmp_path / "cat", num_proc=2, progress=False)
    assert _same(tmp_path / "cat" / "cat", reference)
    # uncompressed .jsonl in byte ranges that cut lines anywhere; parquet in row groups
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(pack_mod, "_RANGE_BYTES", 30_011)
    plain = tmp_path / "plain"
    plain.mkdir()
    with gzip.open(clean_dir / "part-00000.jsonl.gz", "rb") as f:
        (plain / "a.jsonl").write_bytes(f.read())
    pq.write_table(pa.table({"text": docs[1::N_SHARDS]}), plain / "b.parquet", row_group_size=500)
    pack([plain], tok_dir, tmp_path / "p1", num_proc=1, progress=False)
    rep = pack([plain], tok_dir, tmp_path / "p2", num_proc=2, progress=False)
    assert rep["tasks"] >= 8 and _same(tmp_path / "p1", tmp_path / "p2")
    first_two = IndexedDataset(reference)
    p2 = IndexedDataset(tmp_path / "p2")
    n = p2.num_documents
    assert n == len(docs[0::N_SHARDS]) + len(docs[1::N_SHARDS])
    for d in (0, n // 3, n - 1):
        np.testing.assert_array_equal(p2.document(d), first_two.document(d))
    # per-shard output merged = the single pack, byte for byte
    pack_per_shard([clean_dir], tok_dir, tmp_path / "shards", num_proc=2, progress=False)
    merged = merge_packed([tmp_path / "shards"], tmp_path / "merged")
    assert merged["max_token_id"] == read_stats(reference)["max_token_id"]
    assert _same(tmp_path / "merged", reference)
    assert json.loads((tmp_path / "merged.stats.json").read_text()) == json.loads(
        Path(f"{reference}.stats.json").read_text()
    )
    assert not list(tmp_path.glob("*.tmp")) and not list((tmp_path / "shards").glob("*.tmp"))


def test_stats_sidecar_describes_the_tokens(reference, tok_dir):
    stats = json.loads(Path(f"{reference}.stats.json").read_text())
    ds = IndexedDataset(reference)
    tokens = np.asarray(ds.tokens)
    assert stats == {
        "num_documents": ds.num_documents,
        "num_tokens": len(tokens),
        "max_token_id": int(np.max(tokens)),
        "min_token_id": int(np.min(tokens)),
        "bin_bytes": Path(f"{reference}.bin").stat().st_size,
        "dtype": "uint16",
        "tokenizer": str(tok_dir.resolve()),
        "vocab_size": 2000,
        "kept_added_tokens": [],
    }
    report = json.loads(Path(f"{reference}.report.json").read_text())
    assert report["max_token_id"] == stats["max_token_id"] and report["stats"] == f"{reference}.stats.json"
    assert read_stats(reference) == stats


def test_stale_sidecar_is_not_trusted(reference, tmp_path):
    for ext in (".bin", ".idx", ".stats.json"):
        Path(f"{tmp_path / 'c'}{ext}").write_bytes(Path(f"{reference}{ext}").read_bytes())
    assert read_stats(tmp_path / "c") is not None
    with open(f"{tmp_path / 'c'}.bin", "ab") as f:
        f.write(b"\0\0")
    assert read_stats(tmp_path / "c") is None


def test_token_id_beyond_the_vocabulary_names_file_and_line(docs, tok_dir, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    bad_doc = docs[10]
    bad_id = tok.encode(bad_doc, add_special_tokens=False).ids[0]
    clean = [d for d in docs[:200] if bad_id not in tok.encode(d, add_special_tokens=False).ids][:4]
    # a vocabulary with a hole: the token now has id 70000 in a 2000-entry vocabulary (and would
    # wrap around silently in uint16)
    holey = tmp_path / "holey"
    holey.mkdir()
    for f in tok_dir.iterdir():
        (holey / f.name).write_bytes(f.read_bytes())
    spec = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["vocab"][tok.id_to_token(bad_id)] = 70_000
    (holey / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    src = write_jsonl_gz([*clean, "", bad_doc], tmp_path / "in" / "reviews.jsonl.gz")
    for num_proc in (1, 2):
        with pytest.raises(PackError, match=r"reviews\.jsonl\.gz:6: token id 70000 >= vocabulary size 2000"):
            pack([src], holey, tmp_path / "o", num_proc=num_proc, progress=False)
        assert not list(tmp_path.glob("o.*"))


def test_clean_output_without_marker_is_refused(docs, tok_dir, tmp_path, capsys):
    from launch.cli import main

    unfinished = _shards(docs[:300], tmp_path / "clean", n=2, complete=False)
    with pytest.raises(
        PackError, match=rf"clean: no {MARKER}: this is not a finished output of `koneox clean`"
    ):
        pack([unfinished], tok_dir, tmp_path / "o", progress=False)
    # also when the clean output sits below the directory given
    with pytest.raises(PackError, match=MARKER):
        pack([tmp_path], tok_dir, tmp_path / "o", progress=False)
    args = [
        "pack",
        str(unfinished),
        "--tokenizer",
        str(tok_dir),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(args) == 1 and MARKER in capsys.readouterr().out
    assert main([*args, "--per-shard"]) == 1
    # a shard of it named on its own is refused the same way
    with pytest.raises(PackError, match=rf"clean: no {MARKER}"):
        pack([unfinished / "part-00000.jsonl.gz"], tok_dir, tmp_path / "o", progress=False)
    # a marker listing other shards than the directory holds (a stray or a lost shard)
    mark_complete(unfinished, "koneox clean", {"shards": ["part-00000.jsonl.gz", "part-00007.jsonl.gz"]})
    with pytest.raises(PackError, match=r"missing: part-00007\.jsonl\.gz; not listed: part-00001\.jsonl\.gz"):
        pack([unfinished], tok_dir, tmp_path / "o", progress=False)
    with pytest.raises(PackError, match=r"not listed: part-00001\.jsonl\.gz"):
        pack([unfinished / "part-00001.jsonl.gz"], tok_dir, tmp_path / "o", progress=False)
    assert pack([unfinished / "part-00000.jsonl.gz"], tok_dir, tmp_path / "o", progress=False)["documents"] == 150
    mark_complete(unfinished, "koneox clean", {"shards": ["part-00000.jsonl.gz", "part-00001.jsonl.gz"]})
    assert pack([unfinished], tok_dir, tmp_path / "o", progress=False)["documents"] == 300
    # a user's own directory of files (not part-*.jsonl.gz) needs no marker
    mine = tmp_path / "mine"
    write_jsonl_gz(docs[:50], mine / "reviews.jsonl.gz")
    assert pack([mine], tok_dir, tmp_path / "m", progress=False)["documents"] == 50


def test_unfinished_tokenizer_directory_is_refused(docs, tok_dir, tmp_path):
    import shutil

    from tokenizer import train as tok_train

    # the names pack looks for are the ones the tokenizer trainer writes
    assert (pack_mod.TOKENIZER_PRODUCER, pack_mod.TOKENIZER_REPORT, pack_mod.TOKENIZER_WORK_PREFIX) == (
        tok_train.PRODUCER, tok_train.REPORT_NAME, tok_train._WORK_PREFIX)
    clean = _shards(docs[:60], tmp_path / "clean", n=1)
    tok = Path(shutil.copytree(tok_dir, tmp_path / "tok"))
    (tok / MARKER).unlink(missing_ok=True)
    assert pack([clean], tok, tmp_path / "o", progress=False)["documents"] == 60  # any HF tokenizer
    (tok / ".koneox-tok-abc123").mkdir()  # killed while its files were moved into place
    with pytest.raises(PackError, match=rf"tok: no {MARKER}: `koneox train-tokenizer` did not finish"):
        pack([clean], tok, tmp_path / "o", progress=False)
    (tok / ".koneox-tok-abc123").rmdir()
    (tok / "tokenizer_report.json").write_text("{}")  # a rerun over an older output, killed
    with pytest.raises(PackError, match="tokenizer_report.json"):
        pack([clean], tok, tmp_path / "o", progress=False)
    mark_complete(tok, "koneox train-tokenizer", {"files": ["tokenizer.json", "vocab.txt"]})
    with pytest.raises(PackError, match=r"missing: vocab\.txt"):
        pack([clean], tok, tmp_path / "o", progress=False)
    mark_complete(tok, "koneox train-tokenizer", {"files": ["tokenizer.json", "tokenizer_report.json"]})
    assert pack([clean], tok, tmp_path / "o", progress=False)["documents"] == 60


def test_truncated_gzip_is_an_error_naming_it(docs, tok_dir, tmp_path):
    shards = _shards(docs[:3000], tmp_path / "clean", n=4)
    broken = shards / "part-00002.jsonl.gz"
    whole = broken.read_bytes()
    broken.write_bytes(whole[: len(whole) * 2 // 3])
    # num_proc 1: read as a whole-file task; 2 (4 files < 4 per worker): gunzipped by the main process
    for num_proc in (1, 2):
        with pytest.raises(PackError, match=r"part-00002\.jsonl\.gz: cannot read .*truncated or corrupt"):
            pack([shards], tok_dir, tmp_path / "o", num_proc=num_proc, progress=False)
        assert not list(tmp_path.glob("o.*"))
    # a flipped byte inside the compressed data: zlib's CRC-32 check catches it
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0x55
    broken.write_bytes(bytes(flipped))
    with pytest.raises(PackError, match=r"part-00002\.jsonl\.gz: cannot read .*(data check|invalid)"):
        pack([shards], tok_dir, tmp_path / "o", num_proc=1, progress=False)
    broken.write_bytes(whole[: len(whole) * 2 // 3])
    # per shard (a worker gunzips): the others are finished and kept, the error names the file, no marker
    with pytest.raises(PackError, match=r"1 of 4 shards failed.*part-00002\.jsonl\.gz: cannot read"):
        pack_per_shard([shards], tok_dir, tmp_path / "ps", num_proc=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "ps").glob("*.stats.json")) == [
        f"part-0000{i}.stats.json" for i in (0, 1, 3)
    ]
    assert not (tmp_path / "ps" / MARKER).exists() and not list((tmp_path / "ps").glob("*.tmp"))
    broken.write_bytes(whole)
    rep = pack_per_shard([shards], tok_dir, tmp_path / "ps", num_proc=2, progress=False)
    assert (rep["packed"], rep["skipped"]) == (1, 3)


def _start_pack(clean_dir: Path, tok_dir: Path, out: Path, *options: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "launch.cli", "pack", str(clean_dir), "--tokenizer", str(tok_dir)]
    cmd += ["--out", str(out), "--num-proc", "2", "--no-progress", *options]
    # faulthandler: a pack that hangs is made to dump every thread's stack (SIGABRT) below
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _signal(proc: subprocess.Popen, sig: int) -> str:
    """Send ``sig``, wait for the exit and return the output; a pack still running after 60 s fails
    the test with the stacks of its threads."""
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        proc.wait()
        pytest.fail(f"pack did not exit within 60 s of {signal.Signals(sig).name}:\n{proc.stdout.read()}")
    return proc.stdout.read()


def _wait_for(proc: subprocess.Popen, where: Path, pattern: str) -> None:
    deadline = time.monotonic() + 120
    while not list(where.glob(pattern)):
        assert proc.poll() is None, f"pack ended before {pattern} appeared: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"no {pattern} within 120 s"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_per_shard_pack_resumes_to_the_same_bytes(sig, clean_dir, tok_dir, reference, tmp_path):
    out = tmp_path / "shards"
    proc = _start_pack(clean_dir, tok_dir, out, "--per-shard")
    _wait_for(proc, out, "*.stats.json")  # the first shard is finished
    text = _signal(proc, sig)
    finished = {p.name.removesuffix(".stats.json") for p in out.glob("*.stats.json")}
    assert 1 <= len(finished) < N_SHARDS, "the kill must land mid-run"
    assert not (out / MARKER).exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "stopped by SIGTERM" in text and "temporary files removed" in text
        assert not list(out.glob("*.tmp"))
    else:
        assert proc.returncode == -signal.SIGKILL
    # the next stage refuses the unfinished directory
    with pytest.raises(PackError, match=rf"no {MARKER}: this is not a finished output of `koneox pack`"):
        merge_packed([out], tmp_path / "early")
    kept = {n: Path(f"{out / n}.bin").stat().st_mtime_ns for n in finished}
    rep = pack_per_shard([clean_dir], tok_dir, out, num_proc=2, progress=False)
    assert rep["skipped"] == len(finished) and rep["packed"] == N_SHARDS - len(finished)
    assert {n: Path(f"{out / n}.bin").stat().st_mtime_ns for n in finished} == kept  # not redone
    assert not list(out.glob("*.tmp"))
    merge_packed([out], tmp_path / "merged")
    assert _same(tmp_path / "merged", reference)


@pytest.mark.slow
def test_sigterm_single_output_leaves_no_temporaries(clean_dir, tok_dir, tmp_path):
    proc = _start_pack(clean_dir, tok_dir, tmp_path / "all")
    _wait_for(proc, tmp_path, "all.part-*.tmp")  # workers are writing
    text = _signal(proc, signal.SIGTERM)
    assert proc.returncode == 143 and "stopped by SIGTERM" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_scale_benchmark_quick_runs():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import scale_pack

    rows = scale_pack.measure(quick=True)
    assert {(r["variant"], r["text"]) for r in rows} == {
        (v, t) for v in ("before", "after") for t in ("web-like", "short reviews")
    }
    for r in rows:
        assert r["stage"] == "pack" and r["worker_cpu_s_per_mb"] > 0 and r["main_cpu_s_per_mb"] >= 0
        assert r["implied_workers"] <= r["worker_cpu_s_per_mb"] / max(r["main_cpu_s_per_mb"], 1e-4) * 1.1
