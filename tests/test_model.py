"""The GPT-NeoX module: exact sizes, parity with transformers, Hugging Face round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

from model import NAMED_SIZES, GPTNeoX, ModelConfig, ModelConfigError

# Polyglot-Ko parameter counts (REFERENCE §1; 12.8B is the released config's count).
EXPECTED = {"1.3b": 1_331_810_304, "3.8b": 3_809_974_272, "5.8b": 5_885_059_072, "12.8b": 12_893_603_840}


def small(**kw) -> ModelConfig:
    base = dict(vocab_size=1000, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=256)
    return ModelConfig(**{**base, **kw})


def byte_ids(texts: list[str], length: int) -> torch.Tensor:
    rows = [list(t.encode("utf-8"))[:length] for t in texts if len(t.encode("utf-8")) >= length]
    return torch.tensor(rows[:4])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_named_sizes_have_exact_parameter_counts_on_meta(name):
    cfg = ModelConfig.from_name(name)
    with torch.device("meta"):
        model = GPTNeoX(cfg)
    assert model.num_parameters() == EXPECTED[name] == cfg.num_parameters()
    assert cfg.padded_vocab_size == 30080
    assert all(p.device.type == "meta" for p in model.parameters())


def test_parameter_count_matches_transformers_for_12_8b():
    cfg = ModelConfig.from_name("12.8b")
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures",)})
    with torch.device("meta"):
        hf = GPTNeoXForCausalLM(hf_cfg)
    assert sum(p.numel() for p in hf.parameters()) == EXPECTED["12.8b"]


@pytest.mark.parametrize("rotary_pct", [0.25, 0.5])
@pytest.mark.parametrize("parallel", [True, False])
def test_logits_match_transformers(tmp_path, korean_texts, rotary_pct, parallel):
    torch.manual_seed(0)
    cfg = small(rotary_pct=rotary_pct, use_parallel_residual=parallel, init_seed=int(rotary_pct * 100))
    ours = GPTNeoX(cfg).eval()
    ours.save_pretrained(tmp_path)
    hf, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = byte_ids(korean_texts, 96)
    with torch.no_grad():
        diff = (ours(ids) - hf.eval()(ids).logits).abs().max().item()
    assert diff <= 1e-5, diff


def test_config_json_is_gpt_neox(tmp_path):
    GPTNeoX(small(vocab_size=30003)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt_neox"
    assert cfg["vocab_size"] == 30080
    assert cfg["tie_word_embeddings"] is False and cfg["use_parallel_residual"] is True
    assert cfg["rotary_pct"] == 0.5
    names = set(load_file(tmp_path / "model.safetensors"))
    assert "embed_out.weight" in names and "gpt_neox.embed_in.weight" in names
    assert "gpt_neox.layers.2.attention.query_key_value.bias" in names


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = GPTNeoX(small(init_seed=7))
    model.save_pretrained(tmp_path)
    loaded = GPTNeoX.from_pretrained(tmp_path)
    assert loaded.config.hidden_size == 64 and loaded.config.rotary_pct == 0.5
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_save_loads_in_both(tmp_path, korean_texts):
    model = GPTNeoX(small()).eval()
    model.save_pretrained(tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ids = byte_ids(korean_texts, 32)
    with torch.no_grad():
        expected = model(ids)
        assert torch.equal(GPTNeoX.from_pretrained(tmp_path).eval()(ids), expected)
        assert (AutoModelForCausalLM.from_pretrained(tmp_path).eval()(ids).logits - expected).abs().max() < 1e-5


def test_loads_directory_written_by_transformers(tmp_path, korean_texts):
    cfg = small(rotary_pct=0.25)
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"})
    torch.manual_seed(3)
    hf = GPTNeoXForCausalLM(hf_cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = GPTNeoX.from_pretrained(tmp_path).eval()
    ids = byte_ids(korean_texts, 48)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() <= 1e-5


def test_loads_old_pytorch_bin_checkpoint_with_buffers(tmp_path):
    """Older GPT-NeoX checkpoints (polyglot-ko era) are .bin files holding attention masks too."""
    model = GPTNeoX(small())
    state = dict(model.state_dict())
    state["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    state["gpt_neox.layers.0.attention.masked_bias"] = torch.tensor(-1e9)
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf = model.config.to_hf_dict()
    hf.pop("rope_parameters")  # old config files only have rotary_pct / rotary_emb_base
    (tmp_path / "config.json").write_text(json.dumps(hf))
    loaded = GPTNeoX.from_pretrained(tmp_path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_missing_weight_is_refused_with_file_named(tmp_path):
    model = GPTNeoX(small())
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["gpt_neox.final_layer_norm.weight"]
    from safetensors.torch import save_file

    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing: \\['gpt_neox.final_layer_norm.weight'\\]"):
        GPTNeoX.from_pretrained(tmp_path)


def test_init_is_seeded_and_scaled_by_depth():
    cfg = ModelConfig.from_name("tiny", num_layers=8)
    a, b, c = GPTNeoX(cfg), GPTNeoX(cfg), GPTNeoX(ModelConfig.from_name("tiny", num_layers=8, init_seed=99))
    w = "gpt_neox.layers.3.attention.query_key_value.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    sd = a.state_dict()
    small_std = math.sqrt(2 / (5 * cfg.hidden_size))
    wang_std = 2 / (cfg.num_layers * math.sqrt(cfg.hidden_size))
    assert sd[w].std().item() == pytest.approx(small_std, rel=0.05)
    assert sd["gpt_neox.layers.3.mlp.dense_4h_to_h.weight"].std().item() == pytest.approx(wang_std, rel=0.05)
    assert sd["gpt_neox.layers.3.attention.dense.bias"].abs().sum() == 0
    assert torch.equal(sd["gpt_neox.layers.3.input_layernorm.weight"], torch.ones(cfg.hidden_size))


def test_meta_model_can_be_materialised_and_initialised():
    cfg = small()
    with torch.device("meta"):
        model = GPTNeoX(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), GPTNeoX(cfg).parameters(), strict=True))


def test_activation_checkpointing_gives_the_same_gradients(korean_texts):
    ids = byte_ids(korean_texts, 64)
    grads = []
    for ckpt in (False, True):
        model = GPTNeoX(small(activation_checkpointing=ckpt)).train()
        logits = model(ids[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_tiny_model_step_on_korean_text(korean_texts):
    """At initialisation the loss is near ln(V) (uniform prediction), and a few steps lower it."""
    ids = byte_ids(korean_texts, 128)
    model = GPTNeoX(ModelConfig.from_name("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(30080)) < 0.5
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(num_heads=5), "num_heads"),
        (dict(num_heads=4, rotary_pct=0.47), "rotary_pct"),  # int(16 * 0.47) = 7: odd
        (dict(rotary_pct=1.5), "rotary_pct"),
        (dict(hidden_size=0), "hidden_size"),
    ],
)
def test_impossible_shapes_are_refused(overrides, key):
    with pytest.raises(ModelConfigError, match=f"^model.{key}:"):
        GPTNeoX(small(**overrides))


def test_registry_covers_every_size():
    assert set(NAMED_SIZES) == {"tiny", *EXPECTED}
    with pytest.raises(ModelConfigError, match="unknown size"):
        ModelConfig.from_name("7b")
