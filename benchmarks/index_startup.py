"""Start-up cost of the training data index per rank: before (every rank builds the split and the
epoch index privately, git commit 0ffa46f) and after (``data.dataset.IndexCache``: built once,
memory-mapped by every rank), for synthetic packed datasets of 1M, 10M and 100M documents.

Each size is one synthetic ``.idx`` of short documents (8-39 tokens, one sequence each, as
`koneox pack` writes them) and a sparse ``.bin`` (only the index matters here; the 100M file
takes 2 GB of disk, the cache 0.8 GB more). Ranks are separate processes started together on
this machine, as the 8 ranks of a node would be:

    before   every rank: open + validate, split, epoch-0 index, first micro-batch
    cold     rank 0 builds the cache (split, epoch 0); the others wait for its files, then map them
    warm     every rank maps the cache built before (a restart, or a prebuilt cache)

Per rank: CPU seconds from start to the first micro-batch, peak RSS, and, while all ranks are
alive and every rank has touched its whole index (as it will have late in an epoch), the
proportional set size (PSS, /proc/PID/smaps_rollup: shared pages divided among the processes
mapping them) and the index bytes resident in the rank and their PSS share. Before, the index
is private memory; after, it is page cache shared by the ranks, so per-rank PSS falls as ranks
are added while the node total stays flat.

Usage::

    python benchmarks/index_startup.py                        # 1M, 10M, 100M; ~6 minutes on 2 cores
    python benchmarks/index_startup.py --sizes 1e6 --ranks 1,8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "0ffa46f"
BEFORE_TREE = Path("/tmp/koneox-before")
SEQ_LEN = 2048
MICRO_BATCH = 8


# -- synthetic data ---------------------------------------------------------------------------


def make_dataset(prefix: Path, n_docs: int, seed: int = 0) -> int:
    """``prefix.idx`` with ``n_docs`` one-sequence documents of 8-39 tokens and a sparse ``.bin``.
    Written in chunks (memory stays flat); returns the token count."""
    import numpy as np

    from data.indexed import _HEADER, MAGIC, VERSION

    rng = np.random.default_rng(seed)
    chunk = 1 << 22
    lengths_file = prefix.with_suffix(".lengths.tmp")
    total = 0
    with open(lengths_file, "wb") as f:
        for lo in range(0, n_docs, chunk):
            f.write(rng.integers(8, 40, min(chunk, n_docs - lo)).astype(np.int32).tobytes())
    lengths = np.memmap(lengths_file, dtype=np.int32, mode="r")
    with open(prefix.with_suffix(".idx"), "wb") as f:
        f.write(_HEADER.pack(MAGIC, VERSION, 8, n_docs, n_docs + 1))  # 8 = uint16
        for lo in range(0, n_docs, chunk):
            f.write(np.asarray(lengths[lo : lo + chunk]).tobytes())
        for lo in range(0, n_docs, chunk):
            nbytes = np.asarray(lengths[lo : lo + chunk], dtype=np.int64) * 2
            ends = np.cumsum(nbytes) + total * 2
            f.write((ends - nbytes).tobytes())
            total = int(ends[-1]) // 2
        for lo in range(0, n_docs + 1, chunk):
            f.write(np.arange(lo, min(lo + chunk, n_docs + 1), dtype=np.int64).tobytes())
    del lengths
    lengths_file.unlink()
    with open(prefix.with_suffix(".bin"), "wb") as f:
        f.truncate(total * 2)  # a hole: no disk blocks
    return total


# -- one rank ---------------------------------------------------------------------------------


def _smaps(cache: str | None, idx: str) -> dict[str, float]:
    """PSS of this process, and RSS and PSS (MB) of its mappings of the cache files (below
    ``cache``) and of the ``.idx`` file (``idx``: pages the kernel maps around each random read)."""
    out = {"pss_mb": 0.0, "index_rss_mb": 0.0, "index_pss_mb": 0.0, "idx_rss_mb": 0.0, "idx_pss_mb": 0.0}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["pss_mb"] = int(line.split()[1]) / 1024
    kind = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
                path = head[5] if len(head) >= 6 else ""
                kind = "index" if cache and path.startswith(cache) else "idx" if path == idx else None
            elif kind and head[0] in ("Rss:", "Pss:"):
                out[f"{kind}_{head[0][:-1].lower()}_mb"] += int(head[1]) / 1024
    return out


def _wait_for(paths: list[Path], timeout: float = 3600) -> None:
    start = time.monotonic()
    while not all(p.is_file() for p in paths):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"waiting for {paths}")
        time.sleep(0.02)


def rank_main(spec: dict) -> None:
    """One rank: build or open the index, read the first micro-batch, touch the whole index, then
    (with every other rank alive) measure memory and write ``spec['out']``."""
    import numpy as np

    from data.config import DataConfig
    from data.dataset import build_datasets

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = DataConfig(train_paths=[spec["prefix"]], seq_len=SEQ_LEN, verify_token_ids=False)
    cache = None
    if spec["variant"] == "after":
        from data.dataset import IndexCache

        # The trainer's protocol: rank 0 builds the splits while the others wait at a barrier (here: a
        # file), then they open the cache; epoch 0 is built at the first batch while they poll for it.
        cache = IndexCache(spec["cache"], builder=spec["rank"] == 0, wait_s=3600)
        splits_done = Path(spec["sync"]) / "splits"
        if spec["rank"]:
            _wait_for([splits_done])
        train = build_datasets(cfg, cache=cache)["train"]
        splits_done.touch()
        train.prefetch(0, MICRO_BATCH * spec["ranks"])  # what the loader does first (rank 0 builds)
    else:
        train = build_datasets(cfg)["train"]
    tokens, _, _ = train.get_batch(spec["rank"] * MICRO_BATCH, MICRO_BATCH)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    g = train.datasets[0]
    if cache is None:  # before: the index arrays are private memory, all resident
        held = [g.documents, g._seq_counts, *(a for ep in g._cache.values() for a in ep)]
        index_bytes = sum(a.nbytes for a in held)
    else:  # after: touch every page of the mapped index, as a rank will have late in an epoch
        held = [g.documents, *g._epoch(0)]
        index_bytes = sum(a.nbytes for a in held)
    checksum = sum(int(np.asarray(a).sum(dtype=np.int64)) & 1 for a in held)
    sync = Path(spec["sync"])
    (sync / f"ready-{spec['rank']}").touch()
    _wait_for([sync / f"ready-{r}" for r in range(spec["ranks"])])
    mem = _smaps(spec["cache"] if cache is not None else None, str(Path(spec["prefix"] + ".idx").resolve()))
    if cache is None:
        mem["index_rss_mb"] = mem["index_pss_mb"] = index_bytes / 2**20
    record = {
        "rank": spec["rank"], "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "index_mb": index_bytes / 2**20, "tokens": int(tokens.shape[0]), "checksum": checksum,
        "built": [w for _, w in cache.built] if cache is not None else ["all"], **mem,
    }
    Path(spec["out"]).write_text(json.dumps(record))
    (sync / f"done-{spec['rank']}").touch()
    _wait_for([sync / f"done-{r}" for r in range(spec["ranks"])])  # keep the mappings alive till all measured


def boundary_main(spec: dict) -> None:
    """One rank reading across the end of epoch 0: the wall time of the batch holding the first
    sample of epoch 1 and, after, the loader's samples/s while rank 0's background thread builds
    epoch 1 against samples/s with nothing building (the GIL is shared)."""
    from data.config import DataConfig
    from data.dataset import build_datasets

    cfg = DataConfig(train_paths=[spec["prefix"]], seq_len=SEQ_LEN, verify_token_ids=False)
    cache = None
    if spec["variant"] == "after":
        from data.dataset import IndexCache

        cache = IndexCache(spec["cache"])
        train = build_datasets(cfg, cache=cache)["train"]
    else:
        train = build_datasets(cfg)["train"]
    s = train.samples_per_epoch[0]

    def read(start: int, batches: int) -> float:
        t = time.perf_counter()
        for b in range(batches):
            k = start + b * MICRO_BATCH
            if cache is not None:
                train.prefetch(k, k + MICRO_BATCH)  # what DataLoader.__next__ does
            train.get_batch(k, MICRO_BATCH)
        return time.perf_counter() - t

    import numpy as np

    np.unique(np.arange(2))  # numpy imports a module at the first call; not part of either index
    read(0, 1)  # epoch 0's index: built or opened
    record = {}
    if cache is not None:
        read(s // 2, 1)  # past half: epoch 1 is queued on the background thread
        n, busy = 0, 0.0
        while not all(job.done() for job in cache._pending.values()):
            busy += read(s // 2 + 8 * n * MICRO_BATCH, 8)
            n += 1
        idle = read(s // 2, 8 * max(n, 1))
        record["samples_per_s_while_building"] = round(8 * n * MICRO_BATCH / busy, 1) if n else None
        record["samples_per_s_idle"] = round(8 * max(n, 1) * MICRO_BATCH / idle, 1)
    record["boundary_batch_s"] = round(read(s - MICRO_BATCH // 2, 1), 4)
    Path(spec["out"]).write_text(json.dumps(record))


# -- driver -----------------------------------------------------------------------------------


def before_tree() -> Path:
    """A checkout of the code before the index cache (made once with git worktree, never modified)."""
    if not (BEFORE_TREE / "data" / "dataset.py").is_file():
        subprocess.run(["git", "worktree", "add", str(BEFORE_TREE), BEFORE_COMMIT], cwd=REPO, check=True,
                       capture_output=True)
    return BEFORE_TREE


def run_ranks(variant: str, prefix: Path, cache: Path, ranks: int, work: Path) -> list[dict]:
    """Start ``ranks`` rank processes together; returns their records, rank 0 first."""
    sync = Path(tempfile.mkdtemp(dir=work, prefix="sync-"))
    root = before_tree() if variant == "before" else REPO
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    procs = []
    for r in range(ranks):
        spec = {"variant": variant, "prefix": str(prefix), "cache": str(cache), "rank": r, "ranks": ranks,
                "sync": str(sync), "out": str(sync / f"rank{r}.json")}
        procs.append(subprocess.Popen([sys.executable, __file__, "--rank", json.dumps(spec)], cwd=root, env=env))
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a {variant} rank failed (exit {p.returncode})")
    records = [json.loads((sync / f"rank{r}.json").read_text()) for r in range(ranks)]
    shutil.rmtree(sync)
    return records


def run_boundary(variant: str, prefix: Path, cache: Path, work: Path) -> dict:
    root = before_tree() if variant == "before" else REPO
    out = Path(tempfile.mkdtemp(dir=work, prefix="boundary-")) / "out.json"
    spec = {"variant": variant, "prefix": str(prefix), "cache": str(cache), "out": str(out), "boundary": True}
    subprocess.run([sys.executable, __file__, "--rank", json.dumps(spec)], cwd=root, check=True,
                   env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    record = json.loads(out.read_text())
    shutil.rmtree(out.parent)
    return record


def summarise(n_docs: int, variant: str, phase: str, records: list[dict]) -> dict:
    others = records[1:] or records
    return {
        "docs": n_docs, "variant": variant, "phase": phase, "ranks": len(records),
        "cpu_s_rank0": records[0]["cpu_s"], "cpu_s_other_max": max(r["cpu_s"] for r in others),
        "wall_s": max(r["wall_s"] for r in records),
        "peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in records), 1),
        "pss_mb_per_rank": round(sum(r["pss_mb"] for r in records) / len(records), 1),
        "node_pss_mb": round(sum(r["pss_mb"] for r in records), 1),
        "index_mb": round(records[0]["index_mb"], 1),
        "index_rss_mb_per_rank": round(sum(r["index_rss_mb"] for r in records) / len(records), 1),
        "index_pss_mb_per_rank": round(sum(r["index_pss_mb"] for r in records) / len(records), 1),
        "idx_rss_mb_per_rank": round(sum(r["idx_rss_mb"] for r in records) / len(records), 1),
        "idx_pss_mb_per_rank": round(sum(r["idx_pss_mb"] for r in records) / len(records), 1),
        "built": records[0]["built"],
    }


def measure(sizes: list[int], rank_counts: list[int], before_max: int, work: Path) -> list[dict]:
    rows = []
    for n in sizes:
        data = work / f"d{n}"
        data.mkdir(parents=True, exist_ok=True)
        prefix = data / "synthetic"
        c0 = time.process_time()
        tokens = make_dataset(prefix, n)
        print(f"# {n:,} documents, {tokens:,} tokens: made in {time.process_time() - c0:.1f} CPU s", flush=True)
        if n <= before_max:
            for r in rank_counts:
                rows.append(summarise(n, "before", "build", run_ranks("before", prefix, data / "none", r, work)))
                print(json.dumps(rows[-1]), flush=True)
            rows[-1].update(run_boundary("before", prefix, data / "none", work))
        cache = data / "index_cache"
        rows.append(summarise(n, "after", "cold", run_ranks("after", prefix, cache, max(rank_counts), work)))
        print(json.dumps(rows[-1]), flush=True)
        for r in rank_counts:
            rows.append(summarise(n, "after", "warm", run_ranks("after", prefix, cache, r, work)))
            print(json.dumps(rows[-1]), flush=True)
        rows[-1]["cache_disk_mb"] = round(sum(f.stat().st_size for f in cache.glob("*.npy")) / 2**20, 1)
        rows[-1].update(run_boundary("after", prefix, cache, work))
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(data)  # keep the disk in use below 3 GB
    return rows


def table(rows: list[dict]) -> str:
    head = ("| docs | variant | ranks | CPU s rank 0 | CPU s other ranks (max) | peak RSS MB (max) | "
            "PSS MB per rank | node PSS MB | index MB | index PSS MB per rank | .idx PSS MB per rank |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        name = r["variant"] if r["variant"] == "before" else f"after, {r['phase']}"
        lines.append(
            f"| {r['docs'] / 1e6:g}M | {name} | {r['ranks']} | {r['cpu_s_rank0']:.2f} | {r['cpu_s_other_max']:.2f} | "
            f"{r['peak_rss_mb_max']:.0f} | {r['pss_mb_per_rank']:.0f} | {r['node_pss_mb']:.0f} | "
            f"{r['index_mb']:.0f} | {r['index_pss_mb_per_rank']:.1f} | {r['idx_pss_mb_per_rank']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7,1e8", help="documents per synthetic dataset, comma-separated")
    ap.add_argument("--ranks", default="1,8", help="rank processes per measurement, comma-separated")
    ap.add_argument("--before-max", type=float, default=1e7,
                    help="largest size to run the old code at (100M would need ~7 GB per rank)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--rank", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(REPO)).split(os.pathsep)[0])
        spec = json.loads(args.rank)
        (boundary_main if spec.get("boundary") else rank_main)(spec)
        return
    sys.path.insert(0, str(REPO))
    work = Path(args.dir or tempfile.mkdtemp(prefix="index_startup-"))
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows = measure(sizes, [int(r) for r in args.ranks.split(",")], int(args.before_max), work)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
