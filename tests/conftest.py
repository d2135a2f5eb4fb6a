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
PACKED_VOCAB = 4000


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


@pytest.fixture(scope="session")
def packed(tmp_path_factory) -> str:
    """The bundled reviews, tokenized with a small byte-level BPE of PACKED_VOCAB tokens and packed to
    .bin/.idx: the training data of the multi-rank tests (test_train, test_train_scale, test_slurm)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from data.pack import pack

    root = tmp_path_factory.mktemp("data")
    with gzip.open(SAMPLES / "nsmc_reviews.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=PACKED_VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(root / "tok")
    pack([str(SAMPLES / "nsmc_reviews.jsonl.gz")], str(root / "tok"), str(root / "reviews"), num_proc=1)
    return str(root / "reviews")
