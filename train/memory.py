"""Per-GPU memory estimate for a layout, computed from shapes alone (nothing is allocated).

Model states follow the ZeRO paper's accounting for mixed precision with Adam: 2 bytes of
bf16/fp16 weights and 2 of gradients per parameter, plus 12 bytes of fp32 master weights and
the two Adam moments; ZeRO-1 partitions the 12 over data-parallel ranks, ZeRO-2 also the
gradients, ZeRO-3 also the weights. Tensor parallelism divides the attention and MLP
weights; embeddings, output head and LayerNorms stay replicated (REFERENCE §5).
Activations are a rough bound (Korthikanti et al. 2022, flash attention so no T^2 term):
with checkpointing, each layer keeps only its input (2*B*T*h bytes) plus one layer's working
set during recompute; without, every layer keeps about 34*B*T*h/tp bytes. The logits and
the fp32 cross-entropy need about 10*B*T*V bytes.
"""

from __future__ import annotations

from train.config import Config

GiB = 1 << 30


def estimate(cfg: Config, dp_size: int) -> dict[str, float]:
    m, p, t = cfg.model, cfg.parallel, cfg.train
    tp, zero = p.tensor_parallel, p.zero_stage
    h, i, L, V = m.hidden_size, m.intermediate_size, m.num_layers, m.padded_vocab_size
    sharded = L * (4 * h * h + 2 * h * i + 3 * h + i)  # qkv + dense + mlp weights and split biases
    replicated = m.num_parameters() - sharded
    params_per_rank = replicated + sharded / tp
    mixed = t.precision != "fp32"
    w_bytes = 2 if mixed else 4
    weights = params_per_rank * w_bytes / (dp_size if zero >= 3 else 1)
    grads = params_per_rank * w_bytes / (dp_size if zero >= 2 else 1)
    optim = params_per_rank * (12 if mixed else 8) / (dp_size if zero >= 1 else 1)
    B, T = t.micro_batch_size, cfg.data.seq_len
    act_bytes = 2 if mixed else 4
    layer_working = 34 * B * T * h * act_bytes / 2 / tp
    if m.activation_checkpointing:
        activations = L * B * T * h * act_bytes + layer_working
    else:
        activations = L * layer_working
    logits = 10 * B * T * V
    total = weights + grads + optim + activations + logits
    return {
        "params_per_rank": params_per_rank,
        "weights_gib": weights / GiB,
        "grads_gib": grads / GiB,
        "optimizer_gib": optim / GiB,
        "activations_gib": activations / GiB,
        "logits_gib": logits / GiB,
        "total_gib": total / GiB,
    }
