"""Pretraining entry point.

    deepspeed [--num_gpus N | --hostfile H ...] launch/train.py --config 12.8b.yaml [key=value ...]
    python launch/train.py --config tiny.yaml                     # one process, no launcher
    python launch/train.py --config 12.8b.yaml --dry-run          # layout, DeepSpeed config, memory

Configuration errors are reported before any rank does heavy work; ``--dry-run`` allocates
nothing and needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.config import Config, ConfigError, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file, or a name in configs/ (e.g. 12.8b.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print parameter count, parallel layout, DeepSpeed config and a per-GPU memory "
                             "estimate, then exit without building the model")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4")
    return parser.parse_args(argv)


def dry_run(cfg: Config, trainable: int, total: int) -> None:
    from train.ds_config import deepspeed_config
    from train.memory import deepspeed_optimizer, estimate
    from train.plan import FS_WRITE_GBPS, checkpoint_bytes, save_seconds, signal_lead_seconds

    tp = cfg.parallel.tensor_parallel
    env_world = int(os.environ.get("WORLD_SIZE", "0"))
    dp = cfg.parallel.data_parallel or max(1, env_world // tp)
    world = dp * tp
    cfg.check(world_size=world)
    micro, accum, glob = cfg.batch_layout(dp)
    mem = estimate(cfg, dp)
    # The launcher sets LOCAL_WORLD_SIZE; without one, assume nodes of 8 GPUs.
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE") or min(8, world))
    nodes = max(1, world // per_node)
    ckpt = checkpoint_bytes(cfg, nodes, per_node)
    m = cfg.model
    print(f"model        {m.name}: {m.num_parameters():,} parameters ({m.num_layers} layers, hidden {m.hidden_size}, "
          f"{m.num_heads} heads, rotary dims {m.rotary_dims}, vocab {m.padded_vocab_size})")
    print(f"layout       {world} GPUs = tensor_parallel {tp} x data_parallel {dp}; ZeRO-{cfg.parallel.zero_stage}; "
          f"{cfg.train.precision}; activation checkpointing {'on' if m.activation_checkpointing else 'off'}")
    print(f"batch        {micro} micro x {accum} accumulation x {dp} data-parallel = {glob} sequences "
          f"x {cfg.data.seq_len} tokens = {glob * cfg.data.seq_len:,} tokens per step")
    frozen = (f" ({mem['trainable_per_gpu']:,.0f} trainable)"
              if mem["trainable_per_gpu"] < mem["params_per_gpu"] else "")
    print(f"parameters per GPU  {mem['params_per_gpu']:,.0f}{frozen}; DeepSpeed optimizer {deepspeed_optimizer(cfg)}")
    from train.trainer import describe_frozen_rows

    rows = describe_frozen_rows(cfg.train)
    if trainable < total or rows:
        print(f"trainable    {trainable:,} of {total:,} parameters ({', '.join(cfg.train.trainable)}){rows}")
    print("memory per GPU (estimate, GiB): " + ", ".join(
        f"{k.removesuffix('_gib')} {v:.1f}" for k, v in mem.items() if k.endswith("_gib")))
    print(f"checkpoint   {ckpt['total'] / 1e9:.1f} GB in all, {ckpt['per_node'] / 1e9:.1f} GB from the busiest of "
          f"{nodes} node(s) x {per_node} GPUs: about {save_seconds(cfg, nodes, per_node):.0f} s to save at "
          f"{FS_WRITE_GBPS} GB/s per node -> sbatch --signal=USR1@{signal_lead_seconds(cfg, nodes, per_node)}")
    print("deepspeed config:")
    print(json.dumps(deepspeed_config(cfg, dp), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        explicit = {o.partition("=")[0].strip() for o in args.overrides} | _yaml_keys(args.config)
        if args.dry_run:
            from train.trainer import check_before_start

            _, trainable, total, _ = check_before_start(cfg, explicit)  # as the trainer, shape from init_from
            dry_run(cfg, trainable, total)
            return 0
        from train.trainer import Trainer

        trainer = Trainer(cfg, explicit_keys=explicit)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    trainer.fit()
    return 0


def _yaml_keys(path: str) -> set[str]:
    """Dotted keys the YAML file sets explicitly (so init_from can tell them from defaults)."""
    import yaml

    from train.config import resolve_config_path

    def walk(d: dict, prefix: str) -> set[str]:
        keys = set()
        for k, v in d.items():
            keys.add(prefix + str(k))
            if isinstance(v, dict):
                keys |= walk(v, f"{prefix}{k}.")
        return keys

    return walk(yaml.safe_load(resolve_config_path(path).read_text()) or {}, "")


if __name__ == "__main__":
    sys.exit(main())
