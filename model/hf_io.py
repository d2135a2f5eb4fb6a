"""Reading and writing Hugging Face GPT-NeoX directories (config.json + weights).

Written: ``config.json`` and ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors``
shards plus ``model.safetensors.index.json`` above ``max_shard_bytes``).
Read: the same, or ``pytorch_model.bin`` (sharded or not) as older checkpoints such as
polyglot-ko ship them, loaded with ``torch.load(weights_only=True, mmap=True)``. Reading goes
one tensor at a time (``open_weights``), and from safetensors only the block a tensor-parallel
rank keeps is read from disk (``model.init.materialize``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import ModelConfig

# Buffers that old transformers versions stored in checkpoints; they carry no weights.
_IGNORED_SUFFIXES = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
# transformers 5 names the output head ``lm_head`` in memory; files use ``embed_out``.
_RENAMES = {"lm_head.weight": "embed_out.weight"}


class CheckpointError(ValueError):
    """A Hugging Face directory that cannot be read as a GPT-NeoX model."""


def load_config(path: str | Path) -> ModelConfig:
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: not found (expected a Hugging Face model directory)")
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: invalid JSON ({e})") from e
    return ModelConfig.from_hf_dict(hf, source=str(cfg_file))


def _weight_files(path: Path) -> list[Path]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = path / index_name
        if index.is_file():
            shard_names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [n for n in shard_names if not (path / n).is_file()]
            if missing:
                raise CheckpointError(f"{index}: lists shards that are missing: {', '.join(missing)}")
            return [path / n for n in shard_names]
        if (path / single).is_file():
            return [path / single]
    raise CheckpointError(f"{path}: no model.safetensors[.index.json] or pytorch_model.bin[.index.json]")


def _names(file: Path) -> list[str]:
    """Tensor names in one weight file (a safetensors header, or a memory-mapped .bin)."""
    if file.suffix == ".safetensors":
        with safe_open(str(file), framework="pt") as f:
            return list(f.keys())
    return list(torch.load(file, map_location="cpu", weights_only=True, mmap=True))


def open_weights(path: str | Path, expected: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Yield (name, tensor) for every weight of a GPT-NeoX directory, one at a time, for
    ``model.init.materialize``. From safetensors the tensor is a lazy slice (``get_slice``):
    indexing it reads only that block from disk, so a tensor-parallel rank never reads the rest;
    from a .bin it is memory-mapped. The names are checked against ``expected`` before any data
    is read: missing or unexpected weights are refused, naming the file."""
    path = Path(path)
    files = _weight_files(path)
    expected = set(expected)
    found: set[str] = set()
    unexpected: list[str] = []
    for file in files:
        for raw in _names(file):
            name = _RENAMES.get(raw, raw)
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            if name in expected:
                found.add(name)
            else:
                unexpected.append(f"{name} (in {file.name})")
    missing = sorted(expected - found)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the GPT-NeoX layout of its config.json; "
            f"missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for raw in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if not raw.endswith(_IGNORED_SUFFIXES):
                        yield _RENAMES.get(raw, raw), f.get_slice(raw)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for raw in list(state):
                tensor = state.pop(raw)
                if not raw.endswith(_IGNORED_SUFFIXES):
                    yield _RENAMES.get(raw, raw), tensor
                del tensor


def save_pretrained(
    state: Mapping[str, torch.Tensor],
    cfg: ModelConfig,
    path: str | Path,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 4 << 30,
) -> None:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    hf = cfg.to_hf_dict()
    if dtype is not None:
        hf["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")

    # Group tensors into shards in parameter order, so a shard holds whole layers.
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        t = t.detach().to("cpu", dtype or t.dtype).contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    for stale in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        stale.unlink()
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata=meta)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata=meta)
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def parse_size(text: str) -> int:
    """'2GB', '500MB', '123' (bytes) -> bytes (decimal units, as transformers' max_shard_size)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r}: expected a size such as 2GB, 500MB or a number of bytes")
    unit = (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(m.group(1)) * scale)
