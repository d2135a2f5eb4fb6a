"""Forward+backward throughput of our GPT-NeoX against transformers' GPTNeoXForCausalLM.

Both models get the same config, the same weights, batch, sequence length and thread count,
in one process, alternating runs so that machine noise hits both. Prints tokens/s for each
and the ratio (target: ours >= 1.0x transformers on CPU). On a GPU it also prints MFU.

    python benchmarks/model_step.py                      # CPU, a 4-layer 256-wide model
    python benchmarks/model_step.py --size 1.3b --batch 4 --seq 2048 --dtype bf16   # GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import GPTNeoX, ModelConfig  # noqa: E402
from train.metrics import peak_tflops  # noqa: E402


def step(model, ids: torch.Tensor, hf: bool) -> None:
    out = model(ids[:, :-1])
    logits = out.logits if hf else out
    F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten()).backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="", help="named size; default: a small CPU model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    cfg = (ModelConfig.from_name(args.size) if args.size else
           ModelConfig(name="bench", hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024))
    from transformers import AutoModelForCausalLM

    ours = GPTNeoX(cfg)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        hf = AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa")
    ours, hf = ours.to(device, dtype).train(), hf.to(device, dtype).train()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen).to(device)

    def timed(model, is_hf) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(model, ids, is_hf)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(2):  # warm-up
        timed(ours, False)
        timed(hf, True)
    times = {"koneox": [], "transformers": []}
    for _ in range(args.iters):
        times["koneox"].append(timed(ours, False))
        times["transformers"].append(timed(hf, True))

    tokens = args.batch * args.seq
    print(f"device {device}, threads {args.threads}, dtype {args.dtype}, params {cfg.num_parameters():,}, "
          f"batch {args.batch} x {args.seq}")
    rate = {}
    for name, ts in times.items():
        rate[name] = tokens / statistics.median(ts)
        line = f"{name:>13}: {rate[name]:10,.0f} tokens/s (median of {len(ts)} steps)"
        if device == "cuda":
            gpu = torch.cuda.get_device_name()
            peak = peak_tflops(gpu)
            tflops = rate[name] * cfg.flops_per_token(args.seq) / 1e12
            line += f", {tflops:.1f} TFLOP/s" + (f", MFU {tflops / peak:.3f}" if peak else "")
        print(line)
    print(f"ratio koneox / transformers: {rate['koneox'] / rate['transformers']:.3f} (target >= 1.0)")


if __name__ == "__main__":
    main()
