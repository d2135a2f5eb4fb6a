"""Training behaviour that only matters at cluster scale, reproduced on CPU ranks (gloo):
a non-finite loss on one rank under ZeRO-2, fp32 gradient accumulation in bf16, compiled
checkpoints that export, launchers that do not set RANK, shared run directories, token
checks done once, pre-emption bookkeeping and honest step accounting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import REPO, VOCAB, free_port, launch, metrics, overrides

from train import checkpoint as ckpt
from train.config import TrainConfig
from train.distributed import LaunchError, expand_nodelist, resolve_environment
from train.schedule import lr_at

SCHEDULE = TrainConfig(train_steps=4, warmup_steps=2, lr=3e-3, min_lr=3e-4)
"""The LR schedule of overrides() with train_steps=4."""


def tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested checkpoint structure, by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}/{i}"))
    return out


def checkpoint_tensors(tag_dir: Path) -> dict[str, torch.Tensor]:
    """Weights, optimizer partitions and Adam moments of every rank's files in one checkpoint."""
    out = {}
    for f in sorted(tag_dir.glob("*.pt")):
        if f.name.startswith("rng_"):
            continue
        state = torch.load(f, map_location="cpu", weights_only=False)
        keep = {k: state[k] for k in ("module", "optimizer", "optimizer_state_dict", "lr_scheduler") if k in state}
        out.update(tensors(keep, f.name))
    return out


# -- 1 + 7: a non-finite loss on one rank only ----------------------------------------------------

NAN_LAYOUTS = {
    "zero1-dp2": {"parallel.zero_stage": 1},
    "zero2-dp2": {"parallel.zero_stage": 2},
    "zero1-tp2": {"parallel.zero_stage": 1, "parallel.tensor_parallel": 2},
    "zero2-tp2": {"parallel.zero_stage": 2, "parallel.tensor_parallel": 2},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NAN_LAYOUTS))
def test_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path, packed, name, monkeypatch):
    """bf16, small gradient buckets (many reductions per step), NaN on rank 1's second micro-batch
    of step 2: every rank skips step 2 together, the checkpoint after it equals the one before it
    in every tensor (weights, fp32 master partitions, Adam moments and step counts, scheduler),
    and the schedule continues from where it was (the LR of step 3 is that of the 2nd update)."""
    monkeypatch.setenv("KONEOX_INJECT_NONFINITE", "2:1:1")
    run = tmp_path / "run"
    launch(2, overrides(run, packed, **NAN_LAYOUTS[name], **{
        "train.precision": "bf16", "train.train_steps": 4, "train.save_interval": 1, "train.keep_last": 10,
        "parallel.reduce_bucket_size": 4096, "parallel.allgather_bucket_size": 4096}))
    rows = metrics(run)
    assert [rows[s]["skipped_steps"] for s in (1, 2, 3, 4)] == [0, 1, 1, 1]
    assert rows[2]["lr"] == 0.0
    assert rows[1]["lr"] == pytest.approx(lr_at(0, SCHEDULE))
    assert rows[3]["lr"] == pytest.approx(lr_at(1, SCHEDULE)) and rows[4]["lr"] == pytest.approx(lr_at(2, SCHEDULE))
    before = checkpoint_tensors(run / "checkpoints" / ckpt.tag_for(1))
    after = checkpoint_tensors(run / "checkpoints" / ckpt.tag_for(2))
    assert before.keys() == after.keys() and len(before) > 10
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    moved = checkpoint_tensors(run / "checkpoints" / ckpt.tag_for(3))
    assert any(not torch.equal(before[k], moved[k]) for k in before), "step 3 must update the weights"


# -- 2: fp32 gradient accumulation and reduction with bf16 ----------------------------------------


@pytest.mark.slow
def test_bf16_accumulates_in_fp32_and_tensor_parallel_matches_one_process(tmp_path, packed):
    bf16 = {"train.precision": "bf16", "train.train_steps": 4}
    single = launch(1, overrides(tmp_path / "single", packed, **bf16))
    assert "optimizer BF16_Optimizer: gradients accumulated in fp32, reduced in fp32" in single
    config = json.loads((tmp_path / "single" / "deepspeed_config.json").read_text())
    assert config["data_types"] == {"grad_accum_dtype": "fp32"} and config["communication_data_type"] == "fp32"
    tp = launch(2, overrides(tmp_path / "tp", packed, **bf16, **{"parallel.tensor_parallel": 2,
                                                                  "parallel.zero_stage": 2}))
    assert "optimizer DeepSpeedZeroOptimizer: gradients accumulated in fp32" in tp
    a, b = metrics(tmp_path / "single"), metrics(tmp_path / "tp")
    for step in a:
        # bf16 matmuls split over two ranks round differently (the tolerance is not a measured figure).
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-2), step
        assert a[step]["grad_norm"] == pytest.approx(b[step]["grad_norm"], rel=5e-2), step


def test_bf16_accumulation_is_a_switch(tmp_path, packed):
    from train.config import ConfigError, load_config
    from train.ds_config import deepspeed_config

    cfg = load_config("tiny.yaml", ["train.precision=bf16", "train.grad_accum_dtype=bf16",
                                    "train.grad_reduce_dtype=bf16"])
    ds = deepspeed_config(cfg, 1)
    assert ds["data_types"] == {"grad_accum_dtype": "bf16"} and ds["communication_data_type"] == "bf16"
    with pytest.raises(ConfigError, match="train.grad_accum_dtype: ZeRO stage 0 accumulates"):
        load_config("tiny.yaml", ["train.precision=bf16", "parallel.zero_stage=0"])


# -- 3: compiled training exports -----------------------------------------------------------------


@pytest.mark.slow
def test_compiled_training_checkpoint_exports_with_equal_logits(tmp_path, packed):
    from transformers import AutoModelForCausalLM

    from model import GPTNeoX, ModelConfig

    run = tmp_path / "run"
    launch(1, overrides(run, packed, **{"train.compile": "true", "train.train_steps": 2, "train.grad_accum": 1}))
    tag_dir = run / "checkpoints" / ckpt.tag_for(2)
    module = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    assert not [k for k in module if "_orig_mod" in k]
    out = tmp_path / "hf"
    res = subprocess.run([sys.executable, "-m", "launch.cli", "export", str(run), "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ours = GPTNeoX(ModelConfig(vocab_size=VOCAB, num_layers=2))
    ours.load_state_dict(module)
    ids = torch.from_numpy(np.arange(40).reshape(2, 20) * 37 % VOCAB)
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours.eval()(ids), atol=1e-5)


# -- 4: launchers that do not set RANK ------------------------------------------------------------


def test_nodelists_expand_like_scontrol():
    assert expand_nodelist("n[1-2]") == ["n1", "n2"]
    assert expand_nodelist("gpu[001-003,007],login1") == ["gpu001", "gpu002", "gpu003", "gpu007", "login1"]
    assert expand_nodelist("a,b") == ["a", "b"]


def test_launcher_environments_are_translated_or_refused(monkeypatch):
    slurm = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_JOB_ID": "4242"}
    env = dict(slurm)
    assert "Slurm with 4 processes" in resolve_environment(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("1", "4", "1", "gpu07")
    assert env["MASTER_PORT"] == str(20000 + 4242 % 20000)
    # Inside an srun step, the step's task count wins over the job's.
    env = {**slurm, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}
    assert resolve_environment(env).startswith("single process")
    # A one-task batch job is a one-process run.
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert resolve_environment(env).startswith("single process") and env["WORLD_SIZE"] == "1"
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # not installed
    with pytest.raises(LaunchError, match="started by Open MPI with 8 processes.*MASTER_ADDR is not set"):
        resolve_environment({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8"})
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
           "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    resolve_environment(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("3", "8", "3")
    with pytest.raises(LaunchError, match="WORLD_SIZE=2 is set but RANK is not"):
        resolve_environment({"WORLD_SIZE": "2"})


@pytest.mark.slow
def test_two_processes_started_like_srun_form_one_world(tmp_path, packed):
    """Two plain `python launch/train.py` processes with Slurm's variables and no RANK train as
    one data-parallel world (before: two independent one-process runs in one directory)."""
    run = tmp_path / "run"
    args = overrides(run, packed, **{"train.train_steps": 2})
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", SLURM_PROCID=str(rank), SLURM_NTASKS="2",
                   SLURM_LOCALID=str(rank), SLURM_JOB_NODELIST="localhost", MASTER_PORT=port, SLURM_JOB_ID="7")
        procs.append(subprocess.Popen([sys.executable, "launch/train.py", "--config", "tiny.yaml", *args], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    assert "on 2 rank(s): tensor_parallel 1 x data_parallel 2" in outs[0]
    assert sorted(metrics(run)) == [1, 2]
    assert (run / "finished").read_text().strip() == "2"


# -- 5: shared run directory, one token scan, broadcast resume tag --------------------------------


def _shared_check_worker(rank: int, port: int, dirs: list[str], results) -> None:
    import torch.distributed as dist

    from train.distributed import check_shared_directory

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        check_shared_directory(Path(dirs[rank]))
        results.put((rank, "ok"))
    except LaunchError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def _run_shared_check(dirs: list[str]) -> dict[int, str]:
    ctx = torch.multiprocessing.get_context("fork")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_shared_check_worker, args=(r, port, dirs, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return dict(results.get(timeout=5) for _ in procs)


def test_run_directory_must_be_shared(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    assert _run_shared_check([str(shared), str(shared)]) == {0: "ok", 1: "ok"}
    local = [tmp_path / "node0", tmp_path / "node1"]
    for d in local:
        d.mkdir()
    verdict = _run_shared_check([str(d) for d in local])
    for rank in (0, 1):  # every rank fails, none hangs
        assert "the run directory is not shared between ranks" in verdict[rank]
    assert not list(shared.iterdir()) and not list(local[0].iterdir())  # the probe is removed


def test_token_ids_are_scanned_once_per_file_version(tmp_path, packed):
    import shutil

    from data.indexed import IndexedDatasetError, verify_token_ids

    for ext in (".bin", ".idx"):
        shutil.copy(packed + ext, tmp_path / f"d{ext}")
    prefix, stamp = str(tmp_path / "d"), tmp_path / "stamp.json"
    assert verify_token_ids([prefix], VOCAB, stamp=stamp) == 1
    assert verify_token_ids([prefix], VOCAB, stamp=stamp) == 0  # unchanged: not read again
    assert verify_token_ids([prefix], VOCAB + 1, stamp=stamp) == 1  # another vocabulary: scanned
    tokens = np.memmap(tmp_path / "d.bin", dtype=np.uint16, mode="r+")
    tokens[5] = VOCAB + 10
    tokens.flush()
    os.utime(tmp_path / "d.bin", ns=(0, 12345))
    with pytest.raises(IndexedDatasetError, match=f"d.bin: token id {VOCAB + 10} at token 5"):
        verify_token_ids([prefix], VOCAB, stamp=stamp)


# -- 5 + 6: pre-emption bookkeeping ---------------------------------------------------------------


@pytest.mark.slow
def test_stop_file_saves_and_exits_and_save_time_is_logged(tmp_path, packed):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stop").write_text("left over from an earlier job\n")  # must not stop this one
    args = overrides(run, packed, **{"train.train_steps": 100000, "train.warmup_steps": 10})
    proc = launch(2, args, wait=False)  # rank 0 sees the file, rank 1 must stop with it
    import time

    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    (run / "stop").touch()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert f"stopped by the file {run / 'stop'}" in out
    assert not (run / "stop").exists() and not (run / "finished").exists()
    step = ckpt.step_of(ckpt.latest_tag(run / "checkpoints"))
    assert step >= 2
    saves = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "save_seconds" in line]
    assert saves and saves[-1]["step"] == step and saves[-1]["save_seconds"] > 0 and saves[-1]["checkpoint_bytes"] > 0
    assert "collective timeout 60 min" in out
