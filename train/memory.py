"""Per-GPU memory estimate for a layout, computed from shapes alone (nothing is allocated).

Shared by ``launch/train.py --dry-run`` and ``koneox plan``. P is the parameter count one GPU
holds (tensor parallelism divides the attention and MLP weights; embeddings, output head and
LayerNorms stay replicated, REFERENCE §5), N the data-parallel size ZeRO partitions over.

Parameters that ``train.trainable`` freezes hold their weights only: gradients, optimizer state,
accumulation buffers and buckets below count the trainable T of the P (``trainable_per_gpu``;
T = P by default).

Model states, DeepSpeed's own accounting (``estimate_zero2_model_states_mem_needs`` /
``estimate_zero3_...`` in deepspeed 0.19.8, no offload), bytes per parameter with bf16/fp16::

    weights     2 (16-bit); ZeRO-3: none per parameter, but 4 x the largest layer (the gathered
                16-bit weights and gradients of one layer)
    gradients   2 (16-bit)                          /N with ZeRO-2 and 3
                + 4 (fp32 partition of the step)    /N
    optimizer   12 (fp32 master + Adam m and v)     /N with ZeRO-1, 2 and 3

so ZeRO-2 = 2P + 18P/N and ZeRO-3 = 4 x largest layer + 18P/N, exactly as DeepSpeed prints
(ZeRO-1 = 4P + 16P/N by the same bytes). fp32 training: 4 bytes of weights and of gradients, no
separate fp32 gradient partition, 12 of optimizer state under ZeRO (the master copy is kept).

What DeepSpeed really allocates on top (read in its source, deepspeed 0.19.8):

- ``param_partition``: ZeRO-3's own 16-bit partition of the weights, 2P/N, which DeepSpeed's
  ZeRO-3 estimator leaves out (its 18 bytes are the ZeRO-2 ones without the 16-bit weights).

- ``grad_accum_buffer``: fp32 gradients beyond the 4P/N above. bf16 + ZeRO-1 +
  ``grad_accum_dtype: fp32`` selects ``BF16_Optimizer`` (``engine._do_optimizer_sanity_check``),
  which keeps an unpartitioned fp32 gradient buffer of all P (``_setup_for_real_optimizer``:
  ``torch.zeros_like(bf16_groups_flat, dtype=grad_acc_dtype)``): 4P - 4P/N extra. fp16 + ZeRO-1 +
  fp32 accumulation keeps a full fp32 ``param.grad_accum`` per parameter in ``stage_1_and_2``
  (``_fill_param_grad_accum_attribute``): 4P. ZeRO-2 accumulates straight into the fp32 partition
  (``_build_compact_grad_partition_buffer``): nothing extra. ZeRO-3 with fp32 accumulation has its
  fp32 ``grad_partitions_flat_buffer`` and, in addition, an fp32 gradient buffer for the largest
  optimizer sub-group (``initialize_optimizer_states``): 4 x min(P/N, sub_group_size).
- ``grad_buckets``: ``stage_1_and_2.setup_buckets`` allocates ``reduce_bucket_size`` elements in
  the *model* dtype (the fp32 accumulation dtype for fp16 + ZeRO-1), twice with ``overlap_comm``
  (our ZeRO-2); each reduction then flattens the bucket (a copy) and casts it to
  ``communication_data_type`` (another copy) in ``allreduce_bucket``. ZeRO-3 allocates one bucket
  in the communication dtype (``_setup_for_real_optimizer``) and copies it for the
  reduce-scatter, plus a ``stage3_prefetch_bucket_size`` (5e7) of gathered 16-bit weights.
  ``BF16_Optimizer`` has no bucket of its own: the engine all-reduces its fp32 buffer in place
  (``buffered_allreduce_fallback``, 5e8 elements per call); only a cast to a 16-bit
  communication dtype, or flattening both parameter groups when P <= 5e8, copies it.
- ``context``: CUDA context, cuBLAS workspace and NCCL buffers, about 1.5 GiB per GPU (an option).

Activations (Korthikanti et al. 2022, tensor parallelism without sequence parallelism, flash
attention so no s^2 term), bytes per layer in 16-bit: ``s*b*h*(10 + 24/t)``; the 10*s*b*h part
(LayerNorm inputs and outputs, residual) is replicated over the tensor-parallel group, only the
24*s*b*h of attention and MLP internals is split. Measured on CPU for our layer (bf16, saved
tensors of one layer): 34.3*s*b*h plus its 2*s*b*h input, against 34 here at t = 1. With
activation checkpointing each layer keeps its 2*s*b*h input plus one layer's working set during
recompute. fp32 training doubles these. The output head is replicated, so the logits are not
divided by t: bf16 logits (2 bytes), their fp32 copy (4) and the log-softmax output (4) in the
forward, and in the backward the saved output, the incoming gradient and the result, 12 bytes per
logit (measured on CPU: 10.0 forward, 12.0 backward peak). The components are added: the logits'
backward peak and the recompute working set never coincide, so the total is slightly
conservative with checkpointing.
"""

from __future__ import annotations

from train.config import Config

GiB = 1 << 30
CONTEXT_GIB = 1.5
"""CUDA context + cuBLAS workspace + NCCL communicator buffers per GPU (typical A100/H100 figure)."""
ALLREDUCE_CHUNK = 500_000_000
"""deepspeed.runtime.engine.MEMORY_OPT_ALLREDUCE_SIZE: elements per BF16_Optimizer all-reduce call."""
STAGE3_PREFETCH = 50_000_000
"""DeepSpeed's default ``stage3_prefetch_bucket_size`` (elements); ds_config does not set it."""
STAGE3_SUB_GROUP = 1_000_000_000
"""DeepSpeed's default ``sub_group_size`` (elements of one ZeRO-3 optimizer sub-group)."""
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def sharded_parameters(cfg: Config) -> int:
    """Parameters split by tensor parallelism (whole model): QKV, attention dense, both MLP
    weights, and the biases of the column-split layers (train/parallel.py)."""
    m = cfg.model
    h, i = m.hidden_size, m.intermediate_size
    return m.num_layers * (4 * h * h + 2 * h * i + 3 * h + i)


def params_per_gpu(cfg: Config) -> int:
    """Parameters one GPU holds before ZeRO: the replicated ones plus 1/t of the split ones."""
    sharded = sharded_parameters(cfg)
    return cfg.model.num_parameters() - sharded + sharded // cfg.parallel.tensor_parallel


def trainable_per_gpu(cfg: Config) -> int:
    """The part of ``params_per_gpu`` that ``train.trainable`` selects: only those parameters have
    gradients and optimizer state (frozen ones are left out of the optimizer, train/trainer.py).
    Split weights count 1/t, as the tensor-parallel plan splits them (train/parallel.py)."""
    if "all" in cfg.train.trainable:
        return params_per_gpu(cfg)
    import torch

    from model import GPTNeoX
    from train.parallel import tp_kind
    from train.trainer import select_trainable

    with torch.device("meta"):
        sizes = {n: p.numel() for n, p in GPTNeoX(cfg.model).named_parameters()}
    tp = cfg.parallel.tensor_parallel
    return sum(sizes[n] // tp if tp_kind(n) != "replicated" else sizes[n]
               for n in select_trainable(list(sizes), cfg.train.trainable))


def largest_layer_parameters(cfg: Config) -> int:
    """Parameters of the largest module (its own, not its children's) on one tensor-parallel
    rank, as ``deepspeed.runtime.zero.stage3.model_to_params`` counts them for ZeRO-3."""
    m, t = cfg.model, cfg.parallel.tensor_parallel
    h, i, V = m.hidden_size, m.intermediate_size, m.padded_vocab_size
    return max(
        V * h,  # embed_in, embed_out (no bias)
        (3 * h * h + 3 * h) // t,  # query_key_value (column: weight and bias split)
        h * h // t + h,  # attention.dense (row: bias replicated)
        (h * i + i) // t,  # dense_h_to_4h
        i * h // t + h,  # dense_4h_to_h
    )


def accumulation_bytes(cfg: Config) -> int:
    """Bytes per gradient element accumulated over micro-batches (ds_config sets
    ``data_types.grad_accum_dtype`` only for bf16/fp16; fp32 training accumulates in fp32)."""
    return DTYPE_BYTES[cfg.train.grad_accum_dtype] if cfg.train.precision != "fp32" else 4


def reduction_bytes(cfg: Config) -> int:
    """Bytes per gradient element in the data-parallel reduction (``communication_data_type``,
    set by ds_config for bf16/fp16 only; DeepSpeed reduces fp32 models in fp32)."""
    return DTYPE_BYTES[cfg.train.grad_reduce_dtype] if cfg.train.precision != "fp32" else 4


def deepspeed_optimizer(cfg: Config) -> str:
    """The optimizer wrapper DeepSpeed picks (``engine._do_optimizer_sanity_check``)."""
    t, zero = cfg.train, cfg.parallel.zero_stage
    if zero == 0:
        return "FP16_Optimizer" if t.precision != "fp32" else "none"
    if t.precision == "bf16" and t.grad_accum_dtype == "fp32" and zero == 1:
        return "BF16_Optimizer"
    return "DeepSpeedZeroOptimizer_Stage3" if zero == 3 else "DeepSpeedZeroOptimizer"


def estimate(cfg: Config, dp_size: int, context_gib: float = CONTEXT_GIB) -> dict[str, float]:
    """Per-GPU memory of ``cfg``'s layout with ``dp_size`` data-parallel ranks, in GiB (and the
    parameter count per GPU). ``model_states_gib`` is DeepSpeed's accounting (weights +
    gradients + optimizer); ``total_gib`` adds the buffers, activations, logits and context."""
    m, p, t = cfg.model, cfg.parallel, cfg.train
    zero, tp, N = p.zero_stage, p.tensor_parallel, dp_size
    P = params_per_gpu(cfg)
    T = trainable_per_gpu(cfg)  # = P unless train.trainable freezes some: no gradient, no optimizer state
    mixed = t.precision != "fp32"
    w = DTYPE_BYTES[t.precision]
    accum, comm = accumulation_bytes(cfg), reduction_bytes(cfg)
    shard_g = N if zero >= 2 else 1
    shard_o = N if zero >= 1 else 1

    # ZeRO-3: DeepSpeed counts one gathered layer (its 16-bit weights and gradients) instead.
    weights = 2 * w * largest_layer_parameters(cfg) if zero >= 3 else P * w
    partition = P * w / N if zero >= 3 else 0
    grads = T * w / shard_g + (4 * T / shard_o if mixed else 0)
    optim = T * (12 if mixed or zero >= 1 else 8) / shard_o

    opt = deepspeed_optimizer(cfg)
    fp32_accum = mixed and accum == 4
    if opt == "BF16_Optimizer":
        accum_extra = 4 * T - 4 * T / N
    elif fp32_accum and zero == 1:
        accum_extra = 4 * T
    elif fp32_accum and zero == 3:
        accum_extra = 4 * min(T / N, STAGE3_SUB_GROUP)
    else:
        accum_extra = 0

    B = p.reduce_bucket_size
    if opt == "BF16_Optimizer":
        flattened = 4 * T if T <= ALLREDUCE_CHUNK else 0
        buckets = flattened + (T * comm if comm != 4 else 0)
    elif zero in (1, 2):
        bucket_bytes = accum if zero == 1 and accum != w else w  # use_grad_accum_attribute
        count = 2 if zero >= 2 else 1  # overlap_comm double buffer (ds_config: ZeRO >= 2)
        in_flight = min(B, T)  # flattened copy, and its cast to the communication dtype
        cast = in_flight * comm if comm != bucket_bytes else 0
        buckets = count * B * bucket_bytes + in_flight * bucket_bytes + cast
    elif zero == 3:
        buckets = B * comm + min(B, T) * comm + STAGE3_PREFETCH * w
    else:  # ZeRO-0: the engine flattens (and casts) gradients in 5e8-element chunks
        chunk = min(ALLREDUCE_CHUNK, T)
        buckets = chunk * w + (chunk * comm if comm != w else 0)

    b, s, h = t.micro_batch_size, cfg.data.seq_len, m.hidden_size
    act = 2 if mixed else 4
    sbh = s * b * h
    layer_working = sbh * (10 + 24 / tp) * act / 2
    if m.activation_checkpointing:
        activations = m.num_layers * sbh * act + layer_working
    else:
        activations = m.num_layers * layer_working
    logits = 12 * b * s * m.padded_vocab_size
    context = context_gib * GiB

    states = weights + grads + optim
    total = states + partition + accum_extra + buckets + activations + logits + context
    return {
        "params_per_gpu": float(P),
        "trainable_per_gpu": float(T),
        "weights_gib": weights / GiB,
        "gradients_gib": grads / GiB,
        "optimizer_gib": optim / GiB,
        "model_states_gib": states / GiB,
        "param_partition_gib": partition / GiB,
        "grad_accum_buffer_gib": accum_extra / GiB,
        "grad_buckets_gib": buckets / GiB,
        "activations_gib": activations / GiB,
        "logits_gib": logits / GiB,
        "context_gib": context / GiB,
        "total_gib": total / GiB,
    }
