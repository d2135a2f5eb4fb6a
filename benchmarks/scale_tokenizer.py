"""How many MeCab workers one `koneox train-tokenizer` main process can feed, and what BPE
learning costs in memory per MB of sample (for benchmarks/data_scale.py).

The MeCab pre-split stage (reading the input, choosing the sample and the held-out documents,
marking morpheme boundaries, writing the marked copy) runs on a clean-like directory of
``.jsonl.gz`` shards with ``num_proc=2`` and the whole input as the sample. CPU seconds per MB
of text are measured for the main process (``RUSAGE_SELF``) and for the workers together
(``RUSAGE_CHILDREN``) as the slope between two input sizes, so fixed costs (imports, forks,
MeCab dictionary loads) drop out; ``implied_workers`` is worker s/MB over main s/MB. "before"
runs the code of commit 0ffa46f (``_count`` then ``_split_and_mark``) from a git worktree in a
subprocess, "after" the current code (``tokenizer.sample.draw_and_mark``) through the same kind
of runner, on the same files. ``marked_bytes_per_text_byte`` is the size of the marked training
copy on disk per byte of text (JSON lines before, compact records after).

Each "after" row also carries the memory of BPE learning on that text: the peak RSS of a fresh
process learning the plain byte-level BPE (the larger of the two learners) on the big input's
marked sample, per MB of sample, next to what ``tokenizer.memory`` predicts for that size.

Texts: web-like pages (help pages of the shared corpus turned to text, ~2.3 KB per document)
and short reviews (NSMC sample, ~100 B per document), as in benchmarks/scale_pack.py.

Usage::

    python benchmarks/scale_tokenizer.py            # a few minutes on 2 cores
    python benchmarks/scale_tokenizer.py --quick    # < 60 s
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "benchmarks"))  # after the repo: benchmarks/tokenizer.py is not the package

from scale_pack import _before_tree, replicate, review_texts, web_like_texts  # noqa: E402

from data.stage import mark_complete  # noqa: E402
from data.testing import write_jsonl_gz  # noqa: E402

NUM_PROC = 2
SHARDS = 4

# Runs in a subprocess whose working directory is the code under test. argv: variant, work
# dir, number of workers, then one input directory per call. Prints one JSON list of per-call figures.
_RUNNER = r"""
import json, os, resource, sys
sys.path.insert(0, os.getcwd())

def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime

variant, work, num_proc = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
for i, inp in enumerate(sys.argv[4:]):
    out = os.path.join(work, f"c{i}")
    os.makedirs(out, exist_ok=True)
    main0, kids0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    if variant == "before":
        from pathlib import Path
        from tokenizer.config import TokenizerConfig
        from tokenizer.train import _count, _split_and_mark
        cfg = TokenizerConfig()
        _, total = _count([inp], "text")
        counts = _split_and_mark([inp], cfg, Path(out), total, num_proc)
        marked = os.path.getsize(os.path.join(out, "train.jsonl"))
    else:
        from pathlib import Path
        from tokenizer.reader import plan_sources
        from tokenizer.sample import draw_and_mark
        result = draw_and_mark(plan_sources([inp]), Path(out), sample_bytes=None, heldout_bytes=2_000_000,
                               spread=4.0, seed=1234, text_field="text", num_proc=num_proc)
        counts = result.counts
        marked = os.path.getsize(result.train_path)
    main, kids = cpu(resource.RUSAGE_SELF) - main0, cpu(resource.RUSAGE_CHILDREN) - kids0
    rows.append({"mb": (counts["train_bytes"] + counts["heldout_bytes"]) / 1e6, "main": main, "workers": kids,
                 "train_bytes": counts["train_bytes"], "marked_bytes": marked})
print(json.dumps(rows))
"""

# Peak RSS of learning the plain BPE on a compact marked sample, in a fresh process.
_LEARNER = r"""
import json, resource, sys
from tokenizer.morph import strip_markers
from tokenizer.sample import read_records
from tokenizer.train import _learn

def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS"))

path, size = sys.argv[1], int(sys.argv[2])
base = rss()
_learn((strip_markers(m) for m in read_records(path)), size, False)
print(json.dumps({"base": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_shards(texts: list[str], mb: float, where: Path) -> Path:
    """``mb`` MB of ``texts`` as a finished clean-like directory of SHARDS shards."""
    docs = replicate(texts, mb)
    step = -(-len(docs) // SHARDS)
    for s in range(SHARDS):
        write_jsonl_gz(docs[s * step : (s + 1) * step], where / f"part-{s:05d}.jsonl.gz")
    mark_complete(where, "koneox clean")
    return where


def _run(script: str, code_root: Path, args: list[str]) -> list | dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=code_root,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"runner in {code_root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _slope(small: dict, big: dict, key: str) -> float:
    return (big[key] - small[key]) / (big["mb"] - small["mb"])


def _best(runs: list[dict]) -> dict:
    """Least CPU of repeated runs on the same input: load from other processes only adds."""
    return {**runs[0], "main": min(r["main"] for r in runs), "workers": min(r["workers"] for r in runs)}


def measure(quick: bool = False) -> list[dict]:
    from tokenizer.memory import learn_peak_bytes

    sizes, repeats = ((0.15, 0.6), 1) if quick else ((1.0, 6.0), 2)
    learn_vocab = 5000 if quick else 30000
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="koneox-scale-tok-") as tmp:
        work = Path(tmp)
        texts = {
            "web-like": web_like_texts(limit_pages=40 if quick else None),
            "short reviews": review_texts(),
        }
        inputs = {
            (text, mb): write_shards(docs, mb, work / "in" / text.replace(" ", "_") / str(mb))
            for text, docs in texts.items()
            for mb in sizes
        }
        keys = list(inputs)
        # the first call pays one-time imports; then small, big, small, big, ... per text
        calls = [str(inputs[keys[0]])] + [
            str(inputs[text, mb]) for text in texts for _ in range(repeats) for mb in sizes
        ]
        for variant, root in (("before", _before_tree()), ("after", REPO)):
            runs = _run(_RUNNER, root, [variant, str(work / "out" / variant), str(NUM_PROC), *calls])[1:]
            for t, text in enumerate(texts):
                case = runs[t * 2 * repeats : (t + 1) * 2 * repeats]
                small, big = _best(case[0::2]), _best(case[1::2])
                main, workers = max(_slope(small, big, "main"), 0.0), _slope(small, big, "workers")
                row = {
                    "stage": "tokenizer mecab pre-split",
                    "text": text,
                    "main_cpu_s_per_mb": round(main, 5),
                    "worker_cpu_s_per_mb": round(workers, 4),
                    "implied_workers": round(workers / max(main, 1e-4), 1),
                    "variant": variant,
                    "mb": [round(small["mb"], 2), round(big["mb"], 2)],
                    "marked_bytes_per_text_byte": round(big["marked_bytes"] / big["train_bytes"], 3),
                    "num_proc": NUM_PROC,
                    "repeats": repeats,
                }
                if variant == "after":
                    # the big input's marked sample, from the last call of this text
                    call = 1 + t * 2 * repeats + 2 * repeats - 1
                    sample = work / "out" / "after" / f"c{call}" / "train.rec"
                    learned = _run(_LEARNER, REPO, [str(sample), str(learn_vocab)])
                    sample_mb = big["train_bytes"] / 1e6
                    row |= {
                        "learn_sample_mb": round(sample_mb, 2),
                        "learn_vocab": learn_vocab,
                        "learn_peak_rss_mb": round(learned["peak"] / 1e6, 1),
                        "learn_rss_mb_per_sample_mb": round(
                            (learned["peak"] - learned["base"]) / 1e6 / sample_mb, 1
                        ),
                        "model_peak_mb": round(learn_peak_bytes(big["train_bytes"]) / 1e6, 1),
                    }
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = measure(quick=args.quick)
    print(
        f"{'text':<14} {'variant':<7} {'main s/MB':>10} {'worker s/MB':>12} {'workers':>8} {'marked/text':>11}"
    )
    for r in rows:
        print(
            f"{r['text']:<14} {r['variant']:<7} {r['main_cpu_s_per_mb']:>10.4f} "
            f"{r['worker_cpu_s_per_mb']:>12.4f} {r['implied_workers']:>8.1f} {r['marked_bytes_per_text_byte']:>11.3f}"
        )
        if "learn_peak_rss_mb" in r:
            print(
                f"{'':<14} BPE learning on {r['learn_sample_mb']} MB: peak {r['learn_peak_rss_mb']} MB "
                f"({r['learn_rss_mb_per_sample_mb']} MB per MB of sample; tokenizer.memory predicts "
                f"{r['model_peak_mb']} MB with its headroom)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
