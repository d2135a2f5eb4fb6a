"""``koneox pack``: tokenize cleaned text into a Megatron ``.bin``/``.idx`` pair (thin wrapper).

Usage::

    koneox pack runs/clean/ --tokenizer runs/tokenizer --out runs/data/corpus --num-proc 2
    koneox pack --merge runs/data/a runs/data/b --out runs/data/ab
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
        "(with --merge: prefixes of packed datasets)",
    )
    parser.add_argument("--tokenizer", help="Hugging Face tokenizer directory (tokenizer.json + config)")
    parser.add_argument(
        "--out", required=True, help="output prefix: writes OUT.bin, OUT.idx, OUT.report.json"
    )
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="tokenizer processes")
    parser.add_argument("--text-field", default="text", help="JSON/parquet field holding the document text")
    parser.add_argument(
        "--merge", action="store_true", help="concatenate packed datasets instead of packing text"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from data.indexed import IndexedDatasetError, merge
    from data.pack import PackError, pack

    try:
        if args.merge:
            report = merge(args.inputs, args.out)
        else:
            if not args.tokenizer:
                print("koneox pack: --tokenizer is required (unless --merge)")
                return 2
            report = pack(
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
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
