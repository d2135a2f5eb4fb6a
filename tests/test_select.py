"""Checkpoint selection on a real tiny run that crosses an epoch boundary, plus the metrics and
decision rules on hand-made inputs.

The run: a 2-layer GPT-NeoX on 300 Korean reviews (240 for training: about 20 steps per epoch),
30 steps with a checkpoint every 10. A fourth checkpoint is made degenerate by editing the
weights of the last one so that one token wins after any input, as Polyglot-Ko's runs did
near their epoch boundary. KoBEST runs on the bundled dev splits (data/samples/kobest), the
first KOBEST_LIMIT examples of KOBEST_TASKS.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_export import make_data, train_run

from train.eval.degeneration import distinct_n, longest_run, rep_l_hits, seq_rep_n, summarize
from train.eval.select import Thresholds, flag_degenerate, recommend

WINNER = 7  # the token the degenerate checkpoint always predicts
KOBEST_TASKS = "kobest_copa,kobest_hellaswag,kobest_sentineg"  # two- and four-choice tasks
KOBEST_LIMIT = 12


pytestmark = pytest.mark.usefixtures("one_thread")


# -- metrics and rules on hand-made inputs ------------------------------------------------------


def test_repetition_metrics_by_hand():
    assert seq_rep_n([1, 2, 3, 4], 1) == 0.0
    assert seq_rep_n([5, 5, 5, 5], 1) == pytest.approx(0.75)
    assert seq_rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)  # (1,2) (2,1) (1,2) (2,1) (1,2)
    assert seq_rep_n([1, 2, 3], 4) == 0.0
    assert longest_run([1, 1, 2, 2, 2, 3]) == 3 and longest_run([]) == 0
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    s = summarize([[9] * 100, list(range(100))])
    assert s["longest_run"] == 100 and s["mean_longest_run"] == pytest.approx(50.5)
    assert s["seq_rep_1"] == pytest.approx((0.99 + 0.0) / 2)


def test_rep_l_counts_predictions_seen_in_the_window():
    inputs = torch.tensor([[1, 2, 3, 4, 5]])
    preds = torch.tensor([[1, 9, 2, 2, 3]])  # position t predicts token t+1 after reading inputs[:t+1]
    assert rep_l_hits(inputs, preds, window=128) == (4, 5)  # 1, 2, 2, 3 seen; 9 never
    assert rep_l_hits(inputs, preds, window=2) == (2, 5)  # t=0: 1 in [1]; t=2: 2 in [2,3]; t=3: [3,4] no


def rows(*values: tuple[float, float, float]) -> list[dict]:
    return [{"checkpoint": f"step{i}", "step": i, "val_loss": v, "seq_rep_4": r, "mean_longest_run": run}
            for i, (v, r, run) in enumerate(values)]


def test_degenerate_checkpoint_is_flagged_and_never_recommended_even_with_the_lowest_loss():
    # Like Polyglot-Ko: the loss keeps falling past the epoch boundary while generation collapses.
    rs = rows((3.0, 0.30, 3.0), (2.8, 0.25, 2.0), (2.5, 0.80, 40.0), (2.6, 0.27, 2.5))
    flag_degenerate(rs, Thresholds())
    assert [r["degenerate"] for r in rs] == [False, False, True, False]
    assert "seq-rep-4 0.800 vs best earlier 0.250" in rs[2]["reasons"][0] and len(rs[2]["reasons"]) == 2
    assert rs[recommend(rs)]["step"] == 3
    # Thresholds are honoured: a looser ratio no longer fires on either measure.
    flag_degenerate(rs, Thresholds(rep_ratio=4.0, run_ratio=50.0))
    assert not any(r["degenerate"] for r in rs) and rs[recommend(rs)]["step"] == 2


def test_rank_by_kobest_takes_the_highest_mean_f1_and_bpb_the_lowest_earliest_on_ties():
    rs = rows((3.0, 0.30, 3.0), (2.8, 0.25, 2.0), (2.5, 0.80, 40.0), (2.6, 0.27, 2.5), (2.7, 0.26, 2.4))
    for r, f1, bpb in zip(rs, (0.40, 0.55, 0.90, 0.55, 0.50), (1.2, 1.1, 1.0, 1.05, None), strict=True):
        r["kobest_f1"], r["bpb"] = f1, bpb
    flag_degenerate(rs, Thresholds())
    assert [r["degenerate"] for r in rs] == [False, False, True, False, False]
    # Step 2 has the best F1 and bpb but is degenerate; steps 1 and 3 tie on F1: the earlier wins.
    assert recommend(rs, "kobest_f1", higher_is_better=True) == 1
    assert recommend(rs, "bpb") == 3  # a row without a value (None) is never picked
    assert recommend(rs) == 3
    assert recommend([rs[2], rs[4]], "bpb") is None


def test_small_absolute_changes_and_the_first_checkpoint_are_not_flagged():
    rs = rows((3.0, 0.95, 90.0), (2.9, 0.01, 1.0), (2.8, 0.04, 3.0))  # 4x but only +0.03, +2 tokens
    flag_degenerate(rs, Thresholds())
    assert not any(r["degenerate"] for r in rs)
    everything_bad = rows((3.0, 0.1, 1.0), (2.0, 0.9, 90.0))
    flag_degenerate(everything_bad, Thresholds())
    assert recommend(everything_bad[1:]) is None


# -- a real run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("select")
    tok, packed = make_data(root, docs=300)
    run = train_run(root / "run", packed, **{"train.micro_batch_size": 4, "train.train_steps": 30,
                                             "train.save_interval": 10, "train.warmup_steps": 3,
                                             "tokenizer.path": str(tok)})
    make_degenerate(run, "step00000030", "step00000040")
    return run


def make_degenerate(run: Path, src: str, dst: str) -> None:
    """Copy a checkpoint and edit it so one token wins whatever the input: the final LayerNorm
    outputs a constant vector b, and the output row of WINNER is b scaled up."""
    ckpt_dir = run / "checkpoints"
    shutil.copytree(ckpt_dir / src, ckpt_dir / dst)
    path = ckpt_dir / dst / "mp_rank_00_model_states.pt"
    state = torch.load(path, weights_only=True)
    m = state["module"]
    b = torch.randn(m["gpt_neox.final_layer_norm.bias"].shape, generator=torch.Generator().manual_seed(0))
    m["gpt_neox.final_layer_norm.weight"].zero_()
    m["gpt_neox.final_layer_norm.bias"].copy_(b)
    m["embed_out.weight"][WINNER] = 10 * b
    torch.save(state, path)
    meta = json.loads((ckpt_dir / dst / "koneox_meta.json").read_text())
    meta["state"]["step"] = 40
    meta["state"]["epoch"] *= 4 / 3
    (ckpt_dir / dst / "koneox_meta.json").write_text(json.dumps(meta))
    (ckpt_dir / "latest").write_text(dst + "\n")


@pytest.fixture(scope="module")
def selection(run, tmp_path_factory) -> tuple[Path, dict]:
    from launch.cli import main

    out = tmp_path_factory.mktemp("selection")
    code = main(["select", str(run), "--out", str(out), "--every", "2", "--num-prompts", "6", "--val-samples", "16",
                 "--kobest", "--kobest-tasks", KOBEST_TASKS, "--kobest-limit", str(KOBEST_LIMIT)])
    assert code == 0
    return out, json.loads((out / "selection.json").read_text())


def test_selection_evaluates_every_kth_checkpoint_with_epochs_from_the_metadata(run, selection):
    _, report = selection
    rs = report["checkpoints"]
    assert [r["step"] for r in rs] == [10, 30, 40]  # --every 2, and always the last
    for r in rs:
        meta = json.loads((Path(r["checkpoint"]) / "koneox_meta.json").read_text())
        assert r["epoch"] == meta["state"]["epoch"]
        assert 0 <= r["seq_rep_1"] <= 1 and 0 <= r["seq_rep_4"] <= 1 and 0 <= r["rep_128"] <= 1
        assert 1 <= r["longest_run"] <= 100 and 0 < r["distinct_2"] <= 1 and math.isfinite(r["val_loss"])
    # The run crossed its first epoch; the boundary comes from metrics.jsonl.
    assert rs[0]["epoch"] < 1 < rs[1]["epoch"]
    [boundary] = report["epoch_boundaries"]
    assert boundary["epoch"] == 1 and 10 < boundary["step"] <= 30
    assert report["validation"]["samples"] == 16 and report["validation"]["tokens_per_sample"] == 64
    assert report["validation"]["tokens"] == 16 * 64
    assert "validation" in report["prompt_source"]


def test_degenerate_checkpoint_is_flagged_and_the_best_healthy_one_recommended(selection):
    _, report = selection
    by_step = {r["step"]: r for r in report["checkpoints"]}
    bad = by_step[40]
    assert bad["degenerate"] and bad["longest_run"] == 100 and bad["seq_rep_1"] == pytest.approx(0.99)
    assert any("longest run" in reason for reason in bad["reasons"])
    healthy = [r for r in report["checkpoints"] if not r["degenerate"]]
    assert report["recommended_step"] == min(healthy, key=lambda r: r["val_loss"])["step"]
    assert report["recommended_step"] != 40


def test_validation_loss_is_the_loss_on_held_out_documents(run, selection):
    """Recompute the recommended checkpoint's loss with our own model on the validation split."""
    from data.dataset import build_datasets
    from train.eval.select import _data_config
    from train.export import load_model

    _, report = selection
    model, c = load_model(report["recommended"])
    sets = build_datasets(_data_config(c), vocab_size=c.model_config.padded_vocab_size)
    tokens = torch.from_numpy(sets["valid"].get_batch(0, 16)[0])
    train_docs = set(sets["train"].datasets[0].documents.tolist())
    assert train_docs.isdisjoint(sets["valid"].datasets[0].documents.tolist())
    with torch.no_grad():
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).item()
    row = next(r for r in report["checkpoints"] if r["checkpoint"] == report["recommended"])
    assert row["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert row["val_ppl"] == pytest.approx(math.exp(loss), rel=1e-3)


def test_markdown_table_and_png_plot(selection):
    out, report = selection
    md = (out / "selection.md").read_text()
    assert "| step | epoch |" in md and f"**Recommended: step {report['recommended_step']}**" in md
    flagged = [r for r in report["checkpoints"] if r["degenerate"]]
    assert md.count("| DEGENERATE: ") == len(flagged) >= 1 and "epoch 1 at step" in md
    assert md.count("\n| ") == len(report["checkpoints"]) + 1  # header + one row per checkpoint
    png = (out / "selection.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 300
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "selection.png")).std() > 0  # not a blank canvas


def test_kobest_f1_of_each_checkpoint_equals_evaluating_its_export(selection, tmp_path):
    """select scores the model it holds in memory; `koneox eval` of the exported checkpoint on the
    same tasks and examples gives the same metrics."""
    from train.eval.kobest import evaluate
    from train.export import export

    out, report = selection
    tasks = KOBEST_TASKS.split(",")
    kb = report["kobest"]
    assert kb["tasks"] == tasks and kb["shots"] == [0] and kb["split"] == "dev" and kb["limit"] == KOBEST_LIMIT
    assert kb["examples"] == dict.fromkeys(tasks, KOBEST_LIMIT)
    bundled = Path(__file__).resolve().parents[1] / "data" / "samples" / "kobest"
    assert kb["files"]["kobest_copa"]["sha256"] == hashlib.sha256((bundled / "copa" / "dev.tsv").read_bytes()).hexdigest()
    for row in report["checkpoints"][::2]:  # the first (healthy) and the last (degenerate)
        export(row["checkpoint"], tmp_path / str(row["step"]), log=lambda *_: None)
        res = evaluate(tmp_path / str(row["step"]), KOBEST_TASKS, shots=(0,), data_dir=bundled, split="dev",
                       limit=KOBEST_LIMIT, device="cpu", progress=False)
        assert set(row["kobest"]) == set(tasks)
        for task in tasks:
            ours, theirs = row["kobest"][task]["0"], res["results"][task][0]
            assert set(ours) == set(theirs) >= {"acc", "acc_stderr", "f1", "f1_stderr"}
            for key in ("acc", "f1", "acc_norm"):
                if key in theirs:
                    assert ours[key] == pytest.approx(theirs[key], abs=1e-12), (row["step"], task, key)
        assert "acc_norm" in row["kobest"]["kobest_hellaswag"]["0"]
        assert row["kobest_f1"] == pytest.approx(sum(res["results"][t][0]["f1"] for t in tasks) / len(tasks))
    md = (out / "selection.md").read_text()
    assert "| copa F1 | hellaswag F1 | sentineg F1 | KoBEST F1 (mean) |" in md
    assert f"first {KOBEST_LIMIT} examples" in md
    for row in report["checkpoints"]:
        assert f" {row['kobest']['kobest_copa']['0']['f1']:.4f} |" in md and f" {row['kobest_f1']:.4f} |" in md


def test_bits_per_byte_is_the_validation_loss_over_the_decoded_bytes(run, selection):
    """bpb = val loss x scored tokens / ln 2 / UTF-8 bytes of those tokens decoded with the run's
    tokenizer; EOS targets count in the loss and add no bytes."""
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from data.dataset import build_datasets
    from train.eval.select import _data_config
    from train.export import open_checkpoint

    _, report = selection
    c = open_checkpoint(report["checkpoints"][0]["checkpoint"])
    tok = AutoTokenizer.from_pretrained(str(c.tokenizer_path))
    sets = build_datasets(_data_config(c), vocab_size=c.model_config.padded_vocab_size)
    targets = sets["valid"].get_batch(0, 16)[0][:, 1:]
    byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
    n_bytes = 0
    for row in targets.tolist():
        raw = b"".join(bytes(byte_of[ch] for ch in piece)
                       for t, piece in zip(row, tok.convert_ids_to_tokens(row), strict=True) if t != tok.eos_token_id)
        # These bytes are those of the decoded text (a row may start or end inside a character,
        # which decoding shows as U+FFFD: counted here as the bytes the tokens hold).
        assert raw.decode("utf-8", errors="replace") == tok.decode(row, skip_special_tokens=True,
                                                                   clean_up_tokenization_spaces=False)
        n_bytes += len(raw)
    assert (targets == tok.eos_token_id).any()  # the samples run across documents
    assert report["validation"]["bytes"] == n_bytes and report["validation"]["tokens"] == targets.size
    for row in report["checkpoints"]:
        assert row["bpb"] == pytest.approx(row["val_loss"] * targets.size / math.log(2) / n_bytes, rel=1e-12)


def test_rank_by_kobest_and_by_bpb_through_the_command(run, tmp_path):
    from launch.cli import main

    # Every checkpoint, none flagged (huge thresholds): all four are candidates.
    cheap = ["--num-prompts", "2", "--new-tokens", "20", "--val-samples", "4", "--rep-ratio", "1e6", "--run-ratio", "1e6"]
    kobest = ["--kobest", "--kobest-tasks", "kobest_copa,kobest_sentineg", "--kobest-limit", "8"]
    for rank_by, extra, key, pick in (("kobest", kobest, "kobest_f1", max), ("bpb", [], "bpb", min)):
        out = tmp_path / rank_by
        assert main(["select", str(run), "--out", str(out), *cheap, *extra, "--rank-by", rank_by]) == 0
        report = json.loads((out / "selection.json").read_text())
        rs = report["checkpoints"]
        assert report["rank_by"] == rank_by and len(rs) == 4 and not any(r["degenerate"] for r in rs)
        assert report["recommended_step"] == pick(rs, key=lambda r: r[key])["step"]  # max/min: the earliest on a tie
        assert {"kobest": "the highest mean KoBEST macro F1", "bpb": "the lowest bits per byte"}[rank_by] \
            in (out / "selection.md").read_text()


def test_kobest_options_are_checked_before_any_checkpoint_is_evaluated(run, tmp_path, capsys):
    from launch.cli import main

    out = tmp_path / "out"
    assert main(["select", str(run), "--out", str(out), "--rank-by", "kobest"]) == 2
    assert "--rank-by kobest needs --kobest" in capsys.readouterr().err
    assert main(["select", str(run), "--out", str(out), "--kobest-limit", "5"]) == 2
    assert "--kobest-limit without --kobest" in capsys.readouterr().err
    # The bundled data holds no train split, so few-shot fails, naming the file it looked for.
    assert main(["select", str(run), "--out", str(out), "--kobest", "--kobest-tasks", "kobest_copa", "--shots", "0,5"]) == 2
    assert "copa/train.tsv" in capsys.readouterr().err
    assert main(["select", str(run), "--out", str(out), "--kobest", "--kobest-data", str(tmp_path / "none")]) == 2
    assert "KoBEST data directory not found" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing was evaluated or written


def test_generate_from_a_checkpoint_equals_generate_from_its_export(run, tmp_path, capsys):
    from train.export import export, load_model
    from train.generate import generate, load

    ckpt = run / "checkpoints" / "step00000030"
    export(ckpt, tmp_path / "hf")
    prompt = "이 영화 정말"
    direct = generate(ckpt, prompt, max_new_tokens=12, greedy=True, stream=False)
    exported = generate(tmp_path / "hf", prompt, max_new_tokens=12, greedy=True)
    assert direct == exported
    assert prompt in capsys.readouterr().out  # streamed: the prompt, then the tokens
    # TP=1 export round trip: the exported model's logits are the training model's.
    model, tok = load(tmp_path / "hf")
    ours, _ = load_model(ckpt)
    ids = tok(prompt + exported, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)


def test_prompts_from_a_file(run, tmp_path):
    from train.eval.select import Settings, select

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("배우들의 연기가 정말\n\n이 영화의 결말은\n", encoding="utf-8")
    report = select(run, tmp_path / "out", Settings(prompts_file=str(prompts), new_tokens=20, val_samples=4, every=10))
    assert [r["step"] for r in report["checkpoints"]] == [10, 40]  # the first, and always the last
    assert report["prompt_source"] == f"2 prompts from {prompts}"
    assert report["checkpoints"][0]["sample"]["prompt"] == "배우들의 연기가 정말"
    assert (tmp_path / "out" / "selection.png").is_file()


def test_export_the_recommended_checkpoint(selection, tmp_path):
    from launch.cli import main

    out, report = selection
    assert main(["export", str(out), "--recommended", "--out", str(tmp_path / "hf")]) == 0
    exported = json.loads((tmp_path / "hf" / "koneox_export.json").read_text())
    assert exported["source"] == report["recommended"] and exported["step"] == report["recommended_step"]
    assert main(["export", str(tmp_path), "--recommended", "--out", str(tmp_path / "x")]) == 2  # no selection.json


def test_checkpoint_model_is_built_directly_in_the_inference_dtype(run):
    """On a GPU select/generate build the checkpoint's model in its training dtype; the build
    never makes a wider copy (checked on CPU with bf16 requested)."""
    import torch

    from train.export import hf_model, open_checkpoint

    c = open_checkpoint(run)
    full = hf_model(c, "cpu", torch.float32)
    half = hf_model(c, "cpu", torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    for (name, a), (_, b) in zip(full.named_parameters(), half.named_parameters(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), name
