"""The index cache: splits and epoch indexes built once, shared by every rank, identical samples,
the next epoch built ahead, and the pack's stats sidecar standing in for the token scan."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import DataConfig
from data.dataset import IndexCache, build_datasets, index_cache_dir
from data.indexed import IndexedDataset, IndexedDatasetError, verify_token_ids
from data.loader import DataLoader
from data.pack import pack
from data.testing import read_texts, train_tiny_tokenizer, write_jsonl_gz

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
SEQ = 32
VOCAB = 1000


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """Real Korean text packed twice: short reviews, and law text (few, long documents)."""
    d = tmp_path_factory.mktemp("cache_data")
    reviews = read_texts(SAMPLES / "nsmc_reviews.jsonl.gz", limit=2000)
    law = read_texts(SAMPLES / "ko_law_bills.jsonl.gz")
    tok = train_tiny_tokenizer(reviews[:500] + law, d / "tok", vocab_size=VOCAB)
    out = {}
    for name, texts in (("reviews", reviews), ("law", law)):
        pack([write_jsonl_gz(texts, d / f"{name}.jsonl.gz")], tok, d / name, progress=False)
        out[name] = str(d / name)
    return out


def _copy(prefix: str, to: Path) -> str:
    to.mkdir(parents=True, exist_ok=True)
    for ext in (".bin", ".idx"):
        shutil.copy(prefix + ext, to / f"d{ext}")
    return str(to / "d")


def _blend_cfg(data: dict[str, str], **kw) -> DataConfig:
    base = dict(train_paths=[data["reviews"], data["law"]], weights=[0.8, 0.2], seq_len=SEQ, seed=5,
                split=[0.9, 0.1, 0.0])
    return DataConfig(**{**base, **kw})


def _reference_epoch(ds: IndexedDataset, docs: np.ndarray, key: tuple[int, ...], e: int) -> np.ndarray:
    """Epoch e's samples in visiting order, straight from the definition in data/dataset.py's
    docstring: the documents shuffled and concatenated, cut every SEQ tokens, the cuts shuffled."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*key, e])))
    order = rng.permutation(len(docs))
    stream = np.concatenate([ds.document(int(docs[i])) for i in order]).astype(np.int64)
    s = (len(stream) - 1) // SEQ
    return np.stack([stream[p * SEQ : p * SEQ + SEQ + 1] for p in rng.permutation(s)])


def test_cache_is_built_once_and_keyed_by_files_and_settings(data, tmp_path):
    prefix = _copy(data["reviews"], tmp_path / "d")
    cfg = DataConfig(train_paths=[prefix], seq_len=SEQ, seed=1)
    where = index_cache_dir(cfg)
    assert where == tmp_path / "d" / "index_cache"  # next to the data
    first = IndexCache(where)
    n_docs = len(build_datasets(cfg, VOCAB, cache=first)["train"].datasets[0].documents)
    next(DataLoader(build_datasets(cfg, VOCAB, cache=first)["train"], 4))
    assert [w for _, w in first.built] == ["split", "e0 sync"]
    again = IndexCache(where)
    sets = build_datasets(cfg, VOCAB, cache=again)
    next(DataLoader(sets["train"], 4))
    assert again.built == []  # a hit: nothing rebuilt
    assert not sets["train"].datasets[0].indexed._validate  # ... and the files were not re-read
    assert not sets["train"].datasets[0].documents.flags.owndata  # a view of the cached file
    names = {n for n, _ in first.built}
    for changed in (dict(seed=2), dict(seq_len=SEQ + 1), dict(split_seed=3)):
        other = IndexCache(where)
        build_datasets(DataConfig(**{**cfg.__dict__, **changed}), VOCAB, cache=other)
        assert [w for _, w in other.built] == ["split"], changed
        assert not {n for n, _ in other.built} & names
    # The same path with other contents (a size change) is another key: repacked with fewer documents.
    tok = Path(data["reviews"]).parent / "tok"
    texts = read_texts(SAMPLES / "nsmc_reviews.jsonl.gz", limit=1500)
    pack([write_jsonl_gz(texts, tmp_path / "fewer.jsonl.gz")], tok, prefix, progress=False)
    repacked = IndexCache(where)
    g = build_datasets(cfg, VOCAB, cache=repacked)["train"].datasets[0]
    assert [w for _, w in repacked.built] == ["split"] and not {n for n, _ in repacked.built} & names
    assert len(g.documents) < n_docs
    assert not list(where.glob("*.tmp"))


def test_cached_samples_equal_the_uncached_path_and_the_definition(data, tmp_path):
    cfg = _blend_cfg(data)
    plain = build_datasets(cfg, VOCAB)
    cached = build_datasets(cfg, VOCAB, cache=IndexCache(tmp_path / "cache"))
    for split in ("train", "valid"):
        a, b = plain[split], cached[split]
        n = 3 * sum(a.samples_per_epoch)  # several epochs of every component
        for start in (0, 1, n // 3 + 7, n - 50):
            ta, ca, ea = a.get_batch(start, 50)
            tb, cb, eb = b.get_batch(start, 50)
            np.testing.assert_array_equal(ta, tb)
            np.testing.assert_array_equal(ca, cb)
            np.testing.assert_array_equal(ea, eb)
    g = cached["train"].datasets[1]  # law: few documents, each many samples long
    for e in (0, 2):
        want = _reference_epoch(g.indexed, np.asarray(g.documents), (cfg.seed, *g.key), e)
        np.testing.assert_array_equal(g.get_many(np.arange(e * len(g), (e + 1) * len(g))), want)


def _regroup(prefix: str, out: Path) -> str:
    """The same tokens as a Megatron-LM file: several sequences per document, some of them empty."""
    ds = IndexedDataset(prefix)
    rng = np.random.default_rng(0)
    lengths = np.asarray(ds.lengths).copy()
    empty = np.sort(rng.choice(len(lengths), 200, replace=False))
    lengths = np.insert(lengths, empty, 0)  # zero-length sequences in between
    pointers = np.concatenate(([0], np.cumsum(lengths[:-1].astype(np.int64) * ds.dtype.itemsize)))
    cuts = np.sort(rng.choice(np.arange(1, len(lengths)), len(lengths) // 4, replace=False))
    doc_index = np.concatenate(([0], cuts, [len(lengths)])).astype(np.int64)
    out.mkdir()
    shutil.copy(ds.bin_file, out / "m.bin")
    with open(out / "m.idx", "wb") as f:
        f.write(struct.pack("<9sQBQQ", b"MMIDIDX\x00\x00", 1, ds.dtype_code, len(lengths), len(doc_index)))
        f.write(lengths.tobytes() + pointers.tobytes() + doc_index.tobytes())
    return str(out / "m")


def test_documents_of_several_sequences_index_the_same_way(data, tmp_path):
    prefix = _regroup(data["reviews"], tmp_path / "megatron")
    cfg = DataConfig(train_paths=[prefix], seq_len=SEQ, seed=9, split=[0.8, 0.2, 0.0])
    g = build_datasets(cfg, VOCAB, cache=IndexCache(tmp_path / "cache"))["train"].datasets[0]
    assert not g.indexed.one_sequence_per_document
    want = _reference_epoch(g.indexed, np.asarray(g.documents), (cfg.seed, *g.key), 1)
    np.testing.assert_array_equal(g.get_many(np.arange(len(g), 2 * len(g))), want)


def _rank_main(rank: int, cfg_dict: dict, cache_dir: str, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = DataConfig(**cfg_dict)
    # The trainer's protocol (train/trainer.py _setup_data): rank 0 builds, the other waits, then maps.
    cache = IndexCache(cache_dir, builder=rank == 0, wait_s=60)
    sets = build_datasets(cfg, VOCAB, cache=cache) if rank == 0 else None
    dist.barrier()
    if rank:
        sets = build_datasets(cfg, VOCAB, cache=cache)
    loader = DataLoader(sets["train"], 4, dp_rank=rank, dp_size=2)
    tokens = []
    while loader.consumed_samples + 8 <= 2.4 * sets["train"].samples_per_epoch[0]:  # epoch 3 not queued
        tokens.append(next(loader).tokens.numpy())
        dist.barrier()  # ranks move in step, as they do in training
    cache.wait_idle()
    validated = [g.indexed._validate for g in sets["train"].datasets]
    np.save(Path(out_dir) / f"tokens{rank}.npy", np.stack(tokens))
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({"built": cache.built, "validated": validated}))
    dist.destroy_process_group()


def test_two_ranks_share_one_cache_and_only_rank_0_builds(data, tmp_path):
    import torch.multiprocessing as mp

    cfg = DataConfig(train_paths=[data["law"]], seq_len=SEQ, seed=4, split=[1.0, 0.0, 0.0])
    mp.start_processes(_rank_main, args=(cfg.__dict__, str(tmp_path / "cache"), str(tmp_path / "init"),
                                         str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[1]["built"] == [] and ranks[1]["validated"] == [False]
    assert [w for _, w in ranks[0]["built"]] == ["split", "e0 sync", "e1 background", "e2 background"]
    reference = DataLoader(build_datasets(cfg, VOCAB)["train"], 8)  # one process reading the global batch
    seen = [np.load(tmp_path / f"tokens{r}.npy") for r in (0, 1)]  # (steps, 4, SEQ + 1) each
    for step in range(len(seen[0])):
        np.testing.assert_array_equal(np.concatenate([seen[0][step], seen[1][step]]), next(reference).tokens)


def test_next_epoch_is_built_in_the_background_from_half_an_epoch(data, tmp_path):
    cfg = DataConfig(train_paths=[data["reviews"]], seq_len=SEQ, seed=6, split=[1.0, 0.0, 0.0])
    cache = IndexCache(tmp_path / "cache")
    train = build_datasets(cfg, VOCAB, cache=cache)["train"]
    g, per_epoch = train.datasets[0], train.samples_per_epoch[0]
    loader = DataLoader(train, 16)
    queued_at = {}
    while loader.consumed_samples + 16 <= 2.4 * per_epoch:  # not far enough to queue epoch 3
        before = loader.consumed_samples
        batch = next(loader)
        for e in (1, 2):
            if e not in queued_at and ((g.cache_name, e) in cache._pending or (g.cache_name, e) in cache._ready):
                queued_at[e] = before + 16
        if batch.crossed_epoch:  # the boundary batch found its epoch queued or done, never missing
            assert (g.cache_name, int(batch.epoch)) in cache._pending
    for e in (1, 2):  # queued by the batch that took the position past half of the epoch before
        assert abs(queued_at[e] - (e - 0.5) * per_epoch) <= 16
    cache.wait_idle()
    assert [w for _, w in cache.built] == ["split", "e0 sync", "e1 background", "e2 background"]
    follower = IndexCache(tmp_path / "cache", builder=False, wait_s=0)
    other = build_datasets(cfg, VOCAB, cache=follower)["train"]
    assert torch.equal(DataLoader(other, 16, consumed_samples=2 * per_epoch).__next__().tokens,
                       DataLoader(train, 16, consumed_samples=2 * per_epoch).__next__().tokens)
    with pytest.raises(TimeoutError, match="e0003.order.npy: not built"):
        other.datasets[0].get_many(np.array([3 * per_epoch]))  # a non-builder never builds
    assert follower.built == []


def test_stats_sidecar_stands_in_for_the_token_scan(data, tmp_path):
    prefix = _copy(data["law"], tmp_path / "d")
    ds = IndexedDataset(prefix)
    ids = np.asarray(ds.tokens)
    stats = {"num_documents": ds.num_documents, "num_tokens": ds.num_tokens, "max_token_id": int(ids.max()),
             "min_token_id": int(ids.min()), "bin_bytes": ds.bin_file.stat().st_size, "dtype": "uint16",
             "tokenizer": "tok", "vocab_size": VOCAB}
    sidecar = Path(prefix + ".stats.json")
    # Corrupt one token in place (same size): only a scan can see it, so no error proves no scan.
    tokens = np.memmap(prefix + ".bin", dtype=np.uint16, mode="r+")
    tokens[7] = VOCAB + 3
    tokens.flush()
    del tokens
    sidecar.write_text(json.dumps(stats))
    assert verify_token_ids([prefix], VOCAB, stamp=tmp_path / "stamp.json") == 0
    build_datasets(DataConfig(train_paths=[prefix], seq_len=SEQ), VOCAB)  # the opening check uses it too
    with pytest.raises(IndexedDatasetError, match=f"token id {VOCAB + 3} at token 7 is outside the vocabulary"):
        verify_token_ids([prefix], VOCAB - 500)  # stats say an id is too big for this vocabulary: scanned
    sidecar.write_text(json.dumps({**stats, "bin_bytes": stats["bin_bytes"] + 2}))  # describes another .bin
    with pytest.raises(IndexedDatasetError, match=f"token id {VOCAB + 3} at token 7"):
        verify_token_ids([prefix], VOCAB)
    sidecar.unlink()
    with pytest.raises(IndexedDatasetError, match=f"token id {VOCAB + 3} at token 7"):
        verify_token_ids([prefix], VOCAB)


def test_an_unwritable_data_directory_falls_back_to_the_run_directory(data, tmp_path):
    prefix = _copy(data["law"], tmp_path / "d")
    (tmp_path / "d" / "index_cache").write_text("")  # a file in the way: the directory cannot be made
    cfg = DataConfig(train_paths=[prefix], seq_len=SEQ)
    assert index_cache_dir(cfg, tmp_path / "run") == tmp_path / "run" / "index_cache"
