"""``koneox pack``: tokenize cleaned text into Megatron ``.bin``/``.idx`` files (thin wrapper).

Usage::

    koneox pack runs/clean/ --tokenizer runs/tokenizer --out runs/data/corpus --num-proc 2
    koneox pack runs/clean/ --tokenizer runs/tokenizer --out runs/data/shards --per-shard   # resumable
    koneox pack --merge runs/data/shards --out runs/data/corpus      # a --per-shard dir or prefixes
"""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="cleaned .jsonl(.gz)/.parquet/.txt files or directories "
        "(with --merge: prefixes of packed datasets, or --per-shard output directories)",
    )
    parser.add_argument("--tokenizer", help="Hugging Face tokenizer directory (tokenizer.json + config)")
    parser.add_argument(
        "--out",
        required=True,
        help="output prefix: writes OUT.bin, OUT.idx, OUT.stats.json, OUT.report.json "
        "(with --per-shard: a directory of NAME.bin/.idx/.stats.json, one per input file)",
    )
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="tokenizer processes")
    parser.add_argument("--text-field", default="text", help="JSON/parquet field holding the document text")
    parser.add_argument(
        "--per-shard",
        action="store_true",
        help="one dataset per input file; a rerun skips the shards already finished",
    )
    parser.add_argument(
        "--merge", action="store_true", help="concatenate packed datasets instead of packing text"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from data.indexed import IndexedDatasetError
    from data.pack import PackError, PackInterrupted, merge_packed, pack, pack_per_shard

    try:
        if args.merge:
            report = merge_packed(args.inputs, args.out)
        else:
            if not args.tokenizer:
                print("koneox pack: --tokenizer is required (unless --merge)")
                return 2
            run_pack = pack_per_shard if args.per_shard else pack
            report = run_pack(
                args.inputs,
                args.tokenizer,
                args.out,
                num_proc=args.num_proc,
                text_field=args.text_field,
                progress=not args.no_progress,
            )
    except (PackError, IndexedDatasetError) as e:
        print(f"koneox pack: error: {e}")
        return 1
    except (PackInterrupted, KeyboardInterrupt) as e:
        kept = "; finished shards are kept, rerun to pack the rest" if args.per_shard else ""
        print(f"koneox pack: {e or 'interrupted'}; temporary files removed{kept}", flush=True)
        return 143 if isinstance(e, PackInterrupted) else 130
    if args.per_shard:
        report = {k: v for k, v in report.items() if k != "per_shard"}  # the full list is in report.json
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
