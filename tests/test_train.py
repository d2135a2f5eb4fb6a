"""DeepSpeed training on CPU with real ranks (gloo): parity across layouts, exact resume, signals.

Every run trains a 2-layer GPT-NeoX on Korean movie reviews from the bundled sample, packed
with a small byte-level BPE trained in the fixture. Multi-rank runs go through the real
``deepspeed`` launcher, exactly as a user runs them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PACKED_VOCAB

from train import checkpoint as ckpt
from train.config import TrainConfig
from train.schedule import lr_at

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "nsmc_reviews.jsonl.gz"
VOCAB = PACKED_VOCAB  # the vocabulary of the packed fixture (conftest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(run_dir: Path, packed: str, **extra) -> list[str]:
    base = {
        "model.num_layers": 2, "model.vocab_size": VOCAB, "data.seq_len": 64, "data.train_paths": f"[{packed}]",
        "data.split": "[0.95, 0.05, 0.0]", "train.micro_batch_size": 2, "train.grad_accum": 4,
        "train.train_steps": 6, "train.warmup_steps": 2, "train.lr": 3e-3, "train.min_lr": 3e-4,
        "train.precision": "fp32", "train.log_interval": 1, "train.eval_interval": 0, "train.save_interval": 100,
        "logging.wandb.mode": "disabled", "train.run_dir": str(run_dir),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def launch(nproc: int, args: list[str], timeout: int = 600, wait: bool = True, config: str = "tiny.yaml"):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "launch/train.py", "--config", config, *args]
    else:
        port = free_port()
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
               "--master_port", str(port), "launch/train.py", "--config", config, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    if nproc > 1:  # DeepSpeed's CPU all-reduce buffers are unlinked once mapped (train.distributed)
        assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    return out


def metrics(run_dir: Path) -> dict[int, dict]:
    """Last record per step (a resumed run re-logs the steps after its checkpoint)."""
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            rows[rec["step"]] = rec
    return rows


def assert_same_curve(a: dict[int, dict], b: dict[int, dict], rel: float = 1e-5) -> None:
    """Per-step loss and gradient norm agree (fp32; measured differences are about 1e-7)."""
    assert sorted(a) == sorted(b) == list(range(1, len(a) + 1))
    for step in a:
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=rel), step
        assert a[step]["grad_norm"] == pytest.approx(b[step]["grad_norm"], rel=rel), step


@pytest.fixture(scope="module")
def single(tmp_path_factory, packed) -> dict[int, dict]:
    """Reference: one process, micro 2 x accumulation 4 = global batch 8."""
    run = tmp_path_factory.mktemp("single")
    launch(1, overrides(run, packed))
    return metrics(run)


def test_single_process_learns_and_logs_everything(single):
    first, last = single[1], single[6]
    assert math.isfinite(first["loss"]) and abs(first["loss"] - math.log(4096)) < 1.0
    assert last["loss"] < first["loss"]
    for key in ("lr", "grad_norm", "loss_scale", "tokens_per_s", "tflops_per_device", "consumed_tokens", "epoch"):
        assert key in last, key
    assert last["consumed_tokens"] == 6 * 8 * 64
    assert last["lr"] == pytest.approx(lr_at(5, TrainConfig(train_steps=6, warmup_steps=2, lr=3e-3, min_lr=3e-4)))


LAYOUTS = {"tp2": {"parallel.tensor_parallel": 2}, "dp2": {"parallel.zero_stage": 1}}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, packed) -> dict[str, tuple[Path, str]]:
    """6 uninterrupted steps on 2 ranks for each layout: (run dir, launcher output)."""
    runs = {}
    for name, layout in LAYOUTS.items():
        run = tmp_path_factory.mktemp(f"straight_{name}")
        runs[name] = (run, launch(2, overrides(run, packed, **layout)))
    return runs


@pytest.mark.slow
def test_tensor_parallel_matches_single_process(straight, single):
    run, out = straight["tp2"]
    assert "tensor_parallel 2 x data_parallel 1" in out
    assert_same_curve(metrics(run), single)


@pytest.mark.slow
def test_data_parallel_zero1_matches_single_process(tmp_path, packed, straight):
    """DP=2 with accumulation 4 reads the same 8 sequences per step as one process with accumulation 8."""
    launch(1, overrides(tmp_path, packed, **{"train.grad_accum": 8}))
    run, out = straight["dp2"]
    assert "tensor_parallel 1 x data_parallel 2" in out
    assert_same_curve(metrics(run), metrics(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_resume_is_exact(tmp_path, packed, straight, name):
    """6 steps straight == 3 steps, exit (as if pre-empted), rerun the same command for 3 more."""
    layout = LAYOUTS[name]
    resumed = tmp_path / "resumed"
    first = launch(2, overrides(resumed, packed, **layout, **{"train.exit_interval": 3}))
    assert "stopped by train.exit_interval at step 3" in first
    assert ckpt.latest_tag(resumed / "checkpoints") == "step00000003"
    second = launch(2, overrides(resumed, packed, **layout))
    assert "resumed from" in second and "at step 3" in second
    assert_same_curve(metrics(resumed), metrics(straight[name][0]), rel=1e-7)


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path, packed):
    run = tmp_path / "run"
    args = overrides(run, packed, **{"train.train_steps": 100000, "train.warmup_steps": 10})
    proc = launch(1, args, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by signal" in out
    tag = ckpt.latest_tag(run / "checkpoints")
    stopped_at = ckpt.step_of(tag)
    assert stopped_at >= 1
    meta = ckpt.read_meta(run / "checkpoints" / tag)
    assert meta["state"]["step"] == stopped_at and meta["data"]
    out = launch(1, [*args[:-1], f"train.run_dir={run}", f"train.train_steps={stopped_at + 2}"])
    assert f"at step {stopped_at}" in out
    assert max(metrics(run)) == stopped_at + 2


def test_retention_keeps_last_k_and_every_mth(tmp_path, packed):
    run = tmp_path / "run"
    launch(1, overrides(run, packed, **{"train.train_steps": 8, "train.save_interval": 1, "train.keep_last": 2,
                                        "train.keep_every": 4}))
    tags = sorted(p.name for p in (run / "checkpoints").glob("step*"))
    assert tags == ["step00000004", "step00000007", "step00000008"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step00000008"
    assert (run / "config.yaml").is_file() and (run / "deepspeed_config.json").is_file()


def test_zero0_with_tensor_parallel_is_refused_before_any_rank_starts(tmp_path, packed):
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    res = subprocess.run([sys.executable, "launch/train.py", "--config", "tiny.yaml",
                          *overrides(tmp_path, packed, **{"parallel.tensor_parallel": 2, "parallel.zero_stage": 0})],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "parallel.zero_stage: ZeRO stage 0 with tensor_parallel > 1 is refused" in res.stderr


def test_dry_run_12_8b_on_cpu_allocates_nothing():
    res = subprocess.run([sys.executable, "launch/train.py", "--config", "12.8b.yaml", "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    out = res.stdout
    assert "12,893,603,840 parameters" in out
    assert "256 GPUs = tensor_parallel 8 x data_parallel 32" in out
    assert '"autotp_size": 8' in out and '"gradient_accumulation_steps": 2' in out
    assert "memory per GPU (estimate, GiB)" in out


def first_batch_loss(packed: str, model_dir: Path) -> float:
    """Loss of a Hugging Face directory on the first training micro-batch of the test layout."""
    import torch
    import torch.nn.functional as F

    from data.config import DataConfig
    from data.dataset import build_datasets
    from data.loader import DataLoader
    from model import GPTNeoX

    data = DataConfig(seq_len=64, train_paths=[packed], split=[0.95, 0.05, 0.0])
    tokens = next(DataLoader(build_datasets(data, vocab_size=VOCAB)["train"], micro_batch_size=2,
                             dp_rank=0, dp_size=1)).tokens
    with torch.no_grad():
        logits = GPTNeoX.from_pretrained(str(model_dir))(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).item()


def test_continued_pretraining_starts_from_the_given_weights(tmp_path, packed):
    from model import GPTNeoX, ModelConfig

    hf_dir = tmp_path / "base"
    GPTNeoX(ModelConfig(vocab_size=VOCAB, hidden_size=96, num_layers=3, num_heads=4, intermediate_size=384,
                        rotary_pct=0.25, init_seed=5)).save_pretrained(hf_dir)
    run = tmp_path / "run"
    args = [a for a in overrides(run, packed, **{"train.grad_accum": 1, "train.train_steps": 2})
            if not a.startswith(("model.num_layers", "model.vocab_size"))]
    launch(1, [*args, f"model.init_from={hf_dir}"])
    resolved = (run / "config.yaml").read_text()
    assert "hidden_size: 96" in resolved and "num_layers: 3" in resolved and "rotary_pct: 0.25" in resolved
    assert metrics(run)[1]["loss"] == pytest.approx(first_batch_loss(packed, hf_dir), rel=1e-5)

    refused = subprocess.run([sys.executable, "launch/train.py", "--config", "tiny.yaml", *args,
                              f"model.init_from={hf_dir}", "model.hidden_size=128"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "model.hidden_size: the config sets 128, but model.init_from" in refused.stderr


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, packed):
    """A NaN weight makes every loss NaN: each step is skipped (counted), and after
    max_nonfinite_steps in a row the run stops with a checkpoint and a message."""
    from safetensors.torch import load_file, save_file

    from model import GPTNeoX, ModelConfig

    hf_dir = tmp_path / "broken"
    GPTNeoX(ModelConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4,
                        intermediate_size=256)).save_pretrained(hf_dir)
    weights = load_file(hf_dir / "model.safetensors")
    weights["gpt_neox.final_layer_norm.bias"][0] = float("nan")
    save_file(weights, hf_dir / "model.safetensors", metadata={"format": "pt"})
    run = tmp_path / "run"
    args = [a for a in overrides(run, packed, **{"train.grad_accum": 1, "train.max_nonfinite_steps": 3})
            if not a.startswith(("model.num_layers", "model.vocab_size"))]
    proc = launch(1, [*args, f"model.init_from={hf_dir}"], wait=False)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "3 consecutive steps had a non-finite loss" in out
    rows = metrics(run)
    assert rows[3]["skipped_steps"] == 3 and math.isnan(rows[3]["loss"])
    assert ckpt.latest_tag(run / "checkpoints") == "step00000003"


def test_tiny_model_validation_loss_falls_well_below_uniform(tmp_path, packed):
    """The shipped tiny config (full 30,080-row vocabulary) starts near ln(30080) = 10.3 on
    held-out reviews and must fall well below it within 60 steps."""
    run = tmp_path / "run"
    launch(1, ["data.seq_len=128", f"data.train_paths=[{packed}]", "data.split=[0.9, 0.1, 0.0]",
               "train.train_steps=60", "train.warmup_steps=10", "train.eval_interval=30", "train.eval_iters=4",
               "train.log_interval=1", "train.save_interval=1000", "logging.wandb.mode=disabled",
               f"train.run_dir={run}"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    train_losses = [r["loss"] for r in records if "loss" in r]
    assert abs(train_losses[0] - math.log(30080)) < 0.6
    assert len(val) == 2 and val[-1] < math.log(30080) - 2.0 and val[-1] < val[0]
    assert "validation loss" in (run / "train.log").read_text()
