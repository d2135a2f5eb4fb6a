"""Checkpoint directory layout, the ``latest`` pointer, metadata and retention.

    RUN/checkpoints/
        step00000100/            DeepSpeed files (mp_rank_XX_model_states.pt per TP rank,
                                 ZeRO optimizer shards) + our files:
            koneox_meta.json     resolved config, tokenizer path, loader state, step, tokens, epoch
            rng_rank00000.pt     RNG states of each rank (read back with weights_only=True)
        latest                   "step00000100", written by rank 0 after every rank finished

A checkpoint without ``latest`` pointing at it is incomplete and never resumed from.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

META = "koneox_meta.json"


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def step_of(tag: str) -> int:
    return int(tag.removeprefix("step"))


def latest_tag(ckpt_dir: Path) -> str | None:
    """The last complete checkpoint, or None. A pointer to a missing directory is an error."""
    pointer = ckpt_dir / "latest"
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not (ckpt_dir / tag / META).is_file():
        raise FileNotFoundError(f"{pointer}: points at {tag}, which has no {META}; the checkpoint is damaged")
    return tag


def write_latest(ckpt_dir: Path, tag: str) -> None:
    """Atomically move the pointer (write a temp file, then rename)."""
    tmp = ckpt_dir / "latest.tmp"
    tmp.write_text(tag + "\n")
    os.replace(tmp, ckpt_dir / "latest")


def write_meta(ckpt_dir: Path, tag: str, meta: dict[str, Any]) -> None:
    path = ckpt_dir / tag / META
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META).read_text())


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(), "python": random.getstate()[1]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_rng(ckpt_dir: Path, tag: str, rank: int) -> None:
    torch.save(rng_state(), ckpt_dir / tag / f"rng_rank{rank:05d}.pt")


def load_rng(ckpt_dir: Path, tag: str, rank: int) -> None:
    path = ckpt_dir / tag / f"rng_rank{rank:05d}.pt"
    if not path.is_file():
        return  # a run resumed on more ranks than it was saved with: fresh RNG on the new ranks
    state = torch.load(path, weights_only=True)
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def prune(ckpt_dir: Path, keep_last: int, keep_every: int) -> list[str]:
    """Delete checkpoints beyond the last ``keep_last``, except multiples of ``keep_every``.
    The one ``latest`` points at is always kept."""
    tags = sorted((p.name for p in ckpt_dir.glob("step*") if p.is_dir()), key=step_of)
    latest = (ckpt_dir / "latest").read_text().strip() if (ckpt_dir / "latest").is_file() else None
    keep = set(tags[-keep_last:]) if keep_last > 0 else set()
    if keep_every > 0:
        keep |= {t for t in tags if step_of(t) % keep_every == 0}
    if latest:
        keep.add(latest)
    removed = [t for t in tags if t not in keep]
    for tag in removed:
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    return removed
