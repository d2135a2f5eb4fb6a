"""Reading and writing Hugging Face GPT-NeoX directories (config.json + weights).

Written: ``config.json`` and ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors``
shards plus ``model.safetensors.index.json`` above ``max_shard_bytes``).
Read: the same, or ``pytorch_model.bin`` (sharded or not) as older checkpoints such as
polyglot-ko ship them, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

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


def iter_tensors(path: str | Path) -> Iterable[tuple[str, torch.Tensor, Path]]:
    """Yield (checkpoint name, tensor, file) one tensor at a time, shard by shard."""
    for file in _weight_files(Path(path)):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    yield name, f.get_tensor(name), file
        else:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for name, tensor in state.items():
                yield name, tensor, file


def load_state_dict(path: str | Path, expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Read every weight of a GPT-NeoX directory; refuse missing or unexpected names."""
    expected = set(expected)
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for name, tensor, file in iter_tensors(path):
        name = _RENAMES.get(name, name)
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        if name not in expected:
            unexpected.append(f"{name} (in {file.name})")
            continue
        state[name] = tensor
    missing = sorted(expected - state.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the GPT-NeoX layout of its config.json; "
            f"missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    return state


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
