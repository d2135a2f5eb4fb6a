"""Metrics to stdout, ``metrics.jsonl`` in the run directory, and wandb (rank 0 only)."""

from __future__ import annotations

import json
import netrc
import os
import time
from pathlib import Path
from typing import Any

from train.config import Config

# Dense bf16 peak TFLOP/s of known accelerators, for MFU (NVIDIA data sheets, without sparsity).
# Keys are matched as substrings of torch.cuda.get_device_name(), case-insensitively, the longest
# key first, so "NVIDIA H100 PCIe" finds "H100 PCIe" before "H100". Hopper comes in three power
# and clock classes: SXM (989, e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H200"), NVL (835) and PCIe
# (756). Ampere A100 is 312 in both PCIe and SXM form ("NVIDIA A100-PCIE-40GB", "...-SXM4-80GB").
PEAK_TFLOPS = {
    "A100": 312.0,
    "A800": 312.0,
    "H100": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H200": 989.0,
    "H200 NVL": 835.0,
    "H800": 989.0,
    "H800 PCIe": 756.0,
}


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by its name (``torch.cuda.get_device_name()``), None if unknown.
    The most specific (longest) matching table key wins."""
    name = device_name.lower()
    matches = [key for key in PEAK_TFLOPS if key.lower() in name]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def wandb_mode(requested: str) -> str:
    """'auto' means online only when an API key is configured (env or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


class MetricsLogger:
    """Writes one JSON object per event; only the process with ``enabled`` writes anything."""

    def __init__(self, cfg: Config, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.wandb = None
        if not enabled:
            return
        self.path = run_dir / "metrics.jsonl"
        self.file = self.path.open("a", encoding="utf-8")
        # The human-readable progress lines, kept next to the metrics (stdout may be lost).
        self.log_file = (run_dir / "train.log").open("a", encoding="utf-8")
        mode = wandb_mode(cfg.logging.wandb.mode)
        if mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.logging.wandb.project, entity=cfg.logging.wandb.entity or None, name=cfg.name,
                dir=str(run_dir), mode=mode, config=cfg.to_dict(), resume="allow",
                id=_run_id(run_dir),
            )
        self.mode = mode

    def log(self, record: dict[str, Any], echo: str | None = None) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=record.get("step"))
        if echo:
            print(echo, flush=True)
            self.log_file.write(echo + "\n")
            self.log_file.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        self.log_file.close()
        if self.wandb is not None:
            self.wandb.finish()


def _run_id(run_dir: Path) -> str:
    """A stable wandb run id per run directory, so a resumed run continues the same wandb run."""
    id_file = run_dir / "wandb_run_id"
    if not id_file.exists():
        import uuid

        id_file.write_text(uuid.uuid4().hex[:12])
    return id_file.read_text().strip()
