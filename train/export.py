"""Training checkpoint -> Hugging Face GPT-NeoX directory (``koneox export``).

    koneox export runs/demo/train --out runs/demo/hf            # a run means its ``latest``
    koneox export runs/demo/train/checkpoints/step00000200 --out hf --dtype bf16

    from train.export import export, load_model
    export("runs/demo/train", "runs/demo/hf")
    model, ckpt = load_model("runs/demo/train")                  # our GPTNeoX, fp32, on CPU

Where the weights are in a DeepSpeed checkpoint (checked on real 0.19.8 checkpoints)::

    ZeRO 0/1/2   mp_rank_{t:02d}_model_states.pt, one per tensor-parallel rank t: ["module"]
                 holds that rank's slice of every weight, in the training dtype
    ZeRO 3       zero_pp_rank_{d}_mp_rank_{t:02d}_model_states.pt: names and (TP-local) shapes
                 only; the values are the fp32 partitions in ..._optim_states.pt: rank d holds,
                 for every parameter in order, ceil(numel / dp) elements of its flattened data

Tensor-parallel slices are joined like train/parallel.py split them::

    column  attention.query_key_value, mlp.dense_h_to_4h   weight and bias: cat on dim 0
    row     attention.dense, mlp.dense_4h_to_h             weight: cat on dim 1; bias replicated
    the rest (embeddings, LayerNorms, output head)          replicated: rank 0's copy

Memory: the input files are memory-mapped and the output is written one safetensors shard at
a time, so at most one output shard (plus one parameter being joined) is in RAM, never a
full copy of the model.

Files: ``torch.load(weights_only=True)`` everywhere. The ZeRO-3 optimizer files pickle two
DeepSpeed objects (``LossScaler``, ``ZeroStageEnum``); they are allowed by name
(``torch.serialization.safe_globals``) instead of falling back to ``weights_only=False``.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from model import GPTNeoX, ModelConfig
from model.hf_io import parse_size
from train import checkpoint as ckpt
from train.parallel import tp_kind

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INDEX = "model.safetensors.index.json"
REPORT = "koneox_export.json"


class ExportError(ValueError):
    """A path that is not a complete koneox checkpoint, or weights that do not fit the config."""


# -- finding checkpoints ----------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory (``.../stepNNNNNNNN``), or the ``latest`` one of a run or of its
    ``checkpoints/`` directory."""
    p = Path(path)
    if (p / ckpt.META).is_file():
        return p
    for ckpt_dir in (p / "checkpoints", p):
        if (ckpt_dir / "latest").is_file():
            tag = ckpt.latest_tag(ckpt_dir)
            if tag is not None:
                return ckpt_dir / tag
    raise ExportError(
        f"{p}: not a koneox checkpoint (no {ckpt.META}) nor a run directory with checkpoints/latest"
    )


def list_checkpoints(run: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first: those at or before ``latest`` (a later
    directory may still be being written, see train/checkpoint.py)."""
    p = Path(run)
    ckpt_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    latest = ckpt.latest_tag(ckpt_dir)
    if latest is None:
        raise ExportError(f"{ckpt_dir}: no 'latest' pointer, so no complete checkpoint")
    last = ckpt.step_of(latest)
    found = [d for d in ckpt_dir.glob("step*") if d.is_dir() and (d / ckpt.META).is_file()]
    return sorted((d for d in found if ckpt.step_of(d.name) <= last), key=lambda d: ckpt.step_of(d.name))


# -- reading one checkpoint -------------------------------------------------------------------


def _load_model_file(path: Path) -> dict[str, Any]:
    # mmap: tensors stay on disk until sliced, so reading all TP ranks costs no RAM up front.
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _load_zero3_optim_file(path: Path) -> dict[str, Any]:
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    with torch.serialization.safe_globals([LossScaler, ZeroStageEnum]):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _slice_flat(groups: list[torch.Tensor], starts: list[int], a: int, b: int) -> torch.Tensor:
    """Elements [a, b) of the concatenation of ``groups`` without concatenating them."""
    pieces = []
    for g, s in zip(groups, starts, strict=True):
        lo, hi = max(a, s), min(b, s + g.numel())
        if lo < hi:
            pieces.append(g[lo - s : hi - s])
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


class _Zero3Rank:
    """The full (data-parallel-merged) weights of one tensor-parallel rank of a ZeRO-3 checkpoint."""

    def __init__(self, model_files: list[Path], optim_files: list[Path]):
        states = _load_model_file(model_files[0])
        self.shapes: dict[str, torch.Size] = {k: v for group in states["param_shapes"] for k, v in group.items()}
        self.dp = len(optim_files)
        flats = []
        for f in optim_files:
            osd = _load_zero3_optim_file(f)["optimizer_state_dict"]
            if int(osd["partition_count"]) != self.dp:
                raise ExportError(f"{f}: partitioned over {osd['partition_count']} ranks, but {self.dp} files exist")
            flats.append(list(osd["fp32_flat_groups"]))
        self.flats = flats
        sizes = [g.numel() for g in flats[0]]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        # Every parameter takes ceil(numel / dp) elements of each rank's flat buffer, in order.
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, shape in self.shapes.items():
            self.offsets[name] = offset
            offset += math.ceil(shape.numel() / self.dp)
        if offset != sum(sizes):
            raise ExportError(f"{optim_files[0].parent}: ZeRO-3 partitions hold {sum(sizes)} elements per rank, "
                              f"the parameter shapes need {offset}")

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def __getitem__(self, name: str) -> torch.Tensor:
        shape = self.shapes[name]
        a = self.offsets[name]
        b = a + math.ceil(shape.numel() / self.dp)
        parts = [_slice_flat(f, self.starts, a, b) for f in self.flats]
        return torch.cat(parts)[: shape.numel()].view(shape)

    def keys(self) -> list[str]:
        return list(self.shapes)


@dataclass
class Checkpoint:
    """One training checkpoint: its metadata and lazy access to its merged weights."""

    path: Path
    meta: dict[str, Any]
    model_config: ModelConfig
    tp_size: int
    zero_stage: int
    ranks: list[Any]
    """Per tensor-parallel rank, a mapping name -> that rank's slice (memory-mapped)."""

    @property
    def step(self) -> int:
        return int(self.meta["state"]["step"])

    @property
    def epoch(self) -> float:
        return float(self.meta["state"]["epoch"])

    @property
    def precision(self) -> str:
        return str(self.meta["config"]["train"]["precision"])

    @property
    def tokenizer_path(self) -> Path | None:
        """The run's tokenizer directory, or None when the run did not record one that exists.
        Relative paths were relative to where training ran: tried there and next to the run."""
        raw = self.meta.get("tokenizer") or self.meta["config"].get("tokenizer", {}).get("path", "")
        if not raw:
            return None
        p = Path(raw)
        run = self.path.parent.parent
        for candidate in (p, run / p, run.parent / p):
            if (candidate / "tokenizer.json").is_file() or (candidate / "tokenizer_config.json").is_file():
                return candidate
        return None

    @property
    def tokenizer_recorded(self) -> str:
        return str(self.meta.get("tokenizer") or "")

    def expected_shapes(self) -> dict[str, torch.Size]:
        """Names and full shapes of every weight, in module order, from the model config."""
        with torch.device("meta"):
            model = GPTNeoX(self.model_config)
        return {k: v.shape for k, v in model.state_dict().items()}

    def tensor(self, name: str, shape: torch.Size | None = None) -> torch.Tensor:
        """The full weight ``name``, joined over tensor-parallel ranks."""
        missing = [t for t, r in enumerate(self.ranks) if name not in r]
        if missing:
            raise ExportError(f"{self.path}: {name} is missing on tensor-parallel rank(s) {missing}")
        pieces = [r[name] for r in self.ranks]
        kind = tp_kind(name) if self.tp_size > 1 else "replicated"
        if kind == "column":
            full = torch.cat(pieces, dim=0)
        elif kind == "row":
            full = torch.cat(pieces, dim=1)
        else:
            full = pieces[0]
            for t, other in enumerate(pieces[1:], 1):
                if other.shape != full.shape or not torch.equal(other, full):
                    diff = (other.float() - full.float()).abs().max().item() if other.shape == full.shape else "shape"
                    warnings.warn(f"{self.path}: replicated weight {name} differs between tensor-parallel "
                                  f"ranks 0 and {t} (max difference {diff}); exporting rank 0's", stacklevel=2)
        if shape is not None and full.shape != shape:
            raise ExportError(f"{self.path}: {name} joins to shape {tuple(full.shape)} over {self.tp_size} "
                              f"tensor-parallel rank(s), the model config expects {tuple(shape)}")
        return full

    def state_dict(self, dtype: torch.dtype | None = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full tensor) in module order, each checked against the config's shape."""
        expected = self.expected_shapes()
        unexpected = sorted(set(self.ranks[0].keys()) - expected.keys())
        if unexpected:
            raise ExportError(f"{self.path}: weights not in the GPT-NeoX layout of its config: {unexpected[:5]}")
        for name, shape in expected.items():
            t = self.tensor(name, shape)
            yield name, t.to(dtype) if dtype is not None else t


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint (or a run's latest) without reading its weights into memory."""
    path = resolve_checkpoint(path)
    meta = ckpt.read_meta(path)
    model_config = ModelConfig(**meta["config"]["model"])
    tp = int(meta.get("tensor_parallel") or meta["config"]["parallel"]["tensor_parallel"])
    plain = sorted(path.glob("mp_rank_*_model_states.pt"))
    if plain:
        if len(plain) != tp:
            raise ExportError(f"{path}: {len(plain)} mp_rank_*_model_states.pt files for tensor_parallel={tp}")
        ranks = [_load_model_file(f)["module"] for f in plain]
        zero = int(meta["config"]["parallel"]["zero_stage"])
    else:
        ranks = []
        for t in range(tp):
            models = sorted(path.glob(f"zero_pp_rank_*_mp_rank_{t:02d}_model_states.pt"), key=_dp_rank)
            optims = sorted(path.glob(f"zero_pp_rank_*_mp_rank_{t:02d}_optim_states.pt"), key=_dp_rank)
            if not models or not optims:
                raise ExportError(f"{path}: no DeepSpeed model files for tensor-parallel rank {t} "
                                  "(neither mp_rank_XX_model_states.pt nor ZeRO-3 zero_pp_rank_* files)")
            ranks.append(_Zero3Rank(models, optims))
        zero = 3
    return Checkpoint(path=path, meta=meta, model_config=model_config, tp_size=tp, zero_stage=zero, ranks=ranks)


def _dp_rank(f: Path) -> int:
    m = re.match(r"zero_pp_rank_(\d+)_", f.name)
    return int(m.group(1)) if m else 0


def load_model(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[GPTNeoX, Checkpoint]:
    """Our GPTNeoX with a checkpoint's weights (one copy in RAM), in eval mode."""
    c = open_checkpoint(path)
    with torch.device("meta"):
        model = GPTNeoX(c.model_config)
    model.load_state_dict(dict(c.state_dict(dtype)), strict=True, assign=True)
    return model.eval(), c


def inference_dtype(device: str, precision: str, requested: str | None = None) -> tuple[torch.dtype, str]:
    """(dtype, why) for evaluating or generating from a model trained in ``precision``.

    On a GPU the default is the training dtype: a 12.8B model in fp32 needs 52 GB and does not fit
    a 40 GB A100, in bf16 it needs 26 GB. On a CPU the default stays fp32 (16-bit matmuls are
    slow there). ``requested`` ('fp32', 'bf16', 'fp16') overrides both."""
    if requested:
        if requested not in DTYPES:
            raise ExportError(f"dtype {requested!r}: choose from {', '.join(DTYPES)}")
        return DTYPES[requested], f"{requested} (--dtype)"
    if torch.device(device).type != "cpu" and precision in DTYPES and precision != "fp32":
        return DTYPES[precision], f"{precision}, the training precision, on {device} (--dtype fp32 to override)"
    return torch.float32, f"fp32 on {device}"


def hf_model(c: Checkpoint, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """``transformers.GPTNeoXForCausalLM`` with the checkpoint's weights in ``dtype``: the model
    an export of this checkpoint would give, and one with a KV cache for generation.

    Built directly on ``device`` in ``dtype`` and filled one joined weight at a time, so neither
    the host nor the GPU ever holds a second or wider copy of the weights."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig.from_dict(c.model_config.to_hf_dict())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = GPTNeoXForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    params = dict(model.named_parameters())
    # transformers 5 calls the output head lm_head in memory; files and our model say embed_out.
    rename = {"embed_out.weight": "lm_head.weight"} if "lm_head.weight" in params else {}
    filled = set()
    with torch.no_grad():
        for name, t in c.state_dict(dtype):
            name = rename.get(name, name)
            if name not in params or params[name].shape != t.shape:
                raise ExportError(f"{c.path}: {name} {tuple(t.shape)} has no place in transformers' GPT-NeoX")
            params[name].copy_(t)
            filled.add(name)
    if filled != params.keys():
        raise ExportError(f"{c.path}: no weights for {sorted(params.keys() - filled)[:5]}")
    return model.eval()


# -- writing ----------------------------------------------------------------------------------


def plan_shards(shapes: dict[str, torch.Size], dtype: torch.dtype, max_shard_bytes: int) -> list[list[str]]:
    """Names per output shard, in order; a tensor larger than the limit gets a shard of its own."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = shape.numel() * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _tokenizer_ids(tok: Any) -> dict[str, int]:
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    return {k: int(v) for k, v in ids.items() if v is not None}


def export(
    source: str | Path,
    out: str | Path,
    dtype: str | None = None,
    max_shard_size: str = "2GB",
    log: Any = print,
) -> dict[str, Any]:
    """Write ``out`` as a Hugging Face GPT-NeoX directory; returns the report (also saved as
    ``out/koneox_export.json``). ``dtype`` None = the training precision."""
    from transformers import AutoTokenizer, GenerationConfig

    start = time.perf_counter()
    c = open_checkpoint(source)
    dtype_name = dtype or c.precision
    if dtype_name not in DTYPES:
        raise ExportError(f"dtype {dtype_name!r}: choose from {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype_name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("model*.safetensors"), out / INDEX, out / "model.safetensors"]:
        stale.unlink(missing_ok=True)

    # The tokenizer decides the special ids written to config.json and generation_config.json:
    # packing put its EOS between documents, whatever the model config's default says.
    cfg = c.model_config
    tok_path = c.tokenizer_path
    tok = None
    if tok_path is not None:
        tok = AutoTokenizer.from_pretrained(str(tok_path))
        ids = _tokenizer_ids(tok)
        cfg = replace(cfg, bos_token_id=ids.get("bos_token_id", ids.get("eos_token_id", cfg.bos_token_id)),
                      eos_token_id=ids.get("eos_token_id", cfg.eos_token_id))
    else:
        why = (f"recorded tokenizer {c.tokenizer_recorded!r} not found" if c.tokenizer_recorded
               else "the run recorded no tokenizer.path")
        warnings.warn(f"{c.path}: {why}; exporting without tokenizer files "
                      "(AutoTokenizer.from_pretrained will not work on the export)", stacklevel=2)

    shapes = c.expected_shapes()
    shards = plan_shards(shapes, torch_dtype, parse_size(max_shard_size))
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: c.tensor(n, shapes[n]).to(torch_dtype).contiguous() for n in names}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for n, t in tensors.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
        del tensors  # one shard in memory at a time
    (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")

    hf = cfg.to_hf_dict()
    hf_dtype = str(torch_dtype).removeprefix("torch.")
    hf["torch_dtype"] = hf["dtype"] = hf_dtype  # transformers 4 reads torch_dtype, 5 reads dtype
    if c.meta.get("vocab_extension"):  # a run started from an extend-vocab output: keep its record
        from model.extend_vocab import CONFIG_KEY

        hf[CONFIG_KEY] = c.meta["vocab_extension"]
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    pad = _tokenizer_ids(tok).get("pad_token_id", cfg.eos_token_id) if tok is not None else cfg.eos_token_id
    GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                     pad_token_id=pad).save_pretrained(str(out))
    if tok is not None:
        tok.save_pretrained(str(out))

    report = {
        "source": str(c.path),
        "step": c.step,
        "epoch": c.epoch,
        "consumed_tokens": c.meta["state"].get("consumed_tokens"),
        "tensor_parallel": c.tp_size,
        "zero_stage": c.zero_stage,
        "training_precision": c.precision,
        "dtype": dtype_name,
        "parameters": sum(s.numel() for s in shapes.values()),
        "shards": len(shards),
        "bytes": total,
        "tokenizer": str(tok_path) if tok_path else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"exported {c.path} (step {c.step}, epoch {c.epoch:.3f}, TP={c.tp_size}, ZeRO-{c.zero_stage}) -> {out}: "
        f"{report['parameters']:,} parameters in {len(shards)} shard(s), {dtype_name}"
        + ("" if tok_path else ", no tokenizer"))
    return report


def is_hf_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()



# -- command line -----------------------------------------------------------------------------


def recommended_checkpoint(selection_dir: str | Path) -> str:
    """The checkpoint recommended in ``selection_dir/selection.json`` (written by koneox select)."""
    path = Path(selection_dir) / "selection.json"
    if not path.is_file():
        raise ExportError(f"{path}: not found; run `koneox select` first")
    chosen = json.loads(path.read_text(encoding="utf-8")).get("recommended")
    if not chosen:
        raise ExportError(f"{path}: no checkpoint was recommended (every one was flagged as degenerate)")
    return str(chosen)


def add_arguments(parser: Any) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN",
                        help="a checkpoint directory (RUN/checkpoints/stepNNNNNNNN) or a run directory (its latest)")
    parser.add_argument("--out", required=True, help="output Hugging Face directory")
    parser.add_argument("--recommended", action="store_true",
                        help="export the checkpoint that `koneox select` recommended: CHECKPOINT_OR_RUN is then "
                             "the directory holding selection.json (the run directory by default)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="weight dtype of the export (default: the training precision)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard (default 2GB)")


def run(args: Any) -> int:
    import sys

    try:
        source = recommended_checkpoint(args.checkpoint) if args.recommended else args.checkpoint
        export(source, args.out, dtype=args.dtype, max_shard_size=args.max_shard_size)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"koneox export: {e}", file=sys.stderr)
        return 2
    return 0
