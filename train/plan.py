"""``koneox plan``: rank the parallel layouts of a config on a cluster, before any GPU is booked.

    koneox plan --config 12.8b.yaml --nodes 32 --gpus-per-node 8 --gpu a100-80g
    koneox plan --config 1.3b.yaml --nodes 4 --gpus-per-node 8 --gpu h100-80g --json train.global_batch_size=512

    from train.plan import save_seconds, signal_lead_seconds     # e.g. for the Slurm template
    signal_lead_seconds(cfg, nodes=32, gpus_per_node=8)          # -> sbatch --signal=USR1@<that>

Candidates: tensor parallel 1/2/4/8 (dividing the GPUs per node, the heads and the MLP width) x
ZeRO 1/2/3 x micro batch (``--micro-batches``) x activation checkpointing on/off, keeping the
configured global batch exactly (global = micro x accumulation x data-parallel). Each is scored
with the model below; the fastest one that fits is recommended (ties: larger micro batch, then
less memory). Every figure is an estimate; the assumptions are written here so they can be argued
with, and every bandwidth is an option.

Memory      ``train/memory.py`` (DeepSpeed's model-state accounting plus buckets, fp32 gradient
            buffers, activations, logits, context). Fits when total <= (1 - margin) x GPU memory.
Compute     executed FLOPs / (peak x ``--mfu``). Per token on one GPU: the layers'
            6 x params + 12 L s h, divided by t, times 4/3 with activation checkpointing (the
            forward runs twice), plus the output head's 6 V h on every tensor-parallel rank (it is
            replicated). ``--mfu`` is the fraction of peak reached on executed FLOPs; the reported
            ``mfu`` is model FLOPs (``ModelConfig.flops_per_token``) / peak, what the trainer logs.
Network     ring collectives: one GPU sends 2(n-1)/n x S for an all-reduce of S bytes, (n-1)/n x S
            for an all-gather or reduce-scatter. Tensor-parallel groups are consecutive ranks
            inside a node (``deepspeed.utils.groups._init_tp_mesh_device``) and use NVLink
            (``--nvlink-gbps``, per GPU per direction; A100 ~300 GB/s). Data-parallel groups span
            the nodes; the t groups of a node share its InfiniBand (``--ib-gbps`` per node;
            4 x 200 Gb/s HDR ~ 100 GB/s), so inter-node time = t x bytes / ib.
Overlap     TP: per layer 2 all-reduces of s b h 16-bit values forward, 2 backward, 2 more for
            the recompute, every micro-batch, on the critical path (not overlapped).
            BF16_Optimizer / ZeRO-1: one gradient all-reduce of P values in
            ``train.grad_reduce_dtype`` per step, after the last backward (not overlapped).
            ZeRO-2 (``overlap_comm``): that all-reduce every micro-batch, hidden behind the
            micro-batch's backward except what exceeds it and the last bucket.
            (DeepSpeed 0.19.8 all-reduces ZeRO-1/2 buckets: ``use_multi_rank_bucket_allreduce``.)
            ZeRO-3: per micro-batch, all-gather of 16-bit weights in forward and in backward and a
            reduce-scatter of gradients; ``--zero3-overlap`` (default half) of it is hidden behind
            compute by prefetching (never more than the compute), the rest and the last bucket are
            exposed. Half, because DeepSpeed gathers module by module with a small prefetch
            window (``stage3_prefetch_bucket_size`` 5e7) and the gathers share the links with the
            backward's reduce-scatters; no measurement backs the figure.
            ZeRO-1/2: all-gather of the updated 16-bit weights after the optimizer step (not
            overlapped). The optimizer step itself and data loading are ignored.
Step        compute + exposed communication; tokens/s = global batch x seq_len / step.
Checkpoint  DeepSpeed writes, per tensor-parallel rank, the 16-bit module from data-parallel
            rank 0 (``mp_rank_XX_model_states.pt``; ZeRO-3 keeps only names there) and, from every
            rank, its fp32 master + Adam partition, 12P/N bytes (``*_optim_states.pt``). Node 0
            holds data-parallel rank 0 of every tensor-parallel rank, so it writes the most; the
            save takes its bytes / ``--fs-write-gbps`` (per node, e.g. 2 GB/s to a parallel file
            system). The pre-emption signal must come at least 2 x that + 60 s (and >= 120 s)
            before the kill: ``sbatch --signal=USR1@<lead>``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from train.config import Config, ConfigError, load_config
from train.memory import (
    CONTEXT_GIB,
    DTYPE_BYTES,
    deepspeed_optimizer,
    estimate,
    params_per_gpu,
    reduction_bytes,
    trainable_per_gpu,
)
from train.metrics import peak_tflops

FS_WRITE_GBPS = 2.0
"""Default checkpoint write bandwidth per node, GB/s (1e9 bytes)."""
MIN_SIGNAL_LEAD = 120
"""Never ask Slurm for less than this many seconds between the signal and the kill."""


@dataclass(frozen=True)
class GPU:
    """An accelerator as the planner sees it."""

    device_name: str
    """What ``torch.cuda.get_device_name()`` reports; its peak comes from ``train.metrics``."""
    memory_gib: float
    """Memory one process can use, about what the driver reports as total."""
    nvlink_gbps: float
    """Effective GB/s per GPU per direction inside a node (NVLink, or PCIe without it)."""
    ib_gbps: float
    """Effective GB/s per node across nodes (typical InfiniBand fit of that GPU generation)."""

    @property
    def peak_tflops(self) -> float:
        peak = peak_tflops(self.device_name)
        assert peak is not None, f"no peak TFLOP/s for {self.device_name} in train.metrics.PEAK_TFLOPS"
        return peak


# NVLink: A100 NVLink3 600 GB/s both directions (300 each way), H100/H200 NVLink4 900 (450);
# PCIe cards are counted over PCIe (Gen4/Gen5 x16, ~25/~50 GB/s), NVL bridges joining only pairs.
# InfiniBand per node: A100 nodes 4 x HDR 200 Gb/s (~100 GB/s), H100/H200 SXM nodes 8 x NDR
# 400 Gb/s (~400 GB/s), PCIe/NVL servers 4 x NDR (~200 GB/s). Override both for a real cluster.
GPUS: dict[str, GPU] = {
    "a100-40g": GPU("NVIDIA A100-SXM4-40GB", 39.4, 300.0, 100.0),
    "a100-80g": GPU("NVIDIA A100-SXM4-80GB", 79.3, 300.0, 100.0),
    "a100-pcie-40g": GPU("NVIDIA A100-PCIE-40GB", 39.4, 25.0, 100.0),
    "a100-pcie-80g": GPU("NVIDIA A100 80GB PCIe", 79.3, 25.0, 100.0),
    "h100-80g": GPU("NVIDIA H100 80GB HBM3", 79.1, 450.0, 400.0),
    "h100-pcie": GPU("NVIDIA H100 PCIe", 79.1, 50.0, 200.0),
    "h100-nvl": GPU("NVIDIA H100 NVL", 93.1, 50.0, 200.0),
    "h200": GPU("NVIDIA H200", 139.8, 450.0, 400.0),
    "h200-nvl": GPU("NVIDIA H200 NVL", 139.8, 50.0, 200.0),
}


@dataclass(frozen=True)
class Cluster:
    """The machines and the assumptions of the model (see the module docstring)."""

    nodes: int
    gpus_per_node: int
    gpu: GPU
    memory_gib: float
    nvlink_gbps: float
    ib_gbps: float
    mfu: float = 0.4
    margin: float = 0.1
    context_gib: float = CONTEXT_GIB
    fs_write_gbps: float = FS_WRITE_GBPS
    zero3_overlap: float = 0.5

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


# -- checkpoints ------------------------------------------------------------------------------


def checkpoint_bytes(cfg: Config, nodes: int, gpus_per_node: int) -> dict[str, float]:
    """Bytes one checkpoint of ``cfg``'s layout writes: ``total``, the most on one rank
    (``per_rank``) and on the busiest node (``per_node``, node 0)."""
    t, zero = cfg.parallel.tensor_parallel, cfg.parallel.zero_stage
    dp = nodes * gpus_per_node // t
    P, T = params_per_gpu(cfg), trainable_per_gpu(cfg)  # optimizer state only for the trainable T
    state = 12 if cfg.train.precision != "fp32" or zero >= 1 else 8
    module = P * DTYPE_BYTES[cfg.train.precision] if zero < 3 else 0
    if zero == 0:  # no ZeRO: data-parallel rank 0 writes the whole optimizer state with the module
        module, partition = module + T * state, 0.0
    else:
        partition = T * state / dp
    return {
        "total": t * (module + dp * partition),
        "per_rank": module + partition,
        "per_node": t * module + gpus_per_node * partition,
    }


def save_seconds(cfg: Config, nodes: int, gpus_per_node: int, fs_write_gbps: float = FS_WRITE_GBPS) -> float:
    """Estimated seconds to write one checkpoint of ``cfg``'s layout (tensor parallel and ZeRO
    stage from ``cfg.parallel``) on ``nodes`` x ``gpus_per_node`` GPUs, when every node writes at
    ``fs_write_gbps`` GB/s: the busiest node's bytes over that rate."""
    return checkpoint_bytes(cfg, nodes, gpus_per_node)["per_node"] / (fs_write_gbps * 1e9)


def signal_lead_seconds(cfg: Config, nodes: int, gpus_per_node: int, fs_write_gbps: float = FS_WRITE_GBPS) -> int:
    """Seconds between Slurm's pre-emption signal and the kill that leave time to finish the
    step and save: 2 x ``save_seconds`` + 60, at least 120. Use as ``--signal=USR1@<this>``."""
    lead = 2 * save_seconds(cfg, nodes, gpus_per_node, fs_write_gbps) + 60
    return max(MIN_SIGNAL_LEAD, math.ceil(lead))


# -- layouts ----------------------------------------------------------------------------------


def global_batch(cfg: Config, world: int) -> int:
    """The configured global batch (sequences per optimizer step)."""
    if cfg.train.global_batch_size:
        return cfg.train.global_batch_size
    dp = cfg.parallel.data_parallel or world // cfg.parallel.tensor_parallel
    return cfg.batch_layout(dp)[2]


def layout(cfg: Config, tp: int, dp: int, zero: int, micro: int, accum: int, checkpointing: bool) -> Config:
    """A copy of ``cfg`` with another parallel layout (same global batch)."""
    variant = copy.deepcopy(cfg)
    variant.parallel.tensor_parallel, variant.parallel.data_parallel = tp, dp
    variant.parallel.zero_stage = zero
    variant.train.micro_batch_size, variant.train.grad_accum = micro, accum
    variant.train.global_batch_size = micro * accum * dp
    variant.model.activation_checkpointing = checkpointing
    return variant


def candidates(cfg: Config, cluster: Cluster, micro_batches: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[Config]:
    """Every layout of the search space that reaches the configured global batch exactly."""
    m, glob = cfg.model, global_batch(cfg, cluster.world)
    out = []
    for tp in (1, 2, 4, 8):
        if cluster.gpus_per_node % tp or m.num_heads % tp or m.intermediate_size % tp:
            continue
        dp = cluster.world // tp
        for zero in (1, 2, 3):
            for micro in micro_batches:
                if glob % (micro * dp):
                    continue
                for checkpointing in (False, True):
                    out.append(layout(cfg, tp, dp, zero, micro, glob // (micro * dp), checkpointing))
    return out


def _dp_seconds(volume: float, tp: int, cluster: Cluster) -> float:
    """Seconds for a data-parallel collective in which each GPU sends ``volume`` bytes."""
    if cluster.world // tp <= 1:
        return 0.0
    intra = volume / (cluster.nvlink_gbps * 1e9)
    if cluster.nodes == 1:
        return intra
    return max(intra, tp * volume / (cluster.ib_gbps * 1e9))


def timing(cfg: Config, cluster: Cluster) -> dict[str, float]:
    """Seconds per optimizer step of ``cfg``'s layout: compute, exposed communication, total."""
    m, p, t = cfg.model, cfg.parallel, cfg.train
    tp, zero, N = p.tensor_parallel, p.zero_stage, cluster.world // p.tensor_parallel
    s, b, h, L, V = cfg.data.seq_len, t.micro_batch_size, m.hidden_size, m.num_layers, m.padded_vocab_size
    accum = cfg.batch_layout(N)[1]
    ckpt = m.activation_checkpointing
    layer_params = L * (4 * h * h + 2 * h * m.intermediate_size + 9 * h + m.intermediate_size)
    layers = (6 * layer_params + 12 * L * s * h) * (4 / 3 if ckpt else 1)
    flops_micro = b * s * (layers / tp + 6 * V * h)  # executed on one GPU per micro-batch
    compute_micro = flops_micro / (cluster.gpu.peak_tflops * 1e12 * cluster.mfu)
    backward_micro = compute_micro * (3 / 4 if ckpt else 2 / 3)

    act = 2 if t.precision != "fp32" else 4
    tp_comm = 0.0
    if tp > 1:
        all_reduces = L * (4 + (2 if ckpt else 0))
        tp_comm = accum * all_reduces * 2 * (tp - 1) / tp * s * b * h * act / (cluster.nvlink_gbps * 1e9)

    P = params_per_gpu(cfg)
    w, comm = DTYPE_BYTES[t.precision], reduction_bytes(cfg)
    all_reduce = _dp_seconds(2 * (N - 1) / N * P * comm, tp, cluster)
    gather = _dp_seconds((N - 1) / N * P * w, tp, cluster)
    last_bucket = min(1.0, p.reduce_bucket_size / P)  # share of the gradients in the last bucket
    if zero == 3:
        reduce_scatter = _dp_seconds((N - 1) / N * P * comm, tp, cluster)
        per_micro = 2 * gather + reduce_scatter
        hidden = min(cluster.zero3_overlap * per_micro, compute_micro)
        dp_comm = accum * (per_micro - hidden + last_bucket * reduce_scatter)
    elif zero == 2:
        dp_comm = accum * max(all_reduce - backward_micro, last_bucket * all_reduce) + gather
    else:
        dp_comm = all_reduce + gather
    compute = accum * compute_micro
    step = compute + tp_comm + dp_comm
    return {"compute_seconds": compute, "tp_comm_seconds": tp_comm, "dp_comm_seconds": dp_comm,
            "step_seconds": step}


def evaluate(cfg: Config, cluster: Cluster) -> dict[str, Any]:
    """Memory, time, throughput and checkpoint figures of ``cfg``'s layout on ``cluster``."""
    p = cfg.parallel
    dp = cluster.world // p.tensor_parallel
    micro, accum, glob = cfg.batch_layout(dp)
    mem = estimate(cfg, dp, cluster.context_gib)
    usable = cluster.memory_gib * (1 - cluster.margin)
    times = timing(cfg, cluster)
    tokens_step = glob * cfg.data.seq_len
    tokens_per_s = tokens_step / times["step_seconds"]
    model_tflops = cfg.model.flops_per_token(cfg.data.seq_len) * tokens_per_s / cluster.world / 1e12
    ckpt = checkpoint_bytes(cfg, cluster.nodes, cluster.gpus_per_node)
    saving = save_seconds(cfg, cluster.nodes, cluster.gpus_per_node, cluster.fs_write_gbps)
    row: dict[str, Any] = {
        "tensor_parallel": p.tensor_parallel,
        "data_parallel": dp,
        "zero_stage": p.zero_stage,
        "micro_batch_size": micro,
        "grad_accum": accum,
        "activation_checkpointing": cfg.model.activation_checkpointing,
        "deepspeed_optimizer": deepspeed_optimizer(cfg),
        "params_per_gpu": int(mem.pop("params_per_gpu")),
        **{k: round(v, 3) for k, v in mem.items()},
        "fits": mem["total_gib"] <= usable,
        "headroom_gib": round(usable - mem["total_gib"], 3),
        **{k: round(v, 4) for k, v in times.items()},
        "tokens_per_s": round(tokens_per_s),
        "model_tflops_per_gpu": round(model_tflops, 1),
        "mfu": round(model_tflops / cluster.gpu.peak_tflops, 4),
        "checkpoint_gb": round(ckpt["total"] / 1e9, 2),
        "checkpoint_gb_per_node": round(ckpt["per_node"] / 1e9, 2),
        "checkpoint_gb_per_rank": round(ckpt["per_rank"] / 1e9, 3),
        "save_seconds": round(saving, 1),
        "signal_lead_seconds": signal_lead_seconds(cfg, cluster.nodes, cluster.gpus_per_node,
                                                   cluster.fs_write_gbps),
    }
    return row


def _key(row: dict[str, Any]) -> tuple:
    return (not row["fits"], round(row["step_seconds"], 6), -row["micro_batch_size"], row["total_gib"],
            row["tensor_parallel"], row["zero_stage"])


def _same(row: dict[str, Any], cfg: Config, dp: int) -> bool:
    micro, accum, _ = cfg.batch_layout(dp)
    return (row["tensor_parallel"], row["zero_stage"], row["micro_batch_size"], row["grad_accum"],
            row["activation_checkpointing"]) == (cfg.parallel.tensor_parallel, cfg.parallel.zero_stage, micro,
                                                 accum, cfg.model.activation_checkpointing)


def plan(cfg: Config, cluster: Cluster, tokens: int | None = None,
         micro_batches: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict[str, Any]:
    """Every candidate layout, ranked (fitting ones first, fastest first), the recommendation
    (the fastest that fits, or None) and the configured layout's own row and rank."""
    glob = global_batch(cfg, cluster.world)
    tokens = tokens or cfg.train.train_steps * glob * cfg.data.seq_len
    rows = sorted((evaluate(c, cluster) for c in candidates(cfg, cluster, micro_batches)), key=_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        row["days"] = round(tokens / row["tokens_per_s"] / 86400, 2)
    recommended = rows[0] if rows and rows[0]["fits"] else None
    # ZeRO-3 is experimental in koneox (parallel.zero_stage): also name the best layout without it.
    stable = next((r for r in rows if r["fits"] and r["zero_stage"] < 3), None)
    configured = None
    if cluster.world % cfg.parallel.tensor_parallel == 0:
        try:
            configured = next((r for r in rows if _same(r, cfg, cluster.world // cfg.parallel.tensor_parallel)), None)
        except ConfigError:  # its batch arithmetic does not work on this many GPUs
            configured = None
    return {
        "config": cfg.name,
        "model": cfg.model.name,
        "parameters": cfg.model.num_parameters(),
        "nodes": cluster.nodes,
        "gpus_per_node": cluster.gpus_per_node,
        "gpu": cluster.gpu.device_name,
        "gpu_memory_gib": cluster.memory_gib,
        "usable_gib": round(cluster.memory_gib * (1 - cluster.margin), 2),
        "peak_tflops": cluster.gpu.peak_tflops,
        "assumed_mfu": cluster.mfu,
        "nvlink_gbps": cluster.nvlink_gbps,
        "ib_gbps": cluster.ib_gbps,
        "fs_write_gbps": cluster.fs_write_gbps,
        "global_batch_size": glob,
        "seq_len": cfg.data.seq_len,
        "tokens": tokens,
        "layouts": rows,
        "recommended": recommended,
        "recommended_zero12": stable,
        "configured": configured,
        "signal": f"--signal=USR1@{recommended['signal_lead_seconds']}" if recommended else None,
    }


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML file, or a name in configs/ (e.g. 12.8b.yaml)")
    parser.add_argument("--nodes", type=int, required=True, help="number of nodes")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="a100-80g", help="accelerator (default a100-80g)")
    parser.add_argument("--gpu-memory", type=float, default=None,
                        help="usable memory per GPU in GiB (default: the --gpu's)")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="share of GPU memory kept free for fragmentation and what the estimate misses "
                             "(default 0.1)")
    parser.add_argument("--context-gib", type=float, default=CONTEXT_GIB,
                        help=f"CUDA context + NCCL buffers per GPU, GiB (default {CONTEXT_GIB})")
    parser.add_argument("--mfu", type=float, default=0.4,
                        help="fraction of peak FLOP/s reached on executed FLOPs (default 0.4)")
    parser.add_argument("--nvlink-gbps", type=float, default=None,
                        help="effective intra-node GB/s per GPU per direction (default: the --gpu's)")
    parser.add_argument("--ib-gbps", type=float, default=None,
                        help="effective inter-node GB/s per node (default: the --gpu's)")
    parser.add_argument("--zero3-overlap", type=float, default=0.5,
                        help="share of ZeRO-3's weight gathers and gradient reduce-scatters hidden behind "
                             "compute (default 0.5)")
    parser.add_argument("--fs-write-gbps", type=float, default=FS_WRITE_GBPS,
                        help=f"checkpoint write GB/s per node (default {FS_WRITE_GBPS})")
    parser.add_argument("--tokens", type=float, default=None,
                        help="tokens to train (default: train_steps x global batch x seq_len)")
    parser.add_argument("--micro-batches", default="1,2,4,8,16", help="micro batch sizes to try (default 1,2,4,8,16)")
    parser.add_argument("--top", type=int, default=15, help="rows in the table (0 = all; default 15)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.global_batch_size=512")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
        micro_batches = tuple(int(x) for x in args.micro_batches.split(",") if x.strip())
    except ConfigError as e:
        print(f"koneox plan: config error: {e}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"koneox plan: --micro-batches: expected comma-separated integers, got {args.micro_batches!r}",
              file=sys.stderr)
        return 2
    gpu = GPUS[args.gpu]
    cluster = Cluster(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, gpu=gpu,
        memory_gib=args.gpu_memory or gpu.memory_gib, nvlink_gbps=args.nvlink_gbps or gpu.nvlink_gbps,
        ib_gbps=args.ib_gbps or gpu.ib_gbps, mfu=args.mfu, margin=args.margin, context_gib=args.context_gib,
        fs_write_gbps=args.fs_write_gbps, zero3_overlap=args.zero3_overlap,
    )
    result = plan(cfg, cluster, int(args.tokens) if args.tokens else None, micro_batches)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result, args.top))
    return 0


COLUMNS = (
    ("#", "rank", "{}"), ("TP", "tensor_parallel", "{}"), ("DP", "data_parallel", "{}"), ("ZeRO", "zero_stage", "{}"),
    ("micro", "micro_batch_size", "{}"), ("accum", "grad_accum", "{}"),
    ("act.ckpt", "activation_checkpointing", "{}"), ("states", "model_states_gib", "{:.1f}"),
    ("z3w", "param_partition_gib", "{:.1f}"), ("fp32buf", "grad_accum_buffer_gib", "{:.1f}"), ("buckets", "grad_buckets_gib", "{:.1f}"),
    ("activ", "activations_gib", "{:.1f}"), ("logits", "logits_gib", "{:.1f}"), ("total", "total_gib", "{:.1f}"),
    ("fits", "fits", "{}"), ("step s", "step_seconds", "{:.2f}"), ("comm s", None, "{:.2f}"),
    ("tok/s", "tokens_per_s", "{:,}"), ("MFU", "mfu", "{:.1%}"), ("days", "days", "{:.1f}"),
    ("save s", "save_seconds", "{:.0f}"),
)


def _cell(row: dict[str, Any], key: str | None, fmt: str) -> str:
    if key is None:
        return fmt.format(row["tp_comm_seconds"] + row["dp_comm_seconds"])
    value = row[key]
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


def _describe(label: str, row: dict[str, Any]) -> list[str]:
    return [
        f"{label}: tensor_parallel {row['tensor_parallel']} x data_parallel {row['data_parallel']}, "
        f"ZeRO-{row['zero_stage']} ({row['deepspeed_optimizer']}), micro {row['micro_batch_size']} x accumulation "
        f"{row['grad_accum']}, activation checkpointing {'on' if row['activation_checkpointing'] else 'off'}: "
        f"{row['total_gib']:.1f} GiB, {row['step_seconds']:.2f} s/step, {row['tokens_per_s']:,} tokens/s, "
        f"{row['days']:.1f} days",
        f"  overrides: parallel.tensor_parallel={row['tensor_parallel']} parallel.data_parallel={row['data_parallel']} "
        f"parallel.zero_stage={row['zero_stage']} train.micro_batch_size={row['micro_batch_size']} "
        f"train.grad_accum={row['grad_accum']} "
        f"model.activation_checkpointing={str(row['activation_checkpointing']).lower()}",
    ]


def format_table(result: dict[str, Any], top: int = 15) -> str:
    """The human-readable report: assumptions, the best rows, the recommendation."""
    rows = result["layouts"]
    shown = rows if top <= 0 else rows[:top]
    configured = result["configured"]
    if configured is not None and configured not in shown:
        shown = [*shown, configured]
    table = [[title for title, _, _ in COLUMNS]]
    for row in shown:
        table.append([_cell(row, key, fmt) for _, key, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = [
        f"{result['config']}: {result['parameters']:,} parameters, global batch {result['global_batch_size']} x "
        f"{result['seq_len']} tokens, {result['tokens']:,} tokens to train",
        f"cluster: {result['nodes']} nodes x {result['gpus_per_node']} {result['gpu']} "
        f"({result['gpu_memory_gib']} GiB, {result['usable_gib']} usable; {result['peak_tflops']:.0f} TFLOP/s "
        f"x assumed {result['assumed_mfu']:.0%}); NVLink {result['nvlink_gbps']:.0f} GB/s per GPU, "
        f"InfiniBand {result['ib_gbps']:.0f} GB/s per node, checkpoint writes {result['fs_write_gbps']} GB/s per node",
        "memory in GiB per GPU: states = weights + gradients + optimizer as DeepSpeed's estimators count them; "
        "on top: z3w (ZeRO-3's 16-bit weight partition), fp32buf (fp32 gradients beyond DeepSpeed's count), "
        "buckets, activations, logits and the context",
        "",
    ]
    for i, line in enumerate(table):
        text = "  ".join(cell.rjust(widths[j]) for j, cell in enumerate(line))
        if i and configured is not None and shown[i - 1] is configured:
            text += "  <- config"
        lines.append(text)
    fitting = sum(r["fits"] for r in rows)
    lines.append(f"({len(rows)} layouts, {fitting} fit; showing {len(shown)})")
    rec = result["recommended"]
    if rec is None:
        lines.append("no layout fits: more nodes, a smaller micro batch list, or a GPU with more memory")
        return "\n".join(lines)
    lines += ["", *_describe("recommended", rec)]
    stable = result["recommended_zero12"]
    if stable is not None and stable is not rec:
        lines += _describe("without ZeRO-3 (experimental in koneox)", stable)
    lines.append(f"checkpoint: {rec['checkpoint_gb']:.0f} GB in all, {rec['checkpoint_gb_per_node']:.1f} GB from "
                 f"node 0, about {rec['save_seconds']:.0f} s to save -> sbatch {result['signal']}")
    if configured is None:
        lines.append("config: its layout is not among the candidates for this cluster")
    elif configured is rec:
        lines.append("config: follows the recommendation")
    else:
        lines.append(
            f"config: ranked #{configured['rank']}, {configured['step_seconds']:.2f} s/step "
            f"({configured['step_seconds'] / rec['step_seconds'] - 1:+.0%} vs recommended), "
            f"{configured['total_gib']:.1f} GiB{'' if configured['fits'] else ', does not fit'}; "
            f"its own save lead: --signal=USR1@{configured['signal_lead_seconds']}"
        )
    return "\n".join(lines)
