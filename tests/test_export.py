"""Export of real DeepSpeed checkpoints to Hugging Face GPT-NeoX directories.

Runs train a 2-layer GPT-NeoX for a few steps on Korean movie reviews from the bundled sample,
with a small byte-level BPE, through the real launcher: TP=2 on 2 CPU ranks (ZeRO-1) and one
process with ZeRO-3. The exported directory is loaded with ``transformers`` Auto classes and its
logits are compared with references that do not go through the export code: a Megatron-style
forward over the raw per-rank slices (TP=2), and DeepSpeed's own ``zero_to_fp32`` (ZeRO-3).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data.testing import read_texts, train_tiny_tokenizer, write_jsonl_gz
from model import GPTNeoX, ModelConfig
from model.gpt_neox import apply_rotary, rotary_cos_sin

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "nsmc_reviews.jsonl.gz"
VOCAB = 2000


pytestmark = pytest.mark.usefixtures("one_thread")


def make_data(root: Path, docs: int) -> tuple[Path, Path]:
    """(tokenizer dir, packed prefix): a BPE on 3,000 reviews, the first ``docs`` reviews packed."""
    from data.pack import pack

    texts = read_texts(SAMPLE, limit=3000)
    tok = train_tiny_tokenizer(texts, root / "tok", vocab_size=VOCAB)
    src = write_jsonl_gz(texts[:docs], root / "reviews.jsonl.gz")
    pack([str(src)], str(tok), str(root / "reviews"), num_proc=1)
    return tok, root / "reviews"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_run(run_dir: Path, packed: Path, nproc: int = 1, **extra: object) -> Path:
    """A real training run through launch/train.py (the deepspeed launcher for nproc > 1)."""
    base = {
        "model.num_layers": 2, "model.vocab_size": VOCAB, "data.seq_len": 64, "data.train_paths": f"[{packed}]",
        "data.split": "[0.8, 0.2, 0.0]", "train.micro_batch_size": 2, "train.grad_accum": 1,
        "train.train_steps": 4, "train.save_interval": 2, "train.keep_last": 100, "train.warmup_steps": 2,
        "train.lr": 3e-3, "train.min_lr": 3e-4, "train.precision": "fp32", "train.log_interval": 1,
        "train.eval_interval": 0, "logging.wandb.mode": "disabled", "train.run_dir": str(run_dir),
    }
    base.update(extra)
    args = ["launch/train.py", "--config", "tiny.yaml", *(f"{k}={v}" for k, v in base.items())]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
               "--master_port", str(free_port()), *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return make_data(tmp_path_factory.mktemp("data"), docs=2000)


@pytest.fixture(scope="module")
def tp2_run(tmp_path_factory, data) -> Path:
    tok, packed = data
    return train_run(tmp_path_factory.mktemp("tp2") / "run", packed, nproc=2,
                     **{"parallel.tensor_parallel": 2, "tokenizer.path": str(tok)})


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory, data) -> Path:
    """One process, ZeRO-3 (module weights partitioned into the optimizer files), no tokenizer.path."""
    _, packed = data
    return train_run(tmp_path_factory.mktemp("z3") / "run", packed, **{"parallel.zero_stage": 3})


def korean_ids(tok_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    text = read_texts(SAMPLE, limit=3100)[3050]  # a review the tokenizer was not trained on
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"][:40]])


def tp_reference_logits(shards: list[dict[str, torch.Tensor]], cfg: ModelConfig, ids: torch.Tensor) -> torch.Tensor:
    """The TP=2 model's forward computed from the raw per-rank slices, as AutoTP runs it:
    each rank attends with its own heads and MLP columns, the partial outputs of the row layers
    are summed (the all-reduce) and their bias added once. Replicated weights from rank 0."""
    r0 = shards[0]
    T = ids.shape[1]
    x = F.embedding(ids, r0["gpt_neox.embed_in.weight"])  # (1, T, h)
    cos, sin = rotary_cos_sin(T, cfg.rotary_dims, cfg.rotary_base, x.device, x.dtype)
    for i in range(cfg.num_layers):
        p = f"gpt_neox.layers.{i}."
        ln1 = F.layer_norm(x, (cfg.hidden_size,), r0[p + "input_layernorm.weight"], r0[p + "input_layernorm.bias"])
        ln2 = F.layer_norm(x, (cfg.hidden_size,), r0[p + "post_attention_layernorm.weight"],
                           r0[p + "post_attention_layernorm.bias"])
        attn = r0[p + "attention.dense.bias"].clone()
        mlp = r0[p + "mlp.dense_4h_to_h.bias"].clone()
        for s in shards:
            qkv = F.linear(ln1, s[p + "attention.query_key_value.weight"], s[p + "attention.query_key_value.bias"])
            qkv = qkv.view(1, T, -1, 3 * cfg.head_dim).transpose(1, 2)  # (1, local heads, T, 3 * hd)
            q, k, v = qkv.chunk(3, dim=-1)
            y = F.scaled_dot_product_attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, is_causal=True)
            attn = attn + F.linear(y.transpose(1, 2).reshape(1, T, -1), s[p + "attention.dense.weight"])
            hmid = F.gelu(F.linear(ln2, s[p + "mlp.dense_h_to_4h.weight"], s[p + "mlp.dense_h_to_4h.bias"]))
            mlp = mlp + F.linear(hmid, s[p + "mlp.dense_4h_to_h.weight"])
        x = x + attn + mlp
    x = F.layer_norm(x, (cfg.hidden_size,), r0["gpt_neox.final_layer_norm.weight"], r0["gpt_neox.final_layer_norm.bias"])
    return F.linear(x, r0["embed_out.weight"])


def hf_logits(out: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        return model(ids).logits


def test_tp2_checkpoint_exports_to_a_loadable_hf_directory_with_equal_logits(tp2_run, data, tmp_path):
    from transformers import AutoTokenizer

    from train.export import export

    tok_dir, _ = data
    out = tmp_path / "hf"
    report = export(tp2_run, out, max_shard_size="300KB")  # a run directory means its latest
    step_dir = tp2_run / "checkpoints" / "step00000004"
    assert report["source"] == str(step_dir) and report["tensor_parallel"] == 2 and report["zero_stage"] == 1

    # The slices really are TP slices (checked on the file, not assumed), and the export joins them.
    shards = [torch.load(step_dir / f"mp_rank_0{r}_model_states.pt", weights_only=True)["module"] for r in (0, 1)]
    cfg = ModelConfig(**json.loads((step_dir / "koneox_meta.json").read_text())["config"]["model"])
    h = cfg.hidden_size
    assert shards[0]["gpt_neox.layers.0.attention.query_key_value.weight"].shape == (3 * h // 2, h)
    assert shards[0]["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"].shape == (h, cfg.intermediate_size // 2)

    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1
    for f in files:  # at most the limit (plus the JSON header), unless one tensor alone exceeds it
        names = [n for n, g in index["weight_map"].items() if g == f]
        assert len(names) == 1 or (out / f).stat().st_size < 300_000 + 4096, (f, names)
    assert len(index["weight_map"]) == 12 * cfg.num_layers + 4  # 12 per layer; embeddings, final norm

    ids = korean_ids(tok_dir)
    ref = tp_reference_logits(shards, cfg, ids)
    got = hf_logits(out, ids)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)

    tok = AutoTokenizer.from_pretrained(str(out))
    text = "영화가 정말 재미있었어요\n다시 보고 싶다"
    assert tok.decode(tok(text)["input_ids"]) == text
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id == json.loads((out / "config.json").read_text())["eos_token_id"]


def test_zero3_checkpoint_matches_deepspeeds_own_consolidation_and_warns_without_tokenizer(zero3_run, data, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from train.export import export

    out = tmp_path / "hf"
    with pytest.warns(UserWarning, match="without tokenizer files"):
        report = export(zero3_run / "checkpoints" / "step00000002", out, dtype="fp32")
    assert report["zero_stage"] == 3 and report["step"] == 2
    assert not (out / "tokenizer.json").exists()
    meta = json.loads((zero3_run / "checkpoints" / "step00000002" / "koneox_meta.json").read_text())
    ref_model = GPTNeoX(ModelConfig(**meta["config"]["model"]))
    ref_model.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(zero3_run / "checkpoints"), "step00000002"))
    ids = korean_ids(data[0])
    with torch.no_grad():
        ref = ref_model.eval()(ids)
    torch.testing.assert_close(hf_logits(out, ids), ref, rtol=1e-4, atol=1e-4)


def test_bf16_export_and_command_line(tp2_run, tmp_path):
    from safetensors import safe_open

    from launch.cli import main

    out = tmp_path / "hf16"
    assert main(["export", str(tp2_run), "--out", str(out), "--dtype", "bf16"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    name, fname = next(iter(index["weight_map"].items()))
    with safe_open(str(out / fname), framework="pt") as f:
        assert f.get_tensor(name).dtype == torch.bfloat16
    assert main(["export", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_shard_plan_respects_the_limit():
    from train.export import parse_size, plan_shards

    shapes = {f"w{i}": torch.Size([250, 1000]) for i in range(7)}  # 1 MB each in fp32
    plan = plan_shards(shapes, torch.float32, parse_size("2.5MB"))
    assert plan == [["w0", "w1"], ["w2", "w3"], ["w4", "w5"], ["w6"]]
    assert plan_shards(shapes, torch.bfloat16, parse_size("2.5MB"))[0] == ["w0", "w1", "w2", "w3", "w4"]
    with pytest.raises(ValueError):
        parse_size("lots")
