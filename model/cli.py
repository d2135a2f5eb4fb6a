"""``koneox info``: shapes and exact parameter counts of the named sizes, built on the meta device."""

from __future__ import annotations

import argparse

import torch

from model.config import NAMED_SIZES, ModelConfig
from model.gpt_neox import GPTNeoX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sizes", nargs="*", default=list(NAMED_SIZES),
                        help=f"named sizes to show (default: all of {', '.join(NAMED_SIZES)})")


def describe(cfg: ModelConfig) -> dict[str, int | float | str]:
    """Build the model on the meta device (no memory) and count its parameters."""
    with torch.device("meta"):
        model = GPTNeoX(cfg)
    counted = model.num_parameters()
    if counted != cfg.num_parameters():
        raise AssertionError(f"{cfg.name}: module has {counted} parameters, formula {cfg.num_parameters()}")
    return {
        "size": cfg.name, "parameters": counted, "layers": cfg.num_layers, "hidden": cfg.hidden_size,
        "heads": cfg.num_heads, "head_dim": cfg.head_dim, "intermediate": cfg.intermediate_size,
        "rotary_dims": cfg.rotary_dims, "vocab": cfg.padded_vocab_size,
    }


def run(args: argparse.Namespace) -> int:
    cols = ("size", "parameters", "layers", "hidden", "heads", "head_dim", "intermediate", "rotary_dims", "vocab")
    print("  ".join(f"{c:>13}" for c in cols))
    for name in args.sizes:
        row = describe(ModelConfig.from_name(name))
        print("  ".join(f"{row[c]:>13,}" if isinstance(row[c], int) else f"{row[c]:>13}" for c in cols))
    return 0
