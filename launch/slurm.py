"""``koneox slurm``: check a multi-node layout, then write the sbatch script that trains it.

    koneox slurm --config 12.8b.yaml --nodes 32 --partition gpu --time 2-00:00:00 > job.sbatch
    sbatch job.sbatch

The layout is checked with the trainer's own rules (``Config.check(world_size=...)``) for
``nodes x gpus-per-node`` ranks before anything is submitted, plus one rule only a scheduler
layout has: a tensor-parallel group must stay inside one node. The script is rendered from
``launch/slurm/train.sbatch``: one ``srun`` task per node running DeepSpeed's per-node launcher
(``--no_ssh --node_rank $SLURM_NODEID``), a stop request before the time limit
(``--signal=B:USR1@LEAD``, turned into ``RUN_DIR/stop``), and a self-requeue until the run has
finished, so a job that keeps being stopped keeps resuming from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from train.config import CONFIG_DIR, Config, ConfigError, load_config, resolve_config_path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "slurm" / "train.sbatch"
MAX_SIGNAL_LEAD = 65535
"""Slurm's upper bound for --signal's time."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML file, or a name in configs/ (e.g. 12.8b.yaml)")
    parser.add_argument("--nodes", type=int, required=True, help="nodes to train on")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs (= ranks) per node (default 8)")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--time", help="time limit in Slurm's format (minutes, H:M:S, D-H:M:S, ...)")
    parser.add_argument("--account", help="Slurm account to charge")
    parser.add_argument("--job-name", help="job name (default: the config's name)")
    parser.add_argument("--out", help="write the script here instead of printing it")
    parser.add_argument("--signal-lead", type=int, default=None,
                        help="seconds before the time limit at which the trainer is asked to save and stop "
                             "(default: train.plan.signal_lead_seconds, from the estimated checkpoint time)")
    parser.add_argument("--cpu", action="store_true",
                        help="ranks are CPU processes (DS_ACCELERATOR=cpu): request no GPUs; for tests and "
                             "CPU-only clusters")
    parser.add_argument("--allow-cross-node-tp", action="store_true",
                        help="allow tensor-parallel groups to span nodes (only sensible for CPU tests: every "
                             "layer's all-reduce would cross the network)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.lr=1e-4")


def slurm_seconds(value: str) -> int:
    """Seconds in a Slurm time limit: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not m:
        raise ValueError(f"--time {value!r}: not a Slurm time (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        return days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:  # H:M:S
        return a * 3600 + b * 60 + c
    return a * 60 + (b or 0)  # M or M:S


def check_layout(cfg: Config, config_file: Path, overrides: list[str], nodes: int, gpus_per_node: int,
                 allow_cross_node_tp: bool = False) -> tuple[int, int, int, int]:
    """Raise ConfigError unless ``nodes x gpus_per_node`` ranks can run this config; return
    (data_parallel, micro, accumulation, global batch)."""
    where = {o.partition("=")[0].strip().removeprefix("--"): "command line" for o in overrides}
    if nodes < 1 or gpus_per_node < 1:
        raise ConfigError(f"command line: --nodes {nodes} / --gpus-per-node {gpus_per_node}: must be >= 1")
    tp = cfg.parallel.tensor_parallel
    if gpus_per_node % tp and not allow_cross_node_tp:
        raise ConfigError(
            f"{where.get('parallel.tensor_parallel', config_file)}: parallel.tensor_parallel: {tp} does not divide "
            f"--gpus-per-node {gpus_per_node}, so tensor-parallel groups would span nodes (their all-reduces run "
            f"in every layer and need the links inside a node); use a tensor_parallel that divides {gpus_per_node}"
        )
    world = nodes * gpus_per_node
    cfg.check(world_size=world, source=str(config_file), origins=where)
    dp = world // tp
    return (dp, *cfg.batch_layout(dp, str(config_file)))


def render(args: argparse.Namespace, cfg: Config, config_file: Path, lead: int, layout: str) -> str:
    """The sbatch script for these arguments (already checked)."""
    sbatch = [f"--job-name={args.job_name or cfg.name}", f"--nodes={args.nodes}", "--ntasks-per-node=1"]
    if not args.cpu:
        sbatch.append(f"--gpus-per-node={args.gpus_per_node}")
    sbatch += ["--exclusive", f"--signal=B:USR1@{lead}", "--requeue", "--open-mode=append",
               f"--output={log_dir(cfg)}/%x-%j.out"]
    for opt in ("partition", "time", "account"):
        if getattr(args, opt):
            sbatch.append(f"--{opt}={getattr(args, opt)}")
    # configs/ files are named as the user would (the trainer finds them there); others by full path.
    config_arg = config_file.name if config_file.resolve().parent == CONFIG_DIR.resolve() else str(
        config_file.resolve())
    values = {
        "NODES": str(args.nodes),
        "RANKS_PER_NODE": str(args.gpus_per_node),
        "RANK_KIND": "CPU rank(s)" if args.cpu else "GPU(s)",
        "LAYOUT": layout,
        "SIGNAL_LEAD": str(lead),
        "SBATCH": "\n".join(f"#SBATCH {line}" for line in sbatch),
        "REPO": shlex.quote(str(REPO)),
        "PYTHON": shlex.quote(sys.executable),
        "RUN_DIR": shlex.quote(str(cfg.run_dir)),
        "TRAIN_STEPS": str(cfg.train.train_steps),
        "CONFIG": shlex.quote(config_arg),
        "OVERRIDES": "".join(" " + shlex.quote(o) for o in args.overrides),
        "ACCELERATOR": ('\n: "${DS_ACCELERATOR:=cpu}"  # no GPUs: DeepSpeed\'s CPU accelerator (gloo)\n'
                        "export DS_ACCELERATOR\n") if args.cpu else "",
    }
    text = TEMPLATE.read_text()
    unknown = set(re.findall(r"@([A-Z_]+)@", text)) - set(values)
    if unknown:
        raise RuntimeError(f"{TEMPLATE}: placeholders without a value: {', '.join(sorted(unknown))}")
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], text)


def log_dir(cfg: Config) -> Path:
    """Where Slurm writes %x-%j.out: RUN_DIR/slurm, absolute (Slurm does not create it)."""
    run_dir = cfg.run_dir if cfg.run_dir.is_absolute() else REPO / cfg.run_dir
    return run_dir / "slurm"


def run(args: argparse.Namespace) -> int:
    try:
        config_file = resolve_config_path(args.config)
        cfg = load_config(args.config, args.overrides)
        layout_msg = f"{args.nodes} node(s) x {args.gpus_per_node} rank(s) = {args.nodes * args.gpus_per_node} ranks"
        try:
            dp, micro, accum, glob = check_layout(cfg, config_file, args.overrides, args.nodes, args.gpus_per_node,
                                                  args.allow_cross_node_tp)
        except ConfigError as e:
            raise ConfigError(f"{e} (layout: {layout_msg})") from None
        if args.signal_lead is None:
            from train.plan import signal_lead_seconds

            lead = signal_lead_seconds(cfg, args.nodes, args.gpus_per_node)
        else:
            lead = args.signal_lead
        if not 0 < lead <= MAX_SIGNAL_LEAD:
            raise ConfigError(f"command line: --signal-lead: {lead} s is outside Slurm's 1..{MAX_SIGNAL_LEAD}")
        if args.time and lead >= slurm_seconds(args.time):
            raise ConfigError(f"command line: --time {args.time}: the stop request comes {lead} s before the "
                              "limit, so the job would stop right after it starts; ask for more time or a "
                              "smaller --signal-lead")
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    tp = cfg.parallel.tensor_parallel
    if args.gpus_per_node % tp:
        print(f"warning: tensor_parallel {tp} spans nodes (--allow-cross-node-tp): every layer's all-reduce "
              "crosses the network", file=sys.stderr)
    layout = (f"{layout_msg}: tensor_parallel {tp} x data_parallel {dp}; batch {micro} micro x {accum} "
              f"accumulation x {dp} = {glob} sequences x {cfg.data.seq_len} tokens; ZeRO-{cfg.parallel.zero_stage}, "
              f"{cfg.train.precision}")
    script = render(args, cfg, config_file, lead, layout)
    # Slurm opens the log before the script runs and does not create its directory.
    log_dir(cfg).mkdir(parents=True, exist_ok=True)
    if args.out:
        Path(args.out).write_text(script)
        Path(args.out).chmod(0o755)
        print(f"wrote {args.out}: {layout}; stop request {lead} s before the time limit; "
              f"logs in {log_dir(cfg)}", file=sys.stderr)
    else:
        sys.stdout.write(script)
    return 0
