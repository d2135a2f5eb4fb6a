"""How many tokenizer workers one `koneox pack` main process can feed (for benchmarks/data_scale.py).

Packs a clean-like directory of ``.jsonl.gz`` shards with ``num_proc=2`` and measures CPU
seconds per MB of text of the main process (``RUSAGE_SELF``: reading, handing out work,
writing) and of the workers together (``RUSAGE_CHILDREN``). Each figure is the slope between
two input sizes, so fixed costs (imports, tokenizer loads, forks) drop out; ``implied_workers``
is worker s/MB over main s/MB. "before" runs the code of commit 0ffa46f from a git worktree in a
subprocess, "after" the current code, through the same runner, on the same files.

The main process's cost per MB is small next to the noise of its fixed costs on a shared
machine, so each pair of sizes is packed three times (alternating) and the median slope kept;
``main_resolution_s_per_mb`` is the standard error of the slopes, and ``implied_workers``
divides by the largest of the measured cost, that error and 1 ms/MB (a main cost below what can
be measured is not credited as zero; such rows are marked as lower bounds).

Rows: web-like pages (help pages of the shared corpus turned to text, ~2.3 KB per document) and
short reviews (NSMC sample, ~100 B per document). "after" twice: 8 shards (``input: "8 shards"``:
the workers gunzip whole files, the path for 4 or more files per worker, i.e. a clean output of
any size worth 32 workers) and one file (``input: "1 file"``: the main process gunzips and hands
out 4 MB blocks). The old code gunzipped in the main process for any number of files; its rows
are measured on the 8 shards.

Usage::

    python benchmarks/scale_pack.py            # ~5 CPU minutes (2 cores; longer on a busy machine)
    python benchmarks/scale_pack.py --quick    # < 60 s
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data.stage import mark_complete  # noqa: E402
from data.testing import corpus_dir, read_texts, train_tiny_tokenizer, write_jsonl_gz  # noqa: E402

BEFORE_COMMIT = "0ffa46f"
BEFORE_TREE = Path("/tmp/koneox-before")
SHARDS = 8
NUM_PROC = 2
MAIN_FLOOR_S_PER_MB = 1e-3

# Runs in a subprocess whose working directory is the code under test (``data.pack`` comes
# from there). argv: tokenizer dir, output dir, then JSON lists of inputs for each pack call.
_RUNNER = r"""
import json, resource, sys
from data.pack import pack

def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime

tok, out = sys.argv[1], sys.argv[2]
rows = []
for i, inputs in enumerate(json.loads(a) for a in sys.argv[3:]):
    main0, kids0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    report = pack(inputs, tok, f"{out}/p{i}", num_proc=int(NUM_PROC), progress=False)
    rows.append({"mb": report["text_bytes"] / 1e6, "main": cpu(resource.RUSAGE_SELF) - main0,
                 "workers": cpu(resource.RUSAGE_CHILDREN) - kids0, "tokens": report["tokens"]})
print(json.dumps(rows))
"""


def web_like_texts(limit_pages: int | None) -> list[str]:
    """Help pages of the shared corpus as plain text (~2.3 KB each) plus the law texts cut into
    ~2.5 KB paragraphs: long documents with markup-free prose, headings and lists."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    raw = corpus_dir() / "raw"
    docs: list[str] = []
    for name in ("libreoffice_help_ko", "gimp_help_ko", "debian_faq_ko"):
        for page in read_texts(raw / f"{name}.jsonl.gz", limit=limit_pages):
            text = extract_plain_text(HTMLTree.parse(page), main_content=False).strip()
            if text:
                docs.append(text)
    for law in read_texts(raw / "ko_law_bills.jsonl.gz"):
        para = ""
        for line in law.split("\n"):
            para += line + "\n"
            if len(para.encode()) > 2500:
                docs.append(para.strip())
                para = ""
        if para.strip():
            docs.append(para.strip())
    return docs


def review_texts() -> list[str]:
    return read_texts(REPO / "data" / "samples" / "nsmc_reviews.jsonl.gz")


def replicate(texts: list[str], mb: float) -> list[str]:
    """``texts`` repeated (in order) until they hold ``mb`` MB of UTF-8."""
    out: list[str] = []
    size, i = 0, 0
    while size < mb * 1e6:
        t = texts[i % len(texts)]
        out.append(t)
        size += len(t.encode())
        i += 1
    return out


def write_inputs(texts: list[str], mb: float, where: Path) -> tuple[Path, Path]:
    """The same documents as a clean-like directory of SHARDS shards and as one file."""
    docs = replicate(texts, mb)
    step = -(-len(docs) // SHARDS)
    shards = where / "shards"
    for s in range(SHARDS):
        write_jsonl_gz(docs[s * step : (s + 1) * step], shards / f"part-{s:05d}.jsonl.gz")
    mark_complete(shards, "koneox clean")  # as a finished `koneox clean` leaves it
    return shards, write_jsonl_gz(docs, where / "one.jsonl.gz")


def _before_tree() -> Path:
    if not (BEFORE_TREE / "data" / "pack.py").is_file():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(BEFORE_TREE), BEFORE_COMMIT],
            check=True,
            capture_output=True,
        )
    return BEFORE_TREE


def _run(code_root: Path, tok: Path, out: Path, calls: list[list[str]]) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER.replace("int(NUM_PROC)", str(NUM_PROC)), str(tok), str(out)]
        + [json.dumps(c) for c in calls],
        cwd=code_root,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pack runner in {code_root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _slopes(runs: list[dict], key: str) -> list[float]:
    """Per repeat: (big - small) / MB difference; runs alternate small, big, small, big, ..."""
    pairs = zip(runs[0::2], runs[1::2], strict=True)
    return [(big[key] - small[key]) / (big["mb"] - small["mb"]) for small, big in pairs]


def measure(quick: bool = False) -> list[dict]:
    sizes, repeats = ((0.2, 0.8), 1) if quick else ((2.0, 12.0), 3)
    with tempfile.TemporaryDirectory(prefix="koneox-scale-pack-") as tmp:
        work = Path(tmp)
        reviews = review_texts()
        web = web_like_texts(limit_pages=40 if quick else None)
        vocab = 2000 if quick else 30000
        tok = train_tiny_tokenizer(
            reviews[: 2000 if quick else 40000] + web[: 120 if quick else None],
            work / "tok",
            vocab_size=vocab,
        )
        # (variant, text, input) -> (small, big) inputs. The old code reads every input in the
        # main process however many files there are, so its one-file figures would repeat these.
        cases: dict[tuple[str, str, str], tuple[Path, Path]] = {}
        for text, docs in (("web-like", web), ("short reviews", reviews)):
            (shards_s, one_s), (shards_b, one_b) = (
                write_inputs(docs, mb, work / text.replace(" ", "_") / str(mb)) for mb in sizes
            )
            cases["before", text, f"{SHARDS} shards"] = cases["after", text, f"{SHARDS} shards"] = (
                shards_s,
                shards_b,
            )
            cases["after", text, "1 file"] = (one_s, one_b)
        warm = [str(cases["after", "short reviews", "1 file"][0])]  # the first call pays one-time imports
        rows: list[dict] = []
        for variant, root in (("before", _before_tree()), ("after", REPO)):
            mine = [(key, pair) for key, pair in cases.items() if key[0] == variant]
            # small, big, small, big, ... per case, all in one subprocess
            calls = [warm] + [[str(p)] for _, pair in mine for _ in range(repeats) for p in pair]
            runs = _run(root, tok, work / "out" / variant, calls)[1:]
            for i, ((_, text, label), _) in enumerate(mine):
                case = runs[i * 2 * repeats : (i + 1) * 2 * repeats]
                small, big = case[0], case[1]
                mains, workers = _slopes(case, "main"), statistics.median(_slopes(case, "workers"))
                main = max(statistics.median(mains), 0.0)
                # What the slopes resolve: their standard error over the repeats (a fixed 1 ms/MB
                # without repeats). A smaller main cost is counted as this much.
                resolution = statistics.stdev(mains) / len(mains) ** 0.5 if repeats > 1 else 1e-3
                rows.append(
                    {
                        "stage": "pack",
                        "text": text,
                        "main_cpu_s_per_mb": round(main, 5),
                        "worker_cpu_s_per_mb": round(workers, 4),
                        # 1 ms/MB: below it the CPU clock (ticks of 1-4 ms over ~10 MB) cannot
                        # tell the main process's cost apart, and the ratio is a lower bound
                        "implied_workers": round(workers / max(main, resolution, MAIN_FLOOR_S_PER_MB), 1),
                        "implied_workers_is_lower_bound": main < max(resolution, MAIN_FLOOR_S_PER_MB),
                        "main_resolution_s_per_mb": round(resolution, 5),
                        "variant": variant,
                        "input": label,
                        "mb": [round(small["mb"], 2), round(big["mb"], 2)],
                        "tokens_per_mb": round((big["tokens"] - small["tokens"]) / (big["mb"] - small["mb"])),
                        "vocab_size": vocab,
                        "num_proc": NUM_PROC,
                        "repeats": repeats,
                    }
                )
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = measure(quick=args.quick)
    print(f"{'text':<14} {'input':<9} {'variant':<7} {'main s/MB':>10} {'worker s/MB':>12} {'workers':>8}")
    for r in rows:
        print(
            f"{r['text']:<14} {r['input']:<9} {r['variant']:<7} {r['main_cpu_s_per_mb']:>10.4f} "
            f"{r['worker_cpu_s_per_mb']:>12.4f} {r['implied_workers']:>8.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
