"""Build this rank's tensor-parallel shard of the model without ever holding the whole model.

Every rank used to build the full model and let DeepSpeed AutoTP cut it down inside
``deepspeed.initialize`` (12.8B in bf16: 26 GB of host RAM per rank, 8 ranks a node). Now::

    1. GPTNeoX on the meta device                                   shapes only, no memory
    2. DeepSpeed's AutoTP on that meta model, with the partition
       config deepspeed.initialize gets (train/parallel.py): its    still meta, now with the
       own TP layer classes, shard shapes and checkpoint metadata    shard shapes
    3. model.init.materialize: per parameter, in order, the full
       tensor (seeded init, or read from model.init_from), this      shard + one full tensor
       rank's block copied out, the rest dropped                     at a time
    4. marked as partitioned (``ds_autotp_parsed``, as AutoTP
       marks it), so deepspeed.initialize keeps these shards         nothing new
       instead of slicing again

The values are those of the single-process initialisation bit for bit: every rank draws the
same full tensors from the same seeded generator in the same order (the price: each rank draws
all of them, single-threaded, about 40 M values/s on one CPU core). Parameter names, shapes,
layer classes and DeepSpeed's per-parameter metadata are what AutoTP gives a full model, so
checkpoints, ``check_sharded`` and export see no difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from model import GPTNeoX, ModelConfig
from model.init import init_values, materialize
from train.parallel import autotp_config


def tensor_parallel_group(tp_size: int) -> tuple[dist.ProcessGroup, int]:
    """(group, rank in it): DeepSpeed's tensor-parallel group, created as deepspeed.initialize
    creates it (``groups._init_tp_mesh_device``, which does nothing when called again). AutoTP in
    training mode always uses this global group, so the model and the engine agree on ranks."""
    from deepspeed.utils import groups

    groups._init_tp_mesh_device(tensor_model_parallel_size=tp_size)
    return groups.get_tensor_model_parallel_group(), groups.get_tensor_model_parallel_rank()


def apply_autotp(model: GPTNeoX, tp_size: int, tp_group: dist.ProcessGroup) -> Any:
    """Replace the TP linears with DeepSpeed's TP layers, exactly as
    ``DeepSpeedEngine._apply_autotp_partitioning`` does with a partition config (deepspeed
    0.19.x); returns the AutoTP object. On a meta model no data moves: the layers only get their
    shard shapes. On a materialised model each weight is sliced and the rest freed, which is what
    deepspeed.initialize did to the full model before (benchmarks/init_memory.py measures both)."""
    from deepspeed.module_inject.auto_tp import AutoTP
    from deepspeed.module_inject.layers import set_autotp_mode
    from deepspeed.runtime.tensor_parallel.config import TPTrainingConfig

    tp_config = TPTrainingConfig(**autotp_config(tp_size))
    # Training mode makes the TP layers trainable (deepspeed.initialize sets it too).
    set_autotp_mode(training=True)
    autotp = AutoTP(module=model, all_reduce_linears=(), prefix="", state_dict=None,
                    linear_layer_setting=(torch.nn.Linear, torch.nn.Embedding), orig_layer_impl=None,
                    keep_module_on_host=tp_config.keep_module_on_host,
                    partition_config=tp_config.get_partition_config_object(),
                    vocab_parallel_lm_head=tp_config.vocab_parallel_lm_head is True, model_config=model.config,
                    tp_grain_size=tp_config.tensor_parallel.tp_grain_size, training_mode=True)
    autotp.set_tensor_parallel_config(tp_size, tp_group)
    autotp.update_linear_policies()
    autotp._replace_module(model)
    return autotp


def _finish_autotp(model: GPTNeoX, autotp: Any) -> None:
    """What the engine does after AutoTP (``finalize_autotp``), on the materialised parameters."""
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO
    from deepspeed.module_inject.layers import collect_autotp_universal_checkpoint_info

    autotp.register_replicated_grad_hooks(model)
    setattr(model, UNIVERSAL_CHECKPOINT_INFO, collect_autotp_universal_checkpoint_info(model))
    model.ds_autotp_parsed = True


def build_shard(
    cfg: ModelConfig,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    tp_size: int = 1,
    source: Iterable[tuple[str, Any]] | None = None,
) -> GPTNeoX:
    """This rank's shard of the model, in ``dtype`` on ``device``, ready for deepspeed.initialize:
    the whole model when ``tp_size`` is 1, else the block of each tensor-parallel weight that
    AutoTP gives this rank (torch.distributed must be initialised; the TP group is DeepSpeed's).
    Values from ``source`` (see model/init.py); default: the weights of ``cfg.init_from`` when
    set, else the seeded initialisation."""
    with torch.device("meta"):
        model = GPTNeoX(cfg)
    autotp, tp_rank = None, 0
    if tp_size > 1:
        tp_group, tp_rank = tensor_parallel_group(tp_size)
        autotp = apply_autotp(model, tp_size, tp_group)
    if source is None:
        if cfg.init_from:
            from model.hf_io import open_weights

            source = open_weights(cfg.init_from, [name for name, _ in model.named_parameters()])
        else:
            source = init_values(cfg)
    materialize(model, source, shard=tp_rank, dtype=dtype, device=device)
    if autotp is not None:
        _finish_autotp(model, autotp)
    return model
