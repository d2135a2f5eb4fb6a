"""Sharded initialisation (train/sharded_init.py, model/init.py): each tensor-parallel rank
materialises only its block of each weight, and that block is the same slice of the
single-process model, bit for bit.

Values are checked on real ranks: gloo processes run this file as a worker, four with TP=4 and
two with TP=2, for the seeded init and ``model.init_from`` (safetensors and .bin), fp32 and bf16. Memory is checked on one rank of eight of a 1.3B-shaped model, simulated
in one process with torch's fake process group (only shapes matter there).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from model import GPTNeoX, ModelConfig
from model.init import init_values, materialize, shard_index
from train.parallel import COLUMN, ROW

REPO = Path(__file__).resolve().parents[1]
# Small, but every split is whole heads: TP=4 leaves one 16-dim head per rank.
CFG = dict(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, rotary_pct=0.5)


def expected_block(full: torch.Tensor, name: str, tp: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s part of ``full`` under the plan in train/parallel.py (independent of the
    code under test): column layers split dim 0 (weight and bias), row layers the weight's dim 1."""
    module = name.rsplit(".", 1)[0]
    if module.endswith(COLUMN):
        return full.chunk(tp, dim=0)[rank]
    if module.endswith(ROW) and name.endswith(".weight"):
        return full.chunk(tp, dim=1)[rank]
    return full


# -- worker: one real rank ----------------------------------------------------------------------


def _check_blocks(model: torch.nn.Module, full: dict[str, torch.Tensor], tp: int, rank: int) -> None:
    from deepspeed.module_inject.layers import LinearAllreduce, LinearLayer

    from train.parallel import check_sharded

    assert model.ds_autotp_parsed, "deepspeed.initialize would shard the model again"
    check_sharded(model, tp, CFG["hidden_size"], CFG["intermediate_size"])
    params = dict(model.named_parameters())
    assert params.keys() == full.keys()
    for name, p in params.items():
        want = expected_block(full[name], name, tp, rank)
        assert p.dtype == want.dtype and p.shape == want.shape, (name, p.dtype, p.shape, want.shape)
        assert torch.equal(p, want), f"{name}: differs from the single-process slice"
        # The parameter owns exactly its block: no view keeps a full tensor alive.
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size(), name
    for module_name, module in model.named_modules():
        kind = LinearLayer if module_name.endswith(COLUMN) else LinearAllreduce if module_name.endswith(ROW) else None
        if kind is not None:
            assert type(module) is kind, (module_name, type(module))
            assert getattr(module.weight, "gather_params", None) is not None, f"{module_name}: DeepSpeed metadata lost"


def _load_full(directory: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face directory read whole, without our loader."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(file))
    for file in sorted(directory.glob("*.bin")):
        state.update(torch.load(file, weights_only=True))
    return {k: v for k, v in state.items() if not k.endswith("attention.bias")}


def _rank_checks(tp: int, st_dir: Path, bin_dir: Path) -> dict[str, Callable[[], None]]:
    import torch.distributed as dist

    from train.sharded_init import build_shard

    rank = dist.get_rank()  # = the rank in the TP group: one group spans the whole world here
    cfg = ModelConfig(**CFG)
    checks: dict[str, Callable[[], None]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        def init(dtype=dtype):
            # The single-process model as the trainer built it before: full, in the training dtype.
            full = {k: v.to(dtype) for k, v in GPTNeoX(cfg).state_dict().items()}
            _check_blocks(build_shard(cfg, dtype, "cpu", tp), full, tp, rank)

        checks[f"init tp{tp} {str(dtype)[6:]}"] = init
    for fmt, directory in (("safetensors", st_dir), ("bin", bin_dir)):
        def init_from(directory=directory):
            full = {k: v.to(torch.bfloat16) for k, v in _load_full(directory).items()}
            from_cfg = ModelConfig(**CFG, init_from=str(directory))
            _check_blocks(build_shard(from_cfg, torch.bfloat16, "cpu", tp), full, tp, rank)

        checks[f"init_from tp{tp} {fmt}"] = init_from

    def same_as_autotp_on_the_full_model():
        # What deepspeed.initialize did before: the full model, then AutoTP slicing it. Same
        # values, layer classes and DeepSpeed checkpoint metadata (per parameter and per model).
        from deepspeed.checkpoint.constants import DS_AUTOTP_UC_META, UNIVERSAL_CHECKPOINT_INFO
        from deepspeed.module_inject.layers import collect_autotp_universal_checkpoint_info

        from train.sharded_init import apply_autotp, tensor_parallel_group

        before = GPTNeoX(cfg).to(torch.bfloat16)
        apply_autotp(before, tp, tensor_parallel_group(tp)[0])
        now = build_shard(cfg, torch.bfloat16, "cpu", tp)
        assert [type(m) for m in now.modules()] == [type(m) for m in before.modules()]
        for (name, a), (_, b) in zip(now.named_parameters(), before.named_parameters(), strict=True):
            assert torch.equal(a, b) and a.dtype == b.dtype, name
            assert getattr(a, DS_AUTOTP_UC_META, None) == getattr(b, DS_AUTOTP_UC_META, None), name
            assert set(vars(a)) == set(vars(b)), (name, set(vars(a)) ^ set(vars(b)))
        assert getattr(now, UNIVERSAL_CHECKPOINT_INFO) == collect_autotp_universal_checkpoint_info(before)

    checks[f"same as AutoTP on the full model tp{tp}"] = same_as_autotp_on_the_full_model

    def forward():
        # DeepSpeed's TP layers run on the materialised shards: the logits of the whole model.
        ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = GPTNeoX(cfg).eval()(ids)
            got = build_shard(cfg, torch.float32, "cpu", tp).eval()(ids)
        assert (got - want).abs().max().item() < 1e-5, (got - want).abs().max().item()

    checks[f"forward tp{tp}"] = forward
    return checks


def run_rank(out_dir: Path, st_dir: Path, bin_dir: Path) -> None:
    """Run every check on this rank (TP over all ranks); write {check: "ok" or the failure} to
    rank<r>.json. A failed assertion is recorded and the rank goes on, so that the ranks stay
    in step for the collectives of the next check."""
    import deepspeed

    from train.distributed import release_shared_memory_names, shutdown_distributed

    deepspeed.init_distributed(dist_backend="gloo")
    release_shared_memory_names()
    results = {}
    for name, check in _rank_checks(int(os.environ["WORLD_SIZE"]), st_dir, bin_dir).items():
        try:
            check()
            results[name] = "ok"
        except AssertionError:
            results[name] = traceback.format_exc()
    (out_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(results, indent=1))
    shutdown_distributed()


# -- worker: one simulated rank of eight --------------------------------------------------------


def shard_elements(cfg: ModelConfig, tp: int) -> int:
    """Parameters one TP rank holds, from the shapes alone: embeddings, LayerNorms and the row
    layers' biases whole; the column layers (weight, bias) and row weights divided by tp."""
    h, i, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.padded_vocab_size
    replicated = 2 * V * h + L * 6 * h + 2 * h
    split = L * (3 * h * h + 3 * h + h * h + i * h + i + h * i)
    return replicated + split // tp


def run_simulated(out_file: Path, size: str, tp: int) -> None:
    """Rank 0 of ``tp``: build the bf16 shard from a source of uninitialised full tensors (values
    do not matter here) that records how many of them are alive at once."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=0, world_size=tp, store=FakeStore())
    import deepspeed

    from train.distributed import release_shared_memory_names

    deepspeed.init_distributed(dist_backend="gloo")
    release_shared_memory_names()
    from train.sharded_init import build_shard

    cfg = ModelConfig.from_name(size)
    with torch.device("meta"):
        shapes = [(n, p.shape) for n, p in GPTNeoX(cfg).named_parameters()]
    alive: list[weakref.ref] = []
    stats = {"max_alive": 0, "largest_full_bytes": 0}

    def source() -> Iterator[tuple[str, torch.Tensor]]:
        for name, shape in shapes:
            stats["max_alive"] = max(stats["max_alive"], 1 + sum(r() is not None for r in alive))
            full = torch.empty(shape)
            alive.append(weakref.ref(full))
            stats["largest_full_bytes"] = max(stats["largest_full_bytes"], full.nbytes)
            yield name, full
            del full

    model = build_shard(cfg, torch.bfloat16, "cpu", tp, source=source())
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    stats.update(
        shard_bytes=sum(storages.values()),
        expected_shard_bytes=2 * shard_elements(cfg, tp),
        full_bytes=2 * cfg.num_parameters(),
        devices=sorted({p.device.type for p in model.parameters()}),
        still_alive=sum(r() is not None for r in alive),
    )
    out_file.write_text(json.dumps(stats))


# -- tests --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> dict[str, list[str]]:
    """{check: [result of each rank]} from one run of four real ranks (TP=4) and one of two (TP=2)."""
    root = tmp_path_factory.mktemp("sharded")
    st_dir, bin_dir = root / "hf_safetensors", root / "hf_bin"
    base = GPTNeoX(ModelConfig(**CFG, init_seed=7))
    base.save_pretrained(str(st_dir), max_shard_bytes=150_000)  # several files
    assert len(list(st_dir.glob("*.safetensors"))) > 1
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((st_dir / "config.json").read_text())
    old = dict(GPTNeoX(ModelConfig(**CFG, init_seed=8)).state_dict())
    old["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)  # as old files have
    torch.save(old, bin_dir / "pytorch_model.bin")

    results: dict[str, list[str]] = {}
    for tp in (4, 2):
        out = root / f"tp{tp}"
        out.mkdir()
        port = str(free_port())
        procs = [
            subprocess.Popen([sys.executable, __file__, "ranks", str(out), str(st_dir), str(bin_dir)], cwd=REPO,
                             env=worker_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(tp),
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(tp)
        ]
        try:
            outputs = [p.communicate(timeout=300)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        for r, (p, text) in enumerate(zip(procs, outputs, strict=True)):
            assert p.returncode == 0, f"TP={tp} rank {r}:\n{text[-3000:]}"
        per_rank = [json.loads((out / f"rank{r}.json").read_text()) for r in range(tp)]
        results.update({name: [res[name] for res in per_rank] for name in per_rank[0]})
    return results


CHECKS = [name for tp in (4, 2) for name in (
    f"init tp{tp} float32", f"init tp{tp} bfloat16", f"init_from tp{tp} safetensors", f"init_from tp{tp} bin",
    f"same as AutoTP on the full model tp{tp}", f"forward tp{tp}")]


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
def test_every_rank_holds_its_slice_of_the_single_process_model(rank_results, check):
    assert rank_results.keys() == set(CHECKS)
    failures = [f"rank {r}: {res}" for r, res in enumerate(rank_results[check]) if res != "ok"]
    assert not failures, "\n".join(failures)


def test_one_rank_of_eight_allocates_only_its_shard(tmp_path):
    """1.3B at TP=8, bf16: the parameters own exactly one rank's shard (a fifth of the model,
    the replicated embeddings being most of it) and at most one full tensor ever exists."""
    out = tmp_path / "stats.json"
    subprocess.run([sys.executable, __file__, "simulate", str(out), "1.3b", "8"], cwd=REPO, env=worker_env(),
                   check=True, capture_output=True, timeout=300)
    stats = json.loads(out.read_text())
    assert stats["devices"] == ["cpu"]
    assert stats["shard_bytes"] == stats["expected_shard_bytes"] == 2 * 274_544_640
    assert stats["shard_bytes"] < stats["full_bytes"] / 4
    assert stats["max_alive"] == 1 and stats["still_alive"] == 0
    assert stats["largest_full_bytes"] == 4 * 30080 * 2048  # one fp32 embedding


def test_materialize_keeps_the_block_and_drops_the_full_tensor():
    """Single process, no DeepSpeed: a meta model whose TP weights have shard shapes is filled
    with block 2 of 4 of each seeded tensor; the seeded tensors do not outlive their turn."""
    cfg = ModelConfig(**CFG)
    tp, rank = 4, 2
    with torch.device("meta"):
        model = GPTNeoX(cfg)
    for name, p in list(model.named_parameters()):
        local = expected_block(torch.empty(p.shape, device="meta"), name, tp, rank)
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, torch.nn.Parameter(torch.empty(local.shape, device="meta")))
    seen: list[weakref.ref] = []

    def tracked() -> Iterator[tuple[str, torch.Tensor]]:
        for name, full in init_values(cfg):
            assert all(r() is None for r in seen), f"a full tensor outlived its turn before {name}"
            seen.append(weakref.ref(full))
            yield name, full
            del full

    materialize(model, tracked(), shard=rank, dtype=torch.bfloat16)
    full = GPTNeoX(cfg).to(torch.bfloat16).state_dict()
    for name, p in model.named_parameters():
        assert torch.equal(p, expected_block(full[name], name, tp, rank)), name


def test_shard_index_and_refusals():
    assert shard_index((12, 4), (3, 4), 2) == (slice(6, 9), slice(None))
    assert shard_index((4, 12), (4, 6), 1) == (slice(None), slice(6, 12))
    assert shard_index((12,), (12,), 5) == (slice(None),)
    for full, local, shard in (((12, 4), (5, 4), 0), ((12, 4), (6, 2), 0), ((12, 4), (3, 4), 4)):
        with pytest.raises(ValueError):
            shard_index(full, local, shard, "w")
    with torch.device("meta"):
        model = GPTNeoX(ModelConfig(**CFG))
    values = list(init_values(model.config))
    with pytest.raises(ValueError, match="no values for 1 parameter"):
        materialize(model, values[:-1])
    with torch.device("meta"):
        model = GPTNeoX(ModelConfig(**CFG))
    with pytest.raises(ValueError, match="unknown, or given twice"):
        materialize(model, [values[0], values[0]])


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "ranks":
        run_rank(*(Path(a) for a in args))
        # The results are written; leave without interpreter finalization, in which this worker
        # aborted intermittently under CI load ("terminate called without an active exception")
        # even with its process group destroyed.
        sys.stdout.flush()
        os._exit(0)
    else:
        run_simulated(Path(args[0]), args[1], int(args[2]))
