"""KoBEST evaluation as lm-evaluation-harness 0.4.13 runs its ``kobest_*`` tasks (REFERENCE §6).

    from train.eval.kobest import evaluate
    res = evaluate("runs/demo/hf", "kobest", shots=(0, 5), data_dir="../shared/corpus/kobest_v1")
    res["results"]["kobest_copa"][5]["f1"]

    koneox eval runs/demo/hf --tasks kobest --shots 0,5 --data ../shared/corpus/kobest_v1 --out eval/

For every task and number of shots:

    examples   the split's examples (train/eval/kobest_data.py: TSV or Hugging Face layout),
               the first ``limit`` of them when limited
    prompts    the task's template (train/eval/tasks/<task>.yaml, or ``template``): a context
               with k few-shot examples from the train split, one continuation per choice
               (train/eval/templates.py: the strings equal the harness's byte for byte)
    scores     summed log-likelihood of each continuation (train/eval/scoring.py)
    metrics    prediction = argmax; acc, macro F1, and for HellaSwag acc_norm (argmax of the
               log-likelihood / the choice's length in characters); standard errors as in
               train/eval/stats.py

``model`` is a path (an exported Hugging Face directory, a checkpoint, or a run: its latest) or
an already loaded ``(model, tokenizer)`` pair, so checkpoint selection can evaluate a model it
holds in memory. Nothing here changes such a model: it is put in eval mode while scoring and
back in training mode afterwards if it was in it. A GPT-NeoX directory, a checkpoint and a run
load into koneox's own model and a ``tokenizers`` tokenizer without importing transformers
(train/eval/fast_load.py); other architectures load through transformers.

Outputs (``out``): ``results.json`` (metrics, templates with hashes, data files with sha256,
model, settings, versions), ``predictions-<task>-<shots>.jsonl`` and ``results.md``.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.eval import stats
from train.eval.kobest_data import Split, load_split
from train.eval.templates import EvalError, Template, fewshot_indices, load_template, shipped

TASKS = ("kobest_boolq", "kobest_copa", "kobest_hellaswag", "kobest_sentineg", "kobest_wic")
GROUPS = {"kobest": TASKS}


def resolve_tasks(tasks: str | Iterable[str]) -> list[str]:
    """Task names from ``"kobest"``, ``"kobest_boolq,kobest_copa"`` or a list; order kept, no repeats."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for item in (t.strip() for t in items):
        if not item:
            continue
        names = GROUPS.get(item, (item,))
        for name in names:
            if name not in TASKS:
                raise EvalError(f"unknown task {name!r}; choose from {', '.join([*GROUPS, *TASKS])}")
            if name not in out:
                out.append(name)
    if not out:
        raise EvalError("no task given")
    return out


def resolve_templates(tasks: Sequence[str], template: str | Path | Sequence[str | Path] | None) -> dict[str, Template]:
    """The shipped template of each task, replaced by the user's for the tasks they name."""
    chosen = {t: shipped(t) for t in tasks}
    files = [] if template is None else [template] if isinstance(template, (str, Path)) else list(template)
    for f in files:
        tpl = load_template(f)
        if tpl.task not in chosen:
            raise EvalError(f"{f}: a template for {tpl.task}, which is not among the tasks evaluated "
                            f"({', '.join(tasks)})")
        chosen[tpl.task] = tpl
    return chosen


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("koneox", "torch", "transformers", "tokenizers", "numpy", "jinja2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load_model(model: Any, device: str | None = None, dtype: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, description) from a path or a loaded (model, tokenizer) pair."""
    if isinstance(model, tuple):
        from model import GPTNeoX
        from train.eval.fast_load import CausalLM

        m, tok = model
        info: dict[str, Any] = {"source": "in memory", "class": type(m).__name__}
        name = getattr(getattr(m, "config", None), "_name_or_path", "")
        if name:
            info["name_or_path"] = name
        if isinstance(m, GPTNeoX):  # koneox's own module: give it the calling convention scoring uses
            m = CausalLM(m)
    else:
        import torch

        from train.eval.fast_load import load
        from train.export import ExportError

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(model)
        if not path.exists():
            raise EvalError(f"{path}: model not found (a Hugging Face directory, a checkpoint or a run)")
        try:
            m, tok, loaded = load(path, device=device, dtype=dtype)
        except ExportError as e:
            raise EvalError(str(e)) from None
        info = {"source": str(path), **loaded}
    info["was_training"] = bool(m.training)
    m.eval()
    p = next(m.parameters())
    info.update(dtype=str(p.dtype).removeprefix("torch."), device=str(p.device),
                parameters=sum(x.numel() for x in m.parameters()))
    return m, tok, info


def _metrics(template: Template, golds: np.ndarray, lls: list[np.ndarray], choices: list[list[str]],
             seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray | None]:
    preds = np.array([int(np.argmax(x)) for x in lls])
    res: dict[str, float] = {}
    norm = None
    for m in template.metrics:
        if m == "acc":
            hits = (preds == golds).astype(np.float64)
            res["acc"], res["acc_stderr"] = float(hits.mean()), stats.mean_stderr(hits)
        elif m == "acc_norm":
            norm = np.array([int(np.argmax(x / np.array([float(len(c)) for c in cs])))
                             for x, cs in zip(lls, choices, strict=True)])
            hits = (norm == golds).astype(np.float64)
            res["acc_norm"], res["acc_norm_stderr"] = float(hits.mean()), stats.mean_stderr(hits)
        elif m == "f1":
            res["f1"] = stats.macro_f1(golds, preds)
            res["f1_stderr"] = stats.bootstrap_f1_stderr(golds, preds, seed=seed)
    return res, preds, norm


def evaluate_task(
    model: Any,
    tokenizer: Any,
    template: Template,
    docs: Sequence[dict[str, Any]],
    fewshot_pool: Sequence[dict[str, Any]],
    shots: int,
    seed: int = 1234,
    batch_size: int | str = "auto",
    max_length: int | None = None,
    same_split: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics and per-example predictions of one task at one number of shots."""
    from train.eval.scoring import encode_pairs, loglikelihoods, resolve_max_length

    examples = fewshot_indices(fewshot_pool, shots, docs, seed, same_split=same_split)
    pairs, owner, choices = [], [], []
    for i, (doc, ex) in enumerate(zip(docs, examples, strict=True)):
        reqs = template.requests(doc, [fewshot_pool[j] for j in ex])
        choices.append(template.doc_choices(doc))
        pairs += reqs
        owner += [i] * len(reqs)
    tokens = encode_pairs(tokenizer, pairs)
    window = int(max_length or resolve_max_length(model, tokenizer))
    scores = loglikelihoods(model, tokens, window, batch_size, progress=progress,
                            desc=f"{template.task} {shots}-shot")
    counts = np.bincount(np.asarray(owner), minlength=len(docs))
    lls = np.split(scores, np.cumsum(counts)[:-1])
    golds = np.array([d["label"] for d in docs])
    metrics, preds, norm = _metrics(template, golds, lls, choices, seed)
    predictions = []
    for i in range(len(docs)):
        row = {"idx": i, "gold": int(golds[i]), "loglikelihoods": [float(x) for x in lls[i]],
               "prediction": int(preds[i])}
        if norm is not None:
            row["prediction_norm"] = int(norm[i])
        row["fewshot_idx"] = [int(j) for j in examples[i]]
        predictions.append(row)
    return {"metrics": metrics, "predictions": predictions, "n": len(docs)}


def prepare(tasks: str | Iterable[str], shots: Sequence[int] | int, data_dir: str | Path | None, split: str,
            template: str | Path | Sequence[str | Path] | None = None
            ) -> tuple[list[str], list[int], dict[str, Template], dict[str, tuple[Split, Split | None]]]:
    """Check the arguments and read the data: (tasks, shots, templates, {task: (eval split, few-shot
    split or None)}). Raises EvalError naming the file (and field) on bad input."""
    names = resolve_tasks(tasks)
    shot_list = [shots] if isinstance(shots, int) else list(shots)
    if not shot_list or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in shot_list):
        raise EvalError(f"shots {shots!r}: non-negative integers")
    if data_dir is None:
        raise EvalError("data_dir: the directory holding KoBEST (DIR/<task>/<split>.tsv|jsonl|parquet) is required")
    templates = resolve_templates(names, template)
    data: dict[str, tuple[Split, Split | None]] = {}
    for name in names:
        tpl = templates[name]
        ev = load_split(tpl, data_dir, split)
        pool = load_split(tpl, data_dir, tpl.fewshot_split) if max(shot_list) > 0 else None
        data[name] = (ev, pool)
    return names, shot_list, templates, data


def evaluate(
    model: Any,
    tasks: str | Iterable[str],
    shots: Sequence[int] | int = (0,),
    data_dir: str | Path | None = None,
    split: str = "dev",
    batch_size: int | str = "auto",
    limit: int | None = None,
    seed: int = 1234,
    out: str | Path | None = None,
    dtype: str | None = None,
    template: str | Path | Sequence[str | Path] | None = None,
    progress: bool = True,
    device: str | None = None,
    max_length: int | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on KoBEST tasks; see the module docstring.

    Returns ``{"results": {task: {shots: {metric: value, metric + "_stderr": stderr}}},
    "samples", "templates", "data", "model", "settings", "versions", "predictions"}``
    (``predictions`` is written to the jsonl files, not to results.json, whose shot keys are
    strings). ``dtype`` and ``device`` apply when ``model`` is a path.
    """
    from train.eval.scoring import resolve_max_length

    start = time.perf_counter()
    log = log or (lambda *_: None)
    # Data first: a missing file fails before the model is loaded.
    names, shot_list, templates, data = prepare(tasks, shots, data_dir, split, template)
    if limit is not None and limit < 1:
        raise EvalError(f"limit {limit}: must be positive")

    m, tok, info = load_model(model, device, dtype)
    was_training = info.pop("was_training")
    try:
        window = int(max_length or resolve_max_length(m, tok))
        info["max_length"] = window
        log(f"evaluating {info.get('source')} ({info['dtype']} on {info['device']}, window {window}) on "
            f"{', '.join(names)} at {', '.join(map(str, shot_list))} shots, {split} split")

        results: dict[str, dict[int, dict[str, float]]] = {}
        samples: dict[str, dict[str, int]] = {}
        predictions: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for name in names:
            tpl = templates[name]
            ev, pool = data[name]
            docs = ev.docs[:limit] if limit else ev.docs
            same = pool is not None and pool.path == ev.path
            samples[name] = {"effective": len(docs), "original": len(ev.docs)}
            results[name], predictions[name] = {}, {}
            for k in shot_list:
                t0 = time.perf_counter()
                r = evaluate_task(m, tok, tpl, docs, pool.docs if pool else [], k, seed=seed, batch_size=batch_size,
                                  max_length=window, same_split=same, progress=progress)
                results[name][k] = r["metrics"]
                predictions[name][k] = r["predictions"]
                shown = ", ".join(f"{key} {v:.4f}" for key, v in r["metrics"].items() if not key.endswith("_stderr"))
                log(f"  {name} {k}-shot: {shown} ({len(docs)} examples, {time.perf_counter() - t0:.1f} s)")

        report: dict[str, Any] = {
            "results": results,
            "samples": samples,
            "templates": {n: templates[n].record() for n in names},
            "data": {n: {"dir": str(data_dir), "split": split, "eval": data[n][0].record(),
                         "fewshot": data[n][1].record() if data[n][1] is not None else None} for n in names},
            "model": info,
            "settings": {"tasks": names, "shots": shot_list, "split": split, "batch_size": batch_size,
                         "limit": limit, "seed": seed, "dtype": dtype, "max_length": window,
                         "bootstrap_iters": stats.BOOTSTRAP_ITERS,
                         "fewshot_split": {n: templates[n].fewshot_split for n in names}},
            "versions": _versions(),
            "seconds": round(time.perf_counter() - start, 2),
            "predictions": predictions,
        }
        if out is not None:
            write_outputs(out, report)
        return report
    finally:
        if was_training:  # a model handed in while training goes back to training mode
            m.train()


# -- output files ---------------------------------------------------------------------------------


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so results.json stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_outputs(out: str | Path, report: dict[str, Any]) -> None:
    """results.json, results.md and predictions-<task>-<shots>.jsonl of a report (``bpb`` included
    when the report holds one)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for task, by_shots in report.get("predictions", {}).items():
        for k, rows in by_shots.items():
            with open(out / f"predictions-{task}-{k}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    body = {k: v for k, v in report.items() if k != "predictions"}
    (out / "results.json").write_text(json.dumps(_finite(body), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    (out / "results.md").write_text(markdown(report), encoding="utf-8")


def _cell(metrics: dict[str, float] | None, key: str) -> str:
    if not metrics or key not in metrics:
        return ""
    v, se = metrics[key], metrics.get(f"{key}_stderr")
    return f"{v:.4f}" + (f" ± {se:.4f}" if se is not None and math.isfinite(se) else "")


def markdown(report: dict[str, Any]) -> str:
    """Tables task x shots (macro F1 as in the Polyglot-Ko paper, then acc and acc_norm)."""
    lines = ["# Evaluation", ""]
    model = report.get("model", {})
    lines += [f"model: `{model.get('source', '?')}` ({model.get('dtype', '?')})", ""]
    results = report.get("results") or {}
    if results:
        s = report["settings"]
        lines.append(f"KoBEST {s['split']} split" + (f", first {s['limit']} examples" if s.get("limit") else "")
                     + f", few-shot seed {s['seed']}")
        lines.append("")
        shots = s["shots"]
        for key, title in (("f1", "macro F1"), ("acc", "accuracy"), ("acc_norm", "accuracy, length-normalised")):
            tasks = [t for t in results if any(key in results[t][k] for k in shots)]
            if not tasks:
                continue
            lines += [f"## {title}", "", "| task | " + " | ".join(f"{k}-shot" for k in shots) + " |",
                      "|---|" + "---|" * len(shots)]
            for t in tasks:
                lines.append(f"| {t} | " + " | ".join(_cell(results[t].get(k), key) for k in shots) + " |")
            lines.append("")
        lines.append("Standard errors: acc, sample std / sqrt(n); macro F1, bootstrap "
                     f"({s['bootstrap_iters']} resamples).")
        lines += ["", "| task | template | sha256 | examples |", "|---|---|---|---|"]
        for t in results:
            tpl = report["templates"][t]
            lines.append(f"| {t} | {tpl['name']} | {tpl['sha256'][:12]} | {report['samples'][t]['effective']} |")
        lines.append("")
    bpb = report.get("bpb")
    if bpb:
        lines += ["## bits per byte", "", "| documents | bytes | tokens | bits/byte | nats/token | window | stride |",
                  "|---|---|---|---|---|---|---|",
                  f"| {bpb['documents']} | {bpb['bytes']} | {bpb['tokens']} | {bpb['bits_per_byte']:.4f} | "
                  f"{bpb['nats_per_token']:.4f} | {bpb['window']} | {bpb['stride']} |", ""]
    return "\n".join(lines) + "\n"
