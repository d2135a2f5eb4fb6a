"""koneox eval loads GPT-NeoX directories and checkpoints without transformers (train/eval/fast_load.py).

The fast path must give what transformers gives: the same token ids as the transformers
tokenizer (special tokens in the text, a post-processor that adds BOS, the older
special_tokens_map.json layout), the same log-likelihoods (1e-5, fp32) and predictions as
``GPTNeoXForCausalLM``, and it must not import transformers at all (checked in a fresh
process). Anything else falls back to transformers: another architecture, a tokenizer class
transformers rebuilds, a special token tokenizer.json lacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.testing import read_texts, train_tiny_tokenizer
from model import GPTNeoX, ModelConfig
from tokenizer.train import BOS, EOS, PAD, PII_TOKENS, SEP, SPECIAL_TOKENS

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
KOBEST = REPO.parent / "shared" / "corpus" / "kobest_v1"
WINDOW = 128
LL_TOL = 1e-5
TIE = 1e-4

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not KOBEST.is_dir(), reason=f"{KOBEST} (KoBEST TSVs) not found"),
]


def koneox_tokenizer(out: Path, bos_post_processor: bool = False) -> Path:
    """A byte-level BPE in the layout koneox's tokenizer trainer writes (tokenizer.train.save_hf):
    <|bos|> <|pad|> <|endoftext|> <|sep|> special, the PII placeholders plain added tokens;
    optionally a tokenizer.json post-processor that puts <|bos|> before every text."""
    from tokenizers import AddedToken, Tokenizer, processors

    from tokenizer.train import save_hf

    base = train_tiny_tokenizer(read_texts(SAMPLES / "nsmc_reviews.jsonl.gz", limit=2000), out / "base", 1000)
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PII_TOKENS])
    if bos_post_processor:
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    save_hf(tok, out, model_max_length=WINDOW)
    return out


def save_model(tok_dir: Path, out: Path) -> Path:
    """A random 2-layer koneox GPT-NeoX (init std 0.1, so choices differ clearly) next to the tokenizer."""
    import shutil

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    cfg = ModelConfig.from_name("tiny", num_layers=2, vocab_size=tok.get_vocab_size(with_added_tokens=True),
                                bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS),
                                max_position_embeddings=WINDOW, init_std=0.1)
    GPTNeoX(cfg).save_pretrained(str(out))
    for f in tok_dir.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """koneox layout; BOS-adding post-processor; Polyglot-Ko's older layout (tokenizer_class
    PreTrainedTokenizerFast, special tokens in special_tokens_map.json only)."""
    root = tmp_path_factory.mktemp("fast_load")
    koneox = save_model(koneox_tokenizer(root / "tok"), root / "koneox")
    bos = save_model(koneox_tokenizer(root / "tok_bos", bos_post_processor=True), root / "bos")
    legacy = save_model(root / "tok", root / "legacy")
    (legacy / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "model_max_length": WINDOW}))
    (legacy / "special_tokens_map.json").write_text(json.dumps({"bos_token": EOS, "eos_token": EOS,
                                                                "unk_token": EOS, "pad_token": PAD}))
    return {"koneox": koneox, "bos": bos, "legacy": legacy}


def texts_with_specials(korean_texts: list[str]) -> list[str]:
    """Korean reviews and law text, special-token strings inside and at the start, spaces, empty."""
    law = [t[:400] for t in korean_texts if len(t) > 400][:3]
    return [*korean_texts[:40], *law, f"{EOS}영화 정말 재밌었어요", f"{BOS}{BOS} 문장: 그래서{EOS}",
            f"계좌 {PII_TOKENS[0]} 전화 {PII_TOKENS[1]}{SEP}다음 {PAD}", f"  왜냐하면 <|endoftext| > {EOS[:-1]}",
            "", " ", "\n\n", "漢字 한자 😀 ㅋㅋㅋ"]


def kobest_requests(n: int = 8) -> list[tuple[str, str]]:
    from train.eval.kobest import TASKS
    from train.eval.kobest_data import load_split
    from train.eval.templates import fewshot_indices, shipped

    out = []
    for task in TASKS:
        tpl = shipped(task)
        docs = load_split(tpl, KOBEST, "dev").docs[:n]
        pool = load_split(tpl, KOBEST, "train").docs
        for doc, ex in zip(docs, fewshot_indices(pool, 1, docs, seed=1234), strict=True):
            out += tpl.requests(doc, [pool[j] for j in ex])
    return out


def test_token_ids_equal_the_transformers_tokenizer(model_dirs, korean_texts):
    from transformers import AutoTokenizer

    from train.eval.fast_load import Tokenizer, load_tokenizer
    from train.eval.scoring import encode_pairs, prefix_token_id

    texts = texts_with_specials(korean_texts)
    reqs = kobest_requests()
    for name, path in model_dirs.items():
        ours, theirs = load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))
        assert isinstance(ours, Tokenizer)
        for add in (True, False):
            assert ours(texts, add_special_tokens=add)["input_ids"] == theirs(texts, add_special_tokens=add)["input_ids"]
            assert ours(texts[3], add_special_tokens=add)["input_ids"] == theirs(texts[3], add_special_tokens=add)["input_ids"]
        assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]  # the default: special tokens added
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "sep_token_id", "model_max_length"):
            assert getattr(ours, key) == getattr(theirs, key), (name, key)
        assert len(ours) == len(theirs)
        p = prefix_token_id(ours)
        assert ours.decode(p) == theirs.decode(p) and ours.decode([p, 5, 6]) == theirs.decode([p, 5, 6])
        assert encode_pairs(ours, reqs) == encode_pairs(theirs, reqs), name
    # What the variants are there to exercise.
    bos = load_tokenizer(model_dirs["bos"])
    assert bos("영화")["input_ids"][0] == bos.bos_token_id != bos("영화", add_special_tokens=False)["input_ids"][0]
    assert load_tokenizer(model_dirs["legacy"]).bos_token_id == load_tokenizer(model_dirs["koneox"]).eos_token_id
    assert load_tokenizer(model_dirs["koneox"]).bos_token_id != load_tokenizer(model_dirs["koneox"]).eos_token_id


def test_logits_equal_transformers_gpt_neox(model_dirs):
    from transformers import AutoModelForCausalLM

    from train.eval.fast_load import load_gpt_neox

    ours = load_gpt_neox(model_dirs["koneox"], "cpu")
    theirs = AutoModelForCausalLM.from_pretrained(str(model_dirs["koneox"])).eval()
    ids = torch.randint(0, ours.config.vocab_size, (3, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = ours(input_ids=ids).logits.log_softmax(-1)
        ref = theirs(input_ids=ids).logits.log_softmax(-1)
        kept = ours(input_ids=ids, logits_to_keep=7).logits.log_softmax(-1)
    assert full.shape == ref.shape == (3, 50, ours.config.padded_vocab_size)
    assert (full - ref).abs().max().item() < LL_TOL
    torch.testing.assert_close(kept, full[:, -7:], rtol=0, atol=1e-6)


def test_fast_path_predictions_equal_the_transformers_path(model_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.eval.kobest import evaluate

    tasks = "kobest_copa,kobest_hellaswag,kobest_boolq,kobest_sentineg"
    for name in ("koneox", "bos"):
        path = model_dirs[name]
        pair = (AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)))
        fast = evaluate(path, tasks, shots=(0, 2), data_dir=KOBEST, limit=12, device="cpu", progress=False)
        slow = evaluate(pair, tasks, shots=(0, 2), data_dir=KOBEST, limit=12, progress=False)
        assert fast["model"]["loader"] == {"model": "koneox", "tokenizer": "tokenizers"}
        assert fast["model"]["parameters"] == slow["model"]["parameters"]
        compared = total = 0
        for task, by_shots in fast["predictions"].items():
            for k, rows in by_shots.items():
                for a, b in zip(rows, slow["predictions"][task][k], strict=True):
                    np.testing.assert_allclose(a["loglikelihoods"], b["loglikelihoods"], rtol=0, atol=LL_TOL)
                    total += 1
                    top = sorted(b["loglikelihoods"])[-2:]
                    if top[1] - top[0] > TIE:
                        assert a["prediction"] == b["prediction"]
                        compared += 1
        assert total == 4 * 2 * 12 and compared > 0.9 * total, (compared, total)


def test_in_memory_koneox_model_is_scored_and_left_in_its_mode(model_dirs):
    from train.eval.fast_load import load_tokenizer
    from train.eval.kobest import evaluate

    model = GPTNeoX.from_pretrained(str(model_dirs["koneox"]))
    tok = load_tokenizer(model_dirs["koneox"])
    by_path = evaluate(model_dirs["koneox"], "kobest_copa", data_dir=KOBEST, limit=6, device="cpu", progress=False)
    for training in (True, False):
        model.train(training)
        res = evaluate((model, tok), "kobest_copa", data_dir=KOBEST, limit=6, progress=False)
        assert model.training == training
        assert res["predictions"] == by_path["predictions"]


CHILD = """
import json, sys
from train.eval.kobest import evaluate
out = {}
for name, path in json.loads(sys.argv[1]).items():
    res = evaluate(path, "kobest_copa", shots=(0, 1), data_dir=sys.argv[2], limit=4, device="cpu", progress=False)
    out[name] = {"loader": res["model"]["loader"], "kind": res["model"]["kind"],
                 "lls": [r["loglikelihoods"] for r in res["predictions"]["kobest_copa"][1]]}
out["modules"] = sorted(m for m in ("transformers", "torch._dynamo", "sympy") if m in sys.modules)
print(json.dumps(out))
"""


def test_fast_path_never_imports_transformers(model_dirs, tmp_path):
    """A Hugging Face directory and a training run, evaluated in a fresh process."""
    from test_eval import write_checkpoint

    run = write_checkpoint(model_dirs["koneox"], tmp_path / "run")
    sources = {"hf": str(model_dirs["koneox"]), "run": str(run)}
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(sources), str(KOBEST)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["modules"] == []  # neither transformers nor the 4 s of torch._dynamo a meta-device init imports
    for name, kind in (("hf", "huggingface"), ("run", "checkpoint")):
        assert out[name]["loader"] == {"model": "koneox", "tokenizer": "tokenizers"}
        assert out[name]["kind"] == kind
    np.testing.assert_allclose(out["hf"]["lls"], out["run"]["lls"], rtol=0, atol=LL_TOL)


def test_other_architectures_and_tokenizers_fall_back_to_transformers(model_dirs, tmp_path):
    import shutil

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from train.eval.fast_load import Fallback, load_tokenizer
    from train.eval.kobest import load_model

    src = model_dirs["koneox"]
    llama = tmp_path / "llama"
    tok = AutoTokenizer.from_pretrained(str(src))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=WINDOW)
                     ).save_pretrained(str(llama))
    tok.save_pretrained(str(llama))
    m, t, info = load_model(str(llama), device="cpu")
    assert info["loader"]["model"] == info["loader"]["tokenizer"] == "transformers"
    assert "'llama'" in info["loader"]["why"] and type(m).__name__ == "LlamaForCausalLM"

    # A GPT-NeoX whose tokenizer transformers rebuilds from its own class: our model, its tokenizer.
    neox = tmp_path / "neox_tokenizer_class"
    shutil.copytree(src, neox)
    config = json.loads((neox / "tokenizer_config.json").read_text())
    (neox / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPTNeoXTokenizer"}))
    m, t, info = load_model(str(neox), device="cpu")
    assert info["loader"]["model"] == "koneox" and info["loader"]["tokenizer"] == "transformers"
    assert "GPTNeoXTokenizer" in info["loader"]["why"]

    # A special token that is not in tokenizer.json: transformers would add it to the vocabulary.
    (neox / "tokenizer_config.json").write_text(json.dumps(config))
    special_map = json.loads((neox / "special_tokens_map.json").read_text())
    (neox / "special_tokens_map.json").write_text(json.dumps({**special_map, "pad_token": "<|padding|>"}))
    assert len(AutoTokenizer.from_pretrained(str(neox))) == len(tok) + 1
    with pytest.raises(Fallback, match="<\\|padding\\|>"):
        load_tokenizer(neox)
    (neox / "tokenizer.json").unlink()
    with pytest.raises(Fallback, match="no tokenizer.json"):
        load_tokenizer(neox)
