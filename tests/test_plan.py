"""``koneox plan``: model states equal DeepSpeed's own estimators, the layouts keep the global
batch, step time and checkpoint figures match the arithmetic written out here."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from launch.cli import main as koneox
from model import GPTNeoX
from train.config import load_config
from train.memory import GiB, estimate
from train.plan import GPUS, Cluster, checkpoint_bytes, plan, save_seconds, signal_lead_seconds, timing

SIZES = ("1.3b", "3.8b", "5.8b", "12.8b")


def cluster(nodes: int, gpus_per_node: int = 8, gpu: str = "a100-80g", **kw) -> Cluster:
    g = GPUS[gpu]
    return Cluster(nodes=nodes, gpus_per_node=gpus_per_node, gpu=g, memory_gib=g.memory_gib,
                   nvlink_gbps=g.nvlink_gbps, ib_gbps=g.ib_gbps, **kw)


def _deepspeed_printed(capsys, fn, **kwargs) -> float:
    """Run one of DeepSpeed's ``*_all_cold`` estimators and read its no-offload per-GPU figure."""
    capsys.readouterr()
    fn(**kwargs)
    out = capsys.readouterr().out
    # Rows read "  per CPU | per GPU | options"; the one without any cpu offload is wanted.
    line = next(ln for ln in out.splitlines() if "GB |" in ln and "cpu" not in ln.split("|")[2])
    return float(line.split("|")[1].strip().removesuffix("GB"))


@pytest.mark.parametrize("size", SIZES)
def test_tp1_model_states_equal_deepspeeds_estimators(size, capsys):
    """REQUIRED: with TP = 1 the planner's ``model_states_gib`` is DeepSpeed's own estimate
    (ZeRO-2: 2P + 18P/N; ZeRO-3: 4 x largest layer + 18P/N; no offload), on the 32 x 8 cluster
    of the shipped configs and on 4 x 8."""
    from deepspeed.runtime.zero.stage3 import (
        estimate_zero3_model_states_mem_needs,
        estimate_zero3_model_states_mem_needs_all_cold,
    )
    from deepspeed.runtime.zero.stage_1_and_2 import (
        estimate_zero2_model_states_mem_needs,
        estimate_zero2_model_states_mem_needs_all_cold,
    )

    cfg = load_config(f"{size}.yaml")
    total = cfg.model.num_parameters()
    with torch.device("meta"):  # DeepSpeed's model_to_params, without its data_ptr de-duplication
        model = GPTNeoX(cfg.model)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    for nodes in (32, 4):
        result = plan(cfg, cluster(nodes))
        rows = {r["zero_stage"]: r for r in result["layouts"] if r["tensor_parallel"] == 1}
        args = dict(total_params=total, num_gpus_per_node=8, num_nodes=nodes)
        exact2 = estimate_zero2_model_states_mem_needs(**args, cpu_offload=False)[1]
        exact3 = estimate_zero3_model_states_mem_needs(**args, largest_layer_params=largest, cpu_offload=False,
                                                       cpu_offload_params=False)[1]
        printed2 = _deepspeed_printed(capsys, estimate_zero2_model_states_mem_needs_all_cold, **args)
        printed3 = _deepspeed_printed(capsys, estimate_zero3_model_states_mem_needs_all_cold,
                                      largest_layer_params=largest, **args)
        assert rows[2]["model_states_gib"] == pytest.approx(exact2 / GiB, abs=5e-4)
        assert rows[3]["model_states_gib"] == pytest.approx(exact3 / GiB, abs=5e-4)
        assert round(rows[2]["model_states_gib"], 2) == pytest.approx(printed2, abs=0.0051)
        assert round(rows[3]["model_states_gib"], 2) == pytest.approx(printed3, abs=0.0051)
        # Unrounded, to the byte (DeepSpeed truncates 18P/N to an integer).
        one = load_config(f"{size}.yaml", ["parallel.tensor_parallel=1", "parallel.zero_stage=2",
                                           f"parallel.data_parallel={nodes * 8}", "train.grad_accum=0",
                                           "train.micro_batch_size=1", "train.global_batch_size=0"])
        assert abs(estimate(one, nodes * 8)["model_states_gib"] * GiB - exact2) < 1
        # The extras are reported apart and counted in the total.
        row = rows[2]
        extras = sum(row[k] for k in ("param_partition_gib", "grad_accum_buffer_gib", "grad_buckets_gib",
                                      "activations_gib", "logits_gib", "context_gib"))
        assert row["total_gib"] == pytest.approx(row["model_states_gib"] + extras, abs=0.01)


def test_reference_figure_12_8b_zero2_on_4_x_8_gpus():
    row = next(r for r in plan(load_config("12.8b.yaml"), cluster(4))["layouts"]
               if r["tensor_parallel"] == 1 and r["zero_stage"] == 2)
    assert round(row["model_states_gib"], 2) == 30.77  # REFERENCE §5


def test_layouts_keep_the_global_batch_and_divide_heads_and_nodes():
    cfg = load_config("3.8b.yaml", ["model.num_heads=12"])  # TP 8 does not divide 12 heads
    result = plan(cfg, cluster(32))
    seen = set()
    for r in result["layouts"]:
        assert r["micro_batch_size"] * r["grad_accum"] * r["data_parallel"] == 1024
        assert r["tensor_parallel"] * r["data_parallel"] == 256
        seen.add(r["tensor_parallel"])
    assert seen == {1, 2, 4}
    ranked = [r["rank"] for r in result["layouts"]]
    assert ranked == sorted(ranked)
    fitting = [r for r in result["layouts"] if r["fits"]]
    assert result["recommended"] is fitting[0]
    assert all(result["recommended"]["step_seconds"] <= r["step_seconds"] + 1e-9 for r in fitting)
    assert result["configured"]["tensor_parallel"] == 2 and result["configured"]["micro_batch_size"] == 8
    assert {r["tensor_parallel"] for r in plan(cfg, cluster(64, gpus_per_node=4))["layouts"]} == {1, 2, 4}
    assert {r["tensor_parallel"] for r in plan(cfg, cluster(128, gpus_per_node=2))["layouts"]} == {1, 2}


def test_nothing_fits_on_a_tiny_gpu():
    result = plan(load_config("12.8b.yaml"), dataclasses.replace(cluster(1), memory_gib=4.0))
    assert result["recommended"] is None and result["signal"] is None
    assert not any(r["fits"] for r in result["layouts"])


def test_step_time_by_hand():
    # h = 64, L = 2, i = 256, V = 128, s = 16, micro 2; TP 2 on 2 nodes x 2 GPUs: DP 2, accum 2.
    cfg = load_config(None, ["model.vocab_size=128", "model.hidden_size=64", "model.num_layers=2",
                             "model.num_heads=4", "model.intermediate_size=256", "data.seq_len=16",
                             "train.micro_batch_size=2", "train.global_batch_size=8", "train.precision=bf16",
                             "parallel.tensor_parallel=2", "parallel.zero_stage=1"])
    c = cluster(2, gpus_per_node=2, mfu=0.5)  # A100: 312 TFLOP/s, NVLink 300 GB/s, IB 100 GB/s per node
    t = timing(cfg, c)
    layer_params = 2 * (4 * 64 * 64 + 2 * 64 * 256 + 9 * 64 + 256)  # 99,968
    per_token = (6 * layer_params + 12 * 2 * 16 * 64) / 2 + 6 * 128 * 64  # layers / TP + replicated head
    assert t["compute_seconds"] == pytest.approx(2 * 2 * 16 * per_token / (312e12 * 0.5))
    # TP: 2 layers x 4 all-reduces x 2 micro-batches, each 2(t-1)/t x s*b*h*2 bytes over NVLink.
    assert t["tp_comm_seconds"] == pytest.approx(2 * 4 * 2 * 1 * (16 * 2 * 64 * 2) / 300e9)
    # DP (BF16_Optimizer): one fp32 all-reduce of P = 66,880 per step and the bf16 all-gather after
    # the step; the node's InfiniBand carries both TP ranks' groups: x t / (100 GB/s).
    P = 66_880
    assert t["dp_comm_seconds"] == pytest.approx(2 * (2 * 0.5 * P * 4) / 100e9 + 2 * (0.5 * P * 2) / 100e9)
    assert t["step_seconds"] == pytest.approx(t["compute_seconds"] + t["tp_comm_seconds"] + t["dp_comm_seconds"])


def test_checkpoint_size_save_time_and_signal_lead():
    cfg = load_config("12.8b.yaml")  # TP 8, ZeRO-1, bf16
    # Per TP rank: replicated 309,258,240 + 12,584,345,600 / 8 split = 1,882,301,440 parameters.
    P = 1_882_301_440
    one_node = checkpoint_bytes(cfg, nodes=1, gpus_per_node=8)  # DP 1: each rank holds all 12P
    assert one_node["per_node"] == 8 * 2 * P + 8 * 12 * P == 210_817_761_280
    assert save_seconds(cfg, 1, 8, fs_write_gbps=2.0) == pytest.approx(105.4088806)
    assert signal_lead_seconds(cfg, 1, 8, fs_write_gbps=2.0) == 271  # ceil(2 x 105.41 + 60)
    cluster_wide = checkpoint_bytes(cfg, nodes=32, gpus_per_node=8)  # DP 32
    assert cluster_wide["total"] == 8 * (2 * P + 32 * 12 * P / 32)
    assert cluster_wide["per_node"] == 8 * 2 * P + 8 * 12 * P / 32  # node 0 writes the modules
    assert signal_lead_seconds(cfg, 32, 8) == 120  # 2 x 17.9 + 60 < 120: the floor
    zero3 = load_config("12.8b.yaml", ["parallel.zero_stage=3"])
    assert checkpoint_bytes(zero3, 32, 8)["per_rank"] == 12 * P / 32  # no 16-bit module file


def test_cli_json(capsys):
    assert koneox(["plan", "--config", "5.8b.yaml", "--nodes", "32", "--gpu", "a100-80g", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    keys = {"tensor_parallel", "zero_stage", "micro_batch_size", "grad_accum", "activation_checkpointing",
            "model_states_gib", "activations_gib", "total_gib", "fits", "step_seconds", "tokens_per_s"}
    assert result["layouts"] and all(keys <= row.keys() for row in result["layouts"])
    assert result["recommended"] in result["layouts"]
    assert result["signal"].startswith("--signal=USR1@")


def test_cli_table_and_config_error(capsys):
    assert koneox(["plan", "--config", "1.3b.yaml", "--nodes", "2", "--gpu", "h100-80g", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "recommended: tensor_parallel" in out and "--signal=USR1@" in out
    assert koneox(["plan", "--config", "1.3b.yaml", "--nodes", "2", "train.nope=1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("size", SIZES)
def test_shipped_configs_name_the_planners_recommendation(size):
    """Each shipped config keeps Polyglot-Ko's layout and says so; the override line in its header
    must give exactly the layout the planner recommends for 32 x 8 A100-80G (so it cannot rot)."""
    from train.config import CONFIG_DIR

    header = (CONFIG_DIR / f"{size}.yaml").read_text().split("\nname:")[0].splitlines()
    line = header[header.index("# layout, which no GPU run has confirmed yet; to follow the planner, append:") + 1]
    followed = load_config(f"{size}.yaml", line.removeprefix("#").split())
    rec = plan(load_config(f"{size}.yaml"), cluster(32))["recommended"]
    assert (followed.parallel.tensor_parallel, followed.parallel.zero_stage, followed.train.micro_batch_size,
            followed.batch_layout(256 // followed.parallel.tensor_parallel)[1],
            followed.model.activation_checkpointing) == (
        rec["tensor_parallel"], rec["zero_stage"], rec["micro_batch_size"], rec["grad_accum"],
        rec["activation_checkpointing"])
