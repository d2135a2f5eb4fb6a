"""The loader: exact resume, data-parallel sharding, identical batches across a TP group, epochs, mmap."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import DataConfig
from data.dataset import build_datasets
from data.indexed import IndexedDatasetWriter
from data.loader import DataLoader, data_parallel_coords
from data.pack import pack
from data.testing import corpus_dir, read_texts, train_tiny_tokenizer, write_jsonl_gz

CORPUS = corpus_dir()
pytestmark = pytest.mark.skipif(not (CORPUS / "raw").is_dir(), reason=f"shared corpus not found at {CORPUS}")
SEQ = 32
VOCAB = 2000


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> DataConfig:
    d = tmp_path_factory.mktemp("loader")
    raw = CORPUS / "raw"
    reviews = read_texts(raw / "nsmc_reviews.jsonl.gz", limit=2000)
    law = read_texts(raw / "ko_law_bills.jsonl.gz")
    tok = train_tiny_tokenizer(reviews + law, d / "tok", vocab_size=VOCAB)
    pack([write_jsonl_gz(reviews, d / "reviews.jsonl.gz")], tok, d / "reviews", progress=False)
    pack([write_jsonl_gz(law, d / "law.jsonl.gz")], tok, d / "law", progress=False)
    return DataConfig(
        train_paths=[str(d / "reviews"), str(d / "law")], weights=[0.7, 0.3], seq_len=SEQ, seed=3
    )


def _train(cfg: DataConfig):
    return build_datasets(cfg, vocab_size=VOCAB)["train"]


def test_batches_are_shifted_views_of_seq_len_plus_one_tokens(cfg):
    batch = next(DataLoader(_train(cfg), micro_batch_size=4))
    assert batch.tokens.shape == (4, SEQ + 1) and batch.tokens.dtype == torch.int64
    assert batch.input_ids.shape == batch.labels.shape == (4, SEQ)
    assert torch.equal(batch.input_ids[:, 1:], batch.labels[:, :-1])
    assert int(batch.tokens.max()) < VOCAB


def test_resume_gives_exactly_the_batches_of_an_uninterrupted_run(cfg):
    uninterrupted = DataLoader(_train(cfg), micro_batch_size=4, dp_rank=1, dp_size=2)
    expected = [next(uninterrupted) for _ in range(12)]
    first = DataLoader(_train(cfg), micro_batch_size=4, dp_rank=1, dp_size=2)
    for _ in range(5):
        next(first)
    saved = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as plain data
    # a restarted process: fresh datasets, fresh loader
    resumed = DataLoader(_train(cfg), micro_batch_size=4, dp_rank=1, dp_size=2)
    resumed.load_state_dict(saved)
    for want in expected[5:]:
        got = next(resumed)
        assert torch.equal(got.tokens, want.tokens)
        assert (
            got.step == want.step
            and got.epoch == want.epoch
            and got.consumed_samples == want.consumed_samples
        )


def test_resume_refuses_changed_data_or_batch_layout(cfg):
    state = DataLoader(_train(cfg), micro_batch_size=4, dp_size=2).state_dict()
    other = DataConfig(**{**cfg.__dict__, "weights": [0.5, 0.5]})
    with pytest.raises(ValueError, match="data changed"):
        DataLoader(_train(other), micro_batch_size=4, dp_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="global micro-batches of 8"):
        DataLoader(_train(cfg), micro_batch_size=4, dp_size=3).load_state_dict(state)


def test_data_parallel_ranks_partition_the_global_batch(cfg):
    single = DataLoader(_train(cfg), micro_batch_size=12)
    ranks = [DataLoader(_train(cfg), micro_batch_size=4, dp_rank=r, dp_size=3) for r in range(3)]
    for _ in range(4):
        whole = next(single)
        parts = [next(loader) for loader in ranks]
        assert torch.equal(torch.cat([p.tokens for p in parts]), whole.tokens)
        assert {p.epoch for p in parts} == {whole.epoch}  # every rank logs the same epoch


def test_epoch_progress_and_boundary_flags(cfg):
    one = DataConfig(**{**cfg.__dict__, "train_paths": cfg.train_paths[:1], "weights": []})
    ds = _train(one)
    per_epoch = ds.samples_per_epoch[0]
    loader = DataLoader(ds, micro_batch_size=16)
    crossed, last = [], 0.0
    while loader.consumed_samples < 2.5 * per_epoch:
        b = next(loader)
        assert b.epoch == pytest.approx(b.consumed_samples / per_epoch)
        assert b.epoch_start == pytest.approx(last) and b.epoch > last
        assert (b.sample_epoch.floor() >= int(b.epoch_start)).all()
        last = b.epoch
        if b.crossed_epoch:
            crossed.append(b.step)
    assert crossed == [per_epoch // 16, (2 * per_epoch) // 16]


def _rank_main(rank: int, world: int, tp: int, cfg_dict: dict, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    # DeepSpeed's AutoTP layout: TP groups are consecutive ranks
    tp_groups = [dist.new_group(list(range(i, i + tp))) for i in range(0, world, tp)]
    dp_rank, dp_size = data_parallel_coords(rank, world, tp)
    loader = DataLoader(
        build_datasets(DataConfig(**cfg_dict), VOCAB)["train"], 2, dp_rank=dp_rank, dp_size=dp_size
    )
    got = []
    for _ in range(3):
        tokens = next(loader).tokens
        peers = [torch.empty_like(tokens) for _ in range(tp)]
        dist.all_gather(peers, tokens, group=tp_groups[rank // tp])
        got.append(torch.stack(peers).numpy())  # (tp, B, SEQ + 1)
    np.save(Path(out_dir) / f"rank{rank}.npy", np.stack(got))
    dist.destroy_process_group()


@pytest.mark.slow
def test_tensor_parallel_ranks_see_identical_batches(cfg, tmp_path):
    """4 real gloo ranks, TP=2 x DP=2: TP peers read the same rows, DP ranks different ones."""
    import torch.multiprocessing as mp

    world, tp = 4, 2
    # fork: the ranks inherit the imported modules instead of re-importing torch four times
    mp.start_processes(
        _rank_main,
        args=(world, tp, cfg.__dict__, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world,
        start_method="fork",
    )
    seen = [np.load(tmp_path / f"rank{r}.npy") for r in range(world)]  # each (steps, tp, B, SEQ + 1)
    for r in range(world):
        np.testing.assert_array_equal(seen[r][:, 0], seen[r][:, 1])  # what the TP group gathered
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[2], seen[3])
    assert not np.array_equal(seen[0], seen[2])
    reference = DataLoader(_train(cfg), micro_batch_size=4)
    for step in range(3):
        whole = next(reference).tokens.numpy()
        np.testing.assert_array_equal(np.concatenate([seen[0][step, 0], seen[2][step, 0]]), whole)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="needs /proc to read the resident set size"
)
def test_loader_memory_does_not_grow_with_file_size(tmp_path):
    """A 1 GiB token file (sparse on disk) is opened and sampled without being read into memory."""
    n_docs, doc_len = 4096, (1 << 29) // 4096  # 2^29 uint16 tokens = 1 GiB
    w = IndexedDatasetWriter(tmp_path / "big", np.uint16)
    w.add_document(np.zeros(doc_len, dtype=np.uint16))
    w._bin.truncate(n_docs * doc_len * 2)  # the remaining documents: zeros, never written
    w._bin.seek(0, os.SEEK_END)
    w.num_tokens = n_docs * doc_len
    w._len.write(np.full(n_docs - 1, doc_len, dtype=np.int32).tobytes())
    w.num_documents = n_docs
    w.finish()
    before = _rss_mb()
    cfg = DataConfig(train_paths=[str(tmp_path / "big")], seq_len=2048, verify_token_ids=False)
    loader = DataLoader(build_datasets(cfg, vocab_size=VOCAB)["train"], micro_batch_size=8)
    for _ in range(20):
        assert next(loader).tokens.shape == (8, 2049)
    assert _rss_mb() - before < 64, "process memory grew with the file size"
