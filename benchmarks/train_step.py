"""Training-step throughput through our DeepSpeed setup, against a plain PyTorch loop.

Both run the same model, batch and precision in one process: (a) the DeepSpeed engine exactly
as launch/train.py builds it (generated config, ZeRO, our AdamW and schedule), (b) a bare loop
of forward, backward, torch AdamW step. Prints tokens/s for both, the ratio, and on a GPU the
TFLOP/s and MFU (target for 1.3B on one A100/H100: MFU >= 0.45).

    python benchmarks/train_step.py                                   # CPU: tiny model
    python benchmarks/train_step.py --config 1.3b.yaml --micro 4      # one GPU, bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import GPTNeoX  # noqa: E402
from train.config import load_config  # noqa: E402
from train.distributed import init_distributed  # noqa: E402
from train.ds_config import deepspeed_config  # noqa: E402
from train.metrics import peak_tflops  # noqa: E402
from train.trainer import no_decay  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="default: 1.3b.yaml on a GPU, tiny.yaml on CPU")
    parser.add_argument("--micro", type=int, default=None, help="micro batch (default: the config's)")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    cfg = load_config(args.config or ("1.3b.yaml" if gpu else "tiny.yaml"),
                      [*args.overrides, "parallel.data_parallel=0", "train.grad_accum=1", "train.global_batch_size=0",
                       *([f"train.micro_batch_size={args.micro}"] if args.micro else []),
                       *([] if gpu else ["train.precision=fp32"])])
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if gpu else "cpu")
    init_distributed()
    import deepspeed

    device = torch.device("cuda" if gpu else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision, torch.float32)
    B, T = cfg.train.micro_batch_size, cfg.data.seq_len
    ids = torch.randint(0, cfg.model.vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(0)).to(device)

    def timed(step) -> float:
        for _ in range(2):
            step()
        times = []
        for _ in range(args.iters):
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return B * T / statistics.median(times)

    def loss_of(module) -> torch.Tensor:
        return F.cross_entropy(module(ids[:, :-1]).float().flatten(0, 1), ids[:, 1:].flatten())

    # (b) plain PyTorch first, so its memory is gone before DeepSpeed builds its own copy.
    model = GPTNeoX(cfg.model).to(device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=gpu)

    def plain_step() -> None:
        loss_of(model).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    plain = timed(plain_step)
    del model, opt
    if gpu:
        torch.cuda.empty_cache()

    model = GPTNeoX(cfg.model)
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4, fused=gpu)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=deepspeed_config(cfg, 1))

    def ds_step() -> None:
        engine.backward(loss_of(engine))
        engine.step()

    ours = timed(ds_step)
    print(f"{cfg.model.name}: {cfg.model.num_parameters():,} parameters, batch {B} x {T}, {cfg.train.precision}, "
          f"ZeRO-{cfg.parallel.zero_stage}, activation checkpointing {cfg.model.activation_checkpointing}, "
          f"device {torch.cuda.get_device_name() if gpu else 'cpu'}")
    for name, rate in (("koneox (DeepSpeed)", ours), ("plain PyTorch", plain)):
        line = f"{name:>20}: {rate:12,.0f} tokens/s"
        if gpu:
            tflops = rate * cfg.model.flops_per_token(T) / 1e12
            peak = peak_tflops(torch.cuda.get_device_name())
            line += f", {tflops:6.1f} TFLOP/s" + (f", MFU {tflops / peak:.3f}" if peak else "")
        print(line)
    print(f"ratio koneox / plain PyTorch: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
