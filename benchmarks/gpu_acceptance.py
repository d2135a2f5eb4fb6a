"""GPU acceptance run: every check to make the day a GPU is lent, in one command and one JSON report.

    bash benchmarks/gpu_acceptance.sh [--out report.json]        # 1-8 CUDA GPUs, under 8 minutes
    bash benchmarks/gpu_acceptance.sh --cpu-smoke [--out ...]    # the same code paths, tiny, on CPU (CI)

Parts, in the order they run. Each runs in its own process under a wall-clock cap, and all of
them under one budget (``--budget-s``); a part the budget no longer fits is reported as
``not_run`` instead of overrunning::

    environment      GPU names and count; torch, CUDA, cuDNN, NCCL, deepspeed, transformers versions
    parity           our GPTNeoX against transformers' GPTNeoXForCausalLM loaded from the same files,
                     in fp32 and in bf16 on the GPU, at the whole 1.3B shape (every weight, bias and
                     LayerNorm random, so no mapping mistake hides behind zeros and ones)
    kernels          the SDPA backend the training shape dispatches to (profiled), flash attention
                     forced once, fused AdamW against the unfused one
    training         1.3B, bf16, through the real trainer (``launch/train.py``; ``deepspeed --num_gpus
                     N`` on several GPUs) on a synthetic packed dataset: activation checkpointing
                     on/off x train.compile off/on; tokens/s, TFLOP/s and MFU per GPU from
                     RUN/metrics.jsonl with the warm-up (and compile) steps left out
    tensor_parallel  TP=2 on two GPUs against one GPU (small fp32 model): per-step loss and gradient
                     norm within a stated tolerance; skipped, with the reason, on one GPU
    memory           each variant's peak ``torch.cuda.max_memory_allocated`` (rank 0) against
                     ``train.memory.estimate`` (whole dict recorded)

The report (``--out``, rewritten after every part, so a run cut short still leaves one) holds
``mode``, ``ok``, ``wall_s``, ``plan`` and one object per part, each with a ``status``: pass, fail,
error (crashed), timeout (cap reached), skipped (does not apply here; the reason says why) or
not_run (budget spent, or not selected). ``ok`` is true when every part passed or was skipped.
A human-readable summary is printed at the end; the exit code is 0 when ``ok``.

``--cpu-smoke`` runs the same code at tiny size on CPU ranks (gloo, ``DS_ACCELERATOR=cpu``, no GPU
visible): a 2-layer model, 2-3 steps per variant, TP=2 on two CPU processes. Its training variants
run in fp32: torch 2.13's CPU inductor fails to compile the bf16 model (a C++ error in generated
code), while parity still runs in both fp32 and bf16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("parity", "training", "tensor_parallel")
"""Parts ``--parts`` can select (environment always runs; kernels run with parity, memory with training)."""

# Parity tolerances, relative to the largest |logit| of transformers' fp32 output (about 3.5 for
# random weights). Measured on CPU: fp32 differs by 5e-7 of that; bf16 by 0.007 (2 and 4 layers of
# the 1.3B shape), while either library's bf16 logits differ from the fp32 ones by about as much.
PARITY_FP32_REL = 1e-4
PARITY_BF16_REL = 0.05
PARITY_BF16_ACCURACY_RATIO = 1.25
"""Our bf16 mean error against the fp32 reference may be at most this times transformers' own."""

REQUIRED = ("torch", "deepspeed", "transformers", "safetensors", "numpy", "pyyaml", "tokenizers")
"""Distributions the parts need (the trainer imports deepspeed; parity, transformers)."""

VARIANTS = {
    # The shipped 1.3B layout first (checkpointing on), then the rest; compiled ones last, as
    # they are the slowest to start and the first to go when the budget runs short.
    "ckpt-on_compile-off": (True, False),
    "ckpt-off_compile-off": (False, False),
    "ckpt-off_compile-on": (False, True),
    "ckpt-on_compile-on": (True, True),
}


@dataclass
class Plan:
    """What one mode runs, and the wall-clock caps (seconds) it runs under."""

    mode: str
    config: str
    """Training config (configs/ name) of the throughput runs and the parity shape."""
    model_overrides: list[str]
    precision: str
    seq_len: int
    micro_batch_size: int
    """Starting micro batch; lowered (halved) while the memory estimate exceeds the GPU."""
    steps: dict[str, int]
    """Training steps per run, by 'eager' / 'compile'."""
    warmup: dict[str, int]
    """Leading steps left out of the throughput (allocator warm-up, compilation)."""
    parity_batch: int
    data_tokens: int
    tp_config: str
    tp_overrides: list[str]
    tp_steps: int
    tp_rel: float
    """Tolerance of per-step loss and gradient norm, TP=2 against one rank (relative)."""
    budget_s: float
    caps: dict[str, float]
    min_part_s: float
    """A part is not started with less time than this left in the budget."""
    parity_layers: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of every child process."""


def make_plan(args: argparse.Namespace) -> Plan:
    if args.cpu_smoke:
        plan = Plan(
            mode="cpu-smoke", config="tiny.yaml", model_overrides=["model.num_layers=2"], precision="fp32",
            seq_len=64, micro_batch_size=2, steps={"eager": 3, "compile": 2}, warmup={"eager": 1, "compile": 1},
            parity_batch=2, data_tokens=200_000,
            tp_config="tiny.yaml",
            tp_overrides=["model.num_layers=2", "data.seq_len=64", "train.micro_batch_size=2", "train.grad_accum=2"],
            tp_steps=3, tp_rel=1e-5,
            # About 3 minutes on 2 cores; the caps only stop a hang: a shared CI machine at load 9
            # took 400 s, and a part cut off there would fail CI for nothing.
            budget_s=1200, caps={"environment": 120, "parity": 240, "eager": 240, "compile": 480,
                                 "tensor_parallel": 480},
            min_part_s=20,
            env={"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
        )
    else:
        plan = Plan(
            mode="gpu", config="1.3b.yaml", model_overrides=[], precision="bf16", seq_len=2048,
            micro_batch_size=4, steps={"eager": 20, "compile": 20}, warmup={"eager": 5, "compile": 5},
            parity_batch=1, data_tokens=4_000_000,
            tp_config="tiny.yaml",
            tp_overrides=["model.hidden_size=1024", "model.num_heads=8", "model.intermediate_size=4096",
                          "model.num_layers=4", "data.seq_len=512", "train.micro_batch_size=4", "train.grad_accum=2"],
            # fp32 without TF32, but cuBLAS picks other kernels for the halved shapes and NCCL sums
            # in another order than one GPU's matmul: looser than the 1e-5 of CPU ranks.
            tp_steps=6, tp_rel=1e-4,
            budget_s=450, caps={"environment": 60, "parity": 150, "eager": 120, "compile": 240,
                                "tensor_parallel": 150},
            min_part_s=30,
        )
    if args.budget_s:
        plan.budget_s = args.budget_s
    if args.micro:
        plan.micro_batch_size = args.micro
    if args.steps:
        plan.steps = {"eager": args.steps, "compile": args.steps}
        plan.warmup = {k: min(v, args.steps - 1) for k, v in plan.warmup.items()}
    plan.parity_layers = args.parity_layers
    return plan


# -- parts that run in a child process --------------------------------------------------------------


def part_environment(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from train.metrics import peak_tflops

    cuda = torch.cuda.is_available()
    gpus = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 2),
                     "capability": f"{props.major}.{props.minor}", "peak_bf16_tflops": peak_tflops(props.name)})
    driver = None
    if cuda and shutil.which("nvidia-smi"):
        res = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        driver = res.stdout.split("\n")[0].strip() or None
    missing = [p for p in REQUIRED if _version(p) is None]
    return {
        "status": "fail" if missing else "pass",
        **({"reason": f"not installed in {sys.executable}: {', '.join(missing)}"} if missing else {}),
        "python": platform.python_version(), "platform": platform.platform(), "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "driver": driver,
        "deepspeed": _version("deepspeed"), "transformers": _version("transformers"), "triton": _version("triton"),
        "gpu_count": len(gpus), "gpus": gpus,
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def part_parity(spec: dict[str, Any]) -> dict[str, Any]:
    """Our model and transformers' from the same safetensors files, fp32 then bf16, same ids.

    The fp32 logits of transformers are the reference. The random weights are rounded to bf16
    values and saved as bf16 to ``spec['hf_dir']``: half the bytes to write and read (2.7 GB at
    1.3B), nothing lost to the fp32 comparison, and the training runs start from these files
    (``model.init_from``) instead of drawing 1.3B initial values on one CPU core (about 30 s a run). ``spec['corrupt']`` flips the sign of one
    transformers weight after loading: the self-test that the check can fail."""
    import torch

    from model import GPTNeoX, ModelConfig

    device = torch.device(spec["device"])
    # Both are PyTorch's defaults; fp32 parity is only meaningful if no TF32 creeps in.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = ModelConfig(**spec["model"])
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.device("meta"):
        ours = GPTNeoX(cfg)
    ours = ours.to_empty(device=device)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.normal_(1.0, 0.1, generator=gen)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.02, generator=gen)
            else:
                p.normal_(0.0, cfg.small_init_std, generator=gen)
            p.copy_(p.to(torch.bfloat16))
    ours.save_pretrained(spec["hf_dir"], dtype=torch.bfloat16)
    ids = torch.randint(0, cfg.vocab_size, (spec["batch"], spec["seq_len"]), device=device, generator=gen)
    with torch.no_grad():
        ours32 = ours.eval()(ids).float()
        del ours
        hf = _load_transformers(spec["hf_dir"], torch.float32, device, spec.get("corrupt", False))
        ref = hf(ids).logits.float()
        del hf
        ours16 = GPTNeoX.from_pretrained(spec["hf_dir"], dtype=torch.bfloat16).to(device).eval()
        hf16 = _load_transformers(spec["hf_dir"], torch.bfloat16, device, spec.get("corrupt", False))
        o16 = ours16(ids).float()
        h16 = hf16(ids).logits.float()
        del hf16
    scale = ref.abs().max().item()
    fp32 = _diff(ours32, ref, scale)
    fp32["tolerance_rel"] = PARITY_FP32_REL
    fp32["pass"] = fp32["max_rel_diff"] <= PARITY_FP32_REL
    bf16 = _diff(o16, h16, scale)
    ours_err = (o16 - ref).abs().mean().item()
    hf_err = (h16 - ref).abs().mean().item()
    bf16.update({
        "ours_vs_fp32_mean_abs": ours_err, "transformers_vs_fp32_mean_abs": hf_err,
        "accuracy_ratio": ours_err / max(hf_err, 1e-12),
        "tolerance_rel": PARITY_BF16_REL, "tolerance_accuracy_ratio": PARITY_BF16_ACCURACY_RATIO,
    })
    bf16["pass"] = (bf16["max_rel_diff"] <= PARITY_BF16_REL
                    and bf16["accuracy_ratio"] <= PARITY_BF16_ACCURACY_RATIO)
    return {
        "status": "pass" if fp32["pass"] and bf16["pass"] else "fail",
        "device": str(device), "attn_implementation": "sdpa",
        "shape": {k: getattr(cfg, k) for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
                                               "rotary_dims", "padded_vocab_size")},
        "batch": spec["batch"], "seq_len": spec["seq_len"], "logit_scale": scale,
        "fp32": fp32, "bf16": bf16,
        "kernels": kernel_checks(ours16, ids, device),
    }


def _load_transformers(path: str, dtype: Any, device: Any, corrupt: bool) -> Any:
    import transformers
    from transformers import AutoModelForCausalLM

    # transformers renamed torch_dtype to dtype in 4.56 (the old name warns in 5.x).
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **{key: dtype})
    if corrupt:
        model.get_parameter("gpt_neox.layers.0.mlp.dense_4h_to_h.weight").data.neg_()
    return model.to(device).eval()


def _diff(a: Any, b: Any, scale: float) -> dict[str, float]:
    d = (a - b).abs()
    return {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(),
            "max_rel_diff": d.max().item() / max(scale, 1e-12),
            "argmax_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item()}


SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
"""Words in the names of the aten ops behind F.scaled_dot_product_attention, one per backend."""


def kernel_checks(model: Any, ids: Any, device: Any) -> dict[str, Any]:
    """Which SDPA kernel a training forward+backward of ``model`` dispatches to (read from the
    profiler's aten op names, which name the backend on CPU and GPU alike), whether flash
    attention runs when it is the only backend allowed, and whether fused AdamW runs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    model.train()

    def step() -> None:
        model(ids).float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    # aten::scaled_dot_product_attention is the dispatcher; the ops it calls name the backend.
    ops = sorted({e.key for e in prof.key_averages()
                  if "scaled_dot_product" in e.key and e.key != "aten::scaled_dot_product_attention"})
    backends = sorted({b for b in SDPA_BACKENDS for op in ops if b in op})
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            step()
        forced = {"ok": True}
    except RuntimeError as e:
        forced = {"ok": False, "error": str(e).strip().splitlines()[0][:300]}
    fused = fused_adamw_check(device)
    # The slow math path on a GPU is a failure; another fused kernel (cuDNN, efficient) is reported.
    slow = device.type == "cuda" and backends == ["math"]
    return {
        "status": "pass" if forced["ok"] and fused["ok"] and backends and not slow else "fail",
        "sdpa_default_backends": backends, "sdpa_ops": ops, "sdpa_default_is_flash": backends == ["flash"],
        "flash_forced": forced, "fused_adamw": fused,
        "shape": {"batch": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "dtype": str(next(model.parameters()).dtype)},
    }


def fused_adamw_check(device: Any) -> dict[str, Any]:
    """Two steps of fused AdamW against the for-loop one on the same values (the trainer asks for
    ``fused=True`` whenever CUDA is available)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    init, grad = torch.randn(4096, generator=gen), torch.randn(4096, generator=gen)
    out = {}
    try:
        for fused in (False, True):
            p = torch.nn.Parameter(init.to(device))
            opt = torch.optim.AdamW([p], lr=1e-2, weight_decay=0.01, fused=fused)
            for _ in range(2):
                p.grad = grad.to(device)
                opt.step()
            out[fused] = p.detach().cpu()
    except (RuntimeError, TypeError) as e:
        return {"ok": False, "error": str(e).strip().splitlines()[0][:300]}
    diff = (out[True] - out[False]).abs().max().item()
    return {"ok": diff <= 1e-6, "max_abs_diff_vs_unfused": diff, "trainer_uses_fused": torch.cuda.is_available()}


CHILD_PARTS = {"environment": part_environment, "parity": part_parity}


# -- pure helpers (tested without a run) -----------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Complete lines of RUN/metrics.jsonl (a line still being written is left for the next read)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def throughput(records: list[dict[str, Any]], warmup: int, tokens_per_step: int, world_size: int) -> dict[str, Any]:
    """Medians over the logged steps after the first ``warmup`` (log interval 1: one record a step)."""
    steps = [r for r in records if "loss" in r]
    kept = [r for r in steps if r["step"] > warmup]
    out: dict[str, Any] = {"steps_logged": len(steps), "warmup_steps_excluded": min(warmup, len(steps)),
                           "measured_steps": len(kept)}
    if steps:
        out["first_step_s"] = tokens_per_step / steps[0]["tokens_per_s"]
        out["loss_first"], out["loss_last"] = steps[0]["loss"], steps[-1]["loss"]
        out["losses_finite"] = all(_finite(r["loss"]) for r in steps)
        mem = [r["max_memory_gib"] for r in steps if "max_memory_gib" in r]
        out["max_memory_gib"] = max(mem) if mem else None
    if kept:
        tps = statistics.median(r["tokens_per_s"] for r in kept)
        out.update({
            "tokens_per_s": tps, "tokens_per_s_per_gpu": tps / world_size, "step_s": tokens_per_step / tps,
            "tflops_per_gpu": statistics.median(r["tflops_per_device"] for r in kept),
            "mfu": statistics.median(r["mfu"] for r in kept) if all("mfu" in r for r in kept) else None,
        })
    return out


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def compare_curves(a: list[dict[str, Any]], b: list[dict[str, Any]], rel: float) -> dict[str, Any]:
    """Per-step loss and gradient norm of two runs; pass when both agree within ``rel`` at every step."""
    ra = {r["step"]: r for r in a if "loss" in r}
    rb = {r["step"]: r for r in b if "loss" in r}
    out: dict[str, Any] = {"steps": sorted(ra), "tolerance_rel": rel}
    if not ra or sorted(ra) != sorted(rb):
        return {**out, "pass": False, "reason": f"steps differ: {sorted(ra)} vs {sorted(rb)}"}
    for key in ("loss", "grad_norm"):
        worst = 0.0
        for s in ra:
            x, y = ra[s][key], rb[s][key]
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12) if _finite(x) and _finite(y) else float("inf"))
        out[f"{key}_max_rel_diff"] = worst
    out["losses"] = {"single": [ra[s]["loss"] for s in sorted(ra)], "tp2": [rb[s]["loss"] for s in sorted(rb)]}
    out["pass"] = out["loss_max_rel_diff"] <= rel and out["grad_norm_max_rel_diff"] <= rel
    return out


def write_dataset(prefix: Path, tokens: int, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """Random token documents (lengths seq_len/4 .. 2*seq_len) written with data.indexed's writer."""
    import numpy as np

    from data.indexed import IndexedDatasetWriter, best_dtype

    rng = np.random.default_rng(0)
    writer = IndexedDatasetWriter(prefix, best_dtype(vocab_size))
    while writer.num_tokens < tokens:
        lengths = rng.integers(max(1, seq_len // 4), 2 * seq_len, size=256)
        writer.add_documents(rng.integers(0, vocab_size, size=int(lengths.sum())), lengths)
    writer.finish()
    return {"prefix": str(prefix), "tokens": writer.num_tokens, "documents": writer.num_documents}


def overall_ok(report: dict[str, Any]) -> bool:
    return all(report.get(p, {}).get("status") in ("pass", "skipped")
               for p in ("environment", "parity", "kernels", "training", "tensor_parallel", "memory"))


# -- the orchestrator ----------------------------------------------------------------------------------


class Acceptance:
    def __init__(self, plan: Plan, out: Path, workdir: Path, parts: set[str], variants: list[str]):
        self.plan, self.out, self.workdir, self.parts, self.variants = plan, out, workdir, parts, variants
        self.start = time.monotonic()
        self.deadline = self.start + plan.budget_s
        self.report: dict[str, Any] = {
            "mode": plan.mode, "ok": False, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "plan": dataclasses.asdict(plan), "git": _git(),
        }
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **plan.env}
        self.world = 1
        """Processes of each throughput run: every visible GPU (one CPU process in the smoke)."""
        self.gpu_gib: float | None = None
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    # -- plumbing

    def save(self) -> None:
        self.report["wall_s"] = round(time.monotonic() - self.start, 1)
        self.report["ok"] = overall_ok(self.report)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        os.replace(tmp, self.out)

    def cap(self, kind: str) -> float | None:
        """Seconds this part may take: its own cap, cut to what is left of the budget; None if too little is left."""
        left = self.deadline - time.monotonic()
        return min(self.plan.caps[kind], left) if left >= self.plan.min_part_s else None

    def not_run(self, why: str) -> dict[str, Any]:
        return {"status": "not_run", "reason": why}

    def _spawn(self, cmd: list[str], log: Path, cap: float, stop_at_step: int | None = None,
               run_dir: Path | None = None) -> tuple[str, int | None, float]:
        """Run ``cmd`` in its own process group; kill the group at ``cap`` seconds, or as soon as
        RUN/metrics.jsonl has logged ``stop_at_step``.
        Returns (how it ended: exited / stopped / timeout, exit code, seconds)."""
        t0 = time.monotonic()
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    return "exited", rc, time.monotonic() - t0
                except subprocess.TimeoutExpired:
                    pass
                how = None
                if time.monotonic() - t0 > cap:
                    how = "timeout"
                elif stop_at_step and run_dir and any(r.get("step", 0) >= stop_at_step and "loss" in r
                                                      for r in read_metrics(run_dir)):
                    how = "stopped"
                if how:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return how, None, time.monotonic() - t0

    def child_part(self, name: str, spec: dict[str, Any], cap: float) -> dict[str, Any]:
        spec_file, result_file = self.workdir / f"{name}.spec.json", self.workdir / f"{name}.result.json"
        spec_file.write_text(json.dumps(spec))
        log = self.workdir / "logs" / f"{name}.log"
        how, rc, secs = self._spawn([sys.executable, str(Path(__file__).resolve()), "--part", name,
                                     "--spec", str(spec_file), "--result", str(result_file)], log, cap)
        if how == "timeout":
            return {"status": "timeout", "reason": f"over its cap of {cap:.0f} s", "wall_s": round(secs, 1),
                    "log_tail": _tail(log)}
        if rc != 0 or not result_file.is_file():
            return {"status": "error", "reason": f"exit code {rc}", "wall_s": round(secs, 1), "log_tail": _tail(log)}
        return {**json.loads(result_file.read_text()), "wall_s": round(secs, 1)}

    def trainer(self, name: str, config: str, overrides: list[str], nproc: int, cap: float,
                steps: int) -> dict[str, Any]:
        """One real training run (launch/train.py, through the DeepSpeed launcher for several
        processes), killed once its last step is logged: the final checkpoint it would write
        next (about 19 GB for 1.3B) is not what is measured here, and would cost the budget."""
        run = self.workdir / "runs" / name
        shutil.rmtree(run, ignore_errors=True)
        args = ["launch/train.py", "--config", config, *overrides, f"train.run_dir={run}"]
        if nproc == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
                   "--master_port", str(_free_port()), *args]
        log = self.workdir / "logs" / f"{name}.log"
        how, rc, secs = self._spawn(cmd, log, cap, stop_at_step=steps, run_dir=run)
        records = read_metrics(run)
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
        logged = max((r["step"] for r in records if "loss" in r), default=0)
        text = log.read_text(errors="replace")
        result: dict[str, Any] = {
            "ended": how, "exit_code": rc, "wall_s": round(secs, 1), "command": shlex.join(cmd),
            "banner": [line for line in text.splitlines() if line.startswith(("training ", "optimizer "))],
        }
        if how == "timeout":
            result.update(status="timeout", reason=f"over its cap of {cap:.0f} s at step {logged}/{steps}")
        elif logged < steps or (how == "exited" and rc != 0):
            result.update(status="error", reason=f"exit code {rc} after step {logged}/{steps}")
        else:
            result["status"] = "pass"
        if result["status"] != "pass":
            result["log_tail"] = _tail(log)
        result["records"] = records
        return result

    # -- parts

    def run(self) -> int:
        self.report["environment"] = env = self.child_part("environment", {}, self.plan.caps["environment"])
        self.save()
        if "gpu_count" not in env:
            return self.finish()
        gpus = env["gpu_count"]
        if self.plan.mode == "gpu" and gpus == 0:
            env.update(status="error", reason="no CUDA GPU visible: run with --cpu-smoke on a machine without one")
            return self.finish()
        self.world = max(gpus, 1) if self.plan.mode == "gpu" else 1
        self.gpu_gib = min((g["memory_gib"] for g in env["gpus"]), default=None)
        self.run_parity()
        self.run_training()
        self.run_memory()
        return self.finish()

    def finish(self) -> int:
        self.save()
        print_summary(self.report, self.out)
        return 0 if self.report["ok"] else 1

    def train_config(self) -> Any:
        from train.config import load_config

        return load_config(self.plan.config, self.plan.model_overrides)

    def run_parity(self) -> None:
        if "parity" not in self.parts:
            self.report["parity"] = self.report["kernels"] = self.not_run("not selected (--parts)")
            return
        cap = self.cap("parity")
        if cap is None:
            self.report["parity"] = self.report["kernels"] = self.not_run("time budget spent")
            return
        model = dataclasses.asdict(self.train_config().model)
        if self.plan.parity_layers:
            model["num_layers"] = self.plan.parity_layers
        spec = {"model": model, "device": "cuda" if self.plan.mode == "gpu" else "cpu",
                "batch": self.plan.parity_batch, "seq_len": self.plan.seq_len, "hf_dir": str(self.hf_dir())}
        result = self.child_part("parity", spec, cap)
        self.report["kernels"] = result.pop("kernels", None) or {"status": result["status"],
                                                                 "reason": "the parity process did not finish"}
        self.report["parity"] = result
        self.save()

    def hf_dir(self) -> Path:
        # model.init_from names the run's model after the directory: "1.3b" in the banner.
        return self.workdir / "hf" / self.train_config().model.name

    def init_from(self) -> str | None:
        """The parity part's files, when they hold the training shape (see part_parity)."""
        hf = self.hf_dir()
        done = self.report.get("parity", {}).get("status") in ("pass", "fail")
        return str(hf) if done and not self.plan.parity_layers and (hf / "config.json").is_file() else None

    def variant_overrides(self, ckpt: bool, compiled: bool, micro: int, data: str, init: str | None) -> list[str]:
        p = self.plan
        kind = "compile" if compiled else "eager"
        return [
            *p.model_overrides, f"data.train_paths=[{data}]", "data.split=[1.0, 0.0, 0.0]", f"data.seq_len={p.seq_len}",
            f"train.micro_batch_size={micro}", "train.grad_accum=1", "train.global_batch_size=0",
            "parallel.data_parallel=0", f"train.train_steps={p.steps[kind]}", "train.warmup_steps=2",
            "train.log_interval=1", "train.eval_interval=0", "train.save_interval=0", f"train.precision={p.precision}",
            f"model.activation_checkpointing={str(ckpt).lower()}", f"train.compile={str(compiled).lower()}",
            "logging.wandb.mode=disabled", *([f"model.init_from={init}"] if init else []),
        ]

    def fit_micro(self, ckpt: bool) -> tuple[int, dict[str, float]]:
        """The starting micro batch, halved while the planner says it does not fit the GPU."""
        from train.config import load_config
        from train.memory import estimate

        micro = self.plan.micro_batch_size
        while True:
            cfg = load_config(self.plan.config, [
                *self.plan.model_overrides, f"model.activation_checkpointing={str(ckpt).lower()}",
                f"train.micro_batch_size={micro}", "train.grad_accum=1", "train.global_batch_size=0",
                "parallel.data_parallel=0", f"data.seq_len={self.plan.seq_len}", f"train.precision={self.plan.precision}"])
            est = estimate(cfg, self.world)
            if micro == 1 or self.gpu_gib is None or est["total_gib"] <= 0.95 * self.gpu_gib:
                return micro, est
            micro //= 2

    def run_training(self) -> None:
        p = self.plan
        training: dict[str, Any] = {"config": p.config, "precision": p.precision, "seq_len": p.seq_len,
                                    "world_size": self.world, "variants": {}}
        self.report["training"] = training
        if self.report["environment"].get("deepspeed") is None:
            # Every run would die at its first import; say so once instead of 4 + 2 times.
            training.update(status="error", reason="deepspeed is not installed")
            self.report["tensor_parallel"] = {"status": "error", "reason": "deepspeed is not installed"}
            return
        if "training" not in self.parts:
            training.update(self.not_run("not selected (--parts)"))
        cfg = self.train_config()
        data = self.workdir / "data" / "random"
        training["dataset"] = write_dataset(data, p.data_tokens, cfg.model.vocab_size, p.seq_len)
        init = self.init_from()
        training["init_from"] = init
        for name in self.variants if "training" in self.parts else []:
            if name == "ckpt-off_compile-on":
                self.run_tensor_parallel(data)  # before the slow compiled variants
            ckpt, compiled = VARIANTS[name]
            kind = "compile" if compiled else "eager"
            cap = self.cap(kind)
            if cap is None:
                training["variants"][name] = self.not_run("time budget spent")
                continue
            micro, est = self.fit_micro(ckpt)
            steps = p.steps[kind]
            result = self.trainer(f"train_{name}", p.config, self.variant_overrides(ckpt, compiled, micro, str(data), init),
                                  self.world, cap, steps)
            records = result.pop("records")
            result.update(activation_checkpointing=ckpt, compile=compiled, micro_batch_size=micro,
                          global_batch=micro * self.world, memory_estimate=est)
            if micro != p.micro_batch_size:
                result["micro_reduced_from"] = p.micro_batch_size
            result.update(throughput(records, p.warmup[kind], micro * self.world * p.seq_len, self.world))
            if result["status"] == "pass" and not (result.get("losses_finite") and result["measured_steps"]):
                result.update(status="fail", reason="no finite measured step")
            training["variants"][name] = result
            self.save()
        if "tensor_parallel" not in self.report:
            self.run_tensor_parallel(data)
        if "status" not in training:
            statuses = [v["status"] for v in training["variants"].values()]
            training["status"] = "pass" if statuses and all(s == "pass" for s in statuses) else (
                next((s for s in ("fail", "error", "timeout", "not_run") if s in statuses), "not_run"))
        self.save()

    def run_tensor_parallel(self, data: Path) -> None:
        p = self.plan
        if "tensor_parallel" not in self.parts:
            self.report["tensor_parallel"] = self.not_run("not selected (--parts)")
            return
        if p.mode == "gpu" and self.world < 2:
            self.report["tensor_parallel"] = {"status": "skipped",
                                              "reason": "one GPU visible: TP=2 needs two (run again on 2-8 GPUs)"}
            return
        cap = self.cap("tensor_parallel")
        if cap is None:
            self.report["tensor_parallel"] = self.not_run("time budget spent")
            return
        overrides = [*p.tp_overrides, f"data.train_paths=[{data}]", "data.split=[1.0, 0.0, 0.0]",
                     "train.global_batch_size=0", "parallel.data_parallel=0", f"train.train_steps={p.tp_steps}",
                     "train.warmup_steps=2", "train.lr=3e-3", "train.min_lr=3e-4", "train.precision=fp32",
                     "train.log_interval=1", "train.eval_interval=0", "train.save_interval=0",
                     "logging.wandb.mode=disabled"]
        t0 = time.monotonic()
        single = self.trainer("tp_single", p.tp_config, overrides, 1, cap / 2, p.tp_steps)
        left = cap - (time.monotonic() - t0)
        tp2 = (self.trainer("tp_tp2", p.tp_config, [*overrides, "parallel.tensor_parallel=2"], 2, left, p.tp_steps)
               if left >= p.min_part_s / 2 else {**self.not_run("cap spent"), "records": []})
        result: dict[str, Any] = {"precision": "fp32", "steps": p.tp_steps, "overrides": p.tp_overrides,
                                  "wall_s": round(time.monotonic() - t0, 1)}
        runs = {"single": single, "tp2": tp2}
        if all(r["status"] == "pass" for r in runs.values()):
            result.update(compare_curves(single["records"], tp2["records"], p.tp_rel))
            result["status"] = "pass" if result.pop("pass") else "fail"
        else:
            bad = {k: r for k, r in runs.items() if r["status"] != "pass"}
            result.update(status=next(iter(bad.values()))["status"],
                          reason="; ".join(f"{k}: {r.get('reason')}" for k, r in bad.items()),
                          log_tail=next(iter(bad.values())).get("log_tail") or [])
        result["banner"] = tp2.get("banner")
        self.report["tensor_parallel"] = result
        self.save()

    def run_memory(self) -> None:
        variants = self.report.get("training", {}).get("variants", {})
        rows = {}
        for name, v in variants.items():
            if "memory_estimate" not in v:
                continue
            est, measured = v["memory_estimate"], v.get("max_memory_gib")
            row: dict[str, Any] = {"estimate": est, "measured_max_allocated_gib": measured}
            if measured is not None:
                # The allocator's peak never holds the CUDA context and NCCL buffers the estimate
                # adds as context_gib: compare like with like. The planner promises an upper
                # bound; a run that needs more than it says can run out of memory.
                bound = est["total_gib"] - est.get("context_gib", 0.0)
                row["estimate_without_context_gib"] = bound
                row["measured_over_estimate"] = measured / bound
                row["pass"] = measured <= bound
            rows[name] = row
        result: dict[str, Any] = {"variants": rows, "measured": "torch.cuda.max_memory_allocated on rank 0"}
        checked = [r for r in rows.values() if "pass" in r]
        if not rows:
            result.update(status="not_run", reason="no training variant ran")
        elif not checked:
            result.update(status="skipped", reason="no CUDA: the trainer logs max_memory_gib on GPUs only "
                                                   "(the estimates are recorded)")
        else:
            result["status"] = "pass" if all(r["pass"] for r in checked) else "fail"
        self.report["memory"] = result


def _git() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=30).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, timeout=30).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit or None, "dirty": dirty}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path, lines: int = 40) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_summary(report: dict[str, Any], out: Path) -> None:
    env = report.get("environment", {})
    gpus = env.get("gpus") or []
    where = f"{len(gpus)} x {gpus[0]['name']}" if gpus else "CPU"
    print(f"\nkoneox GPU acceptance ({report['mode']}) on {where}: torch {env.get('torch')}, CUDA {env.get('cuda')}, "
          f"deepspeed {env.get('deepspeed')}, transformers {env.get('transformers')}")
    print(f"{'OK' if report['ok'] else 'NOT OK'} in {report.get('wall_s', 0):.0f} s; report {out}")

    def line(part: str, text: str) -> None:
        status = report.get(part, {}).get("status", "not_run")
        reason = report.get(part, {}).get("reason")
        print(f"  {part:<16}{status.upper():<9}{text}{'  (' + reason + ')' if reason else ''}")
        for tail in report.get(part, {}).get("log_tail", [])[-3:]:
            print(f"      | {tail}")

    line("environment", f"{env.get('gpu_count', '?')} GPU(s), driver {env.get('driver')}, git "
                        f"{(report.get('git', {}).get('commit') or '?')[:12]}"
                        f"{' (uncommitted changes)' if report.get('git', {}).get('dirty') else ''}")
    par = report.get("parity", {})
    if "bf16" in par:
        b, f = par["bf16"], par["fp32"]
        line("parity", f"{par['shape']['num_layers']} layers x {par['seq_len']} tokens: bf16 max|d| "
                       f"{b['max_abs_diff']:.3g} = {b['max_rel_diff']:.2%} of max logit (tol {b['tolerance_rel']:.0%}), "
                       f"error vs fp32 {b['accuracy_ratio']:.2f}x transformers' (tol {b['tolerance_accuracy_ratio']}); "
                       f"fp32 {f['max_rel_diff']:.1e} (tol {f['tolerance_rel']:.0e})")
    else:
        line("parity", "")
    k = report.get("kernels", {})
    if "sdpa_default_backends" in k:
        line("kernels", f"SDPA default {','.join(k['sdpa_default_backends']) or '?'}, forced flash "
                        f"{'ok' if k['flash_forced']['ok'] else 'FAILED'}, fused AdamW "
                        f"{'ok' if k['fused_adamw']['ok'] else 'FAILED'}")
    else:
        line("kernels", "")
    tr = report.get("training", {})
    line("training", f"{tr['config']} {tr['precision']} seq {tr['seq_len']} on {tr['world_size']} rank(s)"
                     if tr else "")
    if tr.get("variants"):
        print(f"    {'variant':<22}{'status':<9}{'micro':>5}{'tok/s/GPU':>11}{'TFLOP/s':>9}{'MFU':>7}"
              f"{'mem GiB':>9}{'est GiB':>9}{'1st step s':>11}{'wall s':>8}")
        for name, v in tr["variants"].items():
            plan = v.get("memory_estimate") or {}
            est = plan["total_gib"] - plan.get("context_gib", 0.0) if plan else None  # as the memory part compares
            print(f"    {name:<22}{v['status']:<9}{_fmt(v.get('micro_batch_size'), 'd'):>5}"
                  f"{_fmt(v.get('tokens_per_s_per_gpu'), ',.0f'):>11}{_fmt(v.get('tflops_per_gpu'), '.1f'):>9}"
                  f"{_fmt(v.get('mfu'), '.3f'):>7}{_fmt(v.get('max_memory_gib'), '.1f'):>9}{_fmt(est, '.1f'):>9}"
                  f"{_fmt(v.get('first_step_s'), '.1f'):>11}{_fmt(v.get('wall_s'), '.0f'):>8}")
    tp = report.get("tensor_parallel", {})
    line("tensor_parallel", f"loss max rel diff {tp['loss_max_rel_diff']:.1e}, grad norm {tp['grad_norm_max_rel_diff']:.1e} "
                            f"(tol {tp['tolerance_rel']:.0e}) over {len(tp['steps'])} steps" if "loss_max_rel_diff" in tp else "")
    mem = report.get("memory", {})
    ratios = [r["measured_over_estimate"] for r in mem.get("variants", {}).values() if "measured_over_estimate" in r]
    line("memory", f"peak allocated / estimate without context {min(ratios):.2f} .. {max(ratios):.2f}"
                   if ratios else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="report path (default runs/gpu_acceptance/<mode>.json)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU ranks (what CI runs)")
    parser.add_argument("--budget-s", type=float, default=0, help="wall-clock budget of all parts (default 450 on "
                                                                   "GPUs, 1200 for the smoke)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated training variants")
    parser.add_argument("--micro", type=int, default=0, help="starting micro batch (default: 4 on GPUs)")
    parser.add_argument("--steps", type=int, default=0, help="training steps per variant (default 20 on GPUs)")
    parser.add_argument("--parity-layers", type=int, default=None,
                        help="parity on fewer layers of the 1.3B shape (then training draws its own init)")
    parser.add_argument("--workdir", default=None, help="keep data, logs and runs here (default: a temporary "
                                                        "directory, removed afterwards)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        result = CHILD_PARTS[args.part](json.loads(Path(args.spec).read_text()))
        Path(args.result).write_text(json.dumps(result, indent=2, default=str))
        return 0
    plan = make_plan(args)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = (parts - set(PARTS)) | (set(variants) - set(VARIANTS))
    if unknown:
        print(f"unknown part or variant: {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}; "
              f"variants: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    out = Path(args.out or REPO / "runs" / "gpu_acceptance" / f"{plan.mode}.json").resolve()
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="koneox-acceptance-"))
    try:
        return Acceptance(plan, out, workdir, parts, variants).run()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
