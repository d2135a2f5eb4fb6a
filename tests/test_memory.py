"""MFU accounting (FLOPs per token, GPU peaks) and the per-GPU memory estimate, against figures
worked out by hand here."""

from __future__ import annotations

import pytest
import torch

from model import GPTNeoX
from model.config import ModelConfig
from train.config import load_config
from train.memory import GiB, estimate, largest_layer_parameters, params_per_gpu, sharded_parameters
from train.metrics import peak_tflops
from train.parallel import COLUMN, ROW

# -- MFU ----------------------------------------------------------------------------------------


def test_flops_per_token_leaves_out_the_input_embedding():
    m = ModelConfig.from_name("1.3b")
    # N = 1,331,810,304; the input embedding V*h = 30,080 * 2,048 = 61,603,840 is a lookup.
    matmul_params = 1_331_810_304 - 61_603_840  # 1,270,206,464 (output head still in)
    attention = 12 * 24 * 2048 * 2048  # 12 * L * s * h = 1,207,959,552
    assert m.flops_per_token(2048) == 6 * matmul_params + attention == 8_829_198_336
    # The old count (all N) was 9,198,821,376: MFU read 4.2% high.
    assert (6 * 1_331_810_304 + attention) / m.flops_per_token(2048) == pytest.approx(1.0419, abs=1e-4)


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA H200 NVL", 835.0),
    ("nvidia h100 pcie", 756.0),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_peak_tflops_picks_the_most_specific_entry(name, peak):
    assert peak_tflops(name) == peak


# -- memory -------------------------------------------------------------------------------------

# A small shape: h = 64, L = 2, heads 4, i = 256, V = 128 (already a multiple of 128).
SMALL = ["model.vocab_size=128", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4",
         "model.intermediate_size=256", "data.seq_len=16", "train.micro_batch_size=2",
         "parallel.reduce_bucket_size=1000", "train.global_batch_size=0", "train.grad_accum=1"]
# Parameters: L*(4h^2 + 2hi + 9h + i) + 2Vh + 2h = 2*(16384 + 32768 + 576 + 256) + 16384 + 128
P_ALL = 116_480
# Split by TP: L*(4h^2 + 2hi + 3h + i) = 2*(16384 + 32768 + 192 + 256) = 99,200
P_SPLIT = 99_200


def small(*overrides: str):
    return load_config(None, [*SMALL, *overrides])


def test_parameter_split_matches_the_model_and_the_tp_plan():
    cfg = small("parallel.tensor_parallel=2")
    with torch.device("meta"):
        model = GPTNeoX(cfg.model)
    assert model.num_parameters() == cfg.model.num_parameters() == P_ALL
    split = sum(p.numel() for n, p in model.named_parameters()
                if any(f".{c}." in n for c in COLUMN) or any(n.endswith(f".{r}.weight") for r in ROW))
    assert split == sharded_parameters(cfg) == P_SPLIT
    assert params_per_gpu(cfg) == P_ALL - P_SPLIT + P_SPLIT // 2 == 66_880
    # The largest module's own parameters, counted as DeepSpeed's ZeRO-3 model_to_params does.
    own = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert largest_layer_parameters(small()) == own == 64 * 256 + 256  # dense_h_to_4h: 16,640


def test_bf16_zero1_fp32_accumulation_is_bf16_optimizer_with_a_full_fp32_buffer():
    cfg = small("train.precision=bf16", "parallel.tensor_parallel=2", "parallel.zero_stage=1")
    mem = estimate(cfg, dp_size=4, context_gib=0)
    P, N = 66_880, 4
    weights = 2 * P  # 133,760
    grads = 2 * P + 4 * P / N  # 16-bit grads + DeepSpeed's fp32 partition: 200,640
    optim = 12 * P / N  # 200,640
    fp32_buffer = 4 * P - 4 * P / N  # BF16_Optimizer keeps all P in fp32: 200,640 more
    buckets = 4 * P  # P <= 5e8: the engine flattens both parameter groups into one fp32 copy
    sbh = 16 * 2 * 64  # 2,048
    activations = 2 * sbh * (10 + 24 / 2)  # two layers x 22 sbh bytes = 90,112
    logits = 12 * 2 * 16 * 128  # 49,152
    assert mem["model_states_gib"] * GiB == pytest.approx(weights + grads + optim)
    assert mem["grad_accum_buffer_gib"] * GiB == pytest.approx(fp32_buffer)
    assert mem["grad_buckets_gib"] * GiB == pytest.approx(buckets)
    assert mem["activations_gib"] * GiB == pytest.approx(activations)
    assert mem["logits_gib"] * GiB == pytest.approx(logits)
    assert mem["total_gib"] * GiB == pytest.approx(1_142_464)


def test_bf16_zero2_with_checkpointing_matches_deepspeeds_2p_plus_18p_over_n():
    cfg = small("train.precision=bf16", "parallel.zero_stage=2", "model.activation_checkpointing=true")
    mem = estimate(cfg, dp_size=4, context_gib=1.5)
    P, N = P_ALL, 4
    assert mem["model_states_gib"] * GiB == pytest.approx(2 * P + 18 * P / N)  # 757,120
    assert mem["grad_accum_buffer_gib"] == 0  # fp32 accumulation goes straight into the partition
    # Two bf16 buckets of 1000 (overlap_comm), the flattened bf16 copy and its fp32 cast.
    assert mem["grad_buckets_gib"] * GiB == pytest.approx(2 * 1000 * 2 + 1000 * 2 + 1000 * 4)
    sbh = 16 * 2 * 64
    # Each layer keeps its 2 sbh-byte input; one layer's working set (34 sbh at t = 1) on top.
    assert mem["activations_gib"] * GiB == pytest.approx(2 * 2 * sbh + 34 * sbh)  # 77,824
    assert mem["context_gib"] == 1.5


def test_zero3_counts_the_gathered_layer_and_keeps_the_partition_apart():
    cfg = small("train.precision=bf16", "parallel.zero_stage=3", "train.grad_accum_dtype=bf16",
                "train.grad_reduce_dtype=bf16")
    mem = estimate(cfg, dp_size=4, context_gib=0)
    P, N, largest = P_ALL, 4, 16_640
    assert mem["model_states_gib"] * GiB == pytest.approx(4 * largest + 18 * P / N)  # 590,720
    assert mem["param_partition_gib"] * GiB == pytest.approx(2 * P / N)  # 58,240
    assert mem["grad_accum_buffer_gib"] == 0
    # One bf16 bucket of 1000, a copy of it for the reduce-scatter, and the 5e7-element prefetch
    # bucket of bf16 weights.
    assert mem["grad_buckets_gib"] * GiB == pytest.approx(1000 * 2 + 1000 * 2 + 50_000_000 * 2)


def test_fp32_training_has_no_separate_fp32_gradients_and_doubles_activations():
    cfg = small("train.precision=fp32", "parallel.zero_stage=1")
    mem = estimate(cfg, dp_size=2, context_gib=0)
    P, N = P_ALL, 2
    assert mem["model_states_gib"] * GiB == pytest.approx(4 * P + 4 * P + 12 * P / N)
    assert mem["grad_accum_buffer_gib"] == 0
    assert mem["grad_buckets_gib"] * GiB == pytest.approx(1000 * 4 + 1000 * 4)  # fp32 bucket + flattened copy
    assert mem["activations_gib"] * GiB == pytest.approx(2 * (16 * 2 * 64) * 34 * 2)  # 4-byte activations


def test_tensor_parallelism_divides_only_the_24_sbh_part_of_activations():
    one = estimate(small("parallel.tensor_parallel=1"), dp_size=1)["activations_gib"]
    four = estimate(small("parallel.tensor_parallel=4"), dp_size=1)["activations_gib"]
    assert four / one == pytest.approx((10 + 24 / 4) / (10 + 24))
    # The replicated output head: logits do not shrink with TP.
    assert estimate(small("parallel.tensor_parallel=4"), dp_size=1)["logits_gib"] == \
        estimate(small(), dp_size=1)["logits_gib"]


def test_frozen_parameters_hold_weights_but_no_gradients_or_optimizer_state():
    """train.trainable: the estimate (and the checkpoint size) count gradients and optimizer state
    for the trainable parameters only; weights and activations stay as they were."""
    from train.memory import trainable_per_gpu
    from train.plan import checkpoint_bytes

    layout = ("train.precision=bf16", "parallel.tensor_parallel=2", "parallel.zero_stage=2")
    full, frozen = small(*layout), small(*layout, "train.trainable=[embed_in, layers.0.mlp.dense_h_to_4h]")
    V, h, i = full.model.padded_vocab_size, full.model.hidden_size, full.model.intermediate_size
    T = V * h + (h * i + i) // 2  # embed_in replicated; the column-split MLP weight and bias halved
    assert trainable_per_gpu(full) == params_per_gpu(full) == 66_880 and trainable_per_gpu(frozen) == T
    a, b = estimate(full, dp_size=4, context_gib=0), estimate(frozen, dp_size=4, context_gib=0)
    P, N = 66_880, 4
    assert b["weights_gib"] == a["weights_gib"] and b["activations_gib"] == a["activations_gib"]
    assert a["model_states_gib"] * GiB == pytest.approx(2 * P + 18 * P / N)
    assert b["model_states_gib"] * GiB == pytest.approx(2 * P + 18 * T / N)
    assert b["trainable_per_gpu"] == T < a["trainable_per_gpu"] == P
    state = 12 * (P - T) / N  # the optimizer partition each rank no longer writes
    assert checkpoint_bytes(full, 1, 8)["per_rank"] - checkpoint_bytes(frozen, 1, 8)["per_rank"] == pytest.approx(state)
