"""Settings of tokenizer training (the ``tokenizer`` section of a koneox config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TokenizerConfig:
    path: str = ""
    """Directory of a Hugging Face tokenizer to use for packing and training ('' = none yet)."""
    vocab_size: int = 30003
    """Final vocabulary size: learned entries plus the three PII tokens."""
    text_field: str = "text"
    """Field (JSON) or column (parquet, saved dataset) that holds the document text."""
    sample_bytes: int = 1_000_000_000
    """Train on a deterministic sample of this many UTF-8 bytes of text drawn across all inputs
    (0 = the whole input). BPE learning on 1 GB of review-like text peaks near 13.6 GB (see
    tokenizer.memory; the check asks 15.5 GB, so a 32 GB machine); a sample that would not fit
    in memory is refused before anything is read."""
    sample_spread: float = 4.0
    """Read about this many times sample_bytes, the same share from the start of every input, and
    draw the sample from it by hash (1 = read only what the sample needs; the whole input at most)."""
    memory_budget: int | None = None
    """Bytes BPE learning may use, checked before reading (None = MemAvailable of this machine)."""
    heldout_bytes: int = 2_000_000
    """Bytes of documents kept out of training to measure the quality report (at most 5% of the input)."""
    num_proc: int | None = None
    """MeCab processes (None = all cores)."""
    boundary_policy: str = "hangul-edge"
    """Morpheme boundaries no merge may cross while learning: none, hangul, hangul-edge or all (see tokenizer.morph)."""
    prune_threshold: float = 0.6
    """After learning, drop a token when more than this share of its Hangul occurrences straddle a morpheme (1.0 = never).
    A token that straddles on most of its uses saves about one token per straddling use; pruning it
    frees straddling budget for plain-BPE words that save two or more (cross_budget). Chosen on the
    tuning split of benchmarks/tokenizer_unseen.py (0.995 and 0.8 compress less at the same rate)."""
    prune_rounds: int = 2
    """Encode-measure-prune passes over the training sample."""
    prune_bytes: int = 8_000_000
    """Bytes of the training sample encoded to find tokens that straddle morphemes."""
    cross_budget: float | Literal["auto"] | None = "auto"
    """After pruning, add words of the plain BPE that save the most tokens per straddling use, as
    many as measured on held-out calibration documents (half the held-out ones) that: 'auto' leaves
    equal margins to both targets (cross-morpheme rate <= 0.2x, bytes/token >= 0.8x the plain
    BPE's); a number is a budget on the straddling ratio instead (e.g. 0.18); None = off."""
    extra_merges: float = 0.1
    """Learn this share more entries than needed so pruning can still leave exactly vocab_size."""
    compare_plain: bool = True
    """Also train a plain byte-level BPE of the same size on the same sample, for the quality report."""
    seed: int = 1234
    """Seed of the held-out and sample selection."""
