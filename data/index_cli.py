"""``koneox index``: build a run's training-data index cache ahead of training (thin wrapper).

The trainer builds the same files on rank 0 when they are missing; building them here first
moves that work (minutes for hundreds of millions of documents) off the job's clock.

Usage::

    koneox index --config 12.8b.yaml data.train_paths=[runs/data/news,runs/data/blogs] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the training config (YAML file or a name in configs/)")
    parser.add_argument("--epochs", type=int, default=1, help="training-split epochs to index (default 1)")
    parser.add_argument("--dir", default=None,
                        help="cache directory (default: where training looks: data.index_cache, else next to the "
                             "data, else RUN/index_cache)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for training, e.g. data.seq_len=4096")


def run(args: argparse.Namespace) -> int:
    from data.dataset import build_index_cache, index_cache_dir
    from data.indexed import IndexedDatasetError
    from train.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        where = args.dir or index_cache_dir(cfg.data, cfg.run_dir)
        report = build_index_cache(cfg.data, where, epochs=args.epochs, vocab_size=cfg.model.padded_vocab_size)
    except (ConfigError, IndexedDatasetError, ValueError, OSError) as e:
        print(f"koneox index: error: {e}")
        return 1
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
