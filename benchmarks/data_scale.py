"""How many worker processes one main process can feed, per data stage (clean, pack, MeCab pre-split).

    python benchmarks/data_scale.py            # a few minutes; --quick for a smoke run
    python benchmarks/data_scale.py --json out.json

A stage scales until its single main process (reading, ordering, dedup, writing) is busy. On a
2-core machine that ceiling cannot be observed directly, so each stage is measured as CPU
seconds per MB of input, of the main process and of one worker, on web-like pages and on short
reviews; ``implied workers = worker s/MB / main s/MB`` is the number of workers one main
process keeps busy. "before" is the code as it was at commit 0ffa46f (run from a git worktree),
"after" the current code, in the same run. Targets: clean >= 32 (web-like) and >= 16 (short
reviews), pack >= 32, MeCab pre-split >= 32.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# after the repository: benchmarks/tokenizer.py must not hide the tokenizer package
sys.path.append(str(Path(__file__).resolve().parent))

STAGES = ("scale_clean", "scale_pack", "scale_tokenizer")
TARGETS = {("clean", "web-like"): 32, ("clean", "short reviews"): 16, ("pack", "web-like"): 32,
           ("pack", "short reviews"): 32, ("mecab", "web-like"): 32, ("mecab", "short reviews"): 32}


def bound(row: dict) -> str:
    """'>' where the main process's cost is below what the benchmark resolves (a lower bound)."""
    return ">" if row.get("implied_workers_is_lower_bound") else ""


def target_for(row: dict) -> int | None:
    stage = "mecab" if "mecab" in row["stage"].lower() or "token" in row["stage"].lower() else row["stage"]
    return TARGETS.get((stage, row["text"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for name in args.stages:
        rows += importlib.import_module(name).measure(quick=args.quick)
    print(f"{'stage':<26} {'text':<14} {'variant':<7} {'main s/MB':>10} {'worker s/MB':>12} {'workers':>8} {'target':>7}")
    for r in rows:
        stage = r["stage"] + (f" ({r['input']})" if r.get("input") else "")
        target = target_for(r)
        met = "" if target is None or r["variant"] != "after" else (" met" if r["implied_workers"] >= target else " MISSED")
        print(f"{stage:<26} {r['text']:<14} {r['variant']:<7} {r['main_cpu_s_per_mb']:>10.4f} "
              f"{r['worker_cpu_s_per_mb']:>12.4f} {bound(r):>1}{r['implied_workers']:>7.1f} {target or '':>7}{met}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
