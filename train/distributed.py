"""Process-group start-up for every launcher, and the collectives the trainer's start-up needs.

Who set up the processes decides where rank and world size come from:

    deepspeed / torchrun        RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    srun (Slurm)                SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST
    mpirun (Open MPI)           OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
    mpiexec (MPICH, Intel MPI)  PMI_RANK, PMI_SIZE (MPI_LOCALRANKID)
    MVAPICH                     MV2_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
    python launch/train.py      none of these: one process

A launcher's variables are turned into torch's; the master address comes from MASTER_ADDR,
else (Slurm) the first host of the job, else DeepSpeed's own MPI discovery (needs mpi4py).
Only when no launcher is present at all does the run become a one-process world: N processes
that each believed they were alone would all write the same run directory.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any


class LaunchError(RuntimeError):
    """The process environment does not say how many processes there are, or where rank 0 is."""


@dataclass(frozen=True)
class Launcher:
    name: str
    rank: str
    size: str
    local_rank: str


# In order of precedence: a Slurm job step running mpirun has both, and the MPI ranks are the real ones.
LAUNCHERS = (
    Launcher("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    Launcher("MVAPICH", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
    Launcher("MPICH/PMI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    Launcher("Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list ('gpu[01-03,07],login1') as names, without scontrol."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?", nodelist):
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo)
                continue
            width = len(lo)
            hosts += [f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1)]
    return hosts


def slurm_hosts(nodelist: str) -> list[str]:
    """Host names of a Slurm node list: ``scontrol show hostnames`` where it exists."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass
    return expand_nodelist(nodelist)


def detect_launcher(env: dict[str, str] | None = None) -> Launcher | None:
    """The launcher that started this process with more than one rank, or None."""
    env = os.environ if env is None else env
    for launcher in LAUNCHERS:
        if launcher.rank not in env or launcher.size not in env:
            continue
        if launcher.name == "Slurm" and "SLURM_STEP_NUM_TASKS" in env:
            # Inside an srun step its own task count is the world (the job may have more tasks).
            launcher = Launcher("Slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")
        try:
            size = int(env[launcher.size])
        except ValueError:
            raise LaunchError(f"{launcher.size}={env[launcher.size]!r} is not a number") from None
        # A one-task Slurm job (a batch script running `python launch/train.py`) is one process.
        return launcher if size > 1 or launcher.name != "Slurm" else None
    return None


def resolve_environment(env: dict[str, str] | None = None) -> str:
    """Fill RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in ``env`` (default: this
    process's) from whatever launcher started it. Returns how the world was found, for the log.
    Raises LaunchError when there are several processes but no way to find rank 0."""
    env = os.environ if env is None else env
    if "RANK" in env:
        missing = [k for k in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise LaunchError(f"RANK is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: "
                              "start through `deepspeed`, `torchrun` or srun, or set all of them")
        env.setdefault("LOCAL_RANK", "0")
        return "launcher environment (RANK/WORLD_SIZE)"
    if "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1:
        raise LaunchError(f"WORLD_SIZE={env['WORLD_SIZE']} is set but RANK is not: which process is this?")
    launcher = detect_launcher(env)
    if launcher is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        return "single process (no launcher)"
    rank, size = env[launcher.rank], env[launcher.size]
    local = env.get(launcher.local_rank, "0")
    master = env.get("MASTER_ADDR")
    if master is None and launcher.name == "Slurm":
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if nodelist:
            hosts = slurm_hosts(nodelist)
            master = hosts[0] if hosts else None
    if master is None:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise LaunchError(
                f"started by {launcher.name} with {size} processes ({launcher.rank}={rank}), but MASTER_ADDR is not "
                "set and mpi4py is not installed to discover it: export MASTER_ADDR (the host of rank 0) and "
                "MASTER_PORT to every process (e.g. mpirun -x MASTER_ADDR=... -x MASTER_PORT=...), or pip install "
                "mpi4py"
            ) from None
        return f"{launcher.name} with {size} processes (DeepSpeed MPI discovery)"
    port = env.get("MASTER_PORT")
    if port is None:
        # Every process of the job derives the same port from the job id; jobs on a node differ.
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        port = str(20000 + job % 20000)
    env.update(RANK=rank, WORLD_SIZE=size, LOCAL_RANK=local, MASTER_ADDR=master, MASTER_PORT=port)
    return f"{launcher.name} with {size} processes, master {master}:{port}"


def init_distributed(timeout_minutes: int = 60) -> tuple[int, int, int]:
    """(rank, world_size, local_rank), initialising torch.distributed through DeepSpeed with a
    collective timeout of ``timeout_minutes``."""
    import deepspeed
    import torch
    import torch.distributed as dist

    resolve_environment()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(minutes=timeout_minutes))
    # Also for callers that never reach their own shutdown (benchmarks, an exception): destroyed
    # at interpreter exit, gloo's worker threads abort the process (see shutdown_distributed).
    atexit.register(shutdown_distributed)
    release_shared_memory_names()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def shutdown_distributed() -> None:
    """Destroy every process group of this rank, if any (the end of a training run). A rank's
    own call; the others may have finished or failed already. Needed while the interpreter is
    still whole: a gloo group left to interpreter shutdown can abort a rank that finished its
    work ("terminate called without an active exception", exit code -6)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


SHM_DIR = Path("/dev/shm")
DS_SHM_PREFIX = "deepspeed_allreduce_buffer"


def ds_shm_name(rank: int) -> str:
    """The /dev/shm name of ``rank``'s buffer in DeepSpeed's CPU all-reduce (shm.cpp names it
    by user id, MASTER_ADDR, MASTER_PORT and rank)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return f"{DS_SHM_PREFIX}_{os.getuid()}_{addr}_{port}_{rank}"


def release_shared_memory_names() -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer name once every rank has mapped it.

    On the CPU accelerator DeepSpeed creates one 69 MB file per rank in /dev/shm and never
    unlinks it: every run, killed or not, left its buffers in RAM until reboot (150 files,
    10 GB, after a day of tests here). After a barrier every rank has mapped every peer's
    file (DeepSpeed opens them all while initialising), so the names can go; the memory is
    freed when the last process that maps it exits. Without such a file (GPU runs) this does
    nothing but the barrier."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if dist.get_world_size() > 1:
        dist.barrier()
    (SHM_DIR / ds_shm_name(dist.get_rank())).unlink(missing_ok=True)


# -- collectives used at start-up -------------------------------------------------------------


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (identity without a process group)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_shared_directory(path: Path) -> None:
    """Fail on every rank, naming the hosts, unless all ranks see the same ``path``.

    Checkpoint metadata, ``latest`` and pruning are written by global rank 0 only; a node that
    has its own copy of the run directory would miss them and resume differently (a hang at the
    first mismatched collective). Rank 0 writes a random token, every rank reads it back."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    rank = dist.get_rank()
    probe = path / f".shared-check-{os.environ.get('MASTER_PORT', '0')}"
    token = secrets.token_hex(16) if rank == 0 else None
    if rank == 0:
        probe.write_text(token)
    token = broadcast_object(token)
    dist.barrier()
    try:
        seen = probe.read_text()
    except OSError:
        seen = None
    verdicts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(verdicts, (socket.gethostname(), seen == token))
    dist.barrier()
    if rank == 0:
        probe.unlink(missing_ok=True)
    bad = sorted({host for host, ok in verdicts if not ok})
    if bad:
        raise LaunchError(
            f"{path}: the run directory is not shared between ranks: rank 0 ({verdicts[0][0]}) wrote a file "
            f"there that {', '.join(bad)} cannot read. Put train.run_dir on a filesystem every node mounts "
            "(checkpoints and `latest` are written by rank 0 only)"
        )
