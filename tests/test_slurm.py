"""`koneox slurm` and its sbatch script, run for real: a two-node Slurm cluster on this machine.

The cluster (tests/slurm_cluster.py) is two ``slurmd`` daemons, n1 and n2, under a private
``slurmctld``; every job is the script ``koneox slurm`` renders, submitted with ``sbatch`` as a
user would, training on CPU ranks (``--cpu``: DS_ACCELERATOR=cpu, gloo) one per node, the
2-layer GPT-NeoX of tests/test_train.py on the bundled Korean reviews. The pre-emption test sends
the batch shell the signal Slurm sends before a time limit and checks that the job saved,
requeued itself, resumed, and ended with the same per-step losses as an uninterrupted job.
If the cluster cannot start, the tests fail with the daemons' logs.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster
from test_train import VOCAB, metrics

from train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
STEPS = 16
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running two-node cluster; every daemon it started is stopped afterwards."""
    c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield c
    finally:
        c.stop()


def overrides(run_dir: Path, packed: str, **extra) -> list[str]:
    base = {
        "model.num_layers": 2, "model.vocab_size": VOCAB, "data.seq_len": 64, "data.train_paths": f"[{packed}]",
        "data.split": "[0.95, 0.05, 0.0]", "train.micro_batch_size": 2, "train.grad_accum": 4,
        "train.train_steps": STEPS, "train.warmup_steps": 2, "train.lr": 3e-3, "train.min_lr": 3e-4,
        "train.precision": "fp32", "train.log_interval": 1, "train.eval_interval": 0, "train.save_interval": 100,
        "logging.wandb.mode": "disabled", "train.run_dir": str(run_dir),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def koneox_slurm(*args: str) -> subprocess.CompletedProcess:
    """``koneox slurm ARGS`` in this process (the command is a thin wrapper over launch.slurm.run)."""
    from launch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["slurm", *args])
    return subprocess.CompletedProcess(["koneox", "slurm", *args], code, out.getvalue(), err.getvalue())


def render(out: Path, name: str, run_dir: Path, packed: str, *flags: str, **extra) -> Path:
    """``koneox slurm`` for two CPU nodes, one rank each."""
    res = koneox_slurm("--config", "tiny.yaml", "--nodes", "2", "--gpus-per-node", "1", "--cpu",
                       "--job-name", name, "--out", str(out), *flags, *overrides(run_dir, packed, **extra))
    assert res.returncode == 0, res.stderr
    return out


def submit(cluster: SlurmCluster, script: Path) -> int:
    # sbatch exports the environment (--export=ALL): the CPU accelerator and one thread per rank.
    env = {**cluster.env, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, f"sbatch failed: {res.stderr}\n{cluster.logs()}"
    return int(res.stdout.strip().split(";")[0])


def job_log(run_dir: Path, name: str, job: int) -> Path:
    return run_dir / "slurm" / f"{name}-{job}.out"


def diagnose(cluster: SlurmCluster, log: Path) -> str:
    text = log.read_text(errors="replace") if log.is_file() else f"(no job log {log})"
    return f"--- {log.name} (last 60 lines)\n" + "\n".join(text.splitlines()[-60:]) + "\n" + cluster.logs(20)


def wait_for_job(cluster: SlurmCluster, job: int, log: Path, timeout: float = 300) -> str:
    """Poll until the job has left the queue for good (a requeued job comes back PENDING);
    return its last state seen. Fails with the job's log and the daemons' logs on a timeout."""
    deadline, last = time.monotonic() + timeout, "PENDING"
    while time.monotonic() < deadline:
        state = cluster.job_state(job)
        if state is None:  # purged MinJobAge s after it ended
            return last
        last = state
        if state in FINAL:
            return state
        time.sleep(0.5)
    cluster.run("scancel", str(job), check=False)
    pytest.fail(f"job {job} still {last} after {timeout:.0f} s\n{diagnose(cluster, log)}")


def run_job(cluster: SlurmCluster, script: Path, run_dir: Path, name: str) -> tuple[int, str]:
    """Submit, wait, and check that it completed; (job id, its log)."""
    job = submit(cluster, script)
    log = job_log(run_dir, name, job)
    state = wait_for_job(cluster, job, log)
    assert state == "COMPLETED", f"job {job} ended {state}\n{diagnose(cluster, log)}"
    assert log.is_file(), f"no job log {log}\n{cluster.logs()}"
    return job, log.read_text(errors="replace")


# -- the script, without a cluster --------------------------------------------------------------


def test_12_8b_script_for_32_nodes(tmp_path):
    from train.config import load_config
    from train.plan import signal_lead_seconds

    res = koneox_slurm("--config", "12.8b.yaml", "--nodes", "32", "--partition", "gpu", "--time", "2-00:00:00",
                       "--account", "lm", f"train.run_dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    script = res.stdout
    lead = signal_lead_seconds(load_config("12.8b.yaml"), 32, 8)
    for line in ("--nodes=32", "--ntasks-per-node=1", "--gpus-per-node=8", f"--signal=B:USR1@{lead}", "--requeue",
                 "--open-mode=append", "--partition=gpu", "--time=2-00:00:00", "--account=lm",
                 "--job-name=polyglot-ko-12.8b", f"--output={tmp_path}/slurm/%x-%j.out"):
        assert f"#SBATCH {line}\n" in script, line
    assert "tensor_parallel 8 x data_parallel 32; batch 4 micro x 2 accumulation x 32 = 256 sequences" in script
    for var in ("NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_DEBUG", "CUDA_DEVICE_MAX_CONNECTIONS", "OMP_NUM_THREADS"):
        assert re.search(rf'^: "\$\{{{var}:=[^}}]*\}}"  # ', script, re.M), var  # overridable, commented
    assert "DS_ACCELERATOR" not in script
    assert "--no_ssh" in script and '--node_rank "$SLURM_NODEID"' in script
    assert f"TRAIN=(launch/train.py --config 12.8b.yaml train.run_dir={tmp_path})" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "16"], "parallel.data_parallel: expects 32 data-parallel ranks, but 128 ranks / tensor_parallel "
                        "8 give 16 (layout: 16 node(s) x 8 rank(s) = 128 ranks)"),
    (["--nodes", "64", "--gpus-per-node", "4"], "12.8b.yaml: parallel.tensor_parallel: 8 does not divide "
                                                  "--gpus-per-node 4, so tensor-parallel groups would span nodes"),
    (["--nodes", "1", "--gpus-per-node", "2", "parallel.tensor_parallel=4", "parallel.data_parallel=0"],
     "command line: parallel.tensor_parallel: 4 does not divide --gpus-per-node 2"),
    (["--nodes", "32", "train.global_batch_size=100", "train.grad_accum=0"],
     "train.global_batch_size: 100 is not a multiple of micro_batch_size 4 x data-parallel size 32"),
    (["--nodes", "32", "--time", "1"], "--time 1: the stop request comes"),
])
def test_layout_is_checked_before_anything_is_submitted(args, message):
    res = koneox_slurm("--config", "12.8b.yaml", *args)
    assert res.returncode == 2 and res.stdout == ""
    assert message in res.stderr


def test_parse_slurm_time():
    from launch.slurm import slurm_seconds

    assert [slurm_seconds(t) for t in ("30", "30:15", "2:00:00", "1-0", "1-2:30", "1-02:30:05")] == [
        1800, 1815, 7200, 86400, 95400, 95405]
    with pytest.raises(ValueError):
        slurm_seconds("2h")


# -- real jobs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(cluster, packed, tmp_path_factory) -> tuple[Path, str]:
    """STEPS steps, data parallel 2 across n1 and n2, never stopped: (run dir, job log)."""
    tmp = tmp_path_factory.mktemp("dp2")
    run = tmp / "run"
    _, log = run_job(cluster, render(tmp / "dp2.sbatch", "dp2", run, packed), run, "dp2")
    return run, log


def test_data_parallel_job_trains_logs_and_checkpoints(uninterrupted):
    run, log = uninterrupted
    assert "on n[1-2]" in log and "master n1:" in log
    assert "--node_rank=0" in log and "--node_rank=1" in log  # one DeepSpeed launcher per node
    assert "tensor_parallel 1 x data_parallel 2" in log
    assert f"training finished at step {STEPS}" in log
    rows = metrics(run)
    assert sorted(rows) == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows.values())
    assert rows[STEPS]["loss"] < rows[1]["loss"] - 0.5
    assert rows[STEPS]["consumed_tokens"] == STEPS * 16 * 64
    assert ckpt.latest_tag(run / "checkpoints") == f"step{STEPS:08d}"
    assert (run / "finished").read_text().strip() == str(STEPS)
    assert any((run / "slurm").glob("hostfile.*"))


def test_tensor_parallel_job_across_two_nodes(cluster, packed, tmp_path):
    run = tmp_path / "run"
    script = render(tmp_path / "tp2.sbatch", "tp2", run, packed, "--allow-cross-node-tp",
                    **{"parallel.tensor_parallel": 2, "train.train_steps": 3})
    _, log = run_job(cluster, script, run, "tp2")
    assert "tensor_parallel 2 x data_parallel 1" in log
    assert sorted(metrics(run)) == [1, 2, 3]
    tag = ckpt.latest_tag(run / "checkpoints")
    assert tag == "step00000003"
    shards = sorted(p.name for p in (run / "checkpoints" / tag).glob("mp_rank_*"))
    assert [s[:10] for s in shards] == ["mp_rank_00", "mp_rank_01"], shards


def test_cancelled_job_is_not_requeued(cluster, packed, tmp_path):
    """scancel sends TERM to the batch shell too; the script must not undo the cancel by requeueing."""
    run = tmp_path / "run"
    job = submit(cluster, render(tmp_path / "cancel.sbatch", "cancel", run, packed))
    log = job_log(run, "cancel", job)
    deadline = time.monotonic() + 60
    while not (log.is_file() and "master n1:" in log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"job {job} did not start\n{diagnose(cluster, log)}"
        time.sleep(0.2)
    cluster.run("scancel", str(job))
    assert wait_for_job(cluster, job, log, timeout=90) == "CANCELLED"
    text = log.read_text(errors="replace")
    assert "got SIGTERM" in text and "not requeued here" in text, diagnose(cluster, log)
    assert "(start 2)" not in text


def test_preempted_job_saves_requeues_and_matches_an_uninterrupted_one(cluster, packed, tmp_path, uninterrupted):
    """USR1 to the batch shell (what --signal=B:USR1@LEAD sends before the time limit): the
    trainer saves and exits, the job requeues itself, resumes from the checkpoint and ends with
    the per-step losses and gradient norms of the uninterrupted job."""
    run = tmp_path / "run"
    job = submit(cluster, render(tmp_path / "preempt.sbatch", "preempt", run, packed))
    log = job_log(run, "preempt", job)
    deadline = time.monotonic() + 240
    while not ((run / "metrics.jsonl").is_file() and metrics(run)):
        if time.monotonic() > deadline or cluster.job_state(job) in (*FINAL, None):
            cluster.run("scancel", str(job), check=False)
            pytest.fail(f"job {job} logged no training step\n{diagnose(cluster, log)}")
        time.sleep(0.2)
    cluster.run("scancel", "--batch", "--signal=USR1", str(job))
    state = wait_for_job(cluster, job, log)
    text = log.read_text(errors="replace")
    assert state == "COMPLETED", f"job {job} ended {state}\n{diagnose(cluster, log)}"
    assert "got SIGUSR1" in text, diagnose(cluster, log)
    stopped = re.search(r"stopped by .* at step (\d+)", text)
    assert stopped, diagnose(cluster, log)
    step = int(stopped.group(1))
    assert 1 <= step < STEPS
    assert f"requeueing job {job}" in text and f"job {job} (start 2)" in text
    assert f"at step {step}" in text.split("(start 2)", 1)[1]  # "resumed from ... at step N"
    assert f"training finished at step {STEPS}" in text
    assert (run / "checkpoints" / f"step{step:08d}").is_dir()
    assert ckpt.latest_tag(run / "checkpoints") == f"step{STEPS:08d}"
    assert not (run / "stop").exists()
    a, b = metrics(run), metrics(uninterrupted[0])
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for s in a:
        assert a[s]["loss"] == pytest.approx(b[s]["loss"], rel=1e-6), s
        assert a[s]["grad_norm"] == pytest.approx(b[s]["grad_norm"], rel=1e-6), s
    print(f"pre-empted at step {step}; per-step max relative difference vs uninterrupted: loss "
          f"{max(abs(a[s]['loss'] / b[s]['loss'] - 1) for s in a):.2e}, grad_norm "
          f"{max(abs(a[s]['grad_norm'] / b[s]['grad_norm'] - 1) for s in a):.2e}")
