"""``koneox eval MODEL``: KoBEST and bits per byte of a Hugging Face directory, checkpoint or run.

    koneox eval runs/demo/hf --tasks kobest --shots 0,5 --data ../shared/corpus/kobest_v1 --out eval
    koneox eval runs/demo/train --tasks kobest_copa --data DIR --split test --limit 100
    koneox eval runs/demo/hf --bpb ../shared/corpus/raw/ko_law_bills.jsonl.gz --limit-bytes 1000000
    koneox eval runs/demo/hf --tasks kobest_boolq --data DIR --template boolq_en.yaml

The command is a thin wrapper over train.eval.kobest.evaluate and train.eval.bpb.bits_per_byte.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

EPILOG = """\
KoBEST data (--data DIR): DIR/<task>/<split>.tsv as published (SKT-LSL/KoBEST_datarepo), or
DIR/<task>/<split>.jsonl|.parquet with the Hugging Face field names (skt/kobest_v1); DIR/kobest_<task>/
and 'validation' for dev are accepted too. The test split is not shipped: bring DIR/<task>/test.tsv.
Prompts reproduce lm-evaluation-harness 0.4.13's kobest_* tasks; --template FILE (repeatable, one
per task) loads a variant, see train/eval/templates.py for the syntax. Outputs in --out:
results.json, results.md, predictions-<task>-<shots>.jsonl.
"""


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{what} {text!r}: comma-separated non-negative integers, e.g. 0,5")
    return values


def _positive(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{what} {text!r}: a positive integer")
    return value


def add_arguments(parser: Any) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", metavar="MODEL",
                        help="an exported Hugging Face directory, a checkpoint directory or a run directory (latest)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated kobest_boolq,kobest_copa,kobest_hellaswag,kobest_sentineg,kobest_wic "
                             "or 'kobest' for all (default: kobest, unless only --bpb is given)")
    parser.add_argument("--shots", default="0", help="comma-separated few-shot counts (default 0)")
    parser.add_argument("--data", metavar="DIR", default=None, help="directory holding KoBEST (see below)")
    parser.add_argument("--split", choices=["dev", "test", "train"], default="dev", help="split evaluated (default dev)")
    parser.add_argument("--batch-size", default="auto",
                        help="rows per forward pass, or 'auto' (a token budget, halved on out-of-memory)")
    parser.add_argument("--limit", default=None, help="evaluate only the first N examples per task")
    parser.add_argument("--seed", type=int, default=1234, help="few-shot sampling seed (harness default 1234)")
    parser.add_argument("--out", default=None, help="write results.json, results.md and predictions here")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                        help="weights dtype (default: the training precision on a GPU, fp32 on a CPU)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--template", action="append", default=None, metavar="FILE",
                        help="prompt template YAML for one task (repeatable); recorded with its hash")
    parser.add_argument("--max-length", default=None,
                        help="model window in tokens (default: from the model config, as the harness)")
    parser.add_argument("--bpb", nargs="+", default=None, metavar="FILE_OR_DIR",
                        help="also report bits per byte on these documents (.jsonl[.gz], .txt, .parquet, a "
                             "koneox clean output)")
    parser.add_argument("--limit-bytes", default=None,
                        help="bits per byte: stop after documents totalling this many UTF-8 bytes")
    parser.add_argument("--stride", default=None,
                        help="bits per byte: sliding-window stride in tokens (default: half the window)")
    parser.add_argument("--bpb-prefix", choices=["eos", "bos"], default="eos",
                        help="bits per byte: token each document is conditioned on (default eos, how packed "
                             "documents start; bos as the harness's rolling log-likelihood)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: Any) -> int:
    # torch and the model code are imported only once the arguments and the data have been checked.
    from train.eval.kobest import prepare
    from train.eval.templates import EvalError

    def fail(msg: str) -> int:
        print(f"koneox eval: {msg}", file=sys.stderr)
        return 1

    try:
        shots = _int_list(args.shots, "--shots")
        batch_size = "auto" if args.batch_size == "auto" else _positive(args.batch_size, "--batch-size")
        limit, limit_bytes = _positive(args.limit, "--limit"), _positive(args.limit_bytes, "--limit-bytes")
        max_length, stride = _positive(args.max_length, "--max-length"), _positive(args.stride, "--stride")
    except ValueError as e:
        return fail(str(e))
    tasks = args.tasks if args.tasks is not None else (None if args.bpb else "kobest")
    if limit_bytes is not None and not args.bpb:
        return fail("--limit-bytes needs --bpb")
    if tasks and args.data is None:
        return fail("--data DIR is required for KoBEST tasks (the directory holding KoBEST)")
    start = time.perf_counter()
    try:
        if tasks:  # bad data fails before the model is loaded
            prepare(tasks, shots, args.data, args.split, args.template)
    except (EvalError, OSError) as e:
        return fail(str(e))

    from train.eval.bpb import bits_per_byte
    from train.eval.kobest import evaluate, load_model, markdown, write_outputs
    from train.export import ExportError

    try:
        loaded = load_model(args.model, args.device, args.dtype)
        loaded[2].pop("was_training", None)
        pair = loaded[:2]
        report: dict[str, Any] = {}
        if tasks:
            report = evaluate(pair, tasks, shots=shots, data_dir=args.data, split=args.split,
                              batch_size=batch_size, limit=limit, seed=args.seed,
                              template=args.template, progress=not args.quiet, max_length=max_length,
                              log=lambda msg: print(msg, file=sys.stderr))
            report["settings"]["dtype"] = args.dtype
        report["model"] = loaded[2]
        if tasks:
            report["model"]["max_length"] = report["settings"]["max_length"]
        if args.bpb:
            bpb = bits_per_byte(pair[0], pair[1], args.bpb, limit_bytes=limit_bytes,
                                batch_size=batch_size, max_length=max_length, stride=stride,
                                progress=not args.quiet, prefix=args.bpb_prefix)
            report["bpb"] = bpb
            print(f"bits per byte {bpb['bits_per_byte']:.4f} over {bpb['documents']} documents "
                  f"({bpb['bytes']} bytes, {bpb['tokens']} tokens)", file=sys.stderr)
    except (EvalError, ExportError, OSError) as e:  # OSError: unreadable files, incomplete model directories
        return fail(str(e))
    report["seconds"] = round(time.perf_counter() - start, 2)
    if args.out:
        write_outputs(args.out, report)
        print(f"wrote {args.out}/results.json, results.md" + (", predictions-*.jsonl" if tasks else ""),
              file=sys.stderr)
    print(markdown(report), end="")
    return 0
