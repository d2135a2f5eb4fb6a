"""Freezing in the trainer (``train.trainable``, ``train.freeze_embedding_rows_below``): real runs
on CPU ranks that start from a saved Hugging Face directory, then read the final checkpoint back
and compare every tensor with the start bit for bit (weight decay 0.1, so a frozen tensor left
in a decayed optimizer group would move).

One reference run on one process (micro 2 x accumulation 2) is shared: tensor parallelism
(accumulation 2) and ZeRO-2 data parallelism (2 ranks x accumulation 1) read the same four
sequences per step, so their loss curves must match it as well as keep the frozen rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import PACKED_VOCAB
from safetensors.torch import load_file
from test_train import assert_same_curve, launch, metrics, overrides

from train import checkpoint as ckpt
from train.config import ConfigError, load_config
from train.export import open_checkpoint

EMBED_IN = "gpt_neox.embed_in.weight"
K = 2000  # the "old vocabulary": ids below it are frequent BPE pieces of the packed reviews
K_OUT = 1000  # LM-head rows frozen below another id, so that a mask applied to the wrong matrix shows
FROZEN = {"train.trainable": "[embed_in, embed_out]", "train.freeze_embedding_rows_below": K,
          "train.freeze_output_rows_below": K_OUT}
STEPS = 4


def args(run: Path, packed: str, base: Path, **extra) -> list[str]:
    settings = {"train.grad_accum": 2, "train.train_steps": STEPS, "train.weight_decay": 0.1,
                "model.init_from": base, **extra}
    return overrides(run, packed, **settings)


def final_weights(run: Path) -> list[dict[str, torch.Tensor]]:
    """Every tensor-parallel rank's weights in the run's latest checkpoint (replicated tensors
    such as the embeddings are checked on each rank, not only on the one export reads)."""
    return [dict(r.items()) for r in open_checkpoint(run).ranks]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The starting weights: a 2-layer model in a Hugging Face directory (what model.init_from reads)."""
    from model import GPTNeoX, ModelConfig

    path = tmp_path_factory.mktemp("base")
    GPTNeoX(ModelConfig(vocab_size=PACKED_VOCAB, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
                        init_seed=7)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def start(base) -> dict[str, torch.Tensor]:
    return load_file(base / "model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, packed, base) -> tuple[Path, str]:
    """One process, embeddings trainable, input rows below K and LM-head rows below K_OUT frozen, a checkpoint after step 2
    to resume from: (run dir, output)."""
    run = tmp_path_factory.mktemp("frozen_single")
    return run, launch(1, args(run, packed, base, **FROZEN, **{"train.save_interval": 2}))


def assert_frozen_layout(weights: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> None:
    """Rows below K and every non-embedding tensor bit-identical; new rows and the head moved.
    A tensor-parallel shard must equal a block of the start tensor."""
    for name, value in weights.items():
        if name in (EMBED_IN, "embed_out.weight"):
            continue
        assert any(torch.equal(value, block) for d in range(value.dim())
                   for block in start[name].split(value.shape[d], dim=d)), name
    assert torch.equal(weights[EMBED_IN][:K], start[EMBED_IN][:K])
    assert not torch.equal(weights[EMBED_IN][K:], start[EMBED_IN][K:])
    assert torch.equal(weights["embed_out.weight"][:K_OUT], start["embed_out.weight"][:K_OUT])
    assert not torch.equal(weights["embed_out.weight"][K_OUT:K], start["embed_out.weight"][K_OUT:K])


def test_only_the_input_embedding_trains(tmp_path, packed, base, start):
    out = launch(1, args(tmp_path, packed, base, **{"train.trainable": "[embed_in]", "train.train_steps": 3}))
    vocab, hidden = start[EMBED_IN].shape
    total = sum(t.numel() for t in start.values())
    assert f"trainable {vocab * hidden:,} of {total:,} parameters (train.trainable ['embed_in'])" in out
    (weights,) = final_weights(tmp_path)
    assert weights.keys() == start.keys()
    assert not torch.equal(weights[EMBED_IN], start[EMBED_IN])
    for name in weights.keys() - {EMBED_IN}:
        assert torch.equal(weights[name], start[name]), name


def test_frozen_rows_stay_bit_identical(reference, start):
    run, out = reference
    assert f"; rows below {K} of {EMBED_IN} frozen; rows below {K_OUT} of embed_out.weight frozen" in out
    (weights,) = final_weights(run)
    assert_frozen_layout(weights, start)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [{"parallel.tensor_parallel": 2},
                                    {"parallel.zero_stage": 2, "train.grad_accum": 1}], ids=["tp2", "dp2_zero2"])
def test_frozen_rows_on_two_ranks(tmp_path, packed, base, start, reference, layout):
    out = launch(2, args(tmp_path, packed, base, **FROZEN, **layout))
    tp = layout.get("parallel.tensor_parallel", 1)
    assert f"tensor_parallel {tp} x data_parallel {2 // tp}" in out
    shards = final_weights(tmp_path)
    assert len(shards) == tp
    for weights in shards:
        assert_frozen_layout(weights, start)
    assert_same_curve(metrics(tmp_path), metrics(reference[0]))


def test_resume_with_freezing_is_exact(tmp_path, packed, base, reference):
    """Resumed from the reference's step-2 checkpoint in a new run directory: steps 3 and 4 give
    the same losses, and the final weights equal the uninterrupted run's bit for bit."""
    shutil.copytree(reference[0] / "checkpoints" / ckpt.tag_for(2), tmp_path / "checkpoints" / ckpt.tag_for(2))
    ckpt.write_latest(tmp_path / "checkpoints", ckpt.tag_for(2))
    out = launch(1, args(tmp_path, packed, base, **FROZEN))
    assert "resumed from" in out and "at step 2" in out
    resumed, straight = metrics(tmp_path), metrics(reference[0])
    assert sorted(resumed) == [3, 4]
    for step in resumed:
        assert resumed[step]["loss"] == pytest.approx(straight[step]["loss"], rel=1e-7), step
        assert resumed[step]["grad_norm"] == pytest.approx(straight[step]["grad_norm"], rel=1e-7), step
    (after,), (uninterrupted,) = final_weights(tmp_path), final_weights(reference[0])
    for name, value in uninterrupted.items():
        assert torch.equal(after[name], value), name


def test_resume_refuses_other_freezing(tmp_path):
    from train.config import TrainConfig
    from train.trainer import check_same_freezing

    saved = {"trainable": ["embed_in", "embed_out"], "freeze_embedding_rows_below": K}
    check_same_freezing(saved, TrainConfig(trainable=["embed_in", "embed_out"], freeze_embedding_rows_below=K), tmp_path)
    check_same_freezing({}, TrainConfig(), tmp_path)  # a checkpoint from before these keys existed
    with pytest.raises(ConfigError, match=r"train.freeze_embedding_rows_below: 0 differs from 2000 in the checkpoint"):
        check_same_freezing(saved, TrainConfig(trainable=["embed_in", "embed_out"]), tmp_path)
    with pytest.raises(ConfigError, match=r"train.trainable: \['all'\] differs"):
        check_same_freezing(saved, TrainConfig(), tmp_path)
    with pytest.raises(ConfigError, match=r"train.freeze_output_rows_below: 5 differs from 0 in the checkpoint"):
        check_same_freezing(saved, TrainConfig(trainable=["embed_in", "embed_out"], freeze_embedding_rows_below=K,
                                               freeze_output_rows_below=5), tmp_path)


def test_bad_freezing_configs_are_refused_before_training():
    from train.trainer import Trainer, select_trainable

    def refused(*extra: str) -> str:
        with pytest.raises(ConfigError) as e:
            Trainer(load_config("tiny.yaml", ["model.num_layers=2", *extra]))
        return str(e.value)

    msg = refused("train.trainable=[embed_in, embedout]")
    assert msg.startswith("train.trainable: 'embedout' matches no parameter")
    assert "gpt_neox.layers.N.attention.dense.weight" in msg and "embed_out.weight" in msg
    assert "is not in train.trainable" in refused("train.trainable=[embed_out]", "train.freeze_embedding_rows_below=5")
    assert refused("train.trainable=[embed_in]", "train.freeze_output_rows_below=5").startswith(
        "train.freeze_output_rows_below: 5 has no effect: embed_out.weight is not in train.trainable")
    for extra, error in ((["train.freeze_embedding_rows_below=40000"], "rows_below: 40000 exceeds the 30080"),
                         (["train.freeze_embedding_rows_below=5", "parallel.zero_stage=3"], "ZeRO stage 3"),
                         (["train.freeze_embedding_rows_below=5", "train.adam_eps=0"], "train.adam_eps: must be > 0"),
                         (["train.freeze_output_rows_below=-1"], "train.freeze_output_rows_below: must be >= 0"),
                         (["train.freeze_output_rows_below=40000"], "40000 exceeds the 30080 LM-head rows"),
                         (["train.freeze_output_rows_below=5", "parallel.zero_stage=3"], "ZeRO stage 3"),
                         (["train.trainable=[]"], "train.trainable: is empty")):
        with pytest.raises(ConfigError, match=f"command line: .*{error}"):
            load_config("tiny.yaml", extra)

    names = ["gpt_neox.embed_in.weight", "gpt_neox.layers.1.attention.dense.bias",
             "gpt_neox.layers.10.mlp.dense_4h_to_h.weight", "embed_out.weight"]
    assert select_trainable(names, ["all"]) == set(names)
    assert select_trainable(names, ["layers.1."]) == {names[1]}
    assert select_trainable(names, ["*.layers.*.weight", "embed_out"]) == {names[2], names[3]}


@pytest.fixture(scope="module")
def extended(base, tmp_path_factory) -> Path:
    """The test model with the record ``koneox extend-vocab`` writes (old vocabulary K)."""
    import json

    from model.extend_vocab import CONFIG_KEY

    path = tmp_path_factory.mktemp("extended") / "model"
    shutil.copytree(base, path)
    hf = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**hf, CONFIG_KEY: {"old_vocab_size": K}}))
    return path


def test_stage_configs_train_embeddings_then_everything(base, extended):
    """configs/extend/stage{1,2,3}.yaml as shipped, on the test model: the new input rows, then the
    new rows of both embeddings (old rows below K frozen, read from the record: 'auto'), then
    every parameter."""
    from train.trainer import Trainer

    def trainer(stage: int) -> Trainer:
        cfg = load_config(f"extend/stage{stage}.yaml", [f"model.init_from={extended}"])
        assert cfg.train.lr > 0 and cfg.run_dir == Path(f"runs/extend/stage{stage}")
        return Trainer(cfg)

    rows = {s: (trainer(s).cfg.train.freeze_embedding_rows_below, trainer(s).cfg.train.freeze_output_rows_below)
            for s in (1, 2, 3)}
    assert rows == {1: (K, 0), 2: (K, K), 3: (0, 0)}
    assert trainer(1).trainable == {EMBED_IN}
    assert trainer(2).trainable == {EMBED_IN, "embed_out.weight"}
    assert trainer(3).trainable == set(load_file(base / "model.safetensors"))
    lrs = [load_config(f"extend/stage{s}.yaml").train.lr for s in (1, 2, 3)]
    assert lrs == sorted(lrs, reverse=True)
    assert load_config("extend/stage2.yaml").model.init_from.startswith("runs/extend/stage1")


def test_freeze_rows_auto_reads_the_extension_record(base, extended):
    """``auto`` takes the first new id from model.init_from's extend-vocab record, and says what
    is missing when there is none."""
    from model.extend_vocab import CONFIG_KEY
    from train.trainer import Trainer

    with pytest.raises(ConfigError, match=r"'auto' reads the first new token id from model.init_from .* not set"):
        load_config("tiny.yaml", ["train.trainable=[embed_in]", "train.freeze_embedding_rows_below=auto"])
    with pytest.raises(ConfigError, match=r"expected an integer or 'auto', got str 'most'"):
        load_config("tiny.yaml", ["train.freeze_embedding_rows_below=most"])
    with pytest.raises(ConfigError, match=rf"embedding_rows_below: 'auto', but {base}/config.json has no {CONFIG_KEY}"):
        Trainer(load_config("extend/stage1.yaml", [f"model.init_from={base}"]))
    with pytest.raises(ConfigError, match=rf"output_rows_below: 'auto', but {base}/config.json has no {CONFIG_KEY}"):
        Trainer(load_config("extend/stage2.yaml", [f"model.init_from={base}", "train.freeze_embedding_rows_below=3"]))
    cfg = load_config("extend/stage2.yaml", [f"model.init_from={extended}"])
    assert (cfg.train.freeze_embedding_rows_below, cfg.train.freeze_output_rows_below) == ("auto", "auto")
    Trainer(cfg)
    assert (cfg.train.freeze_embedding_rows_below, cfg.train.freeze_output_rows_below) == (K, K)


def test_dry_run_and_resume_check_freezing_before_any_rank_starts(base, tmp_path, capsys):
    """``--dry-run`` validates the trainable patterns against the init_from model and prints what
    trains; resuming with other freezing is a config error (exit 2), not a traceback from ranks."""
    import subprocess
    import sys

    from launch.train import main as train_main

    common = [f"model.init_from={base}", f"train.run_dir={tmp_path}"]
    assert train_main(["--config", "tiny.yaml", "--dry-run", *common, "train.trainable=[embed_in]",
                       f"train.freeze_embedding_rows_below={K}"]) == 0
    out = capsys.readouterr().out
    assert f"trainable    {64 * 4096:,} of " in out and f"rows below {K} of {EMBED_IN} frozen" in out
    assert "vocab 4096" in out  # the shape came from model.init_from, not tiny.yaml's 30,080 rows
    assert train_main(["--config", "tiny.yaml", "--dry-run", *common, "train.trainable=[embedin]"]) == 2
    assert "config error: train.trainable: 'embedin' matches no parameter" in capsys.readouterr().err

    tag = tmp_path / "checkpoints" / ckpt.tag_for(2)
    tag.mkdir(parents=True)
    (tag / ckpt.META).write_text('{"config": {"train": {"trainable": ["embed_in"], "freeze_embedding_rows_below": 7}}}')
    ckpt.write_latest(tmp_path / "checkpoints", ckpt.tag_for(2))
    proc = subprocess.run([sys.executable, "launch/train.py", "--config", "tiny.yaml", *common],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: train.trainable: ['all'] differs from ['embed_in'] in the checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
