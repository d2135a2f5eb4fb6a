"""Samples, splits, epochs and blends over packed real Korean text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data.config import DataConfig
from data.dataset import BlendedDataset, build_datasets, split_documents
from data.indexed import IndexedDataset, IndexedDatasetError
from data.pack import pack
from data.testing import corpus_dir, read_texts, train_tiny_tokenizer, write_jsonl_gz

CORPUS = corpus_dir()
pytestmark = pytest.mark.skipif(not (CORPUS / "raw").is_dir(), reason=f"shared corpus not found at {CORPUS}")
SEQ = 64
VOCAB = 2000


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory) -> dict[str, Path]:
    """Three packed sources of different character: short reviews, long law text, help pages."""
    d = tmp_path_factory.mktemp("ds")
    raw = CORPUS / "raw"
    texts = {
        "reviews": read_texts(raw / "nsmc_reviews.jsonl.gz", limit=3000),
        "law": read_texts(raw / "ko_law_bills.jsonl.gz"),
        "help": read_texts(raw / "debian_faq_ko.jsonl.gz"),
    }
    tok = train_tiny_tokenizer(texts["reviews"] + texts["law"], d / "tok", vocab_size=VOCAB)
    out = {}
    for name, docs in texts.items():
        pack([write_jsonl_gz(docs, d / f"{name}.jsonl.gz")], tok, d / name, progress=False)
        out[name] = d / name
    return out


def _eos(prefix: Path) -> int:
    return int(IndexedDataset(prefix).document(0)[-1])


def _stream_of_epoch(g, epoch: int) -> np.ndarray:
    """Rebuild an epoch's token stream from its samples: consecutive samples overlap by one token."""
    ks = np.arange(epoch * len(g), (epoch + 1) * len(g))
    epochs, pos = g.locate(ks)
    assert (epochs == epoch).all() and sorted(pos) == list(range(len(g)))
    samples = g.get_many(ks)[np.argsort(pos)]  # (S, SEQ + 1) in stream order
    assert (samples[1:, 0] == samples[:-1, -1]).all()
    return np.concatenate([samples[0], samples[1:, 1:].ravel()])


def _split_docs(stream: np.ndarray, eos: int) -> list[tuple[int, ...]]:
    ends = np.nonzero(stream == eos)[0]
    starts = np.concatenate(([0], ends[:-1] + 1))
    return [tuple(stream[a : b + 1].tolist()) for a, b in zip(starts, ends, strict=True)]


def test_samples_run_across_documents_and_cover_only_the_train_split(prefixes):
    cfg = DataConfig(train_paths=[str(prefixes["reviews"])], seq_len=SEQ, split=[0.9, 0.05, 0.05])
    sets = build_datasets(cfg, vocab_size=VOCAB)
    ds = IndexedDataset(prefixes["reviews"])
    eos = _eos(prefixes["reviews"])
    by_split = {}
    for name in ("train", "valid", "test"):
        g = sets[name].datasets[0]
        assert g.samples_per_epoch == (g.num_tokens - 1) // SEQ
        by_split[name] = Counter(tuple(ds.document(int(d)).tolist()) for d in g.documents)
    g = sets["train"].datasets[0]
    stream = _stream_of_epoch(g, 0)
    assert len(stream) == g.samples_per_epoch * SEQ + 1
    docs = _split_docs(stream, eos)
    # every complete document in the stream is a whole train document, used at most once
    # (as a multiset: the raw reviews hold some exact duplicates)
    assert len(docs) > 0.95 * len(g.documents)
    assert not Counter(docs) - by_split["train"]
    held_out_only = (set(by_split["valid"]) | set(by_split["test"])) - set(by_split["train"])
    assert len(held_out_only) > 200 and not set(docs) & held_out_only
    # the samples really cross boundaries: most 65-token windows of short reviews hold an EOS
    samples = g.get_many(np.arange(50))
    assert ((samples[:, :-1] == eos).sum(axis=1) >= 1).mean() > 0.75


def test_split_is_by_document_and_does_not_move_with_the_sample_seed(prefixes):
    parts = split_documents(10_000, [0.9, 0.07, 0.03], split_seed=0)
    assert [len(p) for p in parts] == [9000, 700, 300]
    allp = np.concatenate(parts)
    assert len(np.unique(allp)) == 10_000 and allp.min() == 0 and allp.max() == 9999
    assert not np.array_equal(split_documents(10_000, [0.9, 0.07, 0.03], split_seed=1)[1], parts[1])
    a = build_datasets(DataConfig(train_paths=[str(prefixes["reviews"])], seq_len=SEQ, seed=1), VOCAB)
    b = build_datasets(DataConfig(train_paths=[str(prefixes["reviews"])], seq_len=SEQ, seed=2), VOCAB)
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(a[s].datasets[0].documents, b[s].datasets[0].documents)
    ka = a["train"].datasets[0].get_many(np.arange(20))
    assert not np.array_equal(ka, b["train"].datasets[0].get_many(np.arange(20)))


def test_next_epoch_reshuffles_the_same_documents_and_is_reproducible(prefixes):
    cfg = DataConfig(train_paths=[str(prefixes["reviews"])], seq_len=SEQ, seed=7)
    g = build_datasets(cfg, VOCAB)["train"].datasets[0]
    eos = _eos(prefixes["reviews"])
    s0, s1 = _stream_of_epoch(g, 0), _stream_of_epoch(g, 1)
    assert not np.array_equal(s0, s1)
    d0, d1 = _split_docs(s0, eos), _split_docs(s1, eos)
    overlap = len(set(d0) & set(d1)) / len(set(d0))
    assert overlap > 0.95  # same documents, only the few cut off at each epoch's tail differ
    ks = np.random.default_rng(0).integers(0, 5 * len(g), 64)
    again = build_datasets(cfg, VOCAB)["train"].datasets[0]
    np.testing.assert_array_equal(g.get_many(ks), again.get_many(ks))
    np.testing.assert_allclose(g.epoch_of(ks), ks / len(g))


@pytest.fixture(scope="module")
def blend(prefixes) -> BlendedDataset:
    cfg = DataConfig(
        train_paths=[str(prefixes[n]) for n in ("reviews", "law", "help")],
        weights=[0.6, 0.2, 0.2],
        seq_len=SEQ,
        split=[1.0, 0.0, 0.0],
    )
    return build_datasets(cfg, VOCAB)["train"]


def test_blend_proportions_are_exact_over_10k_samples(blend):
    n = 10_000
    comp, k = blend.assign(0, n)
    counts = np.bincount(comp, minlength=3)
    np.testing.assert_allclose(counts / n, [0.6, 0.2, 0.2], atol=0.01)
    # stronger: every prefix is within one sample of its share
    running = np.cumsum(np.eye(3, dtype=np.int64)[comp], axis=0)  # (n, 3)
    target = np.arange(1, n + 1)[:, None] * blend.weights[None, :]
    assert np.abs(running - target).max() <= 1.0
    # each component's samples are taken in order 0, 1, 2, ... (epochs follow from k)
    for d in range(3):
        np.testing.assert_array_equal(k[comp == d], np.arange(counts[d]))


def test_blend_random_access_matches_the_full_sequence(blend):
    comp, k = blend.assign(0, 5000)
    for a, b in [(0, 17), (1, 2), (999, 1500), (4000, 5000), (2345, 2346)]:
        ca, ka = blend.assign(a, b)
        np.testing.assert_array_equal(ca, comp[a:b])
        np.testing.assert_array_equal(ka, k[a:b])
        np.testing.assert_array_equal(blend.counts_before(a), np.bincount(comp[:a], minlength=3))
    tokens, c2, epochs = blend.get_batch(1200, 40)
    np.testing.assert_array_equal(c2, comp[1200:1240])
    for row in range(40):
        g = blend.datasets[c2[row]]
        np.testing.assert_array_equal(tokens[row], g.get_many(np.array([k[1200 + row]]))[0])
        assert epochs[row] == pytest.approx(k[1200 + row] / g.samples_per_epoch)


def test_blend_reports_epochs_per_component(blend):
    n = 10_000
    ep = blend.epochs(n)
    counts = blend.counts_before(n)
    assert list(ep.values()) == pytest.approx(
        [c / s for c, s in zip(counts, blend.samples_per_epoch, strict=True)]
    )
    # the small FAQ source at weight 0.2 is repeated many times; the epoch is the most-repeated one's
    assert blend.epoch(n) == max(ep.values()) > 1.0


def test_config_errors_name_the_problem(prefixes, tmp_path):
    with pytest.raises(ValueError, match="train_paths is empty"):
        build_datasets(DataConfig(), VOCAB)
    with pytest.raises(ValueError, match="2 entries for 1"):
        build_datasets(DataConfig(train_paths=[str(prefixes["law"])], weights=[1.0, 2.0]), VOCAB)
    with pytest.raises(ValueError, match=r"law.*fewer than seq_len \+ 1"):
        build_datasets(DataConfig(train_paths=[str(prefixes["law"])], seq_len=10**7), VOCAB)
    with pytest.raises(IndexedDatasetError, match=r"nowhere\.idx: missing"):
        build_datasets(DataConfig(train_paths=[str(prefixes["law"]), str(tmp_path / "nowhere")]), VOCAB)
    with pytest.raises(IndexedDatasetError, match="outside the vocabulary of 100"):
        build_datasets(DataConfig(train_paths=[str(prefixes["law"])]), vocab_size=100)
