"""A real two-node Slurm cluster on this machine, for tests (docs: ../shared/docs/SLURM.md).

    cluster = SlurmCluster(tmp_dir).start()    # munge, slurmctld, slurmd n1, slurmd n2
    subprocess.run(["sbatch", ...], env=cluster.env)
    cluster.stop()                             # every daemon it started, by pid

Debian's Slurm is built with multiple-slurmd, so two ``slurmd`` daemons with their own node
names and ports are two nodes to Slurm: jobs with ``--nodes=2`` get ``SLURM_NODEID`` 0 and 1,
and the master address taken from the node list (``n1``) resolves through a line this module
adds to /etc/hosts (and removes again). Everything else lives in the given directory: a private
``slurm.conf`` used through ``SLURM_CONF``, state, spool, pid and log files. Ports are picked
free, so two clusters (two test runs) can run side by side; no cgroups, no accounting, no
systemd. Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n1", "n2")
HOSTS = Path("/etc/hosts")
BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo",
            "scancel")


class ClusterError(RuntimeError):
    """The cluster could not start; the message carries the daemons' log lines."""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_alive(pid: int) -> bool:
    """Running and not a zombie (stopped daemons may linger as zombies in this sandbox)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class SlurmCluster:
    def __init__(self, root: Path, cpus_per_node: int = 2, memory_mb: int = 8000):
        self.root = Path(root)
        self.cpus, self.memory = cpus_per_node, memory_mb
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.host = socket.gethostname().split(".")[0]
        self._hosts_line = f"127.0.0.1 {' '.join(NODES)}  # koneox slurm test {os.getpid()} {self.root}"
        self._munged_pid: int | None = None  # set only when this cluster started munged
        self._started: list[Path] = []  # pid files of the slurm daemons this cluster started

    # -- start ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        """Start munge (unless it already works), slurmctld and two slurmd; wait until both nodes
        are idle. On any failure the daemons are stopped and ClusterError carries their logs."""
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise ClusterError(f"Slurm/munge binaries missing: {', '.join(missing)} (CI installs them in .ci/run: "
                               "apt-get install slurmctld slurmd slurm-client munge)")
        if os.geteuid() != 0:
            raise ClusterError("starting slurmd/slurmctld/munged needs root")
        try:
            self._start_munge()
            self._write_config()
            self._add_hosts_line()
            self._daemon(["slurmctld", "-c", "-f", str(self.conf)], self.root / "run" / "slurmctld.pid")
            for node in NODES:
                self._daemon(["slurmd", "-N", node, "-f", str(self.conf)], self.root / "run" / f"slurmd-{node}.pid")
            if not _wait(self._nodes_idle, timeout):
                raise ClusterError(f"nodes not idle after {timeout:.0f} s: {self._sinfo()!r}")
        except BaseException as e:
            logs = self.logs()
            self.stop()
            if isinstance(e, ClusterError):
                raise ClusterError(f"{e}\n{logs}") from None
            raise
        return self

    def _start_munge(self) -> None:
        if self._munge_works():
            return
        key = Path("/etc/munge/munge.key")
        if not key.is_file():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        res = subprocess.run(["runuser", "-u", "munge", "--", "munged"], capture_output=True, text=True, timeout=30)
        if res.returncode:
            raise ClusterError(f"munged failed to start (exit {res.returncode}): {res.stderr.strip()}")
        if not _wait(self._munge_works, 10):
            raise ClusterError("munged started but `munge -n | unmunge` keeps failing")
        pid_file = run / "munged.pid"
        self._munged_pid = int(pid_file.read_text()) if pid_file.is_file() else None

    @staticmethod
    def _munge_works() -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
            if cred.returncode:
                return False
            return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _write_config(self) -> None:
        for sub in ("state", "run", "log", *(f"spool/{n}" for n in NODES)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        r = self.root
        lines = [
            "ClusterName=koneoxtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "AuthType=auth/munge", "CredType=cred/munge", "SlurmUser=root", "SlurmdUser=root",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",  # no cgroups in this sandbox
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "MailProg=/bin/true",
            "SlurmdParameters=config_overrides",  # node CPU counts need not match the hardware
            "EnforcePartLimits=ALL",  # refuse (instead of pending forever) what the partition cannot hold
            "MinJobAge=4", "ReturnToService=2",
            # A requeued job may start again cred_expire s later (default 120), but only a periodic
            # scheduler pass notices that (default every 60 s, backfill every 30 s): make both short.
            "AuthInfo=cred_expire=5", "SchedulerParameters=sched_interval=2,bf_interval=1",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldPidFile={r}/run/slurmctld.pid", f"SlurmdPidFile={r}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd-%n.log",
            "SlurmctldDebug=info", "SlurmdDebug=info",
        ]
        for node, port in zip(NODES, node_ports, strict=True):
            lines.append(f"NodeName={node} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={self.cpus} RealMemory={self.memory} State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _add_hosts_line(self) -> None:
        # Lines left by test processes that were killed before they could clean up go too.
        lines = [line for line in HOSTS.read_text().splitlines()
                 if not ((m := re.search(r"# koneox slurm test (\d+) ", line)) and not _pid_alive(int(m.group(1))))]
        # Rewritten in place, not replaced: /etc/hosts may be a bind mount.
        with HOSTS.open("w") as f:
            f.write("\n".join([*lines, self._hosts_line]) + "\n")

    def _remove_hosts_line(self) -> None:
        lines = HOSTS.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.rstrip("\n") != self._hosts_line]
        if len(kept) != len(lines):
            with HOSTS.open("w") as f:
                f.write("".join(kept))

    def _daemon(self, cmd: list[str], pid_file: Path) -> None:
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        if res.returncode:
            raise ClusterError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()}")
        self._started.append(pid_file)
        if not _wait(pid_file.is_file, 10):
            raise ClusterError(f"{cmd[0]} wrote no pid file {pid_file}")

    def _sinfo(self) -> str:
        res = subprocess.run(["sinfo", "-h", "-N", "-n", ",".join(NODES), "-o", "%N %t"], env=self.env,
                             capture_output=True, text=True, timeout=30)
        return (res.stdout + res.stderr).strip()

    def _nodes_idle(self) -> bool:
        states = dict(line.split() for line in self._sinfo().splitlines() if len(line.split()) == 2)
        return all(states.get(n) == "idle" for n in NODES)

    # -- use --------------------------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        res = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode:
            raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()}\n{self.logs()}")
        return res

    def job_state(self, job_id: int) -> str | None:
        """PENDING, RUNNING, COMPLETED, ... or None once the record is purged (MinJobAge)."""
        res = self.run("squeue", "-h", "-j", str(job_id), "-t", "all", "-o", "%T", check=False)
        return res.stdout.strip() or None

    def logs(self, lines: int = 40) -> str:
        """The last lines of every daemon log, for failure messages."""
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out) or f"(no daemon logs in {self.root / 'log'})"

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the slurmds, then slurmctld, then munged (only if this cluster started it);
        wait until each is gone or a zombie; remove the /etc/hosts line."""
        if self._started and self.conf.is_file():
            # Jobs first: slurmd leaves running jobs' slurmstepd processes behind.
            jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20).stdout.split()
            if jobs:
                self.run("scancel", *jobs, check=False, timeout=20)
                _wait(lambda: not self.run("squeue", "-h", "-o", "%i", check=False, timeout=20).stdout.strip(), 15)
        pids = []
        for pid_file in sorted(self._started, key=lambda p: p.name != "slurmctld.pid", reverse=True):
            if pid_file.is_file():
                pids.append(int(pid_file.read_text().strip()))
        if self._munged_pid:
            pids.append(self._munged_pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if not _wait(lambda pid=pid: not _pid_alive(pid), timeout):
                os.kill(pid, signal.SIGKILL)
        self._started.clear()
        self._munged_pid = None
        self._remove_hosts_line()

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
