"""koneox eval: KoBEST as lm-evaluation-harness builds it, batched scoring, metrics, bits per byte.

A tiny randomly initialised GPT-NeoX with a small Korean BPE stands in for a model: every
check here compares two computations of the same numbers (batched vs one by one, TSV vs
Hugging Face layout, checkpoint vs export, ours vs the harness's strings), so no training
is needed. KoBEST comes from ../shared/corpus/kobest_v1 (skipped when absent).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from data.testing import read_texts, train_tiny_tokenizer
from model import GPTNeoX, ModelConfig

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "nsmc_reviews.jsonl.gz"
KOBEST = REPO.parent / "shared" / "corpus" / "kobest_v1"
WINDOW = 128  # small model window: 5-shot contexts are truncated on the left

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not KOBEST.is_dir(), reason=f"{KOBEST} (KoBEST TSVs) not found"),
]

# The Hugging Face copy's fields from the TSV columns (shared/corpus/README.md), written here
# independently of train/eval so that both layouts are a real cross-check.
def _bool(v: str) -> int:
    return {"true": 1, "false": 0}[v.strip().lower()]


TO_HF = {
    "boolq": lambda r: {"paragraph": r["Text"], "question": r["Question"], "label": _bool(r["Answer"])},
    "copa": lambda r: {"premise": r["sentence"], "question": r["question"], "alternative_1": r["1"],
                       "alternative_2": r["2"], "label": int(r["Answer"]) - 1},
    "hellaswag": lambda r: {"context": r["context"], **{f"ending_{i}": r[f"choice{i}"] for i in range(1, 5)},
                            "label": int(r["label"])},
    "sentineg": lambda r: {"sentence": r["Text"], "label": int(r["Label"])},
    "wic": lambda r: {"word": r["Target"], "context_1": r["SENTENCE1"], "context_2": r["SENTENCE2"],
                      "label": _bool(r["ANSWER"])},
}


def tsv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """Randomly initialised 2-layer model with a 1000-token Korean BPE, window WINDOW."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("model")
    train_tiny_tokenizer(read_texts(SAMPLE, limit=2000), out, vocab_size=1000)
    eos = AutoTokenizer.from_pretrained(str(out)).eos_token_id
    cfg = ModelConfig.from_name("tiny", num_layers=2, vocab_size=1000, eos_token_id=eos, bos_token_id=eos,
                                max_position_embeddings=WINDOW)
    GPTNeoX(cfg).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def loaded(hf_dir):
    from train.generate import load

    return load(hf_dir)


@pytest.fixture(scope="module")
def small_tsv(tmp_path_factory) -> Path:
    """The published TSVs, first 40 train and 12 dev rows of each task, bytes as published."""
    root = tmp_path_factory.mktemp("kobest_tsv")
    for task in TO_HF:
        (root / task).mkdir()
        for split, n in (("train", 40), ("dev", 12)):
            lines = (KOBEST / task / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
            (root / task / f"{split}.tsv").write_text("".join(lines[: n + 1]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def small_hf(small_tsv, tmp_path_factory) -> Path:
    """The same examples in the Hugging Face layout: jsonl, parquet (hellaswag), and for WiC the
    kobest_<task>/ directory with the dev split named validation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("kobest_hf")
    for task, convert in TO_HF.items():
        for split in ("train", "dev"):
            rows = [convert(r) for r in tsv_rows(small_tsv / task / f"{split}.tsv")]
            if task == "hellaswag":
                (root / task).mkdir(exist_ok=True)
                pq.write_table(pa.Table.from_pylist(rows), root / task / f"{split}.parquet")
            elif task == "wic":
                write_jsonl(rows, root / "kobest_wic" / f"{'validation' if split == 'dev' else split}.jsonl")
            else:
                write_jsonl(rows, root / task / f"{split}.jsonl")
    return root


# -- data layouts and errors ------------------------------------------------------------------------


def test_tsv_and_hugging_face_layouts_give_the_same_results(loaded, small_tsv, small_hf):
    from train.eval.kobest import TASKS, evaluate

    a = evaluate(loaded, "kobest", shots=(0, 2), data_dir=small_tsv, limit=6, progress=False)
    loaded[0].train()  # a model handed in while training is scored in eval mode and given back training
    b = evaluate(loaded, TASKS, shots=(0, 2), data_dir=small_hf, limit=6, progress=False)
    assert loaded[0].training
    loaded[0].eval()
    assert a["results"] == b["results"]
    assert a["predictions"] == b["predictions"]
    assert set(a["results"]) == set(TASKS) and all(set(r) == {0, 2} for r in a["results"].values())
    assert {d["eval"]["layout"] for d in a["data"].values()} == {"tsv"}
    assert {d["eval"]["layout"] for d in b["data"].values()} == {"hf"}
    assert b["data"]["kobest_wic"]["eval"]["path"].endswith("kobest_wic/validation.jsonl")
    assert b["data"]["kobest_hellaswag"]["fewshot"]["path"].endswith("train.parquet")
    # Every metric is there with its stderr; HellaSwag alone has acc_norm.
    for task, by_shots in a["results"].items():
        keys = {"acc", "acc_stderr", "f1", "f1_stderr"} | ({"acc_norm", "acc_norm_stderr"} if "hellaswag" in task else set())
        assert set(by_shots[2]) == keys
        rows = a["predictions"][task][2]
        assert [r["idx"] for r in rows] == list(range(6)) and all(len(r["fewshot_idx"]) == 2 for r in rows)
        acc = np.mean([r["prediction"] == r["gold"] for r in rows])
        assert by_shots[2]["acc"] == pytest.approx(acc)
        assert all(r["prediction"] == int(np.argmax(r["loglikelihoods"])) for r in rows)


def test_missing_split_or_field_is_an_error_naming_the_file(loaded, small_tsv, small_hf, tmp_path, capsys):
    import shutil

    from launch.cli import main
    from train.eval.kobest import evaluate
    from train.eval.templates import EvalError

    # No dev split.
    root = tmp_path / "no_dev"
    shutil.copytree(small_tsv / "copa", root / "copa")
    (root / "copa" / "dev.tsv").unlink()
    with pytest.raises(EvalError, match=r"copa/dev\.tsv.*no dev split"):
        evaluate(loaded, "kobest_copa", data_dir=root, progress=False)
    # No train split, needed only for few-shot examples.
    root = tmp_path / "no_train"
    shutil.copytree(small_tsv / "copa", root / "copa")
    (root / "copa" / "train.tsv").unlink()
    assert evaluate(loaded, "kobest_copa", shots=0, data_dir=root, limit=2, progress=False)["results"]
    with pytest.raises(EvalError, match=r"copa/train\.tsv.*no train split"):
        evaluate(loaded, "kobest_copa", shots=(0, 1), data_dir=root, progress=False)

    # A TSV without one of its columns.
    root = tmp_path / "no_column"
    (root / "copa").mkdir(parents=True)
    rows = tsv_rows(small_tsv / "copa" / "dev.tsv")
    with open(root / "copa" / "dev.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != "2"], delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(EvalError, match=r"copa/dev\.tsv: no column '2'"):
        evaluate(loaded, "kobest_copa", data_dir=root, progress=False)

    # A jsonl record without a field, and a label that is not an index.
    root = tmp_path / "bad_jsonl"
    rows = [json.loads(x) for x in (small_hf / "boolq" / "dev.jsonl").read_text().splitlines()]
    del rows[2]["question"]
    write_jsonl(rows, root / "boolq" / "dev.jsonl")
    with pytest.raises(EvalError, match=r"boolq/dev\.jsonl: line 3: no field 'question'"):
        evaluate(loaded, "kobest_boolq", data_dir=root, progress=False)
    rows[2]["question"], rows[4]["label"] = "질문", 2
    write_jsonl(rows, root / "boolq" / "dev.jsonl")
    with pytest.raises(EvalError, match=r"boolq/dev\.jsonl: line 5: label 2 outside 0\.\.1"):
        evaluate(loaded, "kobest_boolq", data_dir=root, progress=False)

    # The command: exit 1 with the message, before loading any model.
    assert main(["eval", "no/such/model", "--tasks", "kobest_copa", "--data", str(tmp_path / "no_dev")]) == 1
    assert "copa/dev.tsv" in capsys.readouterr().err
    for bad in (["--tasks", "kobest_nope"], ["--shots", "0,x"], ["--batch-size", "0"], ["--limit", "-1"]):
        assert main(["eval", str(small_tsv), "--data", str(small_tsv), *bad]) == 1
        assert "koneox eval:" in capsys.readouterr().err
    assert main(["eval", "no/such/model", "--tasks", "kobest_copa"]) == 1
    assert "--data" in capsys.readouterr().err


# -- agreement with lm-evaluation-harness's strings and tokens --------------------------------------


@pytest.fixture(scope="module")
def harness_requests(tmp_path_factory) -> dict[tuple[str, int], list[tuple[str, str]]]:
    """The harness's (context, continuation) requests for the first 12 dev examples of every task
    at 0 and 5 shots, built offline by its own task objects on a local Hugging Face-layout copy
    of the full train and dev splits."""
    pytest.importorskip("lm_eval")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE"):
            mp.setenv(var, "1")
        return _harness_requests(tmp_path_factory.mktemp("kobest_full_hf"))


def _harness_requests(root: Path) -> dict[tuple[str, int], list[tuple[str, str]]]:
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    out = {}
    for task, convert in TO_HF.items():
        files = {}
        for split, hf_split in (("train", "train"), ("dev", "test")):
            files[hf_split] = str(root / task / f"{split}.jsonl")
            write_jsonl([convert(r) for r in tsv_rows(KOBEST / task / f"{split}.tsv")], Path(files[hf_split]))
        cfg = load_yaml(Path(lm_eval.__file__).parent / "tasks" / "kobest" / f"kobest_{task}.yaml")
        cfg.pop("dataset_name")
        cfg.update(dataset_path="json", validation_split=None,
                   dataset_kwargs={"data_files": files, "cache_dir": str(root / "cache")})
        harness_task = ConfigurableTask(config=cfg)
        for shots in (0, 5):
            harness_task.set_config(key="num_fewshot", value=shots)
            harness_task.set_fewshot_seed(seed=1234)
            harness_task.build_all_requests(limit=12)
            out[(f"kobest_{task}", shots)] = [inst.args for inst in harness_task.instances]
    return out


def our_requests(task: str, shots: int, n: int, data_dir: Path = KOBEST) -> list[tuple[str, str]]:
    from train.eval.kobest_data import load_split
    from train.eval.templates import fewshot_indices, shipped

    tpl = shipped(task)
    docs = load_split(tpl, data_dir, "dev").docs[:n]
    pool = load_split(tpl, data_dir, "train").docs
    examples = fewshot_indices(pool, shots, docs, seed=1234)
    return [r for doc, ex in zip(docs, examples, strict=True) for r in tpl.requests(doc, [pool[j] for j in ex])]


def test_contexts_equal_the_harness_byte_for_byte(harness_requests):
    from train.eval.kobest import TASKS

    for task in TASKS:
        for shots in (0, 5):
            theirs = harness_requests[(task, shots)]
            ours = our_requests(task, shots, 12)
            assert len(ours) == len(theirs) > 0
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                assert a == b, f"{task} {shots}-shot request {i}:\nours   {a!r}\ntheirs {b!r}"
    # The details REFERENCE §6 names, seen in the strings themselves.
    copa = harness_requests[("kobest_copa", 0)][0][0]
    assert copa.endswith(("  왜냐하면", "  그래서"))
    assert harness_requests[("kobest_boolq", 0)][0][0].endswith("답변: ")
    assert "답변:  " in harness_requests[("kobest_boolq", 5)][0][0]  # few-shot answers after the trailing space


def test_continuation_tokens_equal_the_harness(harness_requests, loaded):
    """Our tokenization of every request equals the harness's own _encode_pair and tok_encode,
    run on our tokenizer (the model plays no part in them)."""
    from functools import partial

    from lm_eval.api.model import TemplateLM
    from lm_eval.models.huggingface import HFLM

    from train.eval.scoring import encode_pairs, prefix_token_id

    tok = loaded[1]
    lm = SimpleNamespace(tokenizer=tok, add_bos_token=None, prefix_token_id=prefix_token_id(tok), backend="causal")
    lm.tok_encode = partial(HFLM.tok_encode, lm)
    for (task, shots), reqs in harness_requests.items():
        theirs = [TemplateLM._encode_pair(lm, ctx, cont) for ctx, cont in reqs]
        assert encode_pairs(tok, reqs) == theirs, (task, shots)


# -- scoring --------------------------------------------------------------------------------------


def reference_loglikelihood(model, ctx: list[int], cont: list[int], window: int) -> float:
    """One request alone, the plain way: left-truncate to window + 1 tokens, one forward."""
    full = (ctx + cont)[-(window + 1) :]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([full[:-1]])).logits[0].double().log_softmax(-1)
    first = len(full) - 1 - len(cont)
    return sum(float(logp[first + i, t]) for i, t in enumerate(cont))


class PlainForward(torch.nn.Module):
    """A model whose forward takes input_ids only (no logits_to_keep, no use_cache)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.inner(input_ids=input_ids).logits)


class TightMemory(PlainForward):
    """Raises the CUDA out-of-memory error for batches of more than ``limit`` tokens."""

    def __init__(self, inner: torch.nn.Module, limit: int):
        super().__init__(inner)
        self.limit, self.refused, self.sizes = limit, 0, []

    def forward(self, input_ids):
        if input_ids.numel() > self.limit:
            self.refused += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        self.sizes.append(input_ids.numel())
        return super().forward(input_ids)


def test_batched_scoring_equals_scoring_each_request_alone(loaded):
    import copy

    from train.eval.scoring import encode_pairs, loglikelihoods
    from train.eval.templates import EvalError

    model = copy.deepcopy(loaded[0]).double()  # fp64: differences are the method's, not rounding's
    tok = loaded[1]
    pairs = our_requests("kobest_copa", 5, 4) + our_requests("kobest_boolq", 0, 3) + our_requests("kobest_sentineg", 2, 3)
    reqs = encode_pairs(tok, pairs)
    assert max(len(c) + len(x) for c, x in reqs) > WINDOW + 1  # some are truncated on the left
    # Hand-made: a duplicate, one-token context, continuations sharing a context and differing
    # in the last token, a continuation as long as the window.
    ids = reqs[0][0]
    reqs += [reqs[1], ([ids[0]], ids[1:4]), (ids[:20], ids[20:23]), (ids[:20], [*ids[20:22], ids[5]]),
             (ids[:7], (ids * 3)[:WINDOW])]
    want = np.array([reference_loglikelihood(model, list(c), list(x), WINDOW) for c, x in reqs])
    for bs in (1, 3, "auto"):
        got = loglikelihoods(model, reqs, WINDOW, batch_size=bs, progress=False)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    got = loglikelihoods(PlainForward(model), reqs, WINDOW, batch_size=4, progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # "auto" halves its batches when memory runs out (here: more than 300 tokens in one batch).
    tight = TightMemory(model, 300)
    got = loglikelihoods(tight, reqs, WINDOW, batch_size="auto", progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert tight.refused > 0 and max(tight.sizes) <= 300
    with pytest.raises(EvalError, match="out of memory with batch size 8"):
        loglikelihoods(tight, reqs, WINDOW, batch_size=8, progress=False)
    # A continuation longer than the window cannot be scored.
    with pytest.raises(EvalError, match="longer than the model window"):
        loglikelihoods(model, [(ids[:2], (ids * 3)[: WINDOW + 1])], WINDOW, progress=False)


# -- metrics ---------------------------------------------------------------------------------------


def test_accuracy_and_macro_f1_by_hand():
    from train.eval import stats

    golds = [0, 0, 0, 1, 1, 2, 2, 2]
    preds = [0, 0, 1, 1, 2, 2, 2, 0]
    # label 0: tp 2, fp 1, fn 1 -> 4/6; label 1: tp 1, fp 1, fn 1 -> 2/4; label 2: tp 2, fp 1, fn 1 -> 4/6
    assert stats.macro_f1(golds, preds) == pytest.approx((4 / 6 + 2 / 4 + 4 / 6) / 3)
    assert stats.accuracy(golds, preds) == pytest.approx(5 / 8)
    # acc stderr: sample std of the hits / sqrt(n) = sqrt(p (1 - p) n / (n - 1)) / sqrt(n)
    hits = [1, 1, 0, 1, 0, 1, 1, 0]
    assert stats.mean_stderr(hits) == pytest.approx(math.sqrt(5 / 8 * 3 / 8 * 8 / 7) / math.sqrt(8))
    # A label only predicted (never gold) counts with F1 0; one never seen does not count at all.
    assert stats.macro_f1([0, 0, 1, 1], [0, 0, 1, 3]) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert stats.macro_f1([1, 1, 1], [1, 1, 1]) == 1.0
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    g, p = rng.integers(0, 4, 200), rng.integers(0, 3, 200)
    assert stats.macro_f1(g, p) == pytest.approx(sklearn.f1_score(g, p, average="macro"))
    # Bootstrap: reproducible with the seed, about the binomial-like spread, 0 when all agree.
    se = stats.bootstrap_f1_stderr(g, p, seed=1)
    assert se == stats.bootstrap_f1_stderr(g, p, seed=1) and 0.01 < se < 0.1
    assert stats.bootstrap_f1_stderr([1, 0, 1], [1, 0, 1]) == 0.0
    assert math.isnan(stats.mean_stderr([1.0]))


# -- templates -------------------------------------------------------------------------------------


def test_template_yaml_round_trip_and_a_custom_template_is_recorded(loaded, small_tsv, tmp_path):
    from train.eval.kobest import TASKS, evaluate
    from train.eval.kobest_data import load_split
    from train.eval.templates import EvalError, load_template, shipped

    for task in TASKS:
        tpl = shipped(task)
        (tmp_path / f"{task}.yaml").write_text(tpl.to_yaml(), encoding="utf-8")
        again = load_template(tmp_path / f"{task}.yaml")
        assert again.to_dict() == tpl.to_dict() and again.sha256 == tpl.sha256
    assert len({shipped(t).sha256 for t in TASKS}) == len(TASKS)

    variant = tmp_path / "boolq_en.yaml"
    variant.write_text(
        "task: kobest_boolq\n"
        'description: "Read the passage and answer 예 (yes) or 아니오 (no).\\n\\n"\n'
        'text: "Passage: {{paragraph}}\\nQuestion: {{question}}\\nAnswer:"\n', encoding="utf-8")
    tpl = load_template(variant)
    assert tpl.name == "boolq_en" and tpl.choices == shipped("kobest_boolq").choices
    assert tpl.sha256 != shipped("kobest_boolq").sha256
    docs = load_split(tpl, small_tsv, "dev").docs
    ctx = tpl.context(docs[0], [docs[1]])
    answer = tpl.choices[docs[1]["label"]]
    assert ctx == (f"Read the passage and answer 예 (yes) or 아니오 (no).\n\nPassage: {docs[1]['paragraph']}\n"
                   f"Question: {docs[1]['question']}\nAnswer: {answer}\n\nPassage: {docs[0]['paragraph']}\n"
                   f"Question: {docs[0]['question']}\nAnswer:")

    out = tmp_path / "out"
    res = evaluate(loaded, "kobest_boolq,kobest_copa", shots=(0, 1), data_dir=small_tsv, limit=3,
                   template=variant, out=out, progress=False)
    plain = evaluate(loaded, "kobest_boolq", shots=(0, 1), data_dir=small_tsv, limit=3, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["templates"]["kobest_boolq"]["name"] == "boolq_en"
    assert saved["templates"]["kobest_boolq"]["sha256"] == tpl.sha256
    assert saved["templates"]["kobest_copa"]["sha256"] == shipped("kobest_copa").sha256
    assert res["predictions"]["kobest_boolq"][0] != plain["predictions"]["kobest_boolq"][0]  # the variant was used

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: kobest_boolq\nprompt: x\n", encoding="utf-8")
    with pytest.raises(EvalError, match=r"bad\.yaml: unknown key\(s\) prompt"):
        load_template(bad)
    with pytest.raises(EvalError, match="not among the tasks evaluated"):
        evaluate(loaded, "kobest_copa", data_dir=small_tsv, template=variant, progress=False)


# -- bits per byte ------------------------------------------------------------------------------------


def test_bits_per_byte_equals_a_direct_computation(loaded, tmp_path):
    import copy

    from train.eval.bpb import bits_per_byte
    from train.eval.scoring import prefix_token_id

    model = copy.deepcopy(loaded[0]).double()
    tok = loaded[1]
    reviews = read_texts(SAMPLE, limit=6)
    law = read_texts(REPO / "data" / "samples" / "ko_law_bills.jsonl.gz", limit=1)[0][:300]
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt", encoding="utf-8") as f:
        for t in [*reviews[:4], "", law]:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    (tmp_path / "extra.txt").write_text(reviews[5], encoding="utf-8")
    docs = [*reviews[:4], law, reviews[5]]

    W, S = 64, 24
    eos = tok.eos_token_id  # documents are conditioned on EOS (how packing starts them), unless asked for BOS
    with_bos = copy.deepcopy(tok)
    with_bos.bos_token = with_bos.convert_ids_to_tokens(100)
    bos = prefix_token_id(with_bos)
    assert bos == 100 and with_bos.eos_token_id == eos

    def direct(text: str, W: int = W, S: int = S, p: int = eos) -> float:
        """-log p(text): target j of [p, t1..tn] is predicted from positions k*S .. j-1, k the
        first window that reaches it (k = max(0, ceil((j - W) / S)))."""
        full = [p, *tok(text, add_special_tokens=False)["input_ids"]]
        total = 0.0
        with torch.no_grad():
            for j in range(1, len(full)):
                begin = max(0, math.ceil((j - W) / S)) * S
                logits = model(input_ids=torch.tensor([full[begin:j]])).logits[0, -1].double()
                total -= float(logits.log_softmax(-1)[full[j]])
        return total

    assert len(tok(law)["input_ids"]) > 3 * W  # several windows
    nats = [direct(t) for t in docs]
    n_bytes = [len(t.encode("utf-8")) for t in docs]
    res = bits_per_byte(model, tok, [tmp_path / "docs.jsonl.gz", tmp_path / "extra.txt", tmp_path / "docs.jsonl.gz"],
                        max_length=W, stride=S, batch_size=5, progress=False)
    assert res["documents"] == 6  # the empty one skipped, the repeated file read once
    assert res["bytes"] == sum(n_bytes)
    assert res["tokens"] == sum(len(tok(t)["input_ids"]) for t in docs)
    assert res["bits_per_byte"] == pytest.approx(sum(nats) / math.log(2) / sum(n_bytes), rel=1e-9)
    # Short documents in the model's own window: one forward each.
    short = bits_per_byte(model, tok, tmp_path / "extra.txt", progress=False)
    assert short["window"] == WINDOW and short["windows"] == 1
    assert short["nats"] == pytest.approx(direct(reviews[5], WINDOW, WINDOW // 2), rel=1e-9)
    assert short["prefix_token_id"] == eos
    assert bits_per_byte(model, with_bos, tmp_path / "extra.txt", progress=False)["nats"] == short["nats"]
    harness = bits_per_byte(model, with_bos, tmp_path / "extra.txt", progress=False, prefix="bos")
    assert harness["prefix_token_id"] == bos
    assert harness["nats"] == pytest.approx(direct(reviews[5], WINDOW, WINDOW // 2, bos), rel=1e-9)
    assert harness["nats"] != pytest.approx(short["nats"], rel=1e-6)
    # --limit-bytes: whole documents until the limit is reached.
    lim = bits_per_byte(model, tok, tmp_path / "docs.jsonl.gz", limit_bytes=n_bytes[0] + 1, progress=False)
    assert lim["documents"] == 2 and lim["bytes"] == n_bytes[0] + n_bytes[1]


# -- checkpoints and the command -------------------------------------------------------------------


def write_checkpoint(hf_dir: Path, run: Path) -> Path:
    """A one-rank, ZeRO-1 checkpoint of the test model in the DeepSpeed file layout the exporter
    reads (train/export.py), with the run's tokenizer recorded."""
    from train.checkpoint import META

    model = GPTNeoX.from_pretrained(str(hf_dir))
    cfg = model.config
    ckpt = run / "checkpoints" / "step00000010"
    ckpt.mkdir(parents=True)
    torch.save({"module": model.state_dict()}, ckpt / "mp_rank_00_model_states.pt")
    meta = {"config": {"model": asdict(cfg), "parallel": {"tensor_parallel": 1, "zero_stage": 1},
                       "train": {"precision": "fp32"}, "tokenizer": {"path": str(hf_dir)}},
            "tokenizer": str(hf_dir), "tensor_parallel": 1, "state": {"step": 10, "epoch": 0.5}}
    (ckpt / META).write_text(json.dumps(meta))
    (run / "checkpoints" / "latest").write_text("step00000010\n")
    return run


def test_a_checkpoint_evaluates_equal_to_its_export(hf_dir, small_tsv, tmp_path):
    from train.eval.kobest import evaluate
    from train.export import export

    run = write_checkpoint(hf_dir, tmp_path / "run")
    export(run, tmp_path / "export", log=lambda *_: None)
    a = evaluate(run, "kobest_copa,kobest_hellaswag", shots=(0, 1), data_dir=small_tsv, limit=4,
                 device="cpu", progress=False)
    b = evaluate(tmp_path / "export", "kobest_copa,kobest_hellaswag", shots=(0, 1), data_dir=small_tsv, limit=4,
                 device="cpu", progress=False)
    assert a["model"]["kind"] == "checkpoint" and a["model"]["step"] == 10
    assert b["model"]["kind"] == "huggingface"
    for task in a["predictions"]:
        for k in (0, 1):
            x, y = a["predictions"][task][k], b["predictions"][task][k]
            assert [r["prediction"] for r in x] == [r["prediction"] for r in y]
            np.testing.assert_allclose([r["loglikelihoods"] for r in x], [r["loglikelihoods"] for r in y],
                                       rtol=0, atol=1e-5)


def test_command_writes_results_predictions_and_markdown(hf_dir, small_tsv, tmp_path, capsys):
    from launch.cli import main

    text = tmp_path / "doc.txt"
    text.write_text(read_texts(SAMPLE, limit=1)[0], encoding="utf-8")
    out = tmp_path / "out"
    code = main(["eval", str(hf_dir), "--tasks", "kobest_copa,kobest_hellaswag", "--shots", "0,1", "--data",
                 str(small_tsv), "--limit", "3", "--batch-size", "4", "--out", str(out), "--bpb", str(text),
                 "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert set(res["results"]) == {"kobest_copa", "kobest_hellaswag"}
    assert set(res["results"]["kobest_hellaswag"]["1"]) >= {"acc", "acc_norm", "f1", "f1_stderr"}
    dev = small_tsv / "copa" / "dev.tsv"
    assert res["data"]["kobest_copa"]["eval"]["sha256"] == hashlib.sha256(dev.read_bytes()).hexdigest()
    assert res["settings"]["shots"] == [0, 1] and res["settings"]["limit"] == 3
    assert res["model"]["source"] == str(hf_dir) and res["versions"]["torch"] == torch.__version__
    assert res["bpb"]["documents"] == 1 and res["bpb"]["bits_per_byte"] > 0
    rows = [json.loads(x) for x in (out / "predictions-kobest_hellaswag-1.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and set(rows[0]) >= {"idx", "gold", "loglikelihoods", "prediction", "prediction_norm"}
    assert len(rows[0]["loglikelihoods"]) == 4
    md = (out / "results.md").read_text()
    assert "## macro F1" in md and "| kobest_copa |" in md and "bits per byte" in md
