"""Settings of the data stages (the ``data`` section of a koneox config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.clean.config import CleanConfig


@dataclass
class DataConfig:
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Cleaning pipeline settings (``koneox clean``)."""
    seq_len: int = 2048
    """Tokens per training sample (each sample holds seq_len + 1 tokens for the shifted targets)."""
    seed: int = 1234
    """Seed of the shuffled sample index."""
