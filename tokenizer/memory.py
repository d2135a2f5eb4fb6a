"""How much memory BPE learning needs for a sample, and whether this machine has it.

The ``tokenizers`` BPE trainer keeps every distinct pre-token (word) of the sample with its
count, its symbols and, per adjacent symbol pair, the set of words holding it. Peak RSS of one
learning run in a fresh process (30,000 entries plain, 33,000 MeCab-split), on samples drawn by
hash from the cleaned shared corpus (381k documents, 95% NSMC reviews)::

    sample MB   distinct words   plain BPE peak MB   KB per word   MeCab-split words   its peak MB
        1.0           41,324              99              1.88            19,010              48
        1.9           71,599             147              1.76            28,469              61
        3.8          121,685             232              1.74            41,005              74
        7.6          205,824             365              1.67            57,952              95
       15.1          343,123             602              1.69            80,510             116
       30.4          575,762           1,002              1.70           111,087             148
       38.2          681,239           1,175              1.69           123,093             165

The plain BPE (learned too: it lends words and is the report's baseline) is the larger: about
1.7 KB per distinct word, and distinct words grow as sample^0.74, so its peak is
``21 MB + 74.5 MB x (sample MB)^0.754`` (least squares on the points from 7.6 MB; within 1% of
each). Extrapolated: 24 MB of memory per MB of sample at 100 MB, 13.6 at 1 GB (13.6 GB), 7.7 at
10 GB, and 512 GB near a 123 GB sample. The estimate adds 10% (the fit is extrapolated far
beyond the largest sample) and 512 MiB for the rest of the process: 15.5 GB for the default
1 GB sample. Short, noisy reviews are the worst case measured; web text repeats its words more.
"""

from __future__ import annotations

# Fit of the plain BPE's peak RSS (the larger run) on the measured points (see module docstring).
BASE_BYTES = 21_000_000
COEF_BYTES = 74.5e6
EXPONENT = 0.754
# Margin on the fit, which is extrapolated 25x and more beyond the largest measured sample.
SAFETY = 1.1
# Headroom for the rest of the process (pruning sample, held-out text, the two tokenizers).
OTHER_BYTES = 512 * 2**20


class SampleTooLargeError(MemoryError):
    """BPE learning on the requested sample would not fit in the memory budget."""


def learn_peak_bytes(sample_bytes: int) -> int:
    """Estimated peak RSS of training the tokenizer on ``sample_bytes`` of text."""
    mb = max(sample_bytes, 0) / 1e6
    return int(SAFETY * (BASE_BYTES + COEF_BYTES * mb**EXPONENT) + OTHER_BYTES)


def max_sample_bytes(budget_bytes: int) -> int:
    """The largest sample whose estimated peak stays within ``budget_bytes`` (0 if none)."""
    room = (budget_bytes - OTHER_BYTES) / SAFETY - BASE_BYTES
    if room <= 0:
        return 0
    return int((room / COEF_BYTES) ** (1 / EXPONENT) * 1e6)


def available_bytes() -> int | None:
    """MemAvailable of this machine (what can be allocated without swapping), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def describe_model() -> str:
    """One line for help texts: the measured figures behind the refusal."""

    def per_mb(sample_bytes: int) -> float:
        return (BASE_BYTES + COEF_BYTES * (sample_bytes / 1e6) ** EXPONENT) / sample_bytes

    return (
        f"about {per_mb(10**8):.0f} MB per MB of sample at 100 MB, {per_mb(10**9):.1f} at 1 GB, "
        f"{per_mb(10**10):.1f} at 10 GB (1.7 KB per distinct word, measured on reviews; the check adds "
        f"{SAFETY - 1:.0%} and {OTHER_BYTES / 2**20:.0f} MiB)"
    )


def check_sample_fits(sample_bytes: int, budget_bytes: int | None = None) -> dict[str, int | str]:
    """Refuse (``SampleTooLargeError``) a sample whose BPE learning would not fit.

    ``budget_bytes`` None means MemAvailable now. Returns the figures for the report.
    """
    source = "--memory-budget"
    if budget_bytes is None:
        budget_bytes = available_bytes()
        source = "MemAvailable"
    need = learn_peak_bytes(sample_bytes)
    record: dict[str, int | str] = {"sample_bytes": sample_bytes, "estimated_peak_bytes": need}
    if budget_bytes is None:
        return record | {"budget": "unknown (no /proc/meminfo or psutil): not checked"}
    record |= {"budget_bytes": budget_bytes, "budget_from": source}
    if need > budget_bytes:
        fits = max_sample_bytes(budget_bytes)
        advice = (
            f"Use --sample-bytes {_gb(fits, unit=True)} or less, or raise --memory-budget"
            if fits >= 10**6
            else "No sample fits in this budget; raise --memory-budget"
        )
        raise SampleTooLargeError(
            f"a training sample of {_gb(sample_bytes)} needs about {_gb(need)} of memory to learn BPE merges "
            f"({need / max(sample_bytes, 1):.1f} bytes per byte of sample at this size; the tokenizers "
            f"trainer keeps ~1.7 KB per distinct word, measured in tokenizer/memory.py), but the budget is "
            f"{_gb(budget_bytes)} ({source}). {advice} on a machine that has the memory."
        )
    return record


def _gb(n: int, unit: bool = False) -> str:
    if unit:  # a value --sample-bytes accepts
        return f"{n / 1e9:.2f}G" if n >= 10**9 else f"{n // 10**6}M"
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.1f} MB"
