"""KoBEST through lm-evaluation-harness 0.4.13, offline, on local files.

The local tasks are lm-eval's own: each is a YAML file that ``include``s the shipped
``lm_eval/tasks/kobest/kobest_<task>.yaml`` by absolute path, so prompts, choices, metrics and
``utils.py`` (whose ``!function`` references resolve next to the included file) are theirs
unchanged. Only the dataset is replaced::

    include: <site-packages>/lm_eval/tasks/kobest/kobest_copa.yaml
    task: koneox_kobest_copa
    dataset_path: json                 # datasets' JSON Lines builder instead of skt/kobest_v1
    dataset_name: null
    dataset_kwargs: {data_files: {train: .../copa/train.jsonl, test: .../copa/dev.jsonl}, cache_dir: ...}
    validation_split: null

The evaluated split is given to lm-eval as the ``test`` split, the one the shipped YAMLs evaluate.
Few-shot examples then come from ``train`` exactly as in the shipped tasks: no ``fewshot_split``,
so ``fewshot_docs()`` falls back to ``training_docs()``, and because that split is not the test
split, lm-eval's sampler draws ``Random(fewshot_seed).sample(train_docs, k)`` once per evaluated
document in document order, one generator for the whole task, without excluding the document.

The JSON Lines use the Hugging Face field names with 0-based integer labels (``read_split``);
the input may be the published TSVs, JSON Lines or parquet with those names.

Command line (used by ``benchmarks/eval.py`` to time a fresh process)::

    python tests/harness/lm_eval_kobest.py MODEL_DIR --task copa --shots 0 --data ../shared/corpus/kobest_v1
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("boolq", "copa", "hellaswag", "sentineg", "wic")
TASK_PREFIX = "koneox_kobest_"

# Hugging Face field names of each task (skt/kobest_v1), label last.
HF_FIELDS = {
    "boolq": ("paragraph", "question", "label"),
    "copa": ("premise", "question", "alternative_1", "alternative_2", "label"),
    "hellaswag": ("context", "ending_1", "ending_2", "ending_3", "ending_4", "label"),
    "sentineg": ("sentence", "label"),
    "wic": ("word", "context_1", "context_2", "label"),
}
_TRUE_FALSE = {"false": 0, "true": 1}  # the files spell both True and TRUE


def _from_tsv(task: str, row: dict[str, str]) -> dict[str, Any]:
    """One row of the published TSV as the Hugging Face copy names it."""
    if task == "boolq":
        return {"paragraph": row["Text"], "question": row["Question"], "label": _TRUE_FALSE[row["Answer"].lower()]}
    if task == "copa":
        return {"premise": row["sentence"], "question": row["question"], "alternative_1": row["1"],
                "alternative_2": row["2"], "label": int(row["Answer"]) - 1}
    if task == "hellaswag":
        return {"context": row["context"], **{f"ending_{i}": row[f"choice{i}"] for i in range(1, 5)},
                "label": int(row["label"])}
    if task == "sentineg":
        # Text/Label are the sentences to score (the negated ones where Text_origin also exists).
        return {"sentence": row["Text"], "label": int(row["Label"])}
    if task == "wic":
        return {"word": row["Target"], "context_1": row["SENTENCE1"], "context_2": row["SENTENCE2"],
                "label": _TRUE_FALSE[row["ANSWER"].lower()]}
    raise KeyError(f"unknown KoBEST task {task!r}; choose from {', '.join(TASKS)}")


def read_split(path: str | os.PathLike, task: str) -> list[dict[str, Any]]:
    """The examples of one split file in the Hugging Face layout (``HF_FIELDS``), in file order.

    ``.tsv``: the published KoBEST layout; ``.jsonl``/``.json`` (one object a line) or
    ``.parquet``: the Hugging Face field names, labels cast to int."""
    path = Path(path)
    if task not in HF_FIELDS:
        raise KeyError(f"unknown KoBEST task {task!r}; choose from {', '.join(TASKS)}")
    if path.suffix == ".tsv":
        # Tab-separated with standard CSV quoting, the strings pandas.read_csv(sep="\t") gives:
        # HellaSwag's train set quotes fields CSV-style ("... ""v"" 모양 ..."); a BoolQ field that
        # merely starts with a quoted title ("뷰티 인사이드"는 ...) loses those two quotes.
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = []
            for row in reader:
                if None in row or None in row.values():
                    raise ValueError(f"{path}:{reader.line_num}: the field count differs from the header's")
                rows.append(_from_tsv(task, row))
        return rows
    if path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        records = pq.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: expected a .tsv, .jsonl, .json or .parquet file")
    fields = HF_FIELDS[task]
    out = []
    for n, rec in enumerate(records):
        missing = [k for k in fields if k not in rec]
        if missing:
            raise ValueError(f"{path}: record {n} lacks {', '.join(missing)} (expected {', '.join(fields)})")
        out.append({k: int(rec[k]) if k == "label" else rec[k] for k in fields})
    return out


def _split_file(data: str | os.PathLike | Mapping[str, str | os.PathLike], task: str, split: str) -> Path:
    """``data[split]`` for a mapping of split -> file, else ``data/<task>/<split>.{tsv,jsonl,json,parquet}``."""
    if isinstance(data, Mapping):
        if split not in data:
            raise KeyError(f"no {split!r} file given for {task} (have {', '.join(data)})")
        return Path(data[split])
    for ext in (".tsv", ".jsonl", ".json", ".parquet"):
        path = Path(data) / task / f"{split}{ext}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{Path(data) / task}: no {split}.tsv/.jsonl/.json/.parquet")


def kobest_yaml(task: str) -> Path:
    """lm-eval's shipped task file for ``task``."""
    import lm_eval.tasks

    path = Path(lm_eval.tasks.__file__).parent / "kobest" / f"kobest_{task}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this lm_eval has no kobest_{task} task")
    return path


def write_local_tasks(
    data: str | os.PathLike | Mapping[str, str | os.PathLike],
    tasks: tuple[str, ...] | list[str],
    out_dir: str | os.PathLike,
    split: str = "dev",
) -> Path:
    """Write ``out_dir/data/<task>/{train,<split>}.jsonl`` and ``out_dir/tasks/koneox_kobest_<task>.yaml``;
    returns the tasks directory (``TaskManager(include_path=...)``)."""
    out = Path(out_dir)
    task_dir = out / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        files = {}
        for name in dict.fromkeys(("train", split)):
            dest = out / "data" / task / f"{name}.jsonl"
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("w", encoding="utf-8") as f:
                for rec in read_split(_split_file(data, task, name), task):
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            files[name] = str(dest)
        config = {
            "include": str(kobest_yaml(task)),
            "task": TASK_PREFIX + task,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {
                "data_files": {"train": files["train"], "test": files[split]},
                "cache_dir": str(out / "hf_datasets_cache"),
            },
            "validation_split": None,
        }
        # JSON is valid YAML; the included file's !function tags are resolved by lm-eval's loader.
        (task_dir / f"{TASK_PREFIX}{task}.yaml").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return task_dir


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No Hub or network access from datasets, transformers, evaluate and huggingface_hub.

    The environment variables cover modules imported later; the libraries already imported read
    theirs at import time, so their flags are set too. Everything is put back afterwards."""
    names = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in names}
    flags = [("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_DATASETS_OFFLINE"),
             ("datasets.config", "HF_HUB_OFFLINE"), ("evaluate.config", "HF_EVALUATE_OFFLINE")]
    saved_flags = []
    os.environ.update(dict.fromkeys(names, "1"))
    for module, attr in flags:
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            saved_flags.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, True)
    try:
        yield
    finally:
        for mod, attr, value in saved_flags:
            setattr(mod, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def global_rng_kept() -> Iterator[None]:
    """simple_evaluate seeds Python's, numpy's and torch's global generators; put them back after."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@dataclass
class HarnessRun:
    """What lm-eval did on one task at one shot count."""

    task: str
    shots: int
    examples: list[dict[str, Any]]
    """Per evaluated example, in dataset order: ``idx`` (position in the split file), ``gold``,
    ``loglikelihoods`` (one per choice), ``prediction`` (argmax, first on ties), ``context``
    (the full prompt, few-shot examples included), ``choices`` (the scored texts, each scored
    after the target delimiter " "); HellaSwag adds ``prediction_norm``
    (argmax of log-likelihood / choice length in characters, lm-eval's acc_norm)."""
    metrics: dict[str, float]
    """lm-eval's own aggregates: ``acc``, ``f1`` (macro F1), ``acc_norm`` (HellaSwag)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall times: ``load_model``, ``evaluate`` (simple_evaluate: tasks, requests, scoring,
    metrics), ``scoring`` (lm-eval's loglikelihood call: tokenization and forward passes)."""


_METRICS = {"acc,none": "acc", "f1,none": "f1", "acc_norm,none": "acc_norm"}


def _examples(samples: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    import numpy as np

    out = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [float(ll) for ll, _ in s["filtered_resps"]]
        gold, pred = s["f1"]  # process_results' (gold index, argmax) pair for the f1 aggregation
        # Each request is (context, " " + choice): the kobest tasks' target delimiter is one space.
        choices = [cont.removeprefix(" ") for _, cont in s["arguments"]]
        ex = {"idx": int(s["doc_id"]), "gold": int(gold), "loglikelihoods": lls, "prediction": int(pred),
              "context": s["arguments"][0][0], "choices": choices}
        if task == "hellaswag":
            # lm-eval's acc_norm divides by len(choice) in characters, the target delimiter not counted.
            lengths = np.array([float(len(choice)) for choice in choices])
            ex["prediction_norm"] = int(np.argmax(np.array(lls) / lengths))
        out.append(ex)
    return out


def run_harness(
    model_dir: str | os.PathLike,
    task: str,
    shots: int,
    data: str | os.PathLike | Mapping[str, str | os.PathLike],
    split: str = "dev",
    limit: int | None = None,
    batch_size: int | str = 16,
    seed: int = 1234,
    device: str = "cpu",
    dtype: str = "float32",
    work_dir: str | os.PathLike | None = None,
) -> HarnessRun:
    """Evaluate ``model_dir`` (a Hugging Face directory) on KoBEST ``task`` with lm-eval, offline.

    ``data``: the KoBEST directory (``<task>/{train,<split>}.tsv`` or ``.jsonl``/``.parquet``), or a
    mapping ``{"train": file, split: file}``. ``limit``: the first ``limit`` examples of the split.
    ``seed``: lm-eval's few-shot, numpy and torch seeds (its default for all three is 1234).
    ``work_dir``: where the converted data and task files go (a temporary directory if None)."""
    if task not in TASKS:
        raise KeyError(f"unknown KoBEST task {task!r}; choose from {', '.join(TASKS)}")
    with offline(), global_rng_kept(), contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="lm_eval_kobest_"))
        include = write_local_tasks(data, [task], work_dir, split=split)

        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        seconds: dict[str, float] = {"scoring": 0.0}
        t0 = time.perf_counter()
        lm = HFLM(pretrained=str(model_dir), device=device, dtype=dtype, batch_size=batch_size)
        seconds["load_model"] = time.perf_counter() - t0
        score = lm.loglikelihood

        def timed_loglikelihood(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return score(*args, **kwargs)
            finally:
                seconds["scoring"] += time.perf_counter() - start

        lm.loglikelihood = timed_loglikelihood  # type: ignore[method-assign]
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[TASK_PREFIX + task],
            num_fewshot=shots,
            limit=limit,
            task_manager=TaskManager(include_path=str(include), include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,  # no stderr: bootstrapping the f1 aggregation costs minutes
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        seconds["evaluate"] = time.perf_counter() - t0
    name = TASK_PREFIX + task
    metrics = {ours: float(v) for key, ours in _METRICS.items() if (v := out["results"][name].get(key)) is not None}
    return HarnessRun(task, shots, _examples(out["samples"][name], task), metrics, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="KoBEST through lm-eval 0.4.13, offline, on local files")
    p.add_argument("model_dir")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--data", required=True, help="KoBEST directory: <task>/{train,<split>}.tsv")
    p.add_argument("--split", default="dev")
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", default="16")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", help="write the run (examples, metrics, seconds) here")
    args = p.parse_args(argv)
    bs: int | str = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    run = run_harness(args.model_dir, args.task, args.shots, args.data, split=args.split, limit=args.limit,
                      batch_size=bs, seed=args.seed)
    print(json.dumps({"task": run.task, "shots": run.shots, "examples": len(run.examples),
                      "metrics": run.metrics, "seconds": run.seconds}))
    if args.json:
        Path(args.json).write_text(json.dumps(run.__dict__, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
