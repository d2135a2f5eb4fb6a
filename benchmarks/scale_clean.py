"""How many worker processes one ``koneox clean`` main process can feed.

    python benchmarks/scale_clean.py [--quick]

``koneox clean`` runs one main process (reading, dedup in input order, writing) and
``--num-proc`` workers (everything per document). On a 2-core machine the point where the main
process saturates cannot be seen directly, so each variant is run with 2 workers in a fresh
subprocess and measured in CPU seconds per MB of input text (UTF-8): the main process's own
(``RUSAGE_SELF``, its threads included) and the workers' (``RUSAGE_CHILDREN``). Fixed costs
(starting the pool, imports) are taken out by also running the first 2% of the input and
using the difference. ``implied_workers = worker s/MB / main s/MB``.

"before" is the code at commit 0ffa46f, run from a git worktree at /tmp/koneox-before (made
with ``git worktree add`` if missing), "after" is this tree. Inputs, built once and cached in
the temp directory:
- web-like: the Korean text of the shared corpus's HTML help pages and law texts (extracted
  with ``html_to_text``), packed paragraph by paragraph into documents of about 2.6 KB (copies
  beyond the 1.8 MB there is pack the paragraphs in other orders);
- short reviews: ``data/samples/nsmc_reviews.jsonl.gz`` (40,000 reviews, 87 bytes of text on
  average), its first MB with ``--quick``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "raw"
SAMPLES = ROOT / "data" / "samples"
BEFORE_COMMIT = "0ffa46f"
BEFORE_TREE = Path("/tmp/koneox-before")
PAGES = ("libreoffice_help_ko", "debian_faq_ko", "ko_law_bills", "gimp_help_ko")
DOC_BYTES = 2600
CACHE = Path(tempfile.gettempdir()) / "koneox-scale-clean"

# Runs in a fresh interpreter with the tree to measure first on sys.path.
_CHILD = r"""
import json, resource, sys, tempfile
sys.path.insert(0, sys.argv[1])
from data.clean import clean_files

def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime

def run(path, out):
    m0, w0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    report = clean_files([path], out, num_proc=2)
    return cpu(resource.RUSAGE_SELF) - m0, cpu(resource.RUSAGE_CHILDREN) - w0, report

with tempfile.TemporaryDirectory() as tmp:
    clean_files([sys.argv[3]], tmp + "/warm", num_proc=1)  # imports, lazy imports, caches
    small = run(sys.argv[3], tmp + "/small")
    full = run(sys.argv[2], tmp + "/full")
    shards = sum(p.stat().st_size for p in __import__("pathlib").Path(tmp + "/full").glob("part-*"))
mb = (full[2]["text_bytes_in"] - small[2]["text_bytes_in"]) / 1e6
print(json.dumps({
    "main_s": full[0] - small[0], "worker_s": full[1] - small[1], "mb": mb,
    "documents": full[2]["documents_in"], "text_mb": full[2]["text_bytes_in"] / 1e6,
    "kept": full[2]["kept"], "shard_mb": shards / 1e6,
}))
"""


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def web_like(mb: float) -> Path:
    """About ``mb`` MB of web-like text: the Korean help pages and law texts, extracted, their
    paragraphs packed into ~2.6 KB documents; when more is asked for than there is (1.8 MB),
    each further copy packs the paragraphs in another order, so no document repeats another."""
    path = CACHE / f"web-like-{mb:g}mb.jsonl.gz"
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT))
    from data.clean.filters import hangul_ratio
    from data.clean.text import fix_unicode, html_to_text, normalize_whitespace

    sources = [CORPUS / f"{name}.jsonl.gz" for name in PAGES]
    if not all(p.exists() for p in sources):  # no ../shared: the bundled quarter of the pages
        sources = [SAMPLES / "help_pages_ko.jsonl.gz", SAMPLES / "ko_law_bills.jsonl.gz"]
    paragraphs: list[str] = []
    size = 0
    for source in sources:
        with gzip.open(source, "rt", encoding="utf-8") as f:
            for line in f:
                text = normalize_whitespace(html_to_text(fix_unicode(json.loads(line)["text"])))
                if hangul_ratio(text) >= 0.4:  # GIMP's help is mostly untranslated English
                    paragraphs += [p for p in text.split("\n") if p.strip()]
                    size += len(text.encode("utf-8"))
                if size >= mb * 1e6:
                    break
        if size >= mb * 1e6:
            break
    docs: list[dict[str, Any]] = []
    total = 0
    rng = random.Random(0)
    for copy in itertools.count():
        order = list(range(len(paragraphs)))
        if copy:
            rng.shuffle(order)
        part: list[str] = []
        size = 0
        for i in order:
            part.append(paragraphs[i])
            size += len(paragraphs[i].encode("utf-8")) + 1
            if size >= DOC_BYTES:
                docs.append({"text": "\n".join(part), "source": "help pages", "copy": copy, "doc": len(docs)})
                total += size
                part, size = [], 0
                if total >= mb * 1e6:
                    break
        if total >= mb * 1e6:
            break
    CACHE.mkdir(parents=True, exist_ok=True)
    _write(path, docs)
    return path


def short_reviews(mb: float) -> Path:
    """The first ``mb`` MB (of review text) of the bundled NSMC sample (3.5 MB in all)."""
    path = CACHE / f"short-reviews-{mb:g}mb.jsonl.gz"
    if path.exists():
        return path
    records, total = [], 0
    with gzip.open(SAMPLES / "nsmc_reviews.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            records.append(record)
            total += len(record["text"].encode("utf-8"))
            if total >= mb * 1e6:
                break
    CACHE.mkdir(parents=True, exist_ok=True)
    _write(path, records)
    return path


def _head(path: Path, share: float) -> Path:
    small = path.with_name(path.name.replace(".jsonl.gz", f".head{share:g}.jsonl.gz"))
    if not small.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
        _write(small, [json.loads(line) for line in lines[: max(20, int(len(lines) * share))]])
    return small


def before_tree() -> Path | None:
    """The worktree of the old code (made if missing); None when git cannot make it."""
    if (BEFORE_TREE / "data" / "clean" / "pipeline.py").exists():
        return BEFORE_TREE
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(BEFORE_TREE), BEFORE_COMMIT],
        capture_output=True,
        text=True,
    )
    return BEFORE_TREE if done.returncode == 0 else None


def _run(tree: Path, path: Path) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tree), str(path), str(_head(path, 0.02))],
        capture_output=True,
        text=True,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    if child.returncode != 0:
        raise RuntimeError(f"measuring {tree} on {path.name} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def measure(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``benchmarks/data_scale.py``: per text, "before" (if the old tree is there) and "after"."""
    inputs = {
        "web-like": web_like(1.0 if quick else 5.0),
        "short reviews": short_reviews(1.0 if quick else 4.0),
    }
    trees = {"before": before_tree(), "after": ROOT}
    rows = []
    for text, path in inputs.items():
        for variant, tree in trees.items():
            if tree is None:
                continue
            m = _run(tree, path)
            main, worker = m["main_s"] / m["mb"], m["worker_s"] / m["mb"]
            rows.append(
                {
                    "stage": "clean",
                    "text": text,
                    "variant": variant,
                    "main_cpu_s_per_mb": round(main, 4),
                    "worker_cpu_s_per_mb": round(worker, 4),
                    "implied_workers": round(worker / main, 1) if main > 0 else float("inf"),
                    "documents": m["documents"],
                    "text_mb": round(m["text_mb"], 2),
                    "main_us_per_doc": round(
                        1e6 * m["main_s"] / m["documents"] / (m["mb"] / m["text_mb"]), 1
                    ),
                    "kept": m["kept"],
                    "shard_mb": round(m["shard_mb"], 2),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 MB inputs instead of 5 and 3.5 MB")
    args = parser.parse_args(argv)
    rows = measure(quick=args.quick)
    print(
        f"{'text':<14} {'variant':<7} {'docs':>7} {'main s/MB':>10} {'worker s/MB':>12} {'workers':>8} {'main us/doc':>12} {'shards MB':>10}"
    )
    for r in rows:
        print(
            f"{r['text']:<14} {r['variant']:<7} {r['documents']:>7,} {r['main_cpu_s_per_mb']:>10.4f} "
            f"{r['worker_cpu_s_per_mb']:>12.4f} {r['implied_workers']:>8.1f} {r['main_us_per_doc']:>12.1f} {r['shard_mb']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
