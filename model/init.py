"""Initial values one full tensor at a time, and filling a model built on the meta device.

A model built under ``torch.device("meta")`` holds shapes but no memory. ``materialize`` gives
each parameter its values from a *source*: an iterable of ``(name, full)`` pairs in parameter
order, where ``full[index]`` returns a tensor. Two sources exist:

    init_values(cfg)                     the seeded GPT-NeoX initialisation, drawn in fp32
    model.hf_io.open_weights(path, ...)  a Hugging Face directory; a safetensors slice reads
                                         only the indexed block from disk

A parameter may be a *shard* of the full tensor: its shape equals the full shape except in one
dimension, which is an integer fraction k of the full one. That dimension is cut into k equal
contiguous blocks, and shard ``s`` keeps block ``s``::

    full (12, 4), local (3, 4), shard 2  ->  rows 6:9
    full (4, 12), local (4, 6), shard 1  ->  columns 6:12
    full (12,),   local (12,)            ->  replicated: all of it

The caller gives a meta model whose parameters already have their shard shapes (tensor
parallelism is applied to the meta model from ``train/``). Only the current source tensor and
the shards that were kept are ever in memory: peak = the shard + the largest full tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from model.config import ModelConfig


def init_values(cfg: ModelConfig, seed: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """GPT-NeoX initialisation as full fp32 tensors, one per parameter in ``named_parameters``
    order, all drawn from one generator seeded with ``seed`` (default ``cfg.init_seed``): the
    values depend on neither device, dtype nor how the model is later split.

    'Small init' N(0, sqrt(2/(5h))) everywhere, and the two projections that write into the
    residual stream scaled by depth ('wang init', N(0, 2/(L*sqrt(h)))) so the residual's variance
    does not grow with the layer count. Biases are zero, LayerNorms identity."""
    from model.gpt_neox import GPTNeoX

    with torch.device("meta"):
        shapes = [(name, p.shape) for name, p in GPTNeoX(cfg).named_parameters()]
    gen = torch.Generator(device="cpu").manual_seed(cfg.init_seed if seed is None else seed)
    small = cfg.small_init_std
    wang = 2.0 / (cfg.num_layers * math.sqrt(cfg.hidden_size))
    # Each tensor is yielded without a local name, so the consumer holds the only reference and
    # it is freed as soon as the consumer drops it, before the next one is drawn.
    for name, shape in shapes:
        if name.endswith("bias"):
            yield name, torch.zeros(shape, dtype=torch.float32)
        elif "layernorm" in name or "layer_norm" in name:
            yield name, torch.ones(shape, dtype=torch.float32)
        else:
            std = wang if name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")) else small
            yield name, torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=gen)


def shard_index(full: tuple[int, ...], local: tuple[int, ...], shard: int, name: str = "") -> tuple[slice, ...]:
    """The index of shard ``shard``'s block in a tensor of shape ``full`` (module docstring)."""
    if len(full) != len(local):
        raise ValueError(f"{name}: local shape {local} and full shape {full} differ in rank")
    index = [slice(None)] * len(full)
    split = [d for d, (f, n) in enumerate(zip(full, local, strict=True)) if f != n]
    if not split:
        return tuple(index)
    d = split[0]
    if len(split) > 1 or local[d] == 0 or full[d] % local[d]:
        raise ValueError(f"{name}: local shape {local} is not an equal split of {full} along one dimension")
    if not 0 <= shard < full[d] // local[d]:
        raise ValueError(f"{name}: shard {shard} out of range for {full[d] // local[d]} blocks of {full}")
    index[d] = slice(shard * local[d], (shard + 1) * local[d])
    return tuple(index)


def _shape(full: Any) -> tuple[int, ...]:
    """Shape of a source value: a tensor, or a safetensors slice (``get_shape``)."""
    return tuple(full.shape) if isinstance(full, torch.Tensor) else tuple(full.get_shape())


@torch.no_grad()
def materialize(
    model: nn.Module,
    source: Iterable[tuple[str, Any]],
    shard: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Fill every meta parameter of ``model`` with its block of the source's full tensor, cast to
    ``dtype`` (default: the source tensor's) on ``device``; the cast rounds exactly as
    ``param.copy_(full)`` does. Each parameter is replaced by a new ``nn.Parameter`` that keeps the
    old one's attributes (``requires_grad``, and what a tensor-parallel wrapper attached to it),
    so build optimizers afterwards. Refuses names the model lacks, given twice, or left over."""
    pending = dict(model.named_parameters())
    for name, full in source:
        old = pending.pop(name, None)
        if old is None:
            raise ValueError(f"{name}: not a parameter still to fill (unknown, or given twice)")
        if old.device.type != "meta":
            raise ValueError(f"{name}: already materialised on {old.device}")
        block = full[shard_index(_shape(full), tuple(old.shape), shard, name)]
        value = torch.empty(old.shape, dtype=dtype or block.dtype, device=device).copy_(block)
        # Drop the block (a view, or a read from disk) and the full tensor before the next one.
        del block, full
        param = nn.Parameter(value, requires_grad=old.requires_grad)
        param.__dict__.update(old.__dict__)
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, param)
    if pending:
        missing = sorted(pending)
        raise ValueError(f"no values for {len(missing)} parameter(s): {missing[:5]}{' ...' if len(missing) > 5 else ''}")
