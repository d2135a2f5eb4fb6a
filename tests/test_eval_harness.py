"""koneox's KoBEST evaluator agrees with lm-evaluation-harness 0.4.13.

Both tools score the first examples of every KoBEST dev set, at 0 and 5 shots (few-shot
examples from train, lm-eval's sampler and seed), with the same tiny Korean GPT-NeoX
(``harness.make_tiny_model``: trained a few dozen steps, so choices rarely tie). lm-eval runs
offline with its own kobest tasks pointed at the local files (``harness.lm_eval_kobest``).

Agreement means, per example: the same gold label; the log-likelihood of every choice equal to
1e-4; the same prediction (and HellaSwag's length-normalised one), except where the two
choices involved are within 1e-4 of each other in either tool (a tie, which float noise may
break either way; counted and printed). Per task: the metrics each tool reports equal those
recomputed from its predictions, and the two tools' metrics are equal on the examples that
are not ties.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import TASKS, make_tiny_model, read_split, run_harness

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[dev]')")

KOBEST = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "kobest_v1"
NSMC = KOBEST.parent / "raw" / "nsmc_reviews.jsonl.gz"
# Examples per task (the first of the dev set): about 2 minutes for both tools on one core.
LIMITS = {"boolq": 40, "copa": 100, "hellaswag": 40, "sentineg": 100, "wic": 60}
SHOTS = (0, 5)
TIE = 1e-4
LL_TOL = 1e-4

pytestmark = [pytest.mark.harness, pytest.mark.usefixtures("one_thread")]
if not (KOBEST.is_dir() and NSMC.is_file()):
    pytestmark.append(pytest.mark.skip(reason=f"KoBEST or the NSMC reviews not found under {KOBEST.parent}"))


# REFERENCE §6, written out independently of lm-eval's files.
PROMPTS = {
    "boolq": lambda d: f"{d['paragraph']} 질문: {d['question']} 답변: ",
    "copa": lambda d: d["premise"] + {"원인": "  왜냐하면", "결과": "  그래서"}[d["question"].strip()],
    "hellaswag": lambda d: f"문장: {d['context']}",
    "sentineg": lambda d: f"문장: {d['sentence']} 긍부정:",
    "wic": lambda d: f"문장1: {d['context_1']} 문장2: {d['context_2']} 두 문장에서 {d['word']}가 같은 뜻으로 쓰였나?",
}


def metrics_of(examples: list[dict], task: str) -> dict[str, float]:
    """acc, f1 (macro F1 with sklearn, as lm-eval's kobest utils.macro_f1_score), acc_norm for HellaSwag."""
    from sklearn.metrics import f1_score

    gold = [e["gold"] for e in examples]
    pred = [e["prediction"] for e in examples]
    out = {"acc": sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold),
           "f1": float(f1_score(gold, pred, average="macro"))}
    if task == "hellaswag":
        out["acc_norm"] = sum(e["gold"] == e["prediction_norm"] for e in examples) / len(gold)
    return out


def tied(lls: list[float], a: int, b: int, lengths: list[int] | None = None) -> bool:
    """Choices a and b within TIE of each other (per character when ``lengths`` is given)."""
    if lengths is not None:
        return abs(lls[a] / lengths[a] - lls[b] / lengths[b]) < TIE
    return abs(lls[a] - lls[b]) < TIE


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def harness_runs(tiny_model):
    """lm-eval's run per (task, shots), computed on first use."""
    cache = {}

    def get(task: str, shots: int):
        if (task, shots) not in cache:
            cache[task, shots] = run_harness(tiny_model, task, shots, KOBEST, limit=LIMITS[task])
        return cache[task, shots]

    return get


@pytest.fixture(scope="module")
def koneox_runs(tiny_model, tmp_path_factory):
    """koneox's (predictions, metrics) per (task, shots), read back from the files it writes:
    one evaluate() call per task for both shot counts, computed on first use."""
    from train.eval.kobest import evaluate

    cache = {}

    def get(task: str, shots: int):
        if (task, shots) not in cache:
            name = f"kobest_{task}"
            out = tmp_path_factory.mktemp(name)
            evaluate(str(tiny_model), [name], shots=SHOTS, data_dir=str(KOBEST), split="dev",
                     limit=LIMITS[task], seed=1234, out=str(out), progress=False)
            results = json.loads((out / "results.json").read_text(encoding="utf-8"))["results"][name]
            for n in SHOTS:
                with (out / f"predictions-{name}-{n}.jsonl").open(encoding="utf-8") as f:
                    examples = [json.loads(line) for line in f if line.strip()]
                cache[task, n] = (examples, results[str(n)])
        return cache[task, shots]

    return get


@pytest.mark.parametrize("task", TASKS)
def test_harness_prompts_and_metrics(task, harness_runs):
    """The local tasks are lm-eval's kobest tasks on the local files: 0-shot prompts as in
    REFERENCE §6, few-shot prompts that end with them, and lm-eval's acc / macro F1 (its f1 metric
    cannot be loaded offline, the custom aggregation in kobest/utils.py still computes it)."""
    docs = read_split(KOBEST / task / "dev.tsv", task)
    zero, five = harness_runs(task, 0), harness_runs(task, 5)
    assert [e["idx"] for e in zero.examples] == list(range(LIMITS[task]))
    for e in zero.examples:
        doc = docs[e["idx"]]
        assert e["context"] == PROMPTS[task](doc)
        assert e["gold"] == doc["label"]
    for z, f in zip(zero.examples, five.examples, strict=True):
        assert f["context"].endswith("\n\n" + z["context"]) and f["context"].count("\n\n") >= 5
    for run in (zero, five):
        assert run.metrics.keys() == metrics_of(run.examples, task).keys()
        assert run.metrics == pytest.approx(metrics_of(run.examples, task), abs=1e-12)


@pytest.mark.parametrize("shots", SHOTS)
@pytest.mark.parametrize("task", TASKS)
def test_agrees_with_lm_eval(task, shots, harness_runs, koneox_runs):
    ref = harness_runs(task, shots)
    ours, our_metrics = koneox_runs(task, shots)
    assert [e["idx"] for e in ours] == [e["idx"] for e in ref.examples]

    ties, disagreements, worst = set(), [], 0.0
    for h, k in zip(ref.examples, ours, strict=True):
        assert k["gold"] == h["gold"], f"example {h['idx']}: gold {k['gold']} != lm-eval's {h['gold']}"
        assert len(k["loglikelihoods"]) == len(h["loglikelihoods"])
        diff = max(abs(a - b) for a, b in zip(k["loglikelihoods"], h["loglikelihoods"], strict=True))
        worst = max(worst, diff)
        assert diff <= LL_TOL, (
            f"example {h['idx']}: log-likelihoods {k['loglikelihoods']} vs lm-eval's {h['loglikelihoods']}\n"
            f"lm-eval's prompt: {h['context']!r}"
        )
        pairs = [("prediction", None)]
        if task == "hellaswag":
            pairs.append(("prediction_norm", [len(c) for c in h["choices"]]))
        for key, lengths in pairs:
            a, b = h[key], k[key]
            if a == b:
                continue
            if tied(h["loglikelihoods"], a, b, lengths) or tied(k["loglikelihoods"], a, b, lengths):
                ties.add(h["idx"])
            else:
                disagreements.append((h["idx"], key, a, b))
    print(f"{task} {shots}-shot: {len(ours)} examples, {len(ties)} ties, {len(disagreements)} disagreements, "
          f"largest log-likelihood difference {worst:.2e}")
    assert not disagreements, f"predictions (idx, kind, lm-eval, koneox) differ beyond ties: {disagreements}"

    keep_ref = [e for e in ref.examples if e["idx"] not in ties]
    keep_ours = [e for e in ours if e["idx"] not in ties]
    assert {m: our_metrics[m] for m in ref.metrics} == pytest.approx(metrics_of(ours, task), abs=1e-9)
    assert metrics_of(keep_ours, task) == pytest.approx(metrics_of(keep_ref, task), abs=1e-9)
    if not ties:
        assert {m: our_metrics[m] for m in ref.metrics} == pytest.approx(ref.metrics, abs=1e-9)
