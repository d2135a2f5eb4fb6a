"""The koneox configuration: one typed dataclass per concern, YAML and dotted CLI overrides.

    cfg = load_config("12.8b.yaml", ["train.lr=1e-4", "parallel.tensor_parallel=4"])

Resolution order: defaults in code < YAML file < command-line overrides. ``model.name``
selects a named size (REFERENCE §1) whose shape the other ``model.*`` keys then override.
A path that does not exist as given is looked up in the repository's ``configs/`` folder.
Every error names the file (or "command line") and the dotted key.

Reading, overrides and type checking live in ``data/config_loader.py``, shared with the stages
that load only their own section without importing torch (``koneox clean``); this module adds
the sections, the named model sizes and the cross-section checks.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from data.config import DataConfig
from data.config_loader import CONFIG_DIR as CONFIG_DIR  # re-exported: launch/ imports it from here
from data.config_loader import ConfigError, read_config, source_of
from data.config_loader import build as _build
from data.config_loader import resolve_config_path as resolve_config_path  # re-exported, as CONFIG_DIR
from model.config import NAMED_SIZES, ModelConfig, ModelConfigError
from tokenizer.config import TokenizerConfig


@dataclass
class TrainConfig:
    run_dir: str = ""
    """Where the run keeps its resolved config, metrics, checkpoints and logs ('' = runs/<name>)."""
    micro_batch_size: int = 4
    """Sequences per data-parallel rank per forward/backward pass."""
    grad_accum: int = 0
    """Micro batches accumulated per optimizer step (0 = derived from global_batch_size)."""
    global_batch_size: int = 0
    """Sequences per optimizer step over all ranks (0 = micro_batch_size * grad_accum * dp)."""
    train_steps: int = 1000
    """Optimizer steps to train for."""
    lr: float = 2e-4
    """Peak learning rate."""
    min_lr: float = 2e-5
    """Learning rate at the end of the decay."""
    warmup_steps: int = 100
    """Linear warmup from 0 to lr over this many steps."""
    lr_decay: Literal["cosine", "linear", "constant"] = "cosine"
    """Shape of the decay from lr to min_lr after warmup."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and LayerNorm weights)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    """Training precision; fp16 uses dynamic loss scaling."""
    seed: int = 1234
    """Seed for dropout-free training RNG state (data order has its own seed in data.seed)."""
    log_interval: int = 10
    """Steps between metric lines."""
    eval_interval: int = 100
    """Steps between validation-loss evaluations (0 = off)."""
    eval_iters: int = 10
    """Validation batches per evaluation."""
    save_interval: int = 500
    """Steps between checkpoints (a final one is always written)."""
    keep_last: int = 3
    """Checkpoints kept from the most recent ones."""
    keep_every: int = 0
    """Also keep every checkpoint whose step is a multiple of this (0 = none)."""
    max_nonfinite_steps: int = 5
    """Stop (with a checkpoint) after this many consecutive steps with a non-finite loss."""
    compile: bool = False
    """Compile the model in place (``module.compile()``, so checkpoint names stay exportable)."""
    grad_accum_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Dtype gradients are accumulated in over micro-batches with bf16/fp16 training (fp32 as in
    Megatron and GPT-NeoX; bf16 halves gradient memory but loses precision over many steps)."""
    grad_reduce_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Dtype of the data-parallel gradient reduction (DeepSpeed's ``communication_data_type``)."""
    exit_interval: int = 0
    """Save and exit once the step count is a multiple of this, as if pre-empted (0 = off); rerun to resume."""
    trainable: list[str] = field(default_factory=lambda: ["all"])
    """Parameters to train, by name (``gpt_neox.embed_in.weight``, ``gpt_neox.layers.3.mlp...``,
    ``embed_out.weight``): a pattern matches a name it is a substring of (``embed_in``) or a glob
    over it (``*.attention.*``); ``all`` = every parameter. A pattern matching nothing is an error.
    The others are frozen: no gradient, left out of the optimizer, bit-identical after training."""
    freeze_embedding_rows_below: int | Literal["auto"] = 0
    """Input-embedding rows below this token id get no update and stay bit-identical: the old
    vocabulary after a vocabulary extension, so only the new rows learn (0 = off). 'auto' = the
    first new id that ``koneox extend-vocab`` recorded in model.init_from's config.json (kept by
    ``koneox export``, so a later stage's export still carries it). embed_in must be trainable,
    and is then not weight-decayed (decoupled decay would shrink the frozen rows)."""
    freeze_output_rows_below: int | Literal["auto"] = 0
    """The same for the LM head (``embed_out``): rows below this token id stay bit-identical, so
    the new tokens' output rows learn while the old tokens' logits keep their weights (0 = off;
    'auto' as above). embed_out must be trainable, and is then not weight-decayed."""


ROW_FREEZES = {"freeze_embedding_rows_below": ("gpt_neox.embed_in.weight", "input-embedding"),
               "freeze_output_rows_below": ("embed_out.weight", "LM-head")}
"""The TrainConfig keys that freeze the rows of an embedding below a token id: (the parameter the
trainer masks, what errors call it)."""


@dataclass
class ParallelConfig:
    tensor_parallel: int = 1
    """Tensor-parallel size (DeepSpeed AutoTP); must divide num_heads and intermediate_size."""
    data_parallel: int = 0
    """Expected data-parallel size, checked against the launcher's world size (0 = take it from there)."""
    zero_stage: int = 1
    """ZeRO stage 0, 1 or 2 (3 is experimental)."""
    reduce_bucket_size: int = 500_000_000
    """Elements per DeepSpeed gradient-reduction bucket (also counted in the memory estimate)."""
    allgather_bucket_size: int = 500_000_000
    """Elements per DeepSpeed all-gather bucket."""
    timeout_minutes: int = 60
    """Timeout of every collective: long checkpoint saves and slow starts on hundreds of ranks
    must not trip it (DeepSpeed's default is 10 minutes)."""


@dataclass
class WandbConfig:
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """'auto' = online when an API key is configured, else offline."""
    project: str = "koneox"
    """wandb project name."""
    entity: str = ""
    """wandb entity (team); '' = the default of the API key."""


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases settings."""
    progress: bool = True
    """Show progress bars and a progress line on rank 0."""


@dataclass
class Config:
    name: str = "tiny"
    """Run name (also the default run directory runs/<name>)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape (``model.name`` picks a named size)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Cleaning, packing and loading."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Tokenizer training and the tokenizer used by the run."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, schedule, checkpoints."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Tensor/data parallel layout and ZeRO."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metrics destinations."""

    @property
    def run_dir(self) -> Path:
        return Path(self.train.run_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def check(
        self, world_size: int | None = None, source: str = "config", origins: dict[str, str] | None = None
    ) -> None:
        """Cross-section checks. With ``world_size`` the batch arithmetic is checked for real.
        ``origins`` maps dotted keys set on the command line, so errors name where a value came from."""
        origins = origins or {}

        def fail(key: str, msg: str) -> typing.NoReturn:
            raise ConfigError(f"{source_of(origins, key, source)}: {key}: {msg}")

        try:
            self.model.check()
        except ModelConfigError as e:
            raise ConfigError(f"{source_of(origins, e.key, source)}: {e}") from None
        p, t, m = self.parallel, self.train, self.model
        if p.tensor_parallel < 1:
            fail("parallel.tensor_parallel", f"must be >= 1, got {p.tensor_parallel}")
        if m.num_heads % p.tensor_parallel:
            fail("parallel.tensor_parallel",
                 f"{p.tensor_parallel} does not divide model.num_heads {m.num_heads}")
        if m.intermediate_size % p.tensor_parallel:
            fail("parallel.tensor_parallel",
                 f"{p.tensor_parallel} does not divide model.intermediate_size {m.intermediate_size}")
        if p.zero_stage not in (0, 1, 2, 3):
            fail("parallel.zero_stage", f"must be 0, 1, 2 or 3, got {p.zero_stage}")
        if p.zero_stage == 0 and p.tensor_parallel > 1:
            fail("parallel.zero_stage",
                 "ZeRO stage 0 with tensor_parallel > 1 is refused: DeepSpeed's non-ZeRO optimizer path "
                 "reports a wrong gradient norm with AutoTP (REFERENCE §5); use zero_stage 1 or 2")
        if p.zero_stage == 0 and t.precision != "fp32" and t.grad_accum_dtype != t.precision:
            fail("train.grad_accum_dtype",
                 f"ZeRO stage 0 accumulates gradients in the model dtype only (DeepSpeed has no {t.grad_accum_dtype} "
                 f"accumulation without ZeRO); use parallel.zero_stage 1, or set train.grad_accum_dtype={t.precision}")
        if p.data_parallel < 0:
            fail("parallel.data_parallel", f"must be >= 0, got {p.data_parallel}")
        for key in ("micro_batch_size", "train_steps", "log_interval"):
            if getattr(t, key) <= 0:
                fail(f"train.{key}", f"must be positive, got {getattr(t, key)}")
        if t.grad_accum < 0 or t.global_batch_size < 0:
            fail("train.grad_accum" if t.grad_accum < 0 else "train.global_batch_size", "must be >= 0")
        if not t.trainable:
            fail("train.trainable", "is empty; list parameter-name patterns, or [all]")
        for key, (_, what) in ROW_FREEZES.items():
            rows = getattr(t, key)
            if rows == "auto" and not m.init_from:
                fail(f"train.{key}", "'auto' reads the first new token id from model.init_from (a koneox extend-vocab "
                                     "output or an export of a run started from one), and model.init_from is not set")
            if rows != "auto" and rows < 0:
                fail(f"train.{key}", f"must be >= 0, got {rows}")
            if rows and p.zero_stage == 3:
                fail(f"train.{key}", "is not supported with ZeRO stage 3 (partitioned parameters); use "
                                     "parallel.zero_stage 1 or 2")
            if rows and t.adam_eps <= 0:
                fail("train.adam_eps", f"must be > 0 with train.{key}: Adam's update of a frozen row is "
                                       "0 / (0 + eps), which needs eps > 0 to be exactly 0")
            # With model.init_from the vocabulary comes from the checkpoint: the trainer checks it there.
            if not m.init_from and rows != "auto" and rows > m.padded_vocab_size:
                fail(f"train.{key}", f"{rows} exceeds the {m.padded_vocab_size} {what} rows")
        if t.min_lr > t.lr:
            fail("train.min_lr", f"{t.min_lr} is above train.lr {t.lr}")
        if self.data.seq_len > m.max_position_embeddings:
            fail("data.seq_len", f"{self.data.seq_len} exceeds model.max_position_embeddings "
                                 f"{m.max_position_embeddings}")
        if world_size is not None and world_size % p.tensor_parallel:
            fail("parallel.tensor_parallel",
                 f"{p.tensor_parallel} does not divide the world size {world_size}")
        dp = world_size // p.tensor_parallel if world_size else p.data_parallel
        if world_size and p.data_parallel and p.data_parallel != dp:
            fail("parallel.data_parallel",
                 f"expects {p.data_parallel} data-parallel ranks, but {world_size} ranks / "
                 f"tensor_parallel {p.tensor_parallel} give {dp}")
        if dp:
            self.batch_layout(dp, source)

    def batch_layout(self, dp: int, source: str = "config") -> tuple[int, int, int]:
        """(micro, accumulation, global) for ``dp`` data-parallel ranks; fills in the derived one."""
        t = self.train
        micro, accum, glob = t.micro_batch_size, t.grad_accum, t.global_batch_size
        if accum and glob and micro * accum * dp != glob:
            raise ConfigError(
                f"{source}: train.global_batch_size: {glob} != micro_batch_size {micro} x grad_accum "
                f"{accum} x data-parallel size {dp} = {micro * accum * dp}"
            )
        if not accum and glob:
            if glob % (micro * dp):
                raise ConfigError(
                    f"{source}: train.global_batch_size: {glob} is not a multiple of micro_batch_size "
                    f"{micro} x data-parallel size {dp}"
                )
            accum = glob // (micro * dp)
        accum = accum or 1
        return micro, accum, micro * accum * dp


# -- loading --------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults < YAML file < ``key=value`` overrides, type-checked and validated."""
    raw, source, origins = read_config(path, overrides)
    _start_from_named_size(raw, source, origins)
    cfg = _build(Config, raw, "", source, origins)
    cfg.check(source=source, origins=origins)
    return cfg


def _start_from_named_size(raw: dict[str, Any], source: str, origins: dict[str, str]) -> None:
    """``model.name`` picks a named size: its shape becomes the base that the other ``model.*``
    keys override, as if the size's fields had been written in the file before them."""
    model = raw.get("model")
    if not isinstance(model, dict) or "name" not in model:
        return
    name = model["name"]
    if name not in NAMED_SIZES:
        raise ConfigError(f"{source_of(origins, 'model.name', source)}: model.name: unknown size {name!r}; "
                          f"choose from {', '.join(NAMED_SIZES)}")
    raw["model"] = {**dataclasses.asdict(NAMED_SIZES[name]), **model}
