"""``koneox extend-vocab``: Korean tokens spliced into an English byte-level BPE and its model.

The base model M stands in for Pythia: a byte-level BPE of 1,500 entries learned from English
text only (the untranslated English paragraphs of the LibreOffice help pages in the shared
corpus), so Korean falls apart into bytes, and a 2-layer koneox GPT-NeoX trained for 80 AdamW
steps on English mixed with Korean reviews, so it knows some Korean through those byte pieces, as
an open English model does (an untrained model knows nothing for the mean of its rows to carry:
mean and random init then start alike; after 50 steps mean init led random by 0.03 bits per byte
on Korean, after 80 by 0.10). The tokens to add come from a 3,000-entry byte-level BPE learned
from Korean reviews. Held-out reviews and English paragraphs are neither tokenizer's training text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from data.testing import (
    english_help_paragraphs,
    read_texts,
    train_small_model,
    train_tiny_tokenizer,
    write_jsonl_gz,
)
from launch.cli import main
from model import GPTNeoX
from model.extend_vocab import CONFIG_KEY, REPORT_NAME, extend_vocab
from tokenizer.extend import (
    BPE,
    PROBE_TEXTS,
    VocabExtensionError,
    changed_documents,
    check_reachable,
    extend_bpe,
    hangul_anchored,
    load_tokenizer_json,
    ranked_candidates,
    strip_hangul,
    token_bytes,
)
from tokenizer.fertility import fertility

RAW = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "raw"
EN_VOCAB, KO_VOCAB = 1500, 3000
CODE_AND_NUMBERS = [
    "for (int i = 0; i < n; ++i) { sum += a[i] * 0.5f; }  // 2024-01-31T12:00:00Z",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name LIMIT 100;",
    "3.14159265358979 2.71828 6.02214076e23 -0.000001 1,234,567.89 0xDEADBEEF 0b1010",
]

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not (RAW / "libreoffice_help_ko.jsonl.gz").exists(),
                       reason=f"shared corpus not found at {RAW} (the test needs its English and Korean text)"),
]


def english_paragraphs(max_bytes: int) -> list[str]:
    return english_help_paragraphs(max_bytes, RAW / "libreoffice_help_ko.jsonl.gz")


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread) -> dict:
    root = tmp_path_factory.mktemp("extend")
    english = english_paragraphs(500_000)
    korean = read_texts(RAW / "nsmc_reviews.jsonl.gz", limit=12_000)
    en_train, en_held = english[:-60], english[-60:]
    ko_train, ko_held = korean[:-300], korean[-300:]
    train_tiny_tokenizer(en_train, root / "en_tok", vocab_size=EN_VOCAB)
    train_tiny_tokenizer(ko_train, root / "ko_tok", vocab_size=KO_VOCAB)
    mixed = en_train[:400] + ko_train[:4000]
    base = train_small_model(root / "en_tok", mixed, root / "base", steps=80)
    return {
        "root": root, "base": base, "ko_tok": root / "ko_tok", "en_held": en_held, "ko_held": ko_held,
        "ko_train": ko_train,
        "ko_file": write_jsonl_gz(ko_held, root / "ko_heldout.jsonl.gz"),
        "en_file": write_jsonl_gz(en_held, root / "en_heldout.jsonl.gz"),
    }


@pytest.fixture(scope="module")
def extended(world) -> dict[str, tuple[Path, dict]]:
    """The base model extended three ways; bits per byte before and after for mean and random."""
    out = {}
    for init, texts in (("mean", [world["ko_file"], world["en_file"]]), ("random", [world["ko_file"]]),
                        ("first", [])):
        d = world["root"] / f"ext-{init}"
        out[init] = (d, extend_vocab(world["base"], world["ko_tok"], d, init=init, eval_text=texts,
                                     bpb=bool(texts)))
    return out


def embeddings(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    w = load_file(str(path / "model.safetensors"))
    return w["gpt_neox.embed_in.weight"], w["embed_out.weight"]


# -- the tokenizer -------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "anchored"), [
    ("가".encode(), True), (" 영화".encode(), True), (b"\xeb", True), (b"\xea\xb0", True), (b"\x80\xea\xb0", True),
    (b"\xea", False),  # Yi, Vai, ... start with EA too
    (b"\xb0\x80", False),  # the end of 가 and of 䰀
    (b" \xea", False), (b"\xe3\x84", False), ("ㅋ".encode(), True), ("ꀀ".encode(), False), (b"abc", False),
    ("日本".encode(), False),
])
def test_hangul_anchored_bytes(data, anchored):
    assert hangul_anchored(data) is anchored


def test_korean_tokens_are_merges_that_leave_other_text_alone(world):
    base_json, source_json = load_tokenizer_json(world["base"]), load_tokenizer_json(world["ko_tok"])
    base, source = BPE.of(base_json, "base"), BPE.of(source_json, "source")
    order, counts = ranked_candidates(base, source)
    ext = extend_bpe(base_json, source_json, order)
    old, new = base.ranks(), ext.tokenizer()
    assert counts["candidates"] > 2000 and counts["left_out_by_script"] > 0
    # merges after M's own, none of them producing a token that text without Hangul can hold
    assert BPE.of(ext.tokenizer_json, "extended").merges[: len(old)] == base.merges
    assert all(hangul_anchored(token_bytes(a + b)) for a, b in ext.merges)
    assert ext.first_id == EN_VOCAB and new.get_vocab_size() == EN_VOCAB + len(ext.added)
    # every added token encodes alone as itself; those left out do not
    reach = check_reachable(ext)
    assert reach["reachable"] == reach["added"] == len(ext.added) and not reach["not_reachable"]
    assert reach["text_tokens_reachable_by_encoding"] > 2000
    for token in ext.unreachable:
        text = token_bytes(token).decode("utf-8", "replace")
        assert len(new.encode(text, add_special_tokens=False).ids) > 1, text
    # same ids for English paragraphs, code, numbers, other scripts, reviews with the Hangul taken out
    old_tok = _tokenizer(base_json)
    plain = world["en_held"] + CODE_AND_NUMBERS + list(PROBE_TEXTS) + [strip_hangul(t) for t in world["ko_held"]]
    assert changed_documents(old_tok, new, plain)["changed"] == 0
    # ... which --script any does not promise
    anything = extend_bpe(base_json, source_json, ranked_candidates(base, source, "any")[0], "any")
    assert changed_documents(old_tok, anything.tokenizer(), world["en_held"] + CODE_AND_NUMBERS)["changed"] > 0
    # Korean: at least twice the bytes per token, near the source tokenizer's own
    before, after = fertility(old_tok, world["ko_held"]), fertility(new, world["ko_held"])
    source_fert = fertility(_tokenizer(source_json), world["ko_held"])
    assert after["bytes_per_token"] >= 2 * before["bytes_per_token"]
    assert after["bytes_per_token"] >= 0.95 * source_fert["bytes_per_token"]
    assert after["tokens_per_word"] < before["tokens_per_word"] / 2


def test_num_new_and_frequency_ranking_through_the_command(world, tmp_path, capsys):
    out = tmp_path / "ext"
    english = write_jsonl_gz(world["en_held"] + CODE_AND_NUMBERS, tmp_path / "english.jsonl.gz")
    corpus = write_jsonl_gz(world["ko_train"][:3000], tmp_path / "corpus.jsonl.gz")
    rc = main(["extend-vocab", "--model", str(world["base"]), "--add-tokens", str(world["ko_tok"]),
               "--out", str(out), "--num-new", "300", "--corpus", str(corpus), "--min-frequency", "3",
               "--english-check", str(english), "--eval-text", str(world["ko_file"])])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "stopped by --num-new" in printed and "0 of 63 documents changed ids" in printed
    report = json.loads((out / REPORT_NAME).read_text())
    t = report["tokens"]
    assert report["ranking"] == "frequency" and t["capped_by_num_new"] and 290 <= t["added"] <= 300
    assert report["reachable"]["reachable"] == t["added"]
    assert t["rows"] == 1920 and json.loads((out / "config.json").read_text())["vocab_size"] == 1920
    # the most used tokens first: 300 entries already double bytes per token, as the source's first
    # 300 merges do on text of the domain it was learned from (ranking by a token's own
    # occurrences, not counting the tokens built on it, reached 2.07 here against 2.22)
    ko = report["fertility"]["ko_heldout"]
    assert ko["after"]["bytes_per_token"] > 2 * ko["before"]["bytes_per_token"]
    base_json, source_json = load_tokenizer_json(world["base"]), load_tokenizer_json(world["ko_tok"])
    order = ranked_candidates(BPE.of(base_json, "m"), BPE.of(source_json, "s"))[0]
    by_rank = fertility(extend_bpe(base_json, source_json, order, num_new=300).tokenizer(), world["ko_held"])
    assert ko["after"]["bytes_per_token"] > 0.97 * by_rank["bytes_per_token"]
    assert (out / "_COMPLETE.json").is_file() and not list(out.glob(".koneox-extend-*"))

    assert main(["extend-vocab", "--model", str(world["base"]), "--add-tokens", str(world["root"] / "nowhere"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(world, tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(VocabExtensionError, match="not a BPE"):
        extend_vocab(world["base"], tmp_path / "tokenizer.json", tmp_path / "out")


# -- the model -----------------------------------------------------------------------------------


def test_rows_keep_the_old_and_start_the_new_from_their_pieces(world, extended):
    from tokenizers import Tokenizer

    base_in, base_out = embeddings(world["base"])
    ext_dir, report = extended["mean"]
    new_in, new_out = embeddings(ext_dir)
    t = report["tokens"]
    n_old, n = t["first_new_id"], t["vocab_size"]
    assert n_old == EN_VOCAB and t["added"] == n - n_old > 2000
    assert new_in.shape[0] == new_out.shape[0] == t["rows"] and t["rows"] % 128 == 0 and t["rows"] >= n
    assert torch.equal(new_in[:n_old], base_in[:n_old]) and torch.equal(new_out[:n_old], base_out[:n_old])
    # mean: exactly the mean of the rows of the pieces the old tokenizer makes of the token's text
    old_tok = Tokenizer.from_file(str(world["base"] / "tokenizer.json"))
    new_tok = Tokenizer.from_file(str(ext_dir / "tokenizer.json"))
    # mean: exactly the mean of the rows of the pieces the old tokenizer makes of the token's text;
    # first: the input row as mean, the LM-head row of the first piece; random: neither
    first_in, first_out = embeddings(extended["first"][0])
    rand_in, rand_out = embeddings(extended["random"][0])
    checked = 0
    for tid in range(n_old, n):
        try:
            text = token_bytes(new_tok.id_to_token(tid)).decode("utf-8")
        except UnicodeDecodeError:  # a part holding a partial character: no text to encode
            continue
        pieces = torch.tensor(old_tok.encode(text, add_special_tokens=False).ids)
        assert torch.equal(new_in[tid], base_in[pieces].mean(0)), text
        assert torch.equal(new_out[tid], base_out[pieces].mean(0)), text
        assert torch.equal(first_in[tid], new_in[tid]) and torch.equal(first_out[tid], base_out[pieces[0]]), text
        assert not torch.equal(rand_in[tid], new_in[tid]) and not torch.equal(rand_out[tid], new_out[tid]), text
        checked += 1
    assert checked > 2000
    assert torch.equal(new_out[n], base_out[:n_old].mean(0))  # padding: the average old row
    for a, b in ((first_in, base_in), (first_out, base_out), (rand_in, base_in), (rand_out, base_out)):
        assert torch.equal(a[:n_old], b[:n_old])
    record = json.loads((ext_dir / "config.json").read_text())[CONFIG_KEY]
    assert record["init"] == "mean" and record["old_vocab_size"] == n_old and record["vocab_size"] == n


def test_mean_init_starts_korean_lower_than_random(extended):
    """The issue's claim, at step 0: bits per byte on held-out reviews (train.eval.bpb)."""
    mean_bpb, random_bpb = extended["mean"][1]["bits_per_byte"], extended["random"][1]["bits_per_byte"]
    assert mean_bpb["ko_heldout"]["before"] == random_bpb["ko_heldout"]["before"]
    assert mean_bpb["ko_heldout"]["after"] < random_bpb["ko_heldout"]["after"]
    assert extended["mean"][1]["unchanged_text_check"]["changed"] == 0


def test_transformers_and_the_trainer_load_the_output(world, extended):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.config import load_config
    from train.sharded_init import build_shard
    from train.trainer import check_init_from

    ext_dir, report = extended["mean"]
    tok = AutoTokenizer.from_pretrained(str(ext_dir))
    hf = AutoModelForCausalLM.from_pretrained(str(ext_dir)).eval()
    ours = GPTNeoX.from_pretrained(str(ext_dir)).eval()
    text = world["ko_held"][0]
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert len(tok) == report["tokens"]["vocab_size"] and ids.max() >= report["tokens"]["first_new_id"]
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-4)

    cfg = load_config("tiny.yaml", [f"model.init_from={ext_dir}"])
    check_init_from(cfg, set())
    assert cfg.model.padded_vocab_size == report["tokens"]["rows"] and cfg.tokenizer.path == str(ext_dir)
    model = build_shard(cfg.model)
    assert torch.equal(model.gpt_neox.embed_in.weight, ours.gpt_neox.embed_in.weight)

    # koneox pack takes the finished directory as --tokenizer: Korean packs to the new ids
    from data.indexed import IndexedDataset
    from data.pack import pack

    src = write_jsonl_gz(world["ko_held"][:20], ext_dir.parent / "ko_pack.jsonl.gz")
    pack([str(src)], str(ext_dir), str(ext_dir.parent / "ko_packed"), progress=False)
    first = IndexedDataset(str(ext_dir.parent / "ko_packed"))[0]
    assert list(first[:-1]) == tok(world["ko_held"][0])["input_ids"]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_llama_style_model(world, tmp_path, tied):
    """Another architecture through transformers: the embedding surgery by tensor name, and with
    tied embeddings one matrix (the input rule), which the loaded model uses as its LM head."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = tmp_path / "llama"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=1536, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
                     ).save_pretrained(str(base))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(world["base"] / name, base / name)
    report = extend_vocab(base, world["ko_tok"], tmp_path / "out", num_new=500)
    t = report["tokens"]
    assert report["layout"]["input"] == "model.embed_tokens.weight" and report["layout"]["tied"] == tied
    old, new = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    names = ["model.embed_tokens.weight"] if tied else ["model.embed_tokens.weight", "lm_head.weight"]
    assert ("lm_head.weight" in new) == (not tied)
    for name in names:
        assert new[name].shape[0] == t["rows"] == 2048
        assert torch.equal(new[name][: t["first_new_id"]], old[name][: t["first_new_id"]])
    assert torch.equal(new["model.layers.0.mlp.up_proj.weight"], old["model.layers.0.mlp.up_proj.weight"])
    emb = new["model.embed_tokens.weight"]
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    word = next(w for w in ("영화", "정말", "배우") if len(tok(w)["input_ids"]) == 1)
    new_id = tok(word)["input_ids"][0]
    pieces = AutoTokenizer.from_pretrained(str(base))(word)["input_ids"]
    assert new_id >= t["first_new_id"] and len(pieces) > 1
    assert torch.equal(emb[new_id], old["model.embed_tokens.weight"][pieces].float().mean(0).to(emb.dtype))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert model.get_input_embeddings().weight.shape[0] == 2048
    assert (model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()) == tied
    record = json.loads((tmp_path / "out" / "config.json").read_text())[CONFIG_KEY]
    assert ("tied" in record["output_rows"]) == tied


def _tokenizer(data: dict):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(data))


def test_the_shipped_stage_configs_chain_from_extend_vocab_to_all_parameters(world, extended, tmp_path):
    """configs/extend/stage{1,2,3}.yaml run as the README chains them, each stage starting from the
    previous stage's `koneox export`: the real trainer and exporter, the shipped keys
    (``freeze_embedding_rows_below: auto`` included), only the scale shrunk. Stage 1 moves only
    the new input rows, stage 2 also the new LM-head rows, stage 3 everything; the old rows stay
    bit-identical through stages 1 and 2, and the extension record reaches every export. Last, the
    README's step 3: a chat vector on the stage-3 export with ``--embedding-rows matched``."""
    import yaml
    from safetensors.torch import load_file
    from test_train import launch

    from data.pack import pack

    ext_dir = extended["mean"][0]
    record = json.loads((ext_dir / "config.json").read_text())[CONFIG_KEY]
    k = record["old_vocab_size"]
    src = write_jsonl_gz(world["ko_train"][:600], tmp_path / "ko_train.jsonl.gz")
    pack([str(src)], str(ext_dir), str(tmp_path / "ko_packed"), progress=False)

    def weights(d: Path) -> dict[str, torch.Tensor]:
        return {n: t for f in sorted(d.glob("*.safetensors")) for n, t in load_file(str(f)).items()}

    start, prev = weights(ext_dir), ext_dir
    stages = {}
    for s in (1, 2, 3):
        run = tmp_path / f"stage{s}"
        out = launch(1, [f"model.init_from={prev}", f"train.run_dir={run}", f"data.train_paths=[{tmp_path / 'ko_packed'}]",
                         "data.seq_len=64", "data.split=[1.0, 0.0, 0.0]", "train.micro_batch_size=2",
                         "train.global_batch_size=4", "train.train_steps=3", "train.warmup_steps=1",
                         "train.save_interval=3", "train.eval_interval=0", "train.precision=fp32",
                         "logging.wandb.mode=disabled"], config=f"extend/stage{s}.yaml")
        assert "resumed" not in out
        assert main(["export", str(run), "--out", str(tmp_path / f"stage{s}-hf")]) == 0
        prev = tmp_path / f"stage{s}-hf"
        assert json.loads((prev / "config.json").read_text())[CONFIG_KEY] == record
        train = yaml.safe_load((run / "config.yaml").read_text())["train"]
        assert (train["freeze_embedding_rows_below"], train["freeze_output_rows_below"]) == \
            {1: (k, 0), 2: (k, k), 3: (0, 0)}[s]
        stages[s] = weights(prev)

    embed_in, embed_out = "gpt_neox.embed_in.weight", "embed_out.weight"
    body = [n for n in start if n not in (embed_in, embed_out)]
    for s in (1, 2):
        assert torch.equal(stages[s][embed_in][:k], start[embed_in][:k]), s
        assert all(torch.equal(stages[s][n], start[n]) for n in body), s
    assert not torch.equal(stages[1][embed_in][k:], start[embed_in][k:])
    assert torch.equal(stages[1][embed_out], start[embed_out])
    assert torch.equal(stages[2][embed_out][:k], start[embed_out][:k])  # old tokens' logits: same weights
    assert not torch.equal(stages[2][embed_out][k:], stages[1][embed_out][k:])
    assert not torch.equal(stages[3][embed_in][:k], start[embed_in][:k])
    assert all(not torch.equal(stages[3][n], stages[2][n]) for n in body if n.endswith("dense.weight"))

    # Then a chat vector from the English base and a "chat" model of it (the base, nudged): with
    # --embedding-rows matched, the old tokens' rows (ids kept by extend-vocab) get the vector and
    # the Korean rows and padding keep stage 3's values.
    from safetensors.torch import save_file

    import model.chat_vector as cv

    chat = tmp_path / "base-chat"
    shutil.copytree(world["base"], chat)
    base_w = load_file(str(world["base"] / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    chat_w = {n: t + 0.01 * torch.randn(t.shape, generator=gen) for n, t in base_w.items()}
    save_file(chat_w, str(chat / "model.safetensors"), metadata={"format": "pt"})
    cv.merge(world["base"], chat, prev, tmp_path / "stage3-chat", embeddings="matched", log=str)
    merged = weights(tmp_path / "stage3-chat")
    for name in (embed_in, embed_out):
        assert torch.allclose(merged[name][:k], stages[3][name][:k] + chat_w[name][:k] - base_w[name][:k], atol=1e-6)
        assert torch.equal(merged[name][k:], stages[3][name][k:]), name
    assert torch.allclose(merged[body[0]], stages[3][body[0]] + chat_w[body[0]] - base_w[body[0]], atol=1e-6)
