"""Chat Vector (``koneox chat-vector``): target + ratio * (chat - base), streamed, on tiny models.

Three model families are built with ``transformers`` (and koneox's own GPT-NeoX writer for the
targets of the GPT-NeoX family) on two small byte-level BPEs trained on Korean text from the
bundled sample: tokenizer A (base and chat) and tokenizer B (a target that extended the
vocabulary: more tokens, the shared ones mostly at other ids, the chat tokens at other ids).

    neox    GPT-NeoX, untied; base saved sharded and as a legacy .bin; koneox-exported targets
    llama   Llama, tied embeddings; two chat models (two vectors)
    bf16    Llama, untied, every model in bf16

Expected weights are computed here from the input files with plain torch, in fp32, and compared
bit for bit; matched embedding rows are checked through ``AutoTokenizer.get_vocab``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from data.testing import read_texts
from launch.cli import main
from model import GPTNeoX, ModelConfig
from model import chat_vector as cv

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
EOS, PAD, IM_START, IM_END = "<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"
TEMPLATE = ("{% for m in messages %}" + IM_START + "{{ m['role'] }}\n{{ m['content'] }}" + IM_END + "\n"
            "{% endfor %}{% if add_generation_prompt %}" + IM_START + "assistant\n{% endif %}")
OWN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
HIDDEN, LAYERS, HEADS = 32, 2, 4

pytestmark = pytest.mark.usefixtures("one_thread")


# -- building tiny models ------------------------------------------------------------------------


def bpe(texts: list[str], specials: list[str], vocab_size: int, out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS).save_pretrained(str(out))
    return out


def koneox_config(vocab: int) -> ModelConfig:
    return ModelConfig.from_name("tiny", vocab_size=vocab, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                                 intermediate_size=4 * HIDDEN, max_position_embeddings=128)


def neox_config(vocab: int):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig.from_dict(koneox_config(vocab).to_hf_dict())


def llama_config(vocab: int, tied: bool, intermediate: int = 64):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=intermediate,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
                       max_position_embeddings=128, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0)


def build(config, seed: int, like=None, noise: float = 0.02):
    """A random model; with ``like``, ``like``'s weights plus noise wherever the shapes agree (a
    fine-tune or a continued pretraining of it)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if like is not None:
        source = dict(like.named_parameters())
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in source and source[name].shape == p.shape:
                    p.copy_(source[name] + noise * torch.randn_like(p))
    return model.eval()


def save(model, path: Path, tok: Path, dtype: torch.dtype | None = None, shard: str | None = None) -> Path:
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(path), **({"max_shard_size": shard} if shard else {}))
    copy_tokenizer(tok, path)
    return path


def copy_tokenizer(tok: Path, path: Path) -> None:
    for f in tok.iterdir():
        shutil.copy2(f, path / f.name)


def save_koneox(cfg: ModelConfig, seed: int, path: Path, tok: Path) -> Path:
    """A target as koneox writes it (model.hf_io), with the tokenizer as `koneox export` adds it."""
    from dataclasses import replace

    GPTNeoX(replace(cfg, init_seed=seed)).save_pretrained(str(path))
    copy_tokenizer(tok, path)
    return path


def make_chat(model, path: Path, tok: Path, **kw) -> Path:
    """A chat model: the template, ``<|im_end|>`` as EOS, and a generation config ending on it."""
    from transformers import AutoTokenizer, GenerationConfig

    save(model, path, tok, **kw)
    t = AutoTokenizer.from_pretrained(str(tok))
    t.chat_template = TEMPLATE
    t.eos_token = IM_END
    t.save_pretrained(str(path))
    ids = t.get_vocab()
    GenerationConfig(bos_token_id=ids[EOS], eos_token_id=[ids[IM_END], ids[EOS]], pad_token_id=ids[EOS],
                     max_new_tokens=32).save_pretrained(str(path))
    config = json.loads((path / "config.json").read_text())
    config["eos_token_id"] = ids[IM_END]
    (path / "config.json").write_text(json.dumps(config))
    return path


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model directory (test side: whole files, plain safetensors/torch)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        out = {}
        for f in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(load_file(str(path / f)))
        return out
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    return torch.load(path / "pytorch_model.bin", weights_only=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat_vector")
    reviews = read_texts(SAMPLES / "nsmc_reviews.jsonl.gz", limit=1500)
    other = read_texts(SAMPLES / "ko_law_bills.jsonl.gz") + read_texts(SAMPLES / "help_pages_ko.jsonl.gz", limit=300)
    tok_a = bpe(reviews, [EOS, IM_START, IM_END], 320, root / "tok_a")
    tok_b = bpe(other + reviews[:300], [EOS, PAD, IM_START, IM_END], 420, root / "tok_b")
    (tok_b / "chat_template.jinja").write_text(OWN_TEMPLATE)  # the target's own, to be replaced
    n_a, n_b = (len(json.loads((t / "tokenizer.json").read_text())["model"]["vocab"]) for t in (tok_a, tok_b))
    w = {"tok_a": tok_a, "tok_b": tok_b}

    # GPT-NeoX: the base sharded (and as .bin), targets written by koneox.
    base = build(neox_config(n_a), 1)
    w["neox_base"] = save(base, root / "neox_base", tok_a, shard="40KB")
    w["neox_chat"] = make_chat(build(neox_config(n_a), 2, like=base), root / "neox_chat", tok_a)
    w["neox_target"] = save_koneox(koneox_config(n_a), 3, root / "neox_target", tok_a)
    w["neox_target_ext"] = save_koneox(koneox_config(n_b), 4, root / "neox_target_ext", tok_b)
    legacy = root / "neox_base_bin"
    legacy.mkdir()
    torch.save(load_dir(w["neox_base"]), legacy / "pytorch_model.bin")  # the file names (embed_out), as old exports
    shutil.copy2(w["neox_base"] / "config.json", legacy / "config.json")
    copy_tokenizer(tok_a, legacy)
    w["neox_base_bin"] = legacy

    # Llama, tied embeddings: two chat models of one base.
    base = build(llama_config(n_a, tied=True), 11)
    w["llama_base"] = save(base, root / "llama_base", tok_a)
    w["llama_chat1"] = make_chat(build(llama_config(n_a, True), 12, like=base), root / "llama_chat1", tok_a)
    w["llama_chat2"] = make_chat(build(llama_config(n_a, True), 13, like=base), root / "llama_chat2", tok_a)
    w["llama_target"] = save(build(llama_config(n_a, True), 14, like=base), root / "llama_target", tok_a)
    w["llama_target_ext"] = save(build(llama_config(n_b, True), 15, like=base), root / "llama_target_ext", tok_b)
    w["llama_target_wide"] = save(build(llama_config(n_a, True, intermediate=96), 16), root / "llama_wide", tok_a)

    # Llama, untied, bf16.
    base = build(llama_config(n_a, tied=False), 21)
    w["bf16_base"] = save(base, root / "bf16_base", tok_a, dtype=torch.bfloat16)
    w["bf16_chat"] = make_chat(build(llama_config(n_a, False), 22, like=base), root / "bf16_chat", tok_a,
                               dtype=torch.bfloat16)
    w["bf16_target"] = save(build(llama_config(n_a, False), 23, like=base), root / "bf16_target", tok_a,
                            dtype=torch.bfloat16)
    w["root"] = root
    return w


@pytest.fixture(scope="module")
def vectors(world) -> dict[str, Path]:
    """The two Llama chat vectors, extracted through the command."""
    out = {}
    for k in ("1", "2"):
        out[k] = world["root"] / f"vector{k}"
        assert cli("extract", "--base", world["llama_base"], "--chat", world[f"llama_chat{k}"], "--out", out[k]) == 0
    return out


def cli(*args: object) -> int:
    return main(["chat-vector", *(str(a) for a in args)])


def expected(target: dict, pairs: list[tuple[dict, dict, float]]) -> dict[str, torch.Tensor]:
    """target + sum ratio * (chat - base), in fp32, tensor by tensor."""
    out = {}
    for name, t in target.items():
        acc = t.float()
        for base, chat, r in pairs:
            acc = acc + r * (chat[name].float() - base[name].float())
        out[name] = acc
    return out


def assert_exact(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == torch.float32, name
        assert torch.equal(got[name], want[name]), (name, (got[name] - want[name]).abs().max().item())


# -- exactness --------------------------------------------------------------------------------------


def test_one_step_on_a_koneox_target_is_exact_and_sharded(world, tmp_path):
    out = tmp_path / "merged"
    rc = cli("--base", world["neox_base"], "--chat", world["neox_chat"], "--target", world["neox_target"],
             "--out", out, "--ratio", "0.5", "--max-shard-size", "30KB")
    assert rc == 0
    b, c, t = (load_dir(world[k]) for k in ("neox_base", "neox_chat", "neox_target"))
    assert len(json.loads((world["neox_base"] / "model.safetensors.index.json").read_text())["weight_map"]) == len(b)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert_exact(load_dir(out), expected(t, [(b, c, 0.5)]))
    # The target's config (koneox's GPT-NeoX), with the chat model's EOS; a finished output.
    config, target_config = (json.loads((d / "config.json").read_text()) for d in (out, world["neox_target"]))
    ids = json.loads((world["tok_a"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert config == {**target_config, "eos_token_id": ids[IM_END]}
    assert (out / "_COMPLETE.json").is_file() and not cv.tmp_path(out).exists()
    report = json.loads((out / cv.REPORT).read_text())
    assert report["tensors"] == len(t) and report["vectors"][0]["ratio"] == 0.5
    # koneox reads it back as its own GPT-NeoX.
    merged = GPTNeoX.from_pretrained(str(out))
    assert torch.equal(merged.gpt_neox.embed_in.weight, load_dir(out)["gpt_neox.embed_in.weight"])


def test_legacy_bin_base(world, tmp_path):
    cv.merge(world["neox_base_bin"], world["neox_chat"], world["neox_target"], tmp_path / "m", ratio=1.0, log=str)
    b, c, t = (load_dir(world[k]) for k in ("neox_base_bin", "neox_chat", "neox_target"))
    assert_exact(load_dir(tmp_path / "m"), expected(t, [(b, c, 1.0)]))


def test_extract_then_apply_two_vectors_with_two_ratios(world, vectors, tmp_path):
    b, c1, c2, t = (load_dir(world[k]) for k in ("llama_base", "llama_chat1", "llama_chat2", "llama_target"))
    assert "lm_head.weight" not in t  # tied: one tensor
    for k, c in (("1", c1), ("2", c2)):
        v = vectors[k]
        meta = json.loads((v / cv.VECTOR_META).read_text())
        assert (meta["model_type"], meta["dtype"], meta["tensors"]) == ("llama", "float32", len(b))
        assert meta["base"] == str(world["llama_base"].resolve())
        assert (v / "model.safetensors.index.json").is_file() and (v / "_COMPLETE.json").is_file()
        assert (v / "base" / "tokenizer.json").is_file() and (v / "chat" / "generation_config.json").is_file()
        stored = load_dir(v)
        for name in b:
            assert torch.equal(stored[name], c[name].float() - b[name].float()), name
    out = tmp_path / "merged"
    rc = cli("apply", "--target", world["llama_target"], "--vector", vectors["1"], "--vector", vectors["2"],
             "--ratio", "0.7", "--ratio", "0.3", "--out", out)
    assert rc == 0
    assert_exact(load_dir(out), expected(t, [(b, c1, 0.7), (b, c2, 0.3)]))


def test_bf16_output_is_the_fp32_sum_rounded_once(world, tmp_path):
    b, c, t = (load_dir(world[k]) for k in ("bf16_base", "bf16_chat", "bf16_target"))
    assert all(x.dtype == torch.bfloat16 for x in t.values())
    cv.merge(world["bf16_base"], world["bf16_chat"], world["bf16_target"], tmp_path / "bf16", log=str)
    cv.merge(world["bf16_base"], world["bf16_chat"], world["bf16_target"], tmp_path / "fp32", dtype="fp32",
             log=str)
    want = expected(t, [(b, c, 1.0)])
    got = load_dir(tmp_path / "bf16")
    worst = 0.0
    for name, w in want.items():
        assert got[name].dtype == torch.bfloat16, name
        assert torch.equal(got[name], w.to(torch.bfloat16)), name
        err = (got[name].float() - w).abs()
        assert (err <= w.abs() * 2.0**-8).all(), name  # within half a bf16 ulp (7 stored mantissa bits)
        worst = max(worst, err.max().item())
    assert 0 < worst < 1e-2
    assert_exact(load_dir(tmp_path / "fp32"), want)
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["dtype"] == "float32"


# -- vocabulary modes -----------------------------------------------------------------------------


def vocab(path: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path)).get_vocab()


def test_changed_vocabulary_is_refused_without_a_mode(world, tmp_path, capsys):
    out = tmp_path / "m"
    rc = cli("--base", world["neox_base"], "--chat", world["neox_chat"], "--target", world["neox_target_ext"],
             "--out", out)
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("koneox chat-vector: ") and len(err.strip().splitlines()) == 1
    assert "gpt_neox.embed_in.weight [512, 32] vs [384, 32]" in err and "embed_out.weight [512, 32] vs [384, 32]" in err
    assert "--skip-embeddings" in err
    assert not out.exists() and not cv.tmp_path(out).exists()


def test_skip_embeddings_keeps_the_target_rows(world, tmp_path):
    out = tmp_path / "skip"
    rc = cli("--base", world["neox_base"], "--chat", world["neox_chat"], "--target", world["neox_target_ext"],
             "--out", out, "--skip-embeddings")
    assert rc == 0
    b, c, t = (load_dir(world[k]) for k in ("neox_base", "neox_chat", "neox_target_ext"))
    got = load_dir(out)
    emb = {"gpt_neox.embed_in.weight", "embed_out.weight"}
    assert json.loads((out / cv.REPORT).read_text())["embedding_tensors"] == ["gpt_neox.embed_in.weight",
                                                                              "embed_out.weight"]
    for name in emb:
        assert torch.equal(got[name], t[name])
    want = expected({k: v for k, v in t.items() if k not in emb}, [(b, c, 1.0)])
    assert_exact({k: v for k, v in got.items() if k not in emb}, want)


def matched_rows(target: torch.Tensor, base: torch.Tensor, chat: torch.Tensor, ratio: float,
                 target_vocab: dict[str, int], base_vocab: dict[str, int]) -> tuple[torch.Tensor, int]:
    want = target.float().clone()
    n = 0
    for token, j in target_vocab.items():
        if token in base_vocab:
            i = base_vocab[token]
            want[j] = target[j].float() + ratio * (chat[i].float() - base[i].float())
            n += 1
    return want, n


def test_matched_rows_by_token_string_untied_neox(world, tmp_path):
    out = tmp_path / "matched"
    report = cv.merge(world["neox_base"], world["neox_chat"], world["neox_target_ext"], out, ratio=0.8,
                      embeddings="matched", chunk_elements=1000, log=str)
    va, vb = vocab(world["tok_a"]), vocab(world["tok_b"])
    shared = va.keys() & vb.keys()
    assert sum(va[s] != vb[s] for s in shared) > 50 and len(vb.keys() - va.keys()) > 50  # a real remapping
    b, c, t = (load_dir(world[k]) for k in ("neox_base", "neox_chat", "neox_target_ext"))
    got = load_dir(out)
    for name in ("gpt_neox.embed_in.weight", "embed_out.weight"):
        want, n = matched_rows(t[name], b[name], c[name], 0.8, vb, va)
        assert n == len(shared) == report["vectors"][0]["embedding_rows"][name]["matched"]
        assert torch.equal(got[name], want), name
        new = [j for tok, j in vb.items() if tok not in va] + list(range(len(vb), t[name].shape[0]))
        assert torch.equal(got[name][new], t[name][new])  # new tokens and padding rows: the target's
    rest = {k: v for k, v in t.items() if "embed" not in k}
    assert_exact({k: got[k] for k in rest}, expected(rest, [(b, c, 0.8)]))


def test_matched_rows_tied_llama_through_a_vector(world, vectors, tmp_path):
    out = tmp_path / "matched"
    rc = cli("apply", "--target", world["llama_target_ext"], "--vector", vectors["1"], "--ratio", "1.5",
             "--out", out, "--embedding-rows", "matched")
    assert rc == 0
    b, c, t = (load_dir(world[k]) for k in ("llama_base", "llama_chat1", "llama_target_ext"))
    got = load_dir(out)
    assert got.keys() == t.keys() and "lm_head.weight" not in got
    report = json.loads((out / cv.REPORT).read_text())
    assert report["embedding_tensors"] == ["model.embed_tokens.weight"]  # tied: handled once
    name = "model.embed_tokens.weight"
    want, _ = matched_rows(t[name], b[name], c[name], 1.5, vocab(world["tok_b"]), vocab(world["tok_a"]))
    assert torch.equal(got[name], want)
    rest = {k: v for k, v in t.items() if k != name}
    assert_exact({k: got[k] for k in rest}, expected(rest, [(b, c, 1.5)]))


def test_the_merged_model_chats_like_the_chat_model(world, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "chat"
    cv.merge(world["neox_base"], world["neox_chat"], world["neox_target_ext"], out, embeddings="matched", log=str)
    vb = vocab(world["tok_b"])
    assert vb[IM_END] != vocab(world["tok_a"])[IM_END]  # the EOS id must be mapped, not copied
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.eos_token == IM_END and len(tok) == len(vb)
    messages = [{"role": "user", "content": "영화 추천해 주세요"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == f"{IM_START}user\n영화 추천해 주세요{IM_END}\n{IM_START}assistant\n"  # not OWN_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert model.generation_config.eos_token_id == [vb[IM_END], vb[EOS]]
    assert model.config.eos_token_id == vb[IM_END]
    ids = tok(text, return_tensors="pt").input_ids
    assert ids[0, 0].item() == vb[IM_START]
    gen = model.generate(ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert gen.shape[1] == ids.shape[1] + 4
    assert torch.equal(model.get_input_embeddings().weight, load_dir(out)["gpt_neox.embed_in.weight"])


# -- refusals and atomic outputs ------------------------------------------------------------------


def refused(capsys, *args: object) -> str:
    rc = cli(*args)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("koneox chat-vector: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_input_is_refused_with_one_line(world, vectors, tmp_path, capsys):
    out = tmp_path / "o"
    w = world
    assert "not a directory" in refused(capsys, "--base", tmp_path / "nope", "--chat", w["neox_chat"],
                                        "--target", w["neox_target"], "--out", out)
    assert "apply needs --vector" in refused(capsys, "apply", "--target", w["llama_target"], "--out", out)
    assert "extract needs --chat" in refused(capsys, "extract", "--base", w["llama_base"], "--out", out)
    assert "one-step form needs --target" in refused(capsys, "--base", w["llama_base"], "--chat", w["llama_chat1"],
                                                     "--out", out)
    assert "--skip-embeddings is not an option of extract" in refused(
        capsys, "extract", "--base", w["llama_base"], "--chat", w["llama_chat1"], "--out", out, "--skip-embeddings")
    assert "2 --vector but 3 --ratio" in refused(capsys, "apply", "--target", w["llama_target"], "--vector",
                                                 vectors["1"], vectors["2"], "--ratio", "1", "1", "1", "--out", out)
    assert "made from a llama model (LlamaForCausalLM)" in refused(
        capsys, "apply", "--target", w["neox_target"], "--vector", vectors["1"], "--out", out)
    assert "not a chat vector" in refused(capsys, "apply", "--target", w["llama_target"], "--vector",
                                          w["llama_base"], "--out", out)
    # Every mismatching tensor is named: the MLP of both layers.
    err = refused(capsys, "apply", "--target", w["llama_target_wide"], "--vector", vectors["1"], "--out", out)
    for i in range(LAYERS):
        for proj, shape in (("gate_proj", "[96, 32] vs [64, 32]"), ("up_proj", "[96, 32] vs [64, 32]"),
                            ("down_proj", "[32, 96] vs [32, 64]")):
            assert f"model.layers.{i}.mlp.{proj}.weight {shape}" in err
    assert err.count(" vs [") == 3 * LAYERS
    err = refused(capsys, "apply", "--target", w["llama_target_wide"], "--vector", vectors["1"], "--out", out,
                  "--skip-embeddings")
    assert err.count(" vs [") == 3 * LAYERS  # a vocabulary mode allows only the embeddings to differ
    # Missing and extra tensors, in the chat model against its base.
    odd = tmp_path / "odd_chat"
    shutil.copytree(w["llama_chat1"], odd)
    state = load_file(str(odd / "model.safetensors"))
    state["model.extra.weight"] = state.pop("model.norm.weight")
    save_file(state, str(odd / "model.safetensors"))
    err = refused(capsys, "extract", "--base", w["llama_base"], "--chat", odd, "--out", out)
    assert "only in base: model.norm.weight" in err and "only in chat: model.extra.weight" in err
    # An existing output is kept unless --overwrite.
    out.mkdir()
    assert "exists; pass --overwrite" in refused(capsys, "extract", "--base", w["llama_base"], "--chat",
                                                 w["llama_chat1"], "--out", out)
    assert not cv.tmp_path(out).exists()


def test_an_interrupted_run_leaves_no_output(world, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.txt").write_text("previous output")
    calls = {"n": 0}
    rows = cv._PairDelta.rows

    def failing(self, name, a, b, out):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return rows(self, name, a, b, out)

    monkeypatch.setattr(cv._PairDelta, "rows", failing)
    with pytest.raises(KeyboardInterrupt):
        cv.merge(world["llama_base"], world["llama_chat1"], world["llama_target"], out, overwrite=True, log=str)
    assert calls["n"] == 5
    assert (out / "old.txt").read_text() == "previous output" and not cv.tmp_path(out).exists()
    monkeypatch.setattr(cv._PairDelta, "rows", rows)
    cv.merge(world["llama_base"], world["llama_chat1"], world["llama_target"], out, overwrite=True, log=str)
    assert not (out / "old.txt").exists() and (out / "_COMPLETE.json").is_file()
    with safe_open(str(out / "model-00001-of-00001.safetensors"), "pt") as f:
        assert set(f.keys()) == set(load_dir(world["llama_target"]))


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli("--help")
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "koneox chat-vector extract --base B --chat C --out V" in text and "--embedding-rows" in text
