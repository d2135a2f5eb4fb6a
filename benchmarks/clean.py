"""Throughput of ``koneox clean`` over the whole shared corpus, with and without MinHash.

    python benchmarks/clean.py [--corpus ../shared/corpus/raw] [--num-proc 2] [--out runs/bench-clean]
                               [--dedup-memory-mb 0,32]

Prints documents/s and MB/s (UTF-8 input text) overall and per process for the full
pipeline and for the same pipeline without near_dedup, and keeps the full run's
report.md in ``OUT/full``. ``--dedup-memory-mb`` runs both once per budget
(``data.clean.dedup_memory_mb``; 0 = state in memory, a small one spills it to disk) and checks
that every budget writes the same shards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.clean import STEP_NAMES, CleanConfig, clean_files  # noqa: E402


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=root.parent / "shared" / "corpus" / "raw")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=root / "runs" / "bench-clean")
    parser.add_argument(
        "--dedup-memory-mb", default=str(CleanConfig().dedup_memory_mb), help="budgets, comma-separated"
    )
    args = parser.parse_args()
    budgets = [int(b) for b in args.dedup_memory_mb.split(",")]
    inputs = sorted(args.corpus.glob("*.jsonl.gz"))
    if not inputs:
        print(f"no .jsonl.gz files under {args.corpus}", file=sys.stderr)
        return 1
    runs = {
        "full (MinHash on)": [*STEP_NAMES],
        "without MinHash": [s for s in STEP_NAMES if s != "near_dedup"],
    }
    print(
        f"{len(inputs)} files from {args.corpus}, {args.num_proc} process(es), load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'run':<20} {'dedup MB':>8} {'docs':>9} {'s':>7} {'docs/s':>9} {'MB/s':>6} {'docs/s/core':>12} "
        f"{'MB/s/core':>10} {'main dedup+write s':>18}"
    )
    digests: dict[str, set[str]] = {}
    for (name, steps), sub in zip(runs.items(), ("full", "no-minhash"), strict=True):
        for budget in budgets:
            out = args.out / (sub if len(budgets) == 1 else f"{sub}-{budget}mb")
            cfg = CleanConfig(dedup_memory_mb=budget)
            r = clean_files(inputs, out, cfg, num_proc=args.num_proc, steps=steps)
            print(
                f"{name:<20} {budget:>8} {r['documents_in']:>9,} {r['seconds']:>7.1f} {r['docs_per_s']:>9,.0f} "
                f"{r['mb_per_s']:>6.2f} {r['docs_per_s_per_core']:>12,.0f} {r['mb_per_s_per_core']:>10.3f} "
                f"{r['step_cpu_seconds'].get('dedup+write', 0):>18.1f}",
                flush=True,
            )
            assert r["accounting_holds"]
            shards = hashlib.sha256(b"".join((out / s).read_bytes() for s in r["shards"])).hexdigest()
            digests.setdefault(name, set()).add(shards)
    assert all(len(d) == 1 for d in digests.values()), "budgets wrote different shards"
    print(f"report: {args.out / 'full' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
