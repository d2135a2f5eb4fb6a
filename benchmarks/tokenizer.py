"""Tokenizer benchmark: MeCab pre-split speed, training time, encode speed.

    python benchmarks/tokenizer.py CLEANED_DIR_OR_FILES... [--train-bytes 50000000] [--out runs/bench-tok]

1. MeCab pre-split MB/s on one core (``MorphemeMarker`` on the first ~5 MB).
2. Training time for 30,003 entries on ``--train-bytes`` of the cleaned text on all cores
   (``train_tokenizer`` end to end, without the plain-BPE comparison). When the input is
   smaller than that, whole documents are repeated, in order, up to the size (said in the output).
3. Encode MB/s of the saved tokenizer through ``transformers`` (fast tokenizer, batched)
   against plain ``tokenizers`` (``encode_batch``) on the same documents.
Writes ``benchmark.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenizer.config import TokenizerConfig  # noqa: E402
from tokenizer.morph import MorphemeMarker  # noqa: E402
from tokenizer.reader import iter_documents  # noqa: E402
from tokenizer.train import train_tokenizer  # noqa: E402


def _take_bytes(docs, limit: int) -> list[str]:
    out, size = [], 0
    for doc in docs:
        out.append(doc)
        size += len(doc.encode("utf-8"))
        if size >= limit:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--train-bytes", type=int, default=50_000_000)
    ap.add_argument("--mecab-bytes", type=int, default=5_000_000)
    ap.add_argument("--encode-bytes", type=int, default=20_000_000)
    ap.add_argument("--num-proc", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="runs/bench-tok")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"cores": os.cpu_count(), "num_proc": args.num_proc}

    # 1. MeCab pre-split, one core
    docs = _take_bytes(iter_documents(args.inputs), args.mecab_bytes)
    size = sum(len(d.encode("utf-8")) for d in docs)
    marker = MorphemeMarker()
    start = time.perf_counter()
    for doc in docs:
        marker.mark(doc)
    seconds = time.perf_counter() - start
    results["mecab_presplit_mb_per_s_per_core"] = round(size / 1e6 / seconds, 3)
    print(
        f"MeCab pre-split: {size / 1e6:.1f} MB in {seconds:.1f} s = {size / 1e6 / seconds:.2f} MB/s per core"
    )

    # 2. training time on train_bytes (documents repeated when the corpus is smaller)
    corpus = out / "train_input.jsonl"
    written = passes = 0
    with open(corpus, "w", encoding="utf-8") as fh:
        while written < args.train_bytes:
            passes += 1
            for doc in iter_documents(args.inputs):
                fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                written += len(doc.encode("utf-8"))
                if written >= args.train_bytes:
                    break
    results["train_input_bytes"] = written
    results["train_input_passes_over_corpus"] = passes
    cfg = TokenizerConfig(compare_plain=False)
    start = time.perf_counter()
    report = train_tokenizer(
        [corpus], out / "tokenizer", vocab_size=30003, num_proc=args.num_proc, config=cfg
    )
    results["train_seconds"] = round(time.perf_counter() - start, 1)
    results["train_timings_s"] = report["timings_s"]
    results["vocab_size"] = report["vocab_size"]
    print(
        f"training: {written / 1e6:.1f} MB ({passes} pass(es)) -> {report['vocab_size']} entries in {results['train_seconds']} s"
    )
    corpus.unlink()

    # 3. encode speed: transformers vs tokenizers, same documents, same file
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    docs = _take_bytes(iter_documents(args.inputs), args.encode_bytes)
    size = sum(len(d.encode("utf-8")) for d in docs)
    raw = Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    batch = 1000

    def run_tokenizers() -> int:
        return sum(
            len(e.ids) for i in range(0, len(docs), batch) for e in raw.encode_batch(docs[i : i + batch])
        )

    def run_transformers() -> int:
        return sum(
            len(ids) for i in range(0, len(docs), batch) for ids in hf(docs[i : i + batch])["input_ids"]
        )

    speeds = {}
    for name, fn in itertools.cycle([("tokenizers", run_tokenizers), ("transformers", run_transformers)]):
        if name in speeds and len(speeds) == 2 and all(len(v) >= 3 for v in speeds.values()):
            break
        start = time.perf_counter()
        tokens = fn()
        speeds.setdefault(name, []).append(size / 1e6 / (time.perf_counter() - start))
        results[f"{name}_tokens"] = tokens
    for name, values in speeds.items():
        results[f"encode_mb_per_s_{name}"] = round(max(values), 2)
    results["encode_ratio_transformers_over_tokenizers"] = round(
        results["encode_mb_per_s_transformers"] / results["encode_mb_per_s_tokenizers"], 3
    )
    assert results["tokenizers_tokens"] == results["transformers_tokens"]
    print(
        f"encode {size / 1e6:.1f} MB: tokenizers {results['encode_mb_per_s_tokenizers']} MB/s, "
        f"transformers {results['encode_mb_per_s_transformers']} MB/s "
        f"(x{results['encode_ratio_transformers_over_tokenizers']})"
    )
    (out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
