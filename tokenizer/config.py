"""Settings of tokenizer training (the ``tokenizer`` section of a koneox config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenizerConfig:
    path: str = ""
    """Directory of a Hugging Face tokenizer to use for packing and training ('' = none yet)."""
    vocab_size: int = 30003
    """Final vocabulary size: learned entries plus the three PII tokens."""
