"""Dedup state at scale: peak RSS and time of exact + near dedup over 1M, 3M and 10M short
documents with planted duplicates, held in memory vs within ``data.clean.dedup_memory_mb``.

    python benchmarks/clean_scale.py [--sizes 1000000,3000000,10000000] [--memory-mb 256] [--quick]

Each (size, mode) runs in a fresh process that streams the corpus through ``CorpusDeduper``
in batches of 2,000 (``chunk_docs``), as the clean main process does, and reports its peak RSS
(``getrusage`` maxrss; the process's fixed overhead before dedup is printed apart), the time
spent in ``check``, and whether every planted duplicate was found. Both modes must give the
same codes (compared by hash).

The stream is a function of the document index, so a smaller size is a prefix of a larger one.
It is generated at the level dedup sees, not as text: MinHash of 10M documents with
``minhash_matrix`` costs about 240 us each here (40 minutes on one core), so each document gets
a 128-bit exact key and a 112-value signature drawn from the distribution MinHash gives:
- unique documents (80%): independent uniform values per position (documents with unrelated
  shingle sets);
- exact duplicates (10%): the key and signature of an earlier unique document;
- near duplicates (10%): an earlier unique document's signature with each position kept with
  probability J and redrawn otherwise (MinHash agrees per permutation with probability equal
  to the Jaccard similarity), J uniform in [0.85, 1), and a new key;
and band keys hash each band's 12 values with a vectorised 64-bit mix (dedup only compares
band keys for equality, as it does ``band_key_matrix``'s xxh64 hashes).

Found: every exact duplicate, and every near duplicate that the index is built to find: its
signature agrees with its original's on at least threshold x 112 positions and they share a
band. Near duplicates below that (LSH misses near the threshold) are reported as the LSH's
recall, the same in both modes; no unique document may be dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.clean.config import NearDedupConfig  # noqa: E402
from data.clean.dedup import DUPLICATE, NEAR_DUPLICATE, CorpusDeduper, _lsh_params  # noqa: E402

BATCH = 2000
UNIQUE, EXACT, NEAR = 0, 1, 2
_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of each uint64: a counter-based random stream."""
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _draw(index: np.ndarray, stream: int) -> np.ndarray:
    return _mix(index.astype(np.uint64) * np.uint64(1 << 8) + np.uint64(stream))


def roles(index: np.ndarray) -> np.ndarray:
    r = _draw(index, 1) % np.uint64(100)
    role = np.where(r < 10, EXACT, np.where(r < 20, NEAR, UNIQUE))
    role[index < 1000] = UNIQUE
    return role


def sources(index: np.ndarray) -> np.ndarray:
    """For each duplicate, an earlier unique document (its original)."""
    src = np.full(len(index), -1, np.int64)
    todo = np.arange(len(index))
    for attempt in range(64):
        j = (_draw(index[todo], 16 + attempt) % index[todo].astype(np.uint64)).astype(np.int64)
        ok = roles(j) == UNIQUE
        src[todo[ok]] = j[ok]
        todo = todo[~ok]
        if not len(todo):
            return src
    raise RuntimeError("no unique original found")


def _signature(base: np.ndarray, perms: int, stream: int) -> np.ndarray:
    cells = base.astype(np.uint64)[:, None] * np.uint64(perms) + np.arange(perms, dtype=np.uint64)
    return (_draw(cells, stream) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def batch(start: int, stop: int, cfg: NearDedupConfig) -> dict[str, np.ndarray]:
    """Documents ``start:stop``: keys (n, 16) uint8, signatures (n, num_perm), bands (n, b),
    role, source and (near duplicates) whether the index is built to find them."""
    index = np.arange(start, stop, dtype=np.int64)
    role = roles(index)
    src = np.full(len(index), -1, np.int64)
    dup = role != UNIQUE
    src[dup] = sources(index[dup])
    base = np.where(role == EXACT, src, index)
    keys = np.stack([_draw(base, 2), _draw(base, 3)], axis=1).view(np.uint8)
    sigs = _signature(np.where(dup, src, index), cfg.num_perm, 4)
    near = np.flatnonzero(role == NEAR)
    jaccard = 0.85 + 0.15 * (_draw(index[near], 5) >> np.uint64(11)).astype(np.float64) / 2.0**53
    cells = index[near].astype(np.uint64)[:, None] * np.uint64(cfg.num_perm) + np.arange(
        cfg.num_perm, dtype=np.uint64
    )
    u = (_draw(cells, 6) >> np.uint64(11)).astype(np.float64) / 2.0**53
    original = sigs[near].copy()
    sigs[near] = np.where(u < jaccard[:, None], original, _signature(index[near], cfg.num_perm, 7))
    bands = band_keys(sigs, cfg)
    findable = np.zeros(len(index), bool)
    agree = (sigs[near] == original).sum(axis=1) >= cfg.threshold * cfg.num_perm
    shared = (bands[near] == band_keys(original, cfg)).any(axis=1)
    findable[near] = agree & shared
    return {"keys": keys, "sigs": sigs, "bands": bands, "role": role, "findable": findable}


def band_keys(sigs: np.ndarray, cfg: NearDedupConfig) -> np.ndarray:
    """``(n, bands)`` uint64: a 64-bit mix of each band's values, seeded per band."""
    b, r = _lsh_params(cfg.threshold, cfg.num_perm)
    out = np.empty((len(sigs), b), np.uint64)
    for band in range(b):
        h = np.full(len(sigs), band + 1, np.uint64)
        for col in range(band * r, (band + 1) * r):
            h = _mix(h ^ sigs[:, col].astype(np.uint64))
        out[:, band] = h
    return out


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(size: int, memory_mb: int, work_dir: str | None) -> dict:
    cfg = NearDedupConfig()
    batch(0, BATCH, cfg)  # imports, first allocations
    base_rss = _maxrss_mb()
    directory = Path(tempfile.mkdtemp(prefix="koneox-dedup-bench-", dir=work_dir))
    deduper = CorpusDeduper(True, cfg, memory_mb=memory_mb, work_dir=directory / "state")
    digest = hashlib.sha256()
    found = {"exact_planted": 0, "exact_found": 0, "near_planted": 0, "near_found": 0}
    found.update(near_findable=0, near_findable_found=0, unique_dropped=0)
    dedup_s = dedup_cpu = 0.0
    t_all = time.perf_counter()
    for start in range(0, size, BATCH):
        b = batch(start, min(size, start + BATCH), cfg)
        t0, c0 = time.perf_counter(), time.process_time()
        codes = deduper.check(b["keys"], b["sigs"], b["bands"])
        dedup_s += time.perf_counter() - t0
        dedup_cpu += time.process_time() - c0
        digest.update(codes.tobytes())
        role = b["role"]
        found["exact_planted"] += int((role == EXACT).sum())
        found["exact_found"] += int(((role == EXACT) & (codes == DUPLICATE)).sum())
        found["near_planted"] += int((role == NEAR).sum())
        found["near_found"] += int(((role == NEAR) & (codes == NEAR_DUPLICATE)).sum())
        found["near_findable"] += int(b["findable"].sum())
        found["near_findable_found"] += int((b["findable"] & (codes == NEAR_DUPLICATE)).sum())
        found["unique_dropped"] += int(((role == UNIQUE) & (codes != 0)).sum())
    total_s = time.perf_counter() - t_all
    spilled = deduper.spilled
    result = {
        "size": size,
        "memory_mb": memory_mb,
        "peak_rss_mb": round(_maxrss_mb(), 1),
        "base_rss_mb": round(base_rss, 1),
        "dedup_s": round(dedup_s, 1),
        "dedup_cpu_s": round(dedup_cpu, 1),
        "total_s": round(total_s, 1),
        "spills": deduper.spills,
        "merges": spilled.merges if spilled else 0,
        "runs": sum(len(r) for r in spilled.runs.values()) if spilled else 0,
        "disk_mb": round(spilled.disk_bytes() / 2**20) if spilled else 0,
        "codes_sha256": digest.hexdigest()[:16],
        **found,
    }
    deduper.close()
    directory.rmdir()  # close removed the state
    return result


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] / 1024


def measure(
    sizes: list[int], memory_mb: int, work_dir: str | None = None, in_memory: bool = True
) -> list[dict]:
    """One fresh process per (size, mode); in-memory sizes that would not fit are skipped."""
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for size in sizes:
        for budget in (0, memory_mb) if in_memory else (memory_mb,):
            need_mb = 1.3e-3 * size if budget == 0 else 2 * budget
            if need_mb > 0.7 * _available_mb():
                rows.append({"size": size, "memory_mb": budget, "skipped": f"needs ~{need_mb / 1024:.0f} GB"})
                continue
            command = [sys.executable, __file__, "--child", str(size), "--memory-mb", str(budget)]
            if work_dir:
                command += ["--work-dir", work_dir]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                raise RuntimeError(done.stderr)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    mode = "in memory" if r["memory_mb"] == 0 else f"{r['memory_mb']} MB"
    if "skipped" in r:
        return f"{r['size']:>11,} {mode:>10}  skipped: {r['skipped']}"
    return (
        f"{r['size']:>11,} {mode:>10} {r['peak_rss_mb']:>9,.0f} {r['base_rss_mb']:>8,.0f} "
        f"{r['dedup_s']:>8.1f} {r['dedup_cpu_s']:>7.1f} {r['dedup_cpu_s'] / r['size'] * 1e6:>6.1f} "
        f"{r['spills']:>6} {r['runs']:>4} "
        f"{r['disk_mb']:>8,} {r['exact_found']:>9,}/{r['exact_planted']:<9,} "
        f"{r['near_findable_found']:>9,}/{r['near_findable']:<9,} {r['near_found'] / r['near_planted']:>6.3f} "
        f"{r['unique_dropped']:>4} {r['codes_sha256']}"
    )


HEADER = (
    f"{'documents':>11} {'state':>10} {'peak RSS':>9} {'fixed':>8} {'dedup s':>8} {'CPU s':>7} {'us/doc':>6} "
    f"{'spills':>6} {'runs':>4} {'disk MB':>8} {'exact found/planted':>19} {'near found/findable':>19} "
    f"{'LSH':>6} {'lost':>4} codes"
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--memory-mb", type=int, default=256, help="budget of the bounded runs")
    parser.add_argument("--work-dir", default=None, help="where the bounded runs spill (default: $TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="20k and 60k documents, 8 MB budget")
    parser.add_argument("--bounded-only", action="store_true", help="skip the in-memory runs")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.memory_mb, args.work_dir)))
        return 0
    sizes = [20_000, 60_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    budget = 8 if args.quick else args.memory_mb
    print(f"exact + near dedup, batches of {BATCH:,}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("peak RSS and fixed (before dedup) in MB; dedup s, CPU s, us/doc (CPU): in CorpusDeduper.check")
    print(HEADER)
    rows = measure(sizes, budget, args.work_dir, in_memory=not args.bounded_only)
    ok = True
    for r in rows:
        if "skipped" in r:
            continue
        ok &= r["exact_found"] == r["exact_planted"] and r["near_findable_found"] == r["near_findable"]
        ok &= r["unique_dropped"] == 0
    for size in sizes:
        shas = {r["codes_sha256"] for r in rows if r["size"] == size and "skipped" not in r}
        ok &= len(shas) == 1
    print("every planted duplicate found, no unique document dropped, same codes in both modes:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
