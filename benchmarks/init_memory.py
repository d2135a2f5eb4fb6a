"""Peak host memory of building one tensor-parallel rank's model: sharded init against the
path before it. Target for the sharded path: peak RSS below 1.3 x the rank's shard bytes + 1 GB.

    python benchmarks/init_memory.py                  # 12.8B, TP=8, rank 0, bf16: ~3 min on 2 cores
    python benchmarks/init_memory.py --layers 0 --variants sharded   # at the whole depth: ~6 min
    python benchmarks/init_memory.py --size 1.3b --layers 0          # both, whole depth: ~2 min

Each variant runs in a fresh subprocess that simulates one rank of the TP group in one process
(torch's fake process group: DeepSpeed computes the same shapes and slices as on a real rank;
no collective runs while a model is built), and reports its peak RSS (ru_maxrss, = VmHWM):

    sharded  train/sharded_init.build_shard: GPTNeoX on the meta device, AutoTP on meta, then
             per parameter the full fp32 value drawn, this rank's block kept, the rest freed
    full     the path before: the whole model built in bf16 (GPTNeoX under a bf16 default
             dtype, as build_model did), then DeepSpeed's AutoTP keeps this rank's slices, as
             deepspeed.initialize did with it

The whole 12.8B needs ~26 GB in bf16 for the full path, more than this 24 GB machine, and every
rank draws all 12.9 G initial values (one seeded sequence, ~40 M/s on one core: ~5.5 min). So
by default both variants are measured at 4 layers of the 12.8B shape (same width, vocabulary and
TP split) and carried to the full depth: peak(40) = peak(4) - params(4) + params(40), where
params is the exact bytes the process ends up holding (this rank's shard, or for the full path
the whole model, computed from the meta model at each depth). What the process holds beyond
its parameters (interpreter, libraries, one full fp32 tensor in flight: the output head, drawn
last) does not grow with depth. Checked at 1.3B, whose full path fits here: from 2 layers this
predicted 1.15 GB (sharded) and 3.26 GB (full) at 24 layers; measured at 24: 1.16 and 3.27 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GB = 1e9


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def child(variant: str, size: str, layers: int, tp: int, rank: int, dtype_name: str) -> None:
    """Build rank ``rank`` of ``tp`` in this process and print one JSON line."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=rank, world_size=tp, store=FakeStore())
    import deepspeed

    from train.distributed import release_shared_memory_names

    deepspeed.init_distributed(dist_backend="gloo")
    release_shared_memory_names()
    import deepspeed.module_inject.auto_tp  # noqa: F401  (loaded before the baseline, as for both)

    from model import GPTNeoX, ModelConfig
    from train.sharded_init import apply_autotp, build_shard, tensor_parallel_group

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    cfg = ModelConfig.from_name(size, num_layers=layers)
    base = _rss_now()
    start = time.perf_counter()
    if variant == "sharded":
        model = build_shard(cfg, dtype, "cpu", tp)
    else:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = GPTNeoX(cfg)
        finally:
            torch.set_default_dtype(previous)
        group, _ = tensor_parallel_group(tp)
        apply_autotp(model, tp, group)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    end = _rss_now()
    itemsize = torch.empty((), dtype=dtype).element_size()

    def bytes_at(depth: int) -> tuple[int, int]:
        """(this rank's shard, the whole model) in bytes at ``depth`` layers, from shapes alone."""
        depth_cfg = ModelConfig.from_name(size, num_layers=depth)
        with torch.device("meta"):
            meta = GPTNeoX(depth_cfg)
        apply_autotp(meta, tp, tensor_parallel_group(tp)[0])
        return sum(p.numel() for p in meta.parameters()) * itemsize, depth_cfg.num_parameters() * itemsize

    shard_here, full_here = bytes_at(layers)
    shard_all, full_all = bytes_at(ModelConfig.from_name(size).num_layers)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    assert held == shard_here, (held, shard_here)
    print(json.dumps({"variant": variant, "layers": layers, "peak_rss": peak, "base_rss": base, "end_rss": end,
                      "seconds": seconds, "shard_bytes": shard_here, "full_bytes": full_here,
                      "shard_bytes_full_depth": shard_all, "full_bytes_full_depth": full_all}))


def measure(variant: str, layers: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--size", args.size, "--tp", str(args.tp),
           "--rank", str(args.rank), "--dtype", args.dtype, "--layers", str(layers)]
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{variant} at {layers} layers failed:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="12.8b")
    parser.add_argument("--tp", type=int, default=8)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--layers", type=int, default=4, help="depth to measure at (0: the full depth)")
    parser.add_argument("--variants", default="sharded,full")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from model import ModelConfig

    full_depth = ModelConfig.from_name(args.size).num_layers
    layers = args.layers or full_depth
    if args.child:
        child(args.child, args.size, layers, args.tp, args.rank, args.dtype)
        return

    print(f"{args.size} ({full_depth} layers), tensor-parallel rank {args.rank} of {args.tp}, {args.dtype}; "
          "each variant in a fresh process; peak RSS = ru_maxrss")
    rows = {}
    for variant in args.variants.split(","):
        r = rows[variant] = measure(variant, layers, args)
        held = f"shard {r['shard_bytes'] / GB:.2f}" if variant == "sharded" else f"whole model {r['full_bytes'] / GB:.2f}"
        print(f"  {variant:<8} measured at {layers} layers: peak RSS {r['peak_rss'] / GB:6.2f} GB "
              f"(after imports {r['base_rss'] / GB:.2f}, at the end {r['end_rss'] / GB:.2f}; "
              f"parameters at the peak: {held}), {r['seconds']:.0f} s", flush=True)

    r = next(iter(rows.values()))
    shard = r["shard_bytes_full_depth"]
    target = 1.3 * shard + GB
    how = "measured" if layers == full_depth else f"carried from {layers} layers: peak - params({layers}) + params({full_depth})"
    print(f"\nat {full_depth} layers ({how}):")
    print(f"  this rank's shard: {shard / GB:.2f} GB ({shard:,} bytes); "
          f"target: peak RSS < 1.3 x shard + 1 GB = {target / GB:.2f} GB")
    for variant, r in rows.items():
        key = "shard_bytes" if variant == "sharded" else "full_bytes"
        peak = r["peak_rss"] - r[key] + r[f"{key}_full_depth"]
        verdict = ("meets the target" if peak < target else "MISSES the target") if variant == "sharded" else ""
        print(f"  {variant:<8} peak RSS {peak / GB:6.2f} GB ({peak / shard:.2f} x shard)  {verdict}")
        if variant == "full" and peak > os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"):
            print("           (more than this machine's memory: measurable here only at reduced depth)")


if __name__ == "__main__":
    main()
