"""``koneox extend-vocab``: the command over ``model.extend_vocab.extend_vocab``.

    koneox extend-vocab --model M --add-tokens TOKENIZER --out DIR [--num-new N]
        [--corpus DIR --min-frequency F] [--init mean|first|random] [--pad-to-multiple 128]
        [--script hangul|any] [--english-check FILE ...] [--eval-text FILE ... [--bpb]]
"""

from __future__ import annotations

import argparse
import sys

from tokenizer.cli import byte_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="Hugging Face model directory with a byte-level BPE tokenizer (GPT-NeoX, Pythia, "
                             "Polyglot-Ko; other architectures transformers builds)")
    parser.add_argument("--add-tokens", required=True, metavar="TOKENIZER",
                        help="tokenizer directory (or tokenizer.json) whose tokens to add: a koneox tokenizer or "
                             "any byte-level BPE")
    parser.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    parser.add_argument("--num-new", type=int, default=None, metavar="N",
                        help="add at most N vocabulary entries, most useful first (default: every candidate)")
    parser.add_argument("--corpus", nargs="+", default=[], metavar="PATH",
                        help="rank candidates by their frequency when the source tokenizer encodes these "
                             "documents (default: by its merge rank)")
    parser.add_argument("--min-frequency", type=int, default=1, metavar="F",
                        help="with --corpus: keep candidates used at least F times (default 1)")
    parser.add_argument("--corpus-bytes", type=byte_size, default="100M",
                        help="read this much of --corpus (default 100M; 'all' = everything)")
    parser.add_argument("--script", choices=["hangul", "any"], default="hangul",
                        help="hangul (default): only tokens that occur in Hangul text only, so text without "
                             "Hangul keeps its ids; any: every candidate")
    parser.add_argument("--init", choices=["mean", "first", "random"], default="mean",
                        help="new rows: mean of the old pieces' rows; first: LM-head row of the first piece; "
                             "random: the baseline (default mean)")
    parser.add_argument("--pad-to-multiple", type=int, default=128,
                        help="pad the embedding rows to a multiple of this (default 128)")
    parser.add_argument("--english-check", nargs="+", default=[], metavar="FILE",
                        help="documents without Hangul whose ids must not change (default: built-in probe texts "
                             "and the --corpus documents with their Hangul removed)")
    parser.add_argument("--eval-text", nargs="+", default=[], metavar="FILE",
                        help="report fertility (tokens/word, bytes/token) before and after on these documents")
    parser.add_argument("--eval-bytes", type=byte_size, default="2M",
                        help="read this much of each --eval-text / --english-check file (default 2M)")
    parser.add_argument("--bpb", action="store_true",
                        help="also report bits per byte of the model before and after on --eval-text")
    parser.add_argument("--device", default="cpu", help="device for --bpb (default cpu)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of --init random (default 1234)")


def run(args: argparse.Namespace) -> int:
    from data.stage import IncompleteOutputError
    from model.extend_vocab import extend_vocab, format_report

    try:
        report = extend_vocab(
            args.model, args.add_tokens, args.out, num_new=args.num_new, corpus=args.corpus,
            min_frequency=args.min_frequency, corpus_bytes=args.corpus_bytes or None, script=args.script,
            init=args.init, pad_to_multiple=args.pad_to_multiple, english_check=args.english_check,
            eval_text=args.eval_text, eval_bytes=args.eval_bytes or None, bpb=args.bpb, device=args.device,
            seed=args.seed,
        )
    except (ValueError, OSError, IncompleteOutputError) as e:  # bad inputs, named in the message
        print(f"koneox extend-vocab: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0
