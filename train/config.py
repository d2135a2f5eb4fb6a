"""The koneox configuration: one typed dataclass per concern, YAML and dotted CLI overrides.

    cfg = load_config("12.8b.yaml", ["train.lr=1e-4", "parallel.tensor_parallel=4"])

Resolution order: defaults in code < YAML file < command-line overrides. ``model.name``
selects a named size (REFERENCE §1) whose shape the other ``model.*`` keys then override.
A path that does not exist as given is looked up in the repository's ``configs/`` folder.
Every error names the file (or "command line") and the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from data.config import DataConfig
from model.config import NAMED_SIZES, ModelConfig, ModelConfigError
from tokenizer.config import TokenizerConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A configuration problem; the message starts with the file (or 'command line') and key."""


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
            raise ConfigError(f"{_origin(origins, key, source)}: {key}: {msg}")

        try:
            self.model.check()
        except ModelConfigError as e:
            raise ConfigError(f"{_origin(origins, e.key, source)}: {e}") from None
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


def resolve_config_path(path: str | Path) -> Path:
    """The path as given, else ``configs/<path>`` (with or without .yaml) in the repository."""
    p = Path(path)
    for candidate in (p, CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(f.name for f in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{path}: config file not found (looked here and in {CONFIG_DIR}; known: {known})")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults < YAML file < ``key=value`` overrides, type-checked and validated."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    origins: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"command line: {item!r}: overrides are written key=value, e.g. train.lr=1e-4")
        _set_dotted(raw, key, yaml.safe_load(value) if value.strip() else "")
        origins[key] = "command line"
    cfg = _build(Config, raw, "", source, origins)
    cfg.check(source=source, origins=origins)
    return cfg


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"command line: {key}: {part} is not a section")
        d = nxt
    d[parts[-1]] = value


def _origin(origins: dict[str, str], key: str, source: str) -> str:
    # An override of a key, or of any section above it, came from the command line.
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        hit = origins.get(".".join(parts[:i]))
        if hit:
            return hit
    return source


def _build(cls: type, raw: Any, prefix: str, source: str, origins: dict[str, str]) -> Any:
    where = _origin(origins, prefix.rstrip("."), source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'}: expected a mapping, "
                          f"got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if cls is ModelConfig and "name" in raw:
        name = raw["name"]
        if name not in NAMED_SIZES:
            raise ConfigError(f"{_origin(origins, prefix + 'name', source)}: {prefix}name: unknown size "
                              f"{name!r}; choose from {', '.join(NAMED_SIZES)}")
        obj = dataclasses.replace(NAMED_SIZES[name])
    else:
        obj = cls()
    for key, value in raw.items():
        dotted = prefix + str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"{_origin(origins, dotted, source)}: {dotted}: unknown key{suggestion}; "
                              f"valid keys here: {', '.join(names)}")
        setattr(obj, key, _convert(hints[key], value, dotted, source, origins))
    return obj


def _convert(tp: Any, value: Any, key: str, source: str, origins: dict[str, str]) -> Any:
    where = _origin(origins, key, source)

    def wrong(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{where}: {key}: expected {expected}, got {type(value).__name__} {value!r}")

    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", source, origins)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, source, origins)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            wrong("a list")
        return [_convert(args[0], v, f"{key}[{i}]", source, origins) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            wrong("a mapping")
        return {str(k): _convert(args[1], v, f"{key}.{k}", source, origins) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            wrong("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            wrong("an integer")
        return value
    if tp is float:
        # YAML reads "1e-4" (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                wrong("a number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            wrong("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            wrong("a string")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: {key}: unsupported field type {tp!r}")
