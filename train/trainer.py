"""The training loop: DeepSpeed engine (ZeRO, AutoTP, bf16/fp16), data, logging, checkpoints.

    trainer = Trainer(load_config("tiny.yaml"))
    trainer.fit()            # resumes from RUN/checkpoints/latest when present

One optimizer step = ``grad_accum`` micro-batches on every data-parallel rank; every rank of a
tensor-parallel group reads the same micro-batch. The logged loss is the mean over the whole
global batch (all micro-batches, all data-parallel ranks), so it is comparable across layouts.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import re
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from model import GPTNeoX, ModelConfig
from train import checkpoint as ckpt
from train.config import ROW_FREEZES, Config, ConfigError, TrainConfig
from train.distributed import broadcast_object, check_shared_directory, init_distributed, shutdown_distributed
from train.ds_config import deepspeed_config
from train.metrics import MetricsLogger, peak_tflops
from train.parallel import check_sharded
from train.schedule import lr_at


@dataclass
class TrainState:
    step: int = 0
    """Optimizer steps done."""
    consumed_samples: int = 0
    """Training sequences consumed over all ranks."""
    consumed_tokens: int = 0
    """Training tokens consumed over all ranks (samples x seq_len)."""
    epoch: float = 0.0
    """Fractional epoch of the training data after the last step."""
    skipped_steps: int = 0
    """Steps whose optimizer update was skipped (non-finite loss or gradients), as the engine counts."""
    nonfinite_streak: int = 0
    """Consecutive skipped steps so far."""


# Fault injection for tests: "STEP:MICRO:RANK[,...]" makes that rank's loss NaN at that micro-batch
# (1-based step, 0-based micro-batch), to prove that every rank skips the step together.
INJECT_ENV = "KONEOX_INJECT_NONFINITE"
STOP_FILE = "stop"
"""A file of this name in the run directory asks the run to save and exit (removed when done)."""
FINISHED_FILE = "finished"
"""Written to the run directory (holding the step) once ``train.train_steps`` are done."""


def _injections() -> set[tuple[int, int, int]]:
    spec = os.environ.get(INJECT_ENV, "")
    return {tuple(int(x) for x in item.split(":")) for item in spec.split(",") if item.strip()}


class SkippingAdamW(torch.optim.AdamW):
    """AdamW that leaves weights, moments and step count alone when any gradient is not finite,
    and says so through ``overflow`` as DeepSpeed's own optimizers do: the engine then counts a
    skipped step and does not advance the LR schedule. Only needed without ZeRO, where DeepSpeed
    calls this optimizer directly; its ZeRO and bf16 optimizers check the gradient norm themselves."""

    overflow = False

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.overflow = bool(grads) and not bool(torch.stack([g.float().sum() for g in grads]).isfinite().all())
        if self.overflow:
            return None
        return super().step(closure)


def no_decay(name: str) -> bool:
    """Biases and LayerNorm parameters are not weight-decayed."""
    return name.endswith(".bias") or "layernorm" in name or "layer_norm" in name


FROZEN_ROWS = {key: param for key, (param, _) in ROW_FREEZES.items()}
"""Each row-freezing key of TrainConfig and the parameter it masks."""


def select_trainable(names: list[str], patterns: list[str]) -> set[str]:
    """The parameter names ``train.trainable`` selects: a pattern matches a name it is a substring
    of, or a glob (fnmatch) over it; ``all`` matches everything. A pattern that matches nothing
    is a ConfigError that lists the names (layer numbers folded to ``N``)."""
    if "all" in patterns:
        return set(names)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if pattern in n or fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            groups = dict.fromkeys(re.sub(r"\.layers\.\d+\.", ".layers.N.", n) for n in names)
            raise ConfigError(f"train.trainable: {pattern!r} matches no parameter; the parameters are "
                              f"{', '.join(groups)} (N = layer number), or 'all'")
        chosen |= hits
    return chosen


def check_freezing(cfg: Config) -> tuple[set[str], int, int]:
    """Validate ``train.trainable`` and the row freezes (``train.freeze_embedding_rows_below``,
    ``train.freeze_output_rows_below``) against the model's real parameter names and vocabulary
    (after ``model.init_from`` has set the shape), before any distributed work. Returns
    (trainable names, trainable count, total count), counted on the whole model (not a
    tensor-parallel shard)."""
    with torch.device("meta"):
        shapes = {n: p.numel() for n, p in GPTNeoX(cfg.model).named_parameters()}
    trainable = select_trainable(list(shapes), cfg.train.trainable)
    for key, name in FROZEN_ROWS.items():
        rows = getattr(cfg.train, key)
        if rows and name not in trainable:
            raise ConfigError(f"train.{key}: {rows} has no effect: {name} is not in train.trainable "
                              f"{cfg.train.trainable}")
        if rows > cfg.model.padded_vocab_size:
            raise ConfigError(f"train.{key}: {rows} exceeds the {cfg.model.padded_vocab_size} rows of {name}")
    return trainable, sum(shapes[n] for n in trainable), sum(shapes.values())


def frozen_rows(t: TrainConfig) -> dict[str, int]:
    """{parameter name: rows below this id frozen} for the row freezes that are on."""
    return {name: getattr(t, key) for key, name in FROZEN_ROWS.items() if getattr(t, key)}


def describe_frozen_rows(t: TrainConfig) -> str:
    """'; rows below K of NAME frozen' for each row freeze that is on (for the start banner)."""
    return "".join(f"; rows below {k} of {name} frozen" for name, k in frozen_rows(t).items())


def freeze(model: GPTNeoX, trainable: set[str], rows_below: dict[str, int]) -> None:
    """Turn off gradients of the parameters not in ``trainable``; for each (name, K) of
    ``rows_below`` (``frozen_rows``), zero that embedding's gradient for rows below K.

    The mask is a hook on the parameter, so it runs when autograd produces each micro-batch's
    gradient: before accumulation, before DeepSpeed reduces it across ranks (ZeRO-2 does that
    from a hook on the accumulation) and before any optimizer sees it. A row whose gradient is
    always zero keeps Adam moments of exactly zero, so Adam's update for it is exactly 0 / eps
    = 0; with no weight decay on that embedding (``param_groups``) it never moves, also not in
    the fp32 master copy ZeRO keeps. The embeddings are replicated under tensor parallelism
    (train/parallel.py), so global row ids are local ones on every rank."""
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    full = model.config.padded_vocab_size
    for name, k in rows_below.items():
        weight = model.get_parameter(name)
        if weight.shape[0] != full:
            raise RuntimeError(f"{name} has {weight.shape[0]} rows on this rank, not {full}: a vocab-parallel "
                               "embedding needs its frozen rows mapped to local rows")
        frozen = (torch.arange(full, device=weight.device) < k).unsqueeze(1)  # (V, 1)
        # masked_fill, not multiplication: a NaN gradient (a skipped step) must become 0 as well.
        weight.register_hook(lambda grad, frozen=frozen: grad.masked_fill(frozen, 0.0))


def check_same_freezing(saved: dict[str, Any], t: TrainConfig, where: Path) -> None:
    """A run resumes only with the freezing it was saved with (``saved``: the checkpoint's
    ``train`` section): other optimizer groups would not load, and rows frozen only now would
    carry Adam moments from before and keep moving."""
    for key, default in (("trainable", ["all"]), *((k, 0) for k in FROZEN_ROWS)):
        if saved.get(key, default) != getattr(t, key):
            raise ConfigError(f"train.{key}: {getattr(t, key)} differs from {saved.get(key, default)} in the "
                              f"checkpoint {where}; resume with the same value, or start a new train.run_dir "
                              "with model.init_from set to an export of it")


def check_resumable(cfg: Config) -> None:
    """Refuse, before any distributed work, to resume ``cfg.run_dir`` with other freezing than its
    latest checkpoint was saved with (``check_same_freezing``). A damaged ``latest`` pointer is
    left for ``Trainer._resume`` to report."""
    ckpt_dir = cfg.run_dir / "checkpoints"
    try:
        tag = ckpt.latest_tag(ckpt_dir)
    except FileNotFoundError:
        return
    if tag is not None:
        check_same_freezing(ckpt.read_meta(ckpt_dir / tag)["config"]["train"], cfg.train, ckpt_dir / tag)


def param_groups(model: GPTNeoX, weight_decay: float, rows_below: dict[str, int]) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters only, so no decay or moment touches a frozen
    one. Without weight decay: biases, LayerNorms, and an embedding while rows of it are frozen
    (``rows_below``, as ``freeze``). Empty groups are left out (DeepSpeed's ZeRO optimizer cannot
    flatten an empty group)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name) or name in rows_below else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_model(cfg: Config) -> GPTNeoX:
    """This rank's shard of the model: random init from the config, or the weights of
    ``model.init_from`` (continued pretraining), in the training precision on this rank's device.

    With tensor parallelism the model is built on the meta device, DeepSpeed AutoTP shards it
    there, and only this rank's block of each weight is materialised (train/sharded_init.py):
    12.8B at TP=8 in bf16 needs about 4 GB per rank instead of the whole 26 GB model. The
    values equal the single-process ones bit for bit (drawn in fp32 from the seeded generator);
    deepspeed.initialize keeps the shards as they are."""
    from deepspeed.accelerator import get_accelerator

    from train.sharded_init import build_shard

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision, torch.float32)
    return build_shard(cfg.model, dtype, get_accelerator().current_device_name(), cfg.parallel.tensor_parallel)


def check_init_from(cfg: Config, explicit: set[str]) -> dict[str, Any] | None:
    """Take the model shape from ``model.init_from`` and refuse a config that says otherwise; set
    the ``auto`` row freezes from its vocabulary-extension record, which is returned (None
    without one, or without model.init_from)."""
    if not cfg.model.init_from:
        return None
    from model.hf_io import load_config as load_hf_config

    found = load_hf_config(cfg.model.init_from)
    shape = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "rotary_pct", "rotary_base",
             "use_parallel_residual")
    for key in shape:
        ours, theirs = getattr(cfg.model, key), getattr(found, key)
        if f"model.{key}" in explicit and ours != theirs:
            raise ConfigError(
                f"model.{key}: the config sets {ours}, but model.init_from {cfg.model.init_from} has {theirs}; "
                "remove the key to take the shape from the checkpoint"
            )
    if "model.vocab_size" in explicit and cfg.model.padded_vocab_size != found.padded_vocab_size:
        raise ConfigError(
            f"model.vocab_size: pads to {cfg.model.padded_vocab_size}, but model.init_from has "
            f"{found.padded_vocab_size} embedding rows"
        )
    keep = {k: getattr(cfg.model, k) for k in ("init_from", "activation_checkpointing", "init_seed")}
    cfg.model = ModelConfig(**{**asdict(found), **keep, "name": Path(cfg.model.init_from).name})
    from model.extend_vocab import CONFIG_KEY, recorded_extension

    record = recorded_extension(cfg.model.init_from)
    for key in FROZEN_ROWS:
        if getattr(cfg.train, key) != "auto":
            continue
        if not record or not isinstance(record.get("old_vocab_size"), int):
            raise ConfigError(
                f"train.{key}: 'auto', but {Path(cfg.model.init_from) / 'config.json'} has no {CONFIG_KEY} record "
                "(written by koneox extend-vocab, kept by koneox export); set the first new token id as a number "
                "instead")
        setattr(cfg.train, key, record["old_vocab_size"])
    # Continued pretraining keeps the checkpoint's tokenizer unless another one is named.
    if not cfg.tokenizer.path and (Path(cfg.model.init_from) / "tokenizer.json").is_file():
        cfg.tokenizer.path = cfg.model.init_from
    return record


def check_before_start(cfg: Config, explicit: set[str]) -> tuple[set[str], int, int, dict[str, Any] | None]:
    """Everything checked before any rank starts, by the Trainer and by ``--dry-run``: the shape
    and the ``auto`` row freezes from model.init_from (``check_init_from``), the trainable
    patterns (``check_freezing``) and that a resumed run keeps its freezing (``check_resumable``).
    Returns (trainable names, trainable count, total count, model.init_from's vocabulary-extension
    record or None)."""
    record = check_init_from(cfg, explicit)
    trainable, num_trainable, num_params = check_freezing(cfg)
    check_resumable(cfg)
    return trainable, num_trainable, num_params, record


class Trainer:
    def __init__(self, cfg: Config, explicit_keys: set[str] | None = None):
        """``explicit_keys``: dotted keys the user set (file or command line); with
        ``model.init_from`` those shape keys must agree with the checkpoint. Raises
        ConfigError before any distributed work starts."""
        self.cfg = cfg
        # vocab_extension is carried into every checkpoint's metadata, so that `koneox export` writes
        # it to config.json and the next stage can say freeze_embedding_rows_below: auto.
        self.trainable, self.num_trainable, self.num_params, self.vocab_extension = check_before_start(
            cfg, explicit_keys or set())
        self.state = TrainState()
        self.stop_signal = 0
        self._inject = _injections()

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        import deepspeed
        from deepspeed.utils import groups

        cfg = self.cfg
        self.rank, self.world_size, self.local_rank = init_distributed(cfg.parallel.timeout_minutes)
        cfg.check(world_size=self.world_size)
        tp = cfg.parallel.tensor_parallel
        self.dp_size = self.world_size // tp
        self.micro, self.accum, self.global_batch = cfg.batch_layout(self.dp_size)
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.is_main = self.rank == 0
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
            # A stop request or a "finished" mark left by an earlier job is not for this one.
            for name in (STOP_FILE, FINISHED_FILE):
                (self.run_dir / name).unlink(missing_ok=True)
        dist.barrier()
        check_shared_directory(self.run_dir)

        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg)
        if cfg.train.compile:
            # In place: torch.compile(model) would wrap it, and DeepSpeed would save every weight
            # under "_orig_mod.", which export, select and generate cannot place.
            model.compile()
        t = cfg.train
        freeze(model, self.trainable, frozen_rows(t))
        adamw = SkippingAdamW if cfg.parallel.zero_stage == 0 else torch.optim.AdamW
        optimizer = adamw(
            param_groups(model, t.weight_decay, frozen_rows(t)),
            lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
            fused=torch.cuda.is_available(),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, t) / t.lr)
        self.ds_config = deepspeed_config(cfg, self.dp_size)
        if self.is_main:
            (self.run_dir / "deepspeed_config.json").write_text(json.dumps(self.ds_config, indent=2) + "\n")
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config
        )
        if tp > 1:
            check_sharded(self.engine.module, tp, cfg.model.hidden_size, cfg.model.intermediate_size)
        self.tp_rank = groups.get_tensor_model_parallel_rank() if tp > 1 else 0
        self.dp_rank = groups._get_data_parallel_rank() if self.dp_size > 1 else 0
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision, torch.float32)
        self.device = next(self.engine.module.parameters()).device

        self._setup_data()
        self.metrics = MetricsLogger(cfg, self.run_dir, enabled=self.is_main)
        self._resume()
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)

    def _setup_data(self) -> None:
        """Splits and sample indexes are built once, by rank 0, into files every rank memory-maps
        (data/dataset.py IndexCache): next to the data, or RUN/index_cache where that directory is
        read-only or not seen by every rank. The other ranks wait, then open the cached files
        without re-validating them; later epochs are built ahead by rank 0 while training runs."""
        import secrets

        from data.dataset import IndexCache, build_datasets, index_cache_dir
        from data.loader import DataLoader

        cfg = self.cfg
        self._verify_token_ids()
        data_cfg = dataclasses.replace(cfg.data, verify_token_ids=False)  # scanned once, above
        where, probe = None, None
        if self.is_main:
            where = index_cache_dir(data_cfg, self.run_dir)
            probe = where / f".shared-check-{secrets.token_hex(8)}"
            try:
                probe.write_text("")
            except OSError:  # a read-only data.index_cache, built ahead with build_index_cache
                probe = None
        where, probe = broadcast_object((where, probe))
        seen = torch.tensor(float(probe is None or probe.exists()), device=self.device)
        dist.all_reduce(seen, op=dist.ReduceOp.MIN)
        if self.is_main and probe is not None:
            probe.unlink(missing_ok=True)
        if not seen.item():  # a node-local data directory: use the run directory, which every rank sees
            where = self.run_dir / "index_cache"
        sets, error = None, None
        if self.is_main:
            cache = IndexCache(where)
            try:
                sets = build_datasets(data_cfg, vocab_size=cfg.model.padded_vocab_size, cache=cache)
            except (ValueError, OSError) as e:
                error = e
            built = ", ".join(f"{name} ({what})" for name, what in cache.built)
            print(f"index cache {where}: " + (f"built {built}" if built else "reused"), flush=True)
        error = broadcast_object(error)  # also the barrier the other ranks wait at
        if error is not None:
            raise error
        if not self.is_main:
            cache = IndexCache(where, builder=False, wait_s=60 * cfg.parallel.timeout_minutes)
            sets = build_datasets(data_cfg, vocab_size=cfg.model.padded_vocab_size, cache=cache)
        self.train_loader = DataLoader(sets["train"], micro_batch_size=self.micro,
                                       dp_rank=self.dp_rank, dp_size=self.dp_size)
        self.valid_set = sets.get("valid")

    def _verify_token_ids(self) -> None:
        """Scan the corpus for out-of-vocabulary ids once: on rank 0, skipping files whose size and
        mtime match the run's stamp or whose PREFIX.stats.json (from `koneox pack`) vouches for them,
        and share the verdict (256 ranks scanning 1 TB would not do)."""
        from data.indexed import IndexedDatasetError, verify_token_ids

        cfg = self.cfg
        if not cfg.data.verify_token_ids:
            return
        error = None
        if self.is_main:
            try:
                verify_token_ids(cfg.data.train_paths, cfg.model.padded_vocab_size,
                                 stamp=self.run_dir / "token_check.json")
            except (IndexedDatasetError, OSError) as e:
                error = str(e)
        error = broadcast_object(error)
        if error:
            raise IndexedDatasetError(error)

    def _resume(self) -> None:
        # Rank 0 reads the pointer and tells the others: every rank must load the same tag, or
        # none, or the collectives inside load_checkpoint would not match.
        tag = broadcast_object(ckpt.latest_tag(self.ckpt_dir) if self.is_main else None)
        if tag is None:
            return
        meta = ckpt.read_meta(self.ckpt_dir / tag)  # its freezing was checked before start (check_resumable)
        load_path, _ = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag)
        if load_path is None:
            raise RuntimeError(f"{self.ckpt_dir / tag}: DeepSpeed could not load this checkpoint")
        self.state = TrainState(**meta["state"])
        self.train_loader.load_state_dict(meta["data"])
        ckpt.load_rng(self.ckpt_dir, tag, self.rank)
        if self.is_main:
            print(f"resumed from {self.ckpt_dir / tag} at step {self.state.step}", flush=True)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum

    # -- steps -----------------------------------------------------------------------------

    def _loss(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        logits = self.engine(tokens[:, :-1])  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())

    def _nonfinite_loss(self) -> torch.Tensor:
        """A loss whose gradient is NaN for every parameter, built the same way on every rank, so
        every rank reduces the same buckets in the same order; the optimizer then sees a
        non-finite gradient norm and skips the whole step (weights, moments, LR schedule)."""
        return sum(p.sum() for p in self.engine.module.parameters() if p.requires_grad) * float("nan")

    def _all_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean over data-parallel ranks (tensor-parallel ranks hold identical values)."""
        value = value.detach().float().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``accum`` micro-batches.

        After each micro-batch's forward pass every rank learns whether any rank's loss was not
        finite (one scalar all-reduce), and all of them then backward the same kind of graph: the
        real loss, or :meth:`_nonfinite_loss`. A rank deciding alone would make ZeRO-2 reduce
        gradient buckets in a different order on different ranks (a collective mismatch: a hang or
        silent corruption on NCCL). A poisoned step is skipped by the optimizer itself, on every
        rank, as DeepSpeed skips a bf16/fp16 overflow: nothing moves, not even Adam's moments."""
        losses = []
        epoch = self.state.epoch
        skipped_before = self.engine.skipped_steps
        lr_used = self.engine.get_lr()[0]  # what this step's update uses, set by the scheduler
        for micro in range(self.accum):
            batch = next(self.train_loader)
            loss = self._loss(batch.tokens)
            if (self.state.step + 1, micro, self.rank) in self._inject:
                loss = loss * float("nan")
            bad = (~torch.isfinite(loss.detach())).float()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            self.engine.backward(self._nonfinite_loss() if bad.item() else loss)
            losses.append(loss.detach())
            epoch = batch.epoch
            self.engine.step()
        skipped = self.engine.skipped_steps > skipped_before
        s = self.state
        s.step += 1
        s.consumed_samples += self.global_batch
        s.consumed_tokens += self.global_batch * self.cfg.data.seq_len
        s.epoch = epoch
        s.skipped_steps = self.engine.skipped_steps
        s.nonfinite_streak = s.nonfinite_streak + 1 if skipped else 0
        loss = self._all_mean(torch.stack(losses).mean()).item()
        grad_norm = self.engine.get_global_grad_norm()
        return {
            "loss": loss,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            # The learning rate of the update, or 0 when there was none (the schedule holds).
            "lr": 0.0 if skipped else lr_used,
            "skipped": skipped,
        }

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over the first ``eval_iters`` validation batches (the same batches every time)."""
        if self.valid_set is None or self.cfg.train.eval_iters <= 0:
            return None
        from data.loader import DataLoader

        loader = DataLoader(self.valid_set, micro_batch_size=self.micro, dp_rank=self.dp_rank, dp_size=self.dp_size)
        self.engine.eval()
        total = torch.zeros((), device=self.device)
        for _ in range(self.cfg.train.eval_iters):
            total += self._loss(next(loader).tokens)
        self.engine.train()
        return self._all_mean(total / self.cfg.train.eval_iters).item()

    # -- checkpoints -----------------------------------------------------------------------

    def save(self) -> Path:
        start = time.perf_counter()
        tag = ckpt.tag_for(self.state.step)
        meta = {
            "state": asdict(self.state),
            "data": self.train_loader.state_dict(),
            "config": self.cfg.to_dict(),
            "tokenizer": self.cfg.tokenizer.path,
            "vocab_extension": self.vocab_extension,
            "world_size": self.world_size,
            "tensor_parallel": self.cfg.parallel.tensor_parallel,
        }
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, save_latest=False)
        if self.is_main:
            ckpt.write_meta(self.ckpt_dir, tag, meta)
        dist.barrier()  # the DeepSpeed files of every rank and the metadata exist
        ckpt.save_rng(self.ckpt_dir, tag, self.rank)
        dist.barrier()  # ... and every rank's RNG file: only now is the checkpoint complete
        if self.is_main:
            ckpt.write_latest(self.ckpt_dir, tag)
            ckpt.prune(self.ckpt_dir, self.cfg.train.keep_last, self.cfg.train.keep_every)
        dist.barrier()
        seconds = time.perf_counter() - start
        if self.is_main:
            size = sum(f.stat().st_size for f in (self.ckpt_dir / tag).rglob("*") if f.is_file())
            # Pre-emption must leave this much time (plus a margin) between the signal and the kill.
            self.metrics.log({"step": self.state.step, "save_seconds": round(seconds, 3), "checkpoint_bytes": size},
                             echo=f"step {self.state.step:>6} | saved {tag} ({size / 1e9:.2f} GB) in {seconds:.1f} s")
        return self.ckpt_dir / tag

    # -- loop ------------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        """A signal on any rank, ``train.exit_interval``, or a file ``RUN/stop`` (checked by rank 0:
        what a Slurm batch script touches when its time runs out) stops every rank together."""
        if self.is_main and not self.stop_signal and (self.run_dir / STOP_FILE).exists():
            self.stop_signal = -2
        # Signal numbers and the negative codes of exit_interval / the stop file must not cancel
        # out in the reduction: every rank only says whether it wants to stop.
        flag = torch.tensor(float(self.stop_signal != 0), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not self.stop_signal:
            self.stop_signal = -3
        return bool(flag.item())

    def fit(self) -> TrainState:
        """Set up, train to ``train.train_steps`` (or until stopped), save. The process groups are
        destroyed at the end, whatever happened, while the interpreter is still whole: left to
        interpreter shutdown, gloo's worker threads can abort a finished rank ("terminate called
        without an active exception", exit code -6), which failed a CI run here."""
        try:
            self.setup()
            return self._train()
        finally:
            shutdown_distributed()

    def _train(self) -> TrainState:
        cfg, t = self.cfg, self.cfg.train
        seq = cfg.data.seq_len
        flops_per_token = cfg.model.flops_per_token(seq)
        peak = peak_tflops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
        if self.is_main:
            print(f"training {cfg.model.name} ({cfg.model.num_parameters():,} parameters) on {self.world_size} "
                  f"rank(s): tensor_parallel {cfg.parallel.tensor_parallel} x data_parallel {self.dp_size}, "
                  f"ZeRO-{cfg.parallel.zero_stage}, {t.precision}, batch {self.micro} x {self.accum} x "
                  f"{self.dp_size} = {self.global_batch} x {seq} tokens; run dir {self.run_dir}", flush=True)
            dtypes = self.ds_config.get("data_types", {}).get("grad_accum_dtype", t.precision)
            print(f"optimizer {type(self.engine.optimizer).__name__}: gradients accumulated in {dtypes}, reduced in "
                  f"{self.ds_config.get('communication_data_type', t.precision)}; collective timeout "
                  f"{cfg.parallel.timeout_minutes} min", flush=True)
            print(f"trainable {self.num_trainable:,} of {self.num_params:,} parameters (train.trainable "
                  f"{t.trainable}){describe_frozen_rows(t)}", flush=True)
        last_saved = self.state.step
        tick, tokens_since = time.perf_counter(), 0
        try:
            while self.state.step < t.train_steps:
                out = self.train_step()
                s = self.state
                tokens_since += self.global_batch * seq
                if s.step % t.log_interval == 0 or s.step == t.train_steps:
                    elapsed = time.perf_counter() - tick
                    tps = tokens_since / elapsed
                    tflops = tps * flops_per_token / self.world_size / 1e12
                    record = {
                        "step": s.step, "loss": out["loss"], "lr": out["lr"], "grad_norm": out["grad_norm"],
                        "loss_scale": float(getattr(self.engine.optimizer, "cur_scale", 1.0) or 1.0),
                        "tokens_per_s": tps, "tflops_per_device": tflops, "consumed_tokens": s.consumed_tokens,
                        "epoch": s.epoch, "skipped_steps": s.skipped_steps,
                    }
                    if peak:
                        record["mfu"] = tflops / peak
                    if torch.cuda.is_available():
                        # Peak since start on this rank, to set against the memory estimate.
                        record["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                        record["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
                    self.metrics.log(record, echo=(
                        f"step {s.step:>6}/{t.train_steps} | loss {out['loss']:.4f} | lr {out['lr']:.2e} | "
                        f"grad {out['grad_norm']:.3f} | {tps:,.0f} tok/s | epoch {s.epoch:.3f}"
                        + (f" | MFU {record['mfu']:.3f}" if peak else "")
                    ))
                    tick, tokens_since = time.perf_counter(), 0
                if t.eval_interval and s.step % t.eval_interval == 0:
                    val = self.evaluate()
                    if val is not None:
                        self.metrics.log({"step": s.step, "val_loss": val, "val_ppl": math.exp(min(val, 50)),
                                          "epoch": s.epoch}, echo=f"step {s.step:>6} | validation loss {val:.4f}")
                if s.nonfinite_streak >= t.max_nonfinite_steps:
                    self.save()
                    raise RuntimeError(
                        f"{s.nonfinite_streak} consecutive steps had a non-finite loss (last at step {s.step}); "
                        f"stopped with a checkpoint in {self.ckpt_dir}. Lower train.lr or check the data."
                    )
                if t.save_interval and s.step % t.save_interval == 0:
                    self.save()
                    last_saved = s.step
                if t.exit_interval and s.step % t.exit_interval == 0 and s.step < t.train_steps:
                    self.stop_signal = -1
                if self._stop_requested():
                    if last_saved != s.step:
                        self.save()
                    if self.is_main:
                        why = {-1: "train.exit_interval", -2: f"the file {self.run_dir / STOP_FILE}",
                               -3: "a signal to another rank"}.get(
                            self.stop_signal, f"signal {self.stop_signal}")
                        (self.run_dir / STOP_FILE).unlink(missing_ok=True)
                        print(f"stopped by {why} at step {s.step}; "
                              "checkpoint saved, rerun the same command to resume", flush=True)
                    return self.state
            if last_saved != self.state.step:
                self.save()
            if self.is_main:
                # What a requeueing job script checks: absent means "resume me".
                (self.run_dir / FINISHED_FILE).write_text(f"{self.state.step}\n")
        finally:
            self.metrics.close()
        return self.state
