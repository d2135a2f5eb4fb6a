"""KoBEST evaluation speed: ``koneox eval`` against lm-evaluation-harness 0.4.13, same model, data
and machine, in one run.

The model is the tiny Korean GPT-NeoX of the agreement test (``tests/harness/tiny_model.py``,
built first, about 20 s) unless ``--model`` names a Hugging Face directory. Every measurement is
a fresh Python process, one tool at a time, the two tools alternating:

    koneox    ``koneox eval MODEL --tasks kobest_<task> --data DIR --out OUT`` (launch.cli); a GPT-NeoX
              directory loads without transformers (train/eval/fast_load.py), the loader used is printed
    lm-eval   ``lm_eval.simple_evaluate`` on lm-eval's own kobest task pointed at the local files
              (tests/harness/lm_eval_kobest.py), model ``hf``, fp32, batch size 16 (measured on
              COPA dev: 1 -> 16.6 s of scoring, 16 -> 3.4 s, 64 -> 3.6 s). Its task index is
              built from the local task files only; the lm_eval command line indexes every
              shipped task first (14,683 of them, about 30 s on 2 busy cores), not counted here.

    end to end   wall time of the process: interpreter start, imports, data, model, scoring,
                 metrics, output files
    scoring      tokenization of every (context, continuation) and the forward passes:
                 lm-eval's ``HFLM.loglikelihood``; koneox's ``encode_pairs`` + ``loglikelihoods``

Each figure is the median of ``--repeats`` runs. Threads: ``--threads`` (default 1) per process
through OMP_NUM_THREADS. The target is koneox >= 3x lm-eval end to end.

    python benchmarks/eval.py                          # COPA dev (500), 0-shot, 3 repeats: ~5 min on 2 cores
    python benchmarks/eval.py --tasks copa,sentineg --shots 5 --json eval_bench.json
    python benchmarks/eval.py --quick                  # COPA, first 100 examples, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from data.testing import corpus_dir  # noqa: E402

# Runs koneox's command line in this process with its scoring functions timed; prints the times.
KONEOX_CHILD = """
import json, sys, time
from train.eval import scoring
spent = [0.0]
def timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0
    return wrapper
scoring.encode_pairs = timed(scoring.encode_pairs)
scoring.loglikelihoods = timed(scoring.loglikelihoods)
from launch.cli import main
rc = main(sys.argv[1:])
print("KONEOX_SCORING", json.dumps({"scoring": spent[0]}))
sys.exit(rc)
"""


def run_child(cmd: list[str], threads: int) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}")
    return wall, res.stdout


def koneox_run(model: Path, task: str, shots: int, data: Path, limit: int | None, threads: int,
               out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-c", KONEOX_CHILD, "eval", str(model), "--tasks", f"kobest_{task}",
           "--shots", str(shots), "--data", str(data), "--out", str(out), "--quiet"]
    if limit:
        cmd += ["--limit", str(limit)]
    wall, stdout = run_child(cmd, threads)
    line = next(x for x in stdout.splitlines() if x.startswith("KONEOX_SCORING "))
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    loader = results["model"]["loader"]
    return {"wall": wall, "scoring": json.loads(line.split(" ", 1)[1])["scoring"],
            "examples": results["samples"][f"kobest_{task}"]["effective"],
            "loader": f"{loader['model']} model, {loader['tokenizer']} tokenizer"}


def harness_run(model: Path, task: str, shots: int, data: Path, limit: int | None, threads: int,
                batch_size: int) -> dict[str, float]:
    cmd = [sys.executable, str(REPO / "tests" / "harness" / "lm_eval_kobest.py"), str(model), "--task", task,
           "--shots", str(shots), "--data", str(data), "--batch-size", str(batch_size)]
    if limit:
        cmd += ["--limit", str(limit)]
    wall, stdout = run_child(cmd, threads)
    summary = json.loads(next(x for x in reversed(stdout.splitlines()) if x.startswith("{")))
    return {"wall": wall, "scoring": summary["seconds"]["scoring"], "examples": summary["examples"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="copa", help="comma-separated KoBEST tasks (default copa)")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--limit", type=int, help="first N examples of the dev split (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    p.add_argument("--harness-batch-size", type=int, default=16)
    p.add_argument("--model", type=Path, help="Hugging Face directory (default: build the tiny test model)")
    p.add_argument("--data", type=Path, default=corpus_dir() / "kobest_v1")
    p.add_argument("--quick", action="store_true", help="smoke run: first 100 examples, 1 repeat")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    if args.quick:
        args.limit, args.repeats = args.limit or 100, 1
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        model = args.model
        if model is None:
            import torch
            from harness import make_tiny_model

            torch.set_num_threads(args.threads)
            t0 = time.perf_counter()
            model = make_tiny_model(Path(tmp) / "tiny_model")
            print(f"tiny model built in {time.perf_counter() - t0:.1f} s: {model}", flush=True)
        rows = []
        for task in tasks:
            runs: dict[str, list[dict[str, float]]] = {"koneox": [], "lm-eval": []}
            for r in range(args.repeats):
                runs["koneox"].append(koneox_run(model, task, args.shots, args.data, args.limit, args.threads,
                                                 Path(tmp) / f"koneox_{task}_{r}"))
                runs["lm-eval"].append(harness_run(model, task, args.shots, args.data, args.limit, args.threads,
                                                   args.harness_batch_size))
                print(f"{task} repeat {r + 1}/{args.repeats}: " + ", ".join(
                    f"{tool} {v[-1]['wall']:.1f} s (scoring {v[-1]['scoring']:.2f} s)" for tool, v in runs.items()),
                    flush=True)
            for tool, values in runs.items():
                n = values[0]["examples"]
                wall = statistics.median(v["wall"] for v in values)
                scoring = statistics.median(v["scoring"] for v in values)
                rows.append({"task": task, "tool": tool, "examples": n, "end_to_end_s": wall,
                             "end_to_end_per_s": n / wall, "scoring_s": scoring, "scoring_per_s": n / scoring,
                             "runs": values})

    print(f"\nKoBEST {args.shots}-shot, dev split, {args.threads} thread(s) per process, median of "
          f"{args.repeats}; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    loaders = sorted({v["loader"] for r in rows if r["tool"] == "koneox" for v in r["runs"]})
    print(f"koneox loaded the model with: {'; '.join(loaders)}")
    print(f"{'task':<10}{'tool':<9}{'examples':>9}{'end to end s':>14}{'examples/s':>12}{'scoring s':>11}"
          f"{'examples/s':>12}")
    for task in tasks:
        ours, ref = (next(r for r in rows if r["task"] == task and r["tool"] == t) for t in ("koneox", "lm-eval"))
        for r in (ours, ref):
            print(f"{task:<10}{r['tool']:<9}{r['examples']:>9}{r['end_to_end_s']:>14.2f}{r['end_to_end_per_s']:>12.1f}"
                  f"{r['scoring_s']:>11.3f}{r['scoring_per_s']:>12.0f}")
        e2e = ours["end_to_end_per_s"] / ref["end_to_end_per_s"]
        scoring = ours["scoring_per_s"] / ref["scoring_per_s"]
        print(f"{task:<10}{'ratio':<9}{'':>9}{'':>14}{e2e:>11.1f}x{'':>11}{scoring:>11.1f}x"
              f"   (target >= 3x end to end: {'met' if e2e >= 3 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
