"""Vocabulary extension measured end to end on CPU: an English model learns Korean tokens.

    python benchmarks/extend_vocab.py                   # ~15 min on 2 shared cores
    python benchmarks/extend_vocab.py --base-korean 0   # a base model that never saw Korean
    python benchmarks/extend_vocab.py --base-steps 100 --stage-steps 40   # a quick look

1. An English byte-level BPE (``--en-vocab``, default 8,192) learned from the English paragraphs
   of the LibreOffice help pages (``data.testing.english_help_paragraphs``: lines without any
   Hangul), so Korean falls apart into bytes, and a 2-layer koneox GPT-NeoX (the ``tiny`` size,
   hidden 128) trained on those paragraphs mixed with ``--base-korean`` (default 1%) of its bytes
   in Korean reviews, for ``--base-steps`` plain AdamW steps. Open English models see a little
   Korean in their web data (as bytes, mostly); a model that never saw a Hangul byte has nothing
   in those bytes' rows for a mean to carry (``--base-korean 0`` shows it).
2. A Korean byte-level BPE (``--ko-vocab``, default 4,000; ``data.testing.train_tiny_tokenizer``,
   the same byte-level BPE trainer ``koneox train-tokenizer`` runs, without its cleaning and
   sampling) learned from NSMC reviews (other reviews than the base model's).
3. ``extend_vocab`` (``koneox extend-vocab``) with ``--init`` mean, random and first, adding the
   ``--num-new`` (default a quarter of the English vocabulary, EEVE's proportion: 8,960 tokens on
   32,000) first Korean tokens by merge rank: Hangul-only merges spliced after the English ones,
   old rows bit-identical.
4. The koneox trainer (``launch/train.py --config tiny.yaml``, one CPU process) from the
   mean-initialised model on packed Korean reviews, the same ``--stage-steps`` and learning rate:
   - stage 1: ``train.trainable=[embed_in] train.freeze_embedding_rows_below=auto``
     (only the new input rows learn), then ``koneox export``;
   - stage 2 after stage 1: ``train.trainable=[embed_in, embed_out]``, the old rows of both frozen
     (``freeze_output_rows_below=auto`` too, as configs/extend/stage2.yaml), and for comparison
     with the whole LM head trainable;
   - all parameters from the start (no freezing).
5. Bits per byte (``train.eval.bpb``) on held-out reviews and held-out English pages (neither
   trained on by any tokenizer or model), and bytes per token (``tokenizer.fertility``).

Prints a markdown table and writes ``--out``/extend_vocab.json. Claims checked (printed as
PASS/FAIL, never asserted): Korean bytes per token at least 2x; at step 0 mean init below random
init on Korean; stage 1 English bits per byte within 1% of the original while all-parameter
training is not; Korean bits per byte improves under both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bpb(model_dir: Path, paths: dict[str, Path]) -> dict[str, float]:
    from train.eval.bpb import bits_per_byte
    from train.eval.kobest import load_model

    model, tok, _ = load_model(str(model_dir), "cpu", None)
    return {k: bits_per_byte(model, tok, p, progress=False)["bits_per_byte"] for k, p in paths.items()}


def train_stage(run: Path, init_from: Path, packed: str, steps: int, lr: float, extra: dict) -> float:
    """One koneox trainer run on one CPU process; returns its wall time."""
    settings = {
        "model.init_from": init_from, "data.seq_len": 128, "data.train_paths": f"[{packed}]",
        "data.split": "[1.0, 0.0, 0.0]", "train.micro_batch_size": 16, "train.grad_accum": 1,
        "train.train_steps": steps, "train.warmup_steps": max(1, steps // 10), "train.lr": lr,
        "train.min_lr": lr / 10, "train.weight_decay": 0.0, "train.precision": "fp32",
        "train.log_interval": max(1, steps // 5), "train.eval_interval": 0, "train.save_interval": steps,
        "logging.wandb.mode": "disabled", "train.run_dir": str(run), **extra,
    }
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "launch/train.py", "--config", "tiny.yaml", *[f"{k}={v}" for k, v in settings.items()]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"trainer failed ({run}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return time.perf_counter() - t0


def export(run: Path, out: Path) -> Path:
    from launch.cli import main

    if main(["export", str(run), "--out", str(out)]) != 0:
        raise SystemExit(f"export of {run} failed")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench_extend_vocab")
    p.add_argument("--en-vocab", type=int, default=8192)
    p.add_argument("--ko-vocab", type=int, default=4000)
    p.add_argument("--en-bytes", type=int, default=1_500_000, help="English text read (characters)")
    p.add_argument("--ko-docs", type=int, default=40_000, help="Korean reviews read")
    p.add_argument("--held-en", type=int, default=40, help="held-out English pages")
    p.add_argument("--held-ko", type=int, default=1000, help="held-out reviews")
    p.add_argument("--base-korean", type=float, default=0.01,
                   help="share of the base model's training bytes that are Korean reviews (0 = English only)")
    p.add_argument("--num-new", type=int, default=None, help="Korean tokens to add (default: en-vocab / 4)")
    p.add_argument("--seed", type=int, default=0, help="the base model's init and training windows")
    p.add_argument("--base-steps", type=int, default=400)
    p.add_argument("--stage-steps", type=int, default=150, help="trainer steps of every stage (0 = step 0 only)")
    p.add_argument("--lr", type=float, default=2e-3, help="the trainer's peak lr, every stage")
    p.add_argument("--stage2", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    if not 0 <= args.base_korean < 1:
        p.error(f"--base-korean {args.base_korean}: must be in [0, 1)")

    import torch
    from transformers import AutoTokenizer

    from data.pack import pack
    from data.testing import (
        corpus_dir,
        english_help_paragraphs,
        mix_in,
        read_texts,
        train_small_model,
        train_tiny_tokenizer,
        write_jsonl_gz,
    )
    from model.extend_vocab import extend_vocab
    from tokenizer.fertility import fertility

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    english = english_help_paragraphs(args.en_bytes)
    en_train, en_held = english[: -args.held_en], english[-args.held_en :]
    # Korean: training and held-out reviews first, the base model's share from those after them
    en_bytes = sum(len(t.encode()) for t in en_train)
    korean = read_texts(corpus_dir() / "raw" / "nsmc_reviews.jsonl.gz", limit=args.ko_docs + 100_000)
    ko_train, ko_held = korean[: args.ko_docs - args.held_ko], korean[args.ko_docs - args.held_ko : args.ko_docs]
    base_texts, base_docs, got = mix_in(en_train, korean[args.ko_docs :],
                                        args.base_korean * en_bytes / (1 - args.base_korean), seed=args.seed)
    held = {"ko": write_jsonl_gz(ko_held, root / "ko_heldout.jsonl.gz"),
            "en": write_jsonl_gz(en_held, root / "en_heldout.jsonl.gz")}
    ko_train_file = write_jsonl_gz(ko_train, root / "ko_train.jsonl.gz")
    sizes = {"en_train_bytes": en_bytes, "en_train_docs": len(en_train),
             "ko_train_bytes": sum(len(t.encode()) for t in ko_train), "ko_train_docs": len(ko_train),
             "en_heldout_docs": len(en_held), "ko_heldout_docs": len(ko_held),
             "base_korean_docs": base_docs, "base_korean_bytes": got}
    print(f"data: {sizes}", flush=True)

    train_tiny_tokenizer(en_train, root / "en_tok", vocab_size=args.en_vocab)
    train_tiny_tokenizer(ko_train, root / "ko_tok", vocab_size=args.ko_vocab)
    t0 = time.perf_counter()
    base = train_small_model(root / "en_tok", base_texts, root / "base", args.base_steps, seed=args.seed, warmup=20)
    print(f"English base: {args.base_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    num_new = args.num_new or args.en_vocab // 4

    rows: dict[str, dict] = {}

    def measure(name: str, model_dir: Path, note: str = "") -> None:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        b = bpb(model_dir, held)
        rows[name] = {"ko_bpb": b["ko"], "en_bpb": b["en"],
                      "ko_bytes_per_token": fertility(tok, ko_held)["bytes_per_token"],
                      "en_bytes_per_token": fertility(tok, en_held)["bytes_per_token"], "note": note}
        print(f"  {name}: {rows[name]}", flush=True)

    share = f"{args.base_korean:.0%} Korean" if args.base_korean else "English only"
    measure("original (English BPE + model)", base, f"{args.base_steps} steps, {share}")
    ext: dict[str, Path] = {}
    for init in ("mean", "random", "first"):
        ext[init] = root / f"ext-{init}"
        report = extend_vocab(base, root / "ko_tok", ext[init], init=init, num_new=num_new,
                              english_check=[held["en"]])
        measure(f"extended, step 0, init {init}", ext[init], f"{report['tokens']['added']} tokens added")
    unchanged = report["unchanged_text_check"]
    print(f"held-out English pages whose ids changed: {unchanged['changed']} of {unchanged['documents']}", flush=True)
    old_vocab = json.loads((ext["mean"] / "config.json").read_text())["koneox_vocab_extension"]["old_vocab_size"]

    packed = str(root / "ko_packed")
    if args.stage_steps:
        pack([str(ko_train_file)], str(ext["mean"]), packed, num_proc=1, progress=False)
    freeze = {"train.freeze_embedding_rows_below": "auto"}  # = old_vocab, read from the record
    both = {"train.trainable": "[embed_in, embed_out]", **freeze}
    stages = [("stage 1 (new input rows)", "stage1", ext["mean"], {"train.trainable": "[embed_in]", **freeze})]
    if args.stage2:
        stages += [("stage 2 after stage 1 (+ new LM-head rows)", "stage2", None,
                    {**both, "train.freeze_output_rows_below": "auto"}),
                   ("stage 2 after stage 1 (+ whole LM head)", "stage2-head", None, both)]
    stages.append(("all parameters from the start", "full", ext["mean"], {}))
    for name, tag, start, extra in stages if args.stage_steps else ():
        start = start or root / "stage1-hf"
        secs = train_stage(root / tag, start, packed, args.stage_steps, args.lr, extra)
        export(root / tag, root / f"{tag}-hf")
        measure(name, root / f"{tag}-hf", f"{args.stage_steps} trainer steps, {secs:.0f} s")

    o, m, r = rows["original (English BPE + model)"], rows["extended, step 0, init mean"], \
        rows["extended, step 0, init random"]

    def rel(a: float, b: float) -> float:
        return (a - b) / b

    claims = {
        "held-out English pages keep their ids": (unchanged["changed"] == 0,
                                                  f"{unchanged['changed']} of {unchanged['documents']} changed"),
        "Korean bytes per token >= 2x": (m["ko_bytes_per_token"] / o["ko_bytes_per_token"] >= 2,
                                         f"{m['ko_bytes_per_token'] / o['ko_bytes_per_token']:.2f}x"),
        "step 0: mean init Korean bpb < random init": (m["ko_bpb"] < r["ko_bpb"],
                                                       f"{m['ko_bpb']:.4f} vs {r['ko_bpb']:.4f}"),
        # what the new LM-head rows take from English tokens before any training (stage 1 keeps it)
        "step 0: mean init English bpb within 1% of the original": (abs(rel(m["en_bpb"], o["en_bpb"])) <= 0.01,
                                                                    f"{rel(m['en_bpb'], o['en_bpb']):+.2%}"),
    }
    if args.stage_steps:
        s1, full = rows["stage 1 (new input rows)"], rows["all parameters from the start"]
        claims |= {
            "stage 1 English bpb within 1% of the original": (abs(rel(s1["en_bpb"], o["en_bpb"])) <= 0.01,
                                                              f"{rel(s1['en_bpb'], o['en_bpb']):+.2%}"),
            "stage 1 English bpb = extended step 0 (frozen)": (abs(rel(s1["en_bpb"], m["en_bpb"])) <= 1e-6,
                                                               f"{rel(s1['en_bpb'], m['en_bpb']):+.2e}"),
            "all-parameter English bpb NOT within 1%": (abs(rel(full["en_bpb"], o["en_bpb"])) > 0.01,
                                                        f"{rel(full['en_bpb'], o['en_bpb']):+.2%}"),
            "Korean bpb improves under stage 1": (s1["ko_bpb"] < m["ko_bpb"], f"{s1['ko_bpb']:.4f} vs {m['ko_bpb']:.4f}"),
            "Korean bpb improves under all-parameter": (full["ko_bpb"] < m["ko_bpb"],
                                                        f"{full['ko_bpb']:.4f} vs {m['ko_bpb']:.4f}"),
        }
    print()
    print("| model | Korean bpb | English bpb | Korean bytes/token | English bytes/token | note |")
    print("|---|---:|---:|---:|---:|---|")
    for name, v in rows.items():
        print(f"| {name} | {v['ko_bpb']:.4f} | {v['en_bpb']:.4f} | {v['ko_bytes_per_token']:.2f} "
              f"| {v['en_bytes_per_token']:.2f} | {v['note']} |")
    print()
    for claim, (ok, detail) in claims.items():
        print(f"{'PASS' if ok else 'FAIL'}  {claim}: {detail}")
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s; old vocabulary {old_vocab}; lr {args.lr}")
    (root / "extend_vocab.json").write_text(json.dumps(
        {"args": vars(args), "data": sizes, "old_vocab_size": old_vocab, "rows": rows,
         "english_ids_changed": unchanged,
         "claims": {k: {"holds": ok, "detail": d} for k, (ok, d) in claims.items()}, "seconds": round(total)},
        indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
