"""Shared fixtures: where the real Korean text lives."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, especially on a shared machine (8x measured under
    load); the setting is put back for the other test modules. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def korean_texts() -> list[str]:
    """Real Korean documents from the bundled sample: reviews and law text."""
    texts = []
    for name, n in (("nsmc_reviews.jsonl.gz", 200), ("ko_law_bills.jsonl.gz", 11)):
        with gzip.open(SAMPLES / name, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]
    return texts
