"""``koneox train-tokenizer``: a thin wrapper over ``tokenizer.train.train_tokenizer``."""

from __future__ import annotations

import argparse
from dataclasses import fields

from tokenizer.config import TokenizerConfig
from tokenizer.morph import POLICIES


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
        type=int,
        default=None,
        help="train on a deterministic sample of about N bytes drawn across all inputs (default: everything)",
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
        type=lambda v: None if v.lower() == "none" else float(v),
        default=defaults.cross_budget,
        help="straddling rate (x the plain BPE's) to spend on plain-BPE words after pruning ('none' = off)",
    )
    parser.add_argument("--no-compare", action="store_true", help="skip the plain byte-level BPE comparison")


def run(args: argparse.Namespace) -> int:
    from tokenizer.train import train_tokenizer

    names = {f.name for f in fields(TokenizerConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    config = TokenizerConfig(**overrides, compare_plain=not args.no_compare)
    train_tokenizer(
        args.inputs,
        args.out,
        vocab_size=args.vocab_size,
        sample_bytes=args.sample_bytes,
        num_proc=args.num_proc,
        config=config,
    )
    return 0
