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
    """Seed of the shuffled sample index (document order and sample order of every epoch)."""
    train_paths: list[str] = field(default_factory=list)
    """Prefixes of packed datasets (``PREFIX.bin`` + ``PREFIX.idx``, from ``koneox pack``) to blend."""
    weights: list[float] = field(default_factory=list)
    """Blend weight per ``train_paths`` entry, normalised to sum 1 ([] = proportional to tokens)."""
    split: list[float] = field(default_factory=lambda: [0.98, 0.01, 0.01])
    """Share of each dataset's documents held for train / validation / test (normalised)."""
    split_seed: int = 0
    """Seed of the document -> split assignment, separate from ``seed`` so validation stays held out."""
    index_cache: str = ""
    """Directory of the memory-mapped split / document-order / epoch index cache (``koneox index``).
    "" = ``index_cache`` next to the first data file, or ``RUN/index_cache`` where that is not writable."""
    verify_token_ids: bool = True
    """Check at start-up that no token id is outside the vocabulary: from the maximum id ``koneox pack``
    recorded in ``PREFIX.stats.json``; only data without that sidecar is scanned (once, by rank 0)."""
