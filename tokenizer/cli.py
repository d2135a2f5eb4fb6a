"""``koneox train-tokenizer``: a thin wrapper over ``tokenizer.train.train_tokenizer``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from tokenizer.config import TokenizerConfig
from tokenizer.memory import describe_model
from tokenizer.morph import POLICIES

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def byte_size(value: str) -> int:
    """``1000000``, ``500M``, ``2G``, ``1.5T`` (powers of 1000), or ``all`` (= 0)."""
    text = value.strip().upper().removesuffix("B")
    if text == "ALL":
        return 0
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        number = float(text[: len(text) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size (e.g. 500M, 2G, 1000000, all)") from None
    return int(number * _UNITS[unit])


def _budget(value: str) -> float | str | None:
    text = value.strip().lower()
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: use auto, none or a number such as 0.18") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TokenizerConfig()
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=".jsonl, .jsonl.gz, .parquet, .txt (one document per file), a saved datasets dir, or a directory of those",
    )
    parser.add_argument(
        "--out", required=True, help="directory for tokenizer.json, tokenizer_config.json, report"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=defaults.vocab_size, help="final size incl. 3 PII tokens"
    )
    parser.add_argument(
        "--sample-bytes",
        type=byte_size,
        default=None,
        help=f"train on a deterministic sample of N bytes of text drawn across all inputs (e.g. 500M, 2G; "
        f"'all' = everything; default {defaults.sample_bytes / 1e9:g}G). Memory of BPE learning: "
        f"{describe_model().replace('%', '%%')}. A sample that would not fit is refused before reading",
    )
    parser.add_argument(
        "--memory-budget",
        type=byte_size,
        default=None,
        help="bytes BPE learning may use, checked against the sample before reading "
        "(default: MemAvailable of this machine); raise it to force a larger sample",
    )
    parser.add_argument(
        "--sample-spread",
        type=float,
        default=defaults.sample_spread,
        help="read about this many times the sample, the same share from the start of every input",
    )
    parser.add_argument("--num-proc", type=int, default=None, help="MeCab processes (default: all cores)")
    parser.add_argument("--text-field", default=defaults.text_field, help="field that holds the text")
    parser.add_argument(
        "--boundary-policy",
        choices=sorted(POLICIES),
        default=defaults.boundary_policy,
        help="which MeCab boundaries no merge may cross while learning",
    )
    parser.add_argument(
        "--prune-threshold",
        type=float,
        default=defaults.prune_threshold,
        help="drop tokens whose Hangul uses straddle morphemes more often than this (1 = off)",
    )
    parser.add_argument(
        "--cross-budget",
        type=_budget,
        default=defaults.cross_budget,
        help="how many plain-BPE words to add after pruning, measured on held-out calibration documents: "
        "'auto' (default) balances the margins to both targets, a number (e.g. 0.18) caps the straddling "
        "ratio, 'none' adds none",
    )
    parser.add_argument(
        "--eval-text",
        action="extend",
        nargs="+",
        default=[],
        metavar="FILE",
        help="text kept out of training (any input kind; repeatable), measured in the report as its own "
        "domain against the targets, next to the held-out documents of the input",
    )
    parser.add_argument("--no-compare", action="store_true", help="skip the plain byte-level BPE comparison")
    parser.add_argument(
        "--plain-out",
        default=None,
        metavar="DIR",
        help="also save the plain byte-level BPE of the comparison (same sample, size and special ids) "
        "as a Hugging Face tokenizer in DIR, e.g. to train the same model with both and compare bits per byte",
    )


def run(args: argparse.Namespace) -> int:
    """Train; 1 with a one-line message when the inputs or the memory budget refuse the run."""
    from data.stage import IncompleteOutputError
    from tokenizer.memory import SampleTooLargeError
    from tokenizer.reader import InputError
    from tokenizer.train import train_tokenizer

    names = {f.name for f in fields(TokenizerConfig)}
    # None means "not given", except for --cross-budget where 'none' switches the step off
    overrides = {k: v for k, v in vars(args).items() if k in names and (v is not None or k == "cross_budget")}
    if args.plain_out and args.no_compare:
        print("koneox train-tokenizer: error: --plain-out needs the comparison; drop --no-compare", file=sys.stderr)
        return 1
    config = TokenizerConfig(**overrides, compare_plain=not args.no_compare)
    try:
        train_tokenizer(
            args.inputs,
            args.out,
            vocab_size=args.vocab_size,
            sample_bytes=args.sample_bytes,
            num_proc=args.num_proc,
            config=config,
            eval_text=args.eval_text,
            plain_out=args.plain_out,
        )
    except (InputError, IncompleteOutputError, SampleTooLargeError, FileNotFoundError, ValueError) as e:
        print(f"koneox train-tokenizer: error: {e}", file=sys.stderr)
        return 1
    return 0
