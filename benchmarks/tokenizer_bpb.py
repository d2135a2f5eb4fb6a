"""Does morpheme awareness help the model? Bits per byte of the same tiny model trained with our
tokenizer and with the plain byte-level BPE, at the demo's budget.

    python benchmarks/tokenizer_bpb.py [--train-steps 300] [--seeds 1234] [--out runs/bench-tok-bpb]

Per-token loss does not compare across tokenizers (a token is a different amount of text);
bits per UTF-8 byte of held-out text does. The run, deterministic and on CPU:

1. ``koneox clean`` each bundled sample (``data/samples``: reviews, help pages, law bills), as
   the demo does.
2. Hold out ``--val-share`` of each source's cleaned documents (by a hash of the text): the
   validation text that neither tokenizer nor model sees.
3. ``koneox train-tokenizer`` on the rest, demo settings, with ``--plain-out``: ours and the
   plain BPE of its report come from the same sample, with the same size and special ids.
4. ``koneox pack`` the same training documents with each, then train the tiny model
   (``configs/tiny.yaml``, 1 CPU rank, the demo's ``--train-steps`` and micro batch 4) with each,
   same seeds: the same compute (tokens per step x steps) for both.
5. Bits per byte of the last checkpoint on each source's validation documents and on all of them
   (``train.eval.bpb``: each document scored alone after ``<|endoftext|>``).

Prints a table (and writes ``bpb.json`` in ``--out``): per tokenizer and seed, the bytes per
token of the validation text, the UTF-8 bytes the model trained on, and bits per byte per
domain; then ours over plain. Lower bits per byte is better.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCES = {"reviews": "nsmc_reviews", "help": "help_pages_ko", "law": "ko_law_bills"}
KONEOX = [sys.executable, "-m", "launch.cli"]


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run a stage, its output to ``log``; seconds taken. Fails loudly with the log's tail."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        done = subprocess.run(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})
    if done.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{tail}")
    return time.perf_counter() - start


def _u(seed: int, text: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big") / 2**64


def split(out: Path, val_share: float, seed: int) -> dict[str, dict]:
    """Clean each sample, hold out a share of each; the training union goes to train.jsonl.gz."""
    from tokenizer.reader import iter_documents

    counts: dict[str, dict] = {}
    with gzip.open(out / "train.jsonl.gz", "wt", encoding="utf-8") as train:
        for name, source in SOURCES.items():
            clean = out / "clean" / name
            _run([*KONEOX, "clean", str(ROOT / "data" / "samples" / f"{source}.jsonl.gz"), "--out", str(clean),
                  "--no-progress"], out / "logs" / f"clean-{name}.log")
            c = counts[name] = {"train_docs": 0, "train_bytes": 0, "val_docs": 0, "val_bytes": 0}
            with open(out / f"val-{name}.jsonl", "w", encoding="utf-8") as val:
                for text in iter_documents([clean], "text"):
                    held = _u(seed, text) < val_share
                    (val if held else train).write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                    kind = "val" if held else "train"
                    c[f"{kind}_docs"] += 1
                    c[f"{kind}_bytes"] += len(text.encode("utf-8"))
    return counts


def bpb_of(run: Path, files: dict[str, Path]) -> dict[str, dict]:
    """Bits per byte of the run's latest checkpoint on each file (and on all of them)."""
    from train.eval.bpb import bits_per_byte
    from train.eval.kobest import load_model

    model, tok, _ = load_model(str(run), "cpu", None)
    out = {name: bits_per_byte(model, tok, path, progress=False) for name, path in files.items()}
    out["all"] = bits_per_byte(model, tok, list(files.values()), progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-steps", type=int, default=300, help="optimizer steps per model (demo: 300)")
    ap.add_argument("--micro-batch-size", type=int, default=4, help="sequences per step (demo: 4)")
    ap.add_argument("--seeds", default="1234", help="comma-separated training seeds, each run with both tokenizers")
    ap.add_argument("--val-share", type=float, default=0.1, help="share of each source's documents held out")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the held-out split")
    ap.add_argument("--out", default="runs/bench-tok-bpb")
    args = ap.parse_args()
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    timings: dict[str, float] = {}

    counts = split(out, args.val_share, args.seed)
    val = {name: out / f"val-{name}.jsonl" for name in SOURCES}
    print("held out:", {n: f"{c['val_docs']} docs / {c['val_bytes'] / 1e3:.0f} KB" for n, c in counts.items()},
          flush=True)

    toks = {"ours": out / "tok-ours", "plain": out / "tok-plain"}
    timings["tokenizers_s"] = _run([*KONEOX, "train-tokenizer", str(out / "train.jsonl.gz"), "--out",
                                    str(toks["ours"]), "--plain-out", str(toks["plain"])],
                                   out / "logs" / "train-tokenizer.log")
    report = json.loads((toks["ours"] / "tokenizer_report.json").read_text(encoding="utf-8"))
    rows = []
    for kind, tok in toks.items():
        packed = out / f"packed-{kind}" / "sample"
        _run([*KONEOX, "pack", str(out / "train.jsonl.gz"), "--tokenizer", str(tok), "--out", str(packed),
              "--no-progress"], out / "logs" / f"pack-{kind}.log")
        stats = json.loads(Path(f"{packed}.stats.json").read_text(encoding="utf-8"))
        for seed in seeds:
            run = out / f"run-{kind}-{seed}"
            timings[f"train_{kind}_{seed}_s"] = _run(
                [sys.executable, "launch/train.py", "--config", "tiny.yaml", f"data.train_paths=[{packed}]",
                 f"tokenizer.path={tok}", f"train.run_dir={run}", f"train.train_steps={args.train_steps}",
                 f"train.micro_batch_size={args.micro_batch_size}", f"train.seed={seed}", f"data.seed={seed}",
                 "logging.wandb.mode=disabled"],
                out / "logs" / f"train-{kind}-{seed}.log", env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)},
            )
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
            consumed = max(m.get("consumed_tokens", 0) for m in metrics)
            result = bpb_of(run, val)
            rows.append({"tokenizer": kind, "seed": seed, "train_tokens_in_corpus": stats["num_tokens"],
                         "consumed_tokens": consumed, "bpb": result})
            print(f"{kind} seed {seed}: bits per byte "
                  + ", ".join(f"{n} {r['bits_per_byte']:.4f}" for n, r in result.items()), flush=True)

    domains = [*SOURCES, "all"]
    print(f"\nsame model (tiny), {args.train_steps} steps x {args.micro_batch_size} x 256 tokens, "
          f"held-out text of each source; lower is better\n")
    print("| tokenizer | seed | bytes/token (all val) | bytes trained on | " + " | ".join(
        f"bpb {d}" for d in domains) + " |")
    print("|---|---|---|---|" + "---|" * len(domains))
    for r in rows:
        bpt = r["bpb"]["all"]["bytes_per_token"]
        print(f"| {r['tokenizer']} | {r['seed']} | {bpt:.3f} | {r['consumed_tokens'] * bpt / 1e6:.2f} MB | "
              + " | ".join(f"{r['bpb'][d]['bits_per_byte']:.4f}" for d in domains) + " |")
    ratios = {}
    for d in domains:
        mean = {k: sum(r["bpb"][d]["bits_per_byte"] for r in rows if r["tokenizer"] == k) / len(seeds)
                for k in toks}
        ratios[d] = mean["ours"] / mean["plain"]
    print("| ours / plain (mean over seeds) | | | | " + " | ".join(f"{ratios[d]:.4f}" for d in domains) + " |")
    held = report["domains"]["heldout"].get("ratios", {})
    print(f"\ntokenizer report (held-out input): cross-morpheme x{held.get('cross_rate_ours_over_plain')}, "
          f"bytes/token x{held.get('bytes_per_token_ours_over_plain')} of the plain BPE")
    result = {"args": vars(args), "counts": counts, "rows": rows, "ours_over_plain": ratios,
              "tokenizer_ratios": held, "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    (out / "bpb.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out / 'bpb.json'}")


if __name__ == "__main__":
    main()
