"""The DeepSpeed JSON config, generated from the typed config (never written by hand)."""

from __future__ import annotations

from train.config import Config
from train.parallel import autotp_config


def deepspeed_config(cfg: Config, dp_size: int) -> dict:
    """DeepSpeed settings for ``dp_size`` data-parallel ranks. The optimizer and LR schedule
    are built by the trainer (AdamW without decay on biases/norms, our schedule function) and
    handed to ``deepspeed.initialize``, so they are not repeated here."""
    t, p = cfg.train, cfg.parallel
    micro, accum, glob = cfg.batch_layout(dp_size)
    ds: dict = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {
            "stage": p.zero_stage,
            # Bucket sizes as in GPT-NeoX's large configs; overlap hides the reduce behind backward.
            "overlap_comm": p.zero_stage >= 2,
            "contiguous_gradients": True,
            "reduce_bucket_size": p.reduce_bucket_size,
            "allgather_bucket_size": p.allgather_bucket_size,
        },
        "steps_per_print": 1 << 30,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if t.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif t.precision == "fp16":
        # loss_scale 0 = dynamic: start at 2^16, halve on overflow (the step is skipped), grow
        # after 1000 clean steps.
        ds["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16,
                      "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
    if t.precision != "fp32":
        # DeepSpeed would accumulate micro-batch gradients and reduce them across data-parallel
        # ranks in the 16-bit model dtype (REFERENCE §5); Megatron and GPT-NeoX use fp32 for both.
        # bf16 + ZeRO-1 + fp32 accumulation selects DeepSpeed's BF16_Optimizer; ZeRO-2 keeps its
        # ZeRO optimizer with a separate fp32 gradient partition.
        ds["data_types"] = {"grad_accum_dtype": t.grad_accum_dtype}
        ds["communication_data_type"] = t.grad_reduce_dtype
    if p.tensor_parallel > 1:
        ds["tensor_parallel"] = autotp_config(p.tensor_parallel)
    else:
        # DeepSpeed checks train_batch_size against all ranks, not data-parallel ranks, so it is
        # only stated without tensor parallelism; our own check (Config.batch_layout) covers both.
        ds["train_batch_size"] = glob
    return ds
