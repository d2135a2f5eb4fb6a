"""``koneox chat-vector``: the command over ``model.chat_vector`` (one parser, three forms).

    koneox chat-vector extract --base B --chat C --out V
    koneox chat-vector apply --target T --vector V [--vector V2 ...] [--ratio 1.0 ...] --out O
    koneox chat-vector --base B --chat C --target T --out O [--ratio R]          # one step
"""

from __future__ import annotations

import argparse
import sys

# action -> the options it needs, and those that belong to the other forms only.
_NEEDS = {
    "extract": ("base", "chat", "out"),
    "apply": ("target", "vector", "out"),
    None: ("base", "chat", "target", "out"),
}
_FOREIGN = {
    "extract": ("target", "vector", "ratio", "skip_embeddings", "embedding_rows"),
    "apply": ("base", "chat"),
    None: ("vector",),
}
_FORM = {"extract": "extract", "apply": "apply", None: "the one-step form"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Chat Vector (arXiv 2310.04799): new = target + ratio * (chat - base), streamed tensor by tensor. "
        "`extract` writes chat - base as a vector directory, `apply` adds vectors to a target, and without "
        "an action both happen in one step."
    )
    parser.usage = (
        "\n  koneox chat-vector extract --base B --chat C --out V\n"
        "  koneox chat-vector apply --target T --vector V [--vector V2 ...] [--ratio R ...] --out O\n"
        "  koneox chat-vector --base B --chat C --target T --out O [--ratio R]\n"
        "  [--skip-embeddings | --embedding-rows matched] [--dtype fp32|bf16|fp16] [--max-shard-size 2GB] [--overwrite]"
    )
    parser.add_argument("action", nargs="?", choices=["extract", "apply"],
                        help="extract a vector, or apply vectors; omit for the one-step form")
    parser.add_argument("--base", metavar="B", help="the original pretrained model (Hugging Face directory)")
    parser.add_argument("--chat", metavar="C", help="its chat-tuned version")
    parser.add_argument("--target", metavar="T", help="the model continually pretrained from the base (Korean)")
    parser.add_argument("--vector", metavar="V", action="extend", nargs="+",
                        help="vector directories made by `extract` (apply; repeatable)")
    parser.add_argument("--ratio", type=float, action="extend", nargs="+",
                        help="weight of each vector, one per --vector, in order (default 1.0 each)")
    parser.add_argument("--out", metavar="DIR", help="output directory (written as DIR.tmp, renamed when complete)")
    parser.add_argument("--skip-embeddings", action="store_true",
                        help="leave the target's input embedding and LM head untouched (a changed vocabulary)")
    parser.add_argument("--embedding-rows", choices=["all", "matched"], default=None,
                        help="all: add the vector to every embedding row (needs the same rows); matched: only to "
                             "rows of tokens in both vocabularies, matched by token string (default all)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                        help="output dtype (default: the target's; for extract: fp32, which keeps apply exact)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard (default 2GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _validate(args: argparse.Namespace) -> str | None:
    """The first problem with the options for this action, or None."""
    form = _FORM[args.action]
    for dest in _NEEDS[args.action]:
        if not getattr(args, dest):
            more = "" if args.action else " (or use `extract` and `apply`)"
            return f"{form} needs {_flag(dest)}{more}"
    for dest in _FOREIGN[args.action]:
        if getattr(args, dest):
            return f"{_flag(dest)} is not an option of {form}"
    if args.skip_embeddings and args.embedding_rows == "matched":
        return "--skip-embeddings and --embedding-rows matched exclude each other"
    ratios = args.ratio or []
    if args.action == "apply" and ratios and len(ratios) != len(args.vector):
        return f"{len(args.vector)} --vector but {len(ratios)} --ratio: give one ratio per vector, in order"
    if args.action is None and len(ratios) > 1:
        return f"the one-step form takes one --ratio, got {len(ratios)}"
    return None


def run(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError

    from data.stage import IncompleteOutputError
    from model.chat_vector import apply, extract, merge

    problem = _validate(args)
    if problem:
        print(f"koneox chat-vector: {problem}", file=sys.stderr)
        return 1
    embeddings = "skip" if args.skip_embeddings else (args.embedding_rows or "all")
    common = {"max_shard_size": args.max_shard_size, "overwrite": args.overwrite, "dtype": args.dtype}
    try:
        if args.action == "extract":
            extract(args.base, args.chat, args.out, **common)
        elif args.action == "apply":
            apply(args.target, args.vector, args.out, ratios=args.ratio, embeddings=embeddings, **common)
        else:
            ratio = args.ratio[0] if args.ratio else 1.0
            merge(args.base, args.chat, args.target, args.out, ratio=ratio, embeddings=embeddings, **common)
    # ChatVectorError is a ValueError, as are unreadable JSON files; SafetensorError: a corrupt shard.
    except (ValueError, OSError, IncompleteOutputError, SafetensorError) as e:
        print(f"koneox chat-vector: {e}", file=sys.stderr)
        return 1
    return 0
