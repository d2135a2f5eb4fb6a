"""The GPU acceptance run (benchmarks/gpu_acceptance.sh) in its CPU smoke mode, so that the script
a GPU day depends on cannot rot: every part runs through the real trainer on CPU ranks and its
report has the shape the GPU run writes. Also: the checks it makes do fail when they should."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.sh"
VARIANTS = ["ckpt-on_compile-off", "ckpt-off_compile-off", "ckpt-off_compile-on", "ckpt-on_compile-on"]


def load_acceptance():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_acceptance"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run_script(out: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--out", str(out), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHON": sys.executable})


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("acceptance") / "report.json"
    res = run_script(out, "--cpu-smoke")
    assert out.is_file(), res.stdout[-3000:] + res.stderr[-3000:]
    return res, json.loads(out.read_text())


@pytest.mark.slow
def test_cpu_smoke_passes_every_part(smoke):
    res, report = smoke
    assert res.returncode == 0, res.stdout[-4000:]
    assert report["mode"] == "cpu-smoke" and report["ok"] is True
    statuses = {p: report[p]["status"] for p in ("environment", "parity", "kernels", "training", "tensor_parallel")}
    assert set(statuses.values()) == {"pass"}, statuses
    # The human-readable summary closes the output.
    assert "koneox GPU acceptance (cpu-smoke)" in res.stdout and "OK in" in res.stdout


@pytest.mark.slow
def test_cpu_smoke_report_has_every_field_the_gpu_run_fills(smoke):
    from train.config import load_config
    from train.memory import estimate

    _, report = smoke
    env = report["environment"]
    for key in ("torch", "cuda", "deepspeed", "transformers", "gpu_count", "gpus", "python"):
        assert key in env, key
    assert env["gpu_count"] == 0 and env["deepspeed"] and env["transformers"]

    par = report["parity"]
    assert par["fp32"]["pass"] and par["fp32"]["max_rel_diff"] <= par["fp32"]["tolerance_rel"] == 1e-4
    assert par["bf16"]["pass"] and 0 < par["bf16"]["max_rel_diff"] <= par["bf16"]["tolerance_rel"]
    assert par["bf16"]["argmax_agreement"] > 0.9
    kernels = report["kernels"]
    assert kernels["sdpa_default_backends"] == ["flash"] and kernels["flash_forced"]["ok"]
    assert kernels["fused_adamw"]["ok"]

    training = report["training"]
    assert list(training["variants"]) == VARIANTS
    assert training["init_from"]  # the parity part's files, as on the GPU
    # Every key of the planner's dict, whatever it grows into.
    planned = set(estimate(load_config("tiny.yaml"), 1))
    for name, v in training["variants"].items():
        assert v["status"] == "pass", (name, v.get("reason"), v.get("log_tail"))
        assert v["compile"] == ("compile-on" in name) and v["activation_checkpointing"] == ("ckpt-on" in name)
        assert v["measured_steps"] >= 1
        assert v["measured_steps"] == v["steps_logged"] - v["warmup_steps_excluded"]
        assert v["tokens_per_s_per_gpu"] > 0 and v["tflops_per_gpu"] > 0 and v["mfu"] is None
        assert math.isfinite(v["loss_last"]) and v["losses_finite"]
        assert set(v["memory_estimate"]) == planned and v["memory_estimate"]["total_gib"] > 0
        assert any("tensor_parallel 1 x data_parallel 1" in line for line in v["banner"])

    tp = report["tensor_parallel"]
    assert tp["steps"] == [1, 2, 3] and tp["loss_max_rel_diff"] <= tp["tolerance_rel"] == 1e-5
    assert tp["grad_norm_max_rel_diff"] <= 1e-5
    assert any("tensor_parallel 2 x data_parallel 1" in line for line in tp["banner"])

    memory = report["memory"]
    assert memory["status"] == "skipped" and "no CUDA" in memory["reason"]
    assert set(memory["variants"]) == set(VARIANTS)
    assert all(set(v["estimate"]) == planned for v in memory["variants"].values())


def test_parity_fails_when_one_weight_is_wrong(tmp_path):
    """The same files, but one transformers weight flipped after loading: both checks must fail."""
    from model import ModelConfig

    acceptance = load_acceptance()
    result = acceptance.part_parity({
        "model": dataclasses.asdict(ModelConfig(num_layers=2)), "device": "cpu", "batch": 1, "seq_len": 32,
        "hf_dir": str(tmp_path / "hf"), "corrupt": True})
    assert result["status"] == "fail"
    assert not result["fp32"]["pass"] and not result["bf16"]["pass"]
    assert result["kernels"]["status"] == "pass"


def test_tensor_parallel_comparison_fails_on_a_diverging_step():
    acceptance = load_acceptance()
    single = [{"step": s, "loss": 10.0 - s, "grad_norm": 2.0} for s in (1, 2, 3)]
    same = [dict(r) for r in single]
    assert acceptance.compare_curves(single, same, rel=1e-5)["pass"]
    drift = [dict(r) for r in single]
    drift[2]["loss"] *= 1 + 1e-4
    out = acceptance.compare_curves(single, drift, rel=1e-5)
    assert not out["pass"] and out["loss_max_rel_diff"] == pytest.approx(1e-4, rel=1e-3)
    nan = [dict(r) for r in single]
    nan[0]["grad_norm"] = float("nan")
    assert not acceptance.compare_curves(single, nan, rel=1e-5)["pass"]
    assert not acceptance.compare_curves(single, single[:2], rel=1e-5)["pass"]


def test_throughput_leaves_out_the_warmup_steps():
    acceptance = load_acceptance()
    tokens = 4 * 2048
    rows = [{"step": 1, "loss": 10.4, "tokens_per_s": 100.0, "tflops_per_device": 1.0, "mfu": 0.01,
             "max_memory_gib": 30.0}]
    rows += [{"step": s, "loss": 10.0, "tokens_per_s": 8000.0 + s, "tflops_per_device": 70.0 + s, "mfu": 0.2,
              "max_memory_gib": 31.0} for s in (2, 3, 4)]
    rows.append({"step": 4, "save_seconds": 1.0, "checkpoint_bytes": 10})
    out = acceptance.throughput(rows, warmup=1, tokens_per_step=tokens, world_size=2)
    assert out["measured_steps"] == 3 and out["warmup_steps_excluded"] == 1
    assert out["tokens_per_s"] == 8003.0 and out["tokens_per_s_per_gpu"] == 4001.5
    assert out["tflops_per_gpu"] == 73.0 and out["mfu"] == 0.2 and out["max_memory_gib"] == 31.0
    assert out["first_step_s"] == pytest.approx(tokens / 100.0)


@pytest.mark.slow
def test_a_spent_budget_is_reported_not_ok(tmp_path):
    """With no time left after the environment, every other part is 'not_run' and the run fails."""
    out = tmp_path / "report.json"
    res = run_script(out, "--cpu-smoke", "--budget-s", "1", timeout=300)
    report = json.loads(out.read_text())
    assert res.returncode == 1 and report["ok"] is False
    assert report["environment"]["status"] == "pass"
    assert report["parity"]["status"] == "not_run" and report["tensor_parallel"]["status"] == "not_run"
    assert {v["status"] for v in report["training"]["variants"].values()} == {"not_run"}
    assert "NOT OK" in res.stdout
