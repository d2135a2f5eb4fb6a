"""The ``koneox`` command: a thin dispatcher over the stages.

Each stage lives in its own package and exposes two functions in a ``cli`` module:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is chosen, so ``koneox --help`` stays fast and a broken optional stage cannot
break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("model.cli", "print parameter counts and shapes of the named model sizes"),
    "clean": ("data.clean.cli", "clean raw Korean text: HTML, whitespace, filters, PII, dedup"),
    "train-tokenizer": ("tokenizer.cli", "train the morpheme-aware byte-level BPE tokenizer"),
    "pack": ("data.pack_cli", "tokenize and pack text into Megatron .bin/.idx shards"),
    "index": ("data.index_cli", "build the training data's split and epoch index cache ahead of training"),
    "select": ("train.eval.select", "evaluate a run's checkpoints (held-out loss, bits per byte, degeneration, KoBEST) and pick one"),
    "eval": ("train.eval.cli", "KoBEST (as lm-evaluation-harness) and bits per byte of a model or checkpoint"),
    "export": ("train.export", "turn a training checkpoint into a Hugging Face GPT-NeoX directory"),
    "extend-vocab": ("model.extend_vocab_cli", "add Korean tokens to an existing model's byte-level BPE and embeddings"),
    "chat-vector": ("model.chat_vector_cli", "add a chat model's instruction following to a Korean model: target + ratio * (chat - base)"),
    "generate": ("train.generate", "generate text from an exported model or a checkpoint, streaming tokens"),
    "plan": ("train.plan", "rank parallel layouts for a cluster: memory per GPU, step time, checkpoint save"),
    "slurm": ("launch.slurm", "check a multi-node layout and write the sbatch script that trains it"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koneox",
        description="Pretrain Korean causal language models: clean -> tokenizer -> pack -> train -> export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"koneox {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
