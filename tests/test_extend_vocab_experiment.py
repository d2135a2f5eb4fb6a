"""The vocabulary-extension experiment at test scale (``benchmarks/extend_vocab.py`` at full scale,
through the real trainer): an English model, extended with Korean tokens, then trained on Korean.

The base model stands in for an open English model: a 1,024-entry byte-level BPE of the English
paragraphs of the help pages (``data.testing.english_help_paragraphs``), so Korean falls apart
into bytes, and a 2-layer GPT-NeoX trained on those paragraphs with 1% of its bytes in Korean
reviews, as English web data holds a little Korean. (With no Korean at all, the Korean bytes'
rows carry nothing for a mean to pass on, and mean init started Korean above random init: 4.10
against 3.79 bits per byte in this test; the benchmark's ``--base-korean 0`` shows the same.)
Korean tokens come from a 2,000-entry byte-level BPE of other NSMC reviews. Held-out pages and
reviews are never trained on. Stage 1 and all-parameter training are plain AdamW loops here with the
trainer's freezing semantics (stage 1: only the input embedding trains and its rows below the old
vocabulary get no gradient, weight decay 0); the trainer's own freezing is tested in
test_freeze.py and exercised by the benchmark.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from data.testing import (
    corpus_dir,
    english_help_paragraphs,
    mix_in,
    read_texts,
    token_stream,
    train_on_windows,
    train_tiny_tokenizer,
    write_jsonl_gz,
)
from model import GPTNeoX, ModelConfig
from model.extend_vocab import CONFIG_KEY, extend_vocab
from tokenizer.fertility import fertility

RAW = corpus_dir() / "raw"
EN_VOCAB, KO_VOCAB = 1024, 2000
BASE_STEPS, STAGE_STEPS = 60, 25
BASE_KOREAN = 0.01

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not (RAW / "libreoffice_help_ko.jsonl.gz").exists(),
                       reason=f"shared corpus not found at {RAW} (the test needs its English and Korean text)"),
]


def train(model: GPTNeoX, data: torch.Tensor, steps: int, lr: float, params: list[torch.nn.Parameter],
          seed: int = 0) -> GPTNeoX:
    """Plain AdamW (weight decay 0) on random 16 x 128 windows of ``data``, only ``params`` trainable."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    train_on_windows(model, data, steps, opt, seed=seed)
    return model


def save(model: GPTNeoX, tok_dir: Path, out: Path) -> Path:
    model.save_pretrained(str(out))
    for f in tok_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(f, out / f.name)
    return out


def bpb(model_dir: Path, path: Path) -> float:
    from train.eval.bpb import bits_per_byte
    from train.eval.kobest import load_model

    model, tok, _ = load_model(str(model_dir), "cpu", None)
    return bits_per_byte(model, tok, path, progress=False)["bits_per_byte"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, one_thread) -> dict:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("extend_experiment")
    english = english_help_paragraphs(300_000)
    korean = read_texts(RAW / "nsmc_reviews.jsonl.gz", limit=10_000)
    en_train, en_held = english[:-30], english[-30:]
    ko_train, ko_held = korean[:5800], korean[5800:6000]
    base_texts, _, _ = mix_in(en_train, korean[6000:], BASE_KOREAN * sum(len(t.encode()) for t in en_train))
    files = {"ko": write_jsonl_gz(ko_held, root / "ko.jsonl.gz"), "en": write_jsonl_gz(en_held, root / "en.jsonl.gz")}
    train_tiny_tokenizer(en_train, root / "en_tok", vocab_size=EN_VOCAB)
    train_tiny_tokenizer(ko_train, root / "ko_tok", vocab_size=KO_VOCAB)

    torch.manual_seed(0)
    base = GPTNeoX(ModelConfig.from_name("tiny", num_layers=2, vocab_size=EN_VOCAB, max_position_embeddings=256))
    train(base, token_stream(root / "en_tok", base_texts), BASE_STEPS, 3e-3, list(base.parameters()))
    base_dir = save(base, root / "en_tok", root / "base")

    dirs = {"original": base_dir}
    for init in ("mean", "random"):
        dirs[init] = root / f"ext-{init}"
        extend_vocab(base_dir, root / "ko_tok", dirs[init], init=init)
    k = json.loads((dirs["mean"] / "config.json").read_text())[CONFIG_KEY]["old_vocab_size"]
    ko_data = token_stream(dirs["mean"], ko_train)

    stage1 = GPTNeoX.from_pretrained(str(dirs["mean"]))
    rows = stage1.gpt_neox.embed_in.weight
    rows.register_hook(lambda g: torch.cat([torch.zeros_like(g[:k]), g[k:]]))  # rows below k frozen
    train(stage1, ko_data, STAGE_STEPS, 2e-3, [rows])
    dirs["stage1"] = save(stage1, dirs["mean"], root / "stage1")
    full = GPTNeoX.from_pretrained(str(dirs["mean"]))
    train(full, ko_data, STAGE_STEPS, 2e-3, list(full.parameters()))
    dirs["full"] = save(full, dirs["mean"], root / "full")

    out = {name: {"ko": bpb(d, files["ko"]), "en": bpb(d, files["en"])} for name, d in dirs.items()}
    for name in ("original", "mean"):
        out[name]["ko_bytes_per_token"] = fertility(AutoTokenizer.from_pretrained(str(dirs[name])),
                                                    ko_held)["bytes_per_token"]
    out["old_vocab_size"] = k
    out["start"], out["stage1_weights"] = (GPTNeoX.from_pretrained(str(dirs["mean"])).state_dict(),
                                           stage1.state_dict())
    return out


def test_korean_bytes_per_token_at_least_doubles(experiment):
    before, after = experiment["original"]["ko_bytes_per_token"], experiment["mean"]["ko_bytes_per_token"]
    assert after >= 2 * before, (before, after)


def test_mean_init_starts_korean_lower_than_random(experiment):
    mean, random = experiment["mean"]["ko"], experiment["random"]["ko"]
    assert mean < random, f"Korean bpb at step 0: mean {mean:.4f}, random {random:.4f}"


def test_stage1_keeps_english_and_full_training_does_not(experiment):
    e = experiment
    orig, step0, s1, full = e["original"]["en"], e["mean"]["en"], e["stage1"]["en"], e["full"]["en"]
    message = (f"English bpb: original {orig:.4f}, extended step 0 {step0:.4f}, stage 1 {s1:.4f} "
               f"({(s1 - orig) / orig:+.2%} vs original), all parameters {full:.4f} ({(full - orig) / orig:+.2%})")
    # frozen old rows, frozen body and head: English text (old ids only) scores as at step 0
    assert s1 == pytest.approx(step0, rel=1e-6), message
    k = e["old_vocab_size"]
    for name, value in e["stage1_weights"].items():
        if name == "gpt_neox.embed_in.weight":
            assert torch.equal(value[:k], e["start"][name][:k]) and not torch.equal(value[k:], e["start"][name][k:])
        else:
            assert torch.equal(value, e["start"][name]), name
    assert abs(full - step0) > abs(s1 - step0) and abs(full - orig) > abs(s1 - orig), message


def test_korean_improves_under_both(experiment):
    e = experiment
    step0, s1, full = e["mean"]["ko"], e["stage1"]["ko"], e["full"]["ko"]
    assert s1 < step0 and full < step0, f"Korean bpb: step 0 {step0:.4f}, stage 1 {s1:.4f}, all parameters {full:.4f}"
