"""The cleaning pipeline: read -> per-document steps (workers) -> join -> dedup -> shards + report.

::

    inputs ──read──> Record ─┐  (main process, input order)
                             │ batches of chunk_docs
               ┌─────────────▼─────────────┐
     workers:  │ unicode html markup       │  pure functions of one document,
               │ whitespace repeats filter │  results come back in input order
               └─────────────┬─────────────┘
     main:             join (consecutive docs, same key)
               ┌─────────────▼─────────────┐
     workers:  │ pii, exact key, MinHash   │
               └─────────────┬─────────────┘
     main:       dedup, near_dedup (first copy wins) -> part-NNNNN.jsonl.gz

Everything order-dependent (join, dedup, writing) happens in the main process in input
order, and workers only compute pure per-document functions, so the shards are
byte-identical for any ``num_proc``. When join is off both worker phases run as one.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from data.clean.config import STEP_NAMES, CleanConfig
from data.clean.dedup import ExactDeduper, NearDeduper, band_keys, exact_key, minhash_signatures
from data.clean.filters import quality_reason
from data.clean.io import BadInput, Record, read_records
from data.clean.pii import PII_TYPES, mask_pii
from data.clean.report import write_report
from data.clean.text import fix_unicode, html_to_text, normalize_whitespace, shorten_repeats, strip_markup


class StrictInputError(ValueError):
    """Raised in strict mode at the first unreadable input record."""


# A document in flight: [text, extras, file, line, weight, reason, payload]. weight = number of
# input documents it stands for (> 1 after join); payload = (pii counts, exact key, signature,
# band keys) after phase 2. Plain lists pickle faster than dataclasses between processes.
_TEXT, _EXTRAS, _FILE, _LINE, _WEIGHT, _REASON, _PAYLOAD = range(7)


def _pre_steps(cfg: CleanConfig) -> list[tuple[str, Callable[[str], str]]]:
    steps: list[tuple[str, Callable[[str], str]]] = []
    if cfg.unicode.enabled:
        steps.append(("unicode", partial(fix_unicode, cfg=cfg.unicode)))
    if cfg.html.enabled:
        steps.append(("html", partial(html_to_text, cfg=cfg.html)))
    if cfg.markup.enabled:
        steps.append(("markup", partial(strip_markup, cfg=cfg.markup)))
    if cfg.whitespace.enabled:
        steps.append(("whitespace", partial(normalize_whitespace, cfg=cfg.whitespace)))
    if cfg.repeats.enabled:
        steps.append(("repeats", partial(shorten_repeats, cfg=cfg.repeats)))
    return steps


def _joinable(doc: list, cfg: CleanConfig) -> bool:
    j = cfg.join
    return bool(j.enabled and j.key and doc[_EXTRAS].get(j.key) is not None and len(doc[_TEXT]) < j.max_chars)


def _phase1(batch: list[list], cfg: CleanConfig) -> tuple[list[list], Counter]:
    timings: Counter = Counter()
    steps = _pre_steps(cfg)
    for doc in batch:
        text = doc[_TEXT]
        for name, fn in steps:
            t0 = time.perf_counter()
            text = fn(text)
            timings[name] += time.perf_counter() - t0
        doc[_TEXT] = text
        if cfg.filter.enabled:
            t0 = time.perf_counter()
            # Short documents that join may still merge are length-checked after joining.
            doc[_REASON] = quality_reason(text, cfg.filter, check_length=not _joinable(doc, cfg))
            timings["filter"] += time.perf_counter() - t0
    return batch, timings


def _phase2(batch: list[list], cfg: CleanConfig) -> tuple[list[list], Counter]:
    timings: Counter = Counter()
    live = [doc for doc in batch if doc[_REASON] is None]
    for doc in live:
        counts = None
        if cfg.pii.enabled:
            t0 = time.perf_counter()
            doc[_TEXT], counts = mask_pii(doc[_TEXT], cfg.pii)
            timings["pii"] += time.perf_counter() - t0
        key = None
        if cfg.dedup.enabled:
            t0 = time.perf_counter()
            key = exact_key(doc[_TEXT])
            timings["dedup"] += time.perf_counter() - t0
        doc[_PAYLOAD] = (counts, key, None, None)
    if cfg.near_dedup.enabled and live:
        t0 = time.perf_counter()
        sigs = minhash_signatures([doc[_TEXT] for doc in live], cfg.near_dedup)
        for doc, sig in zip(live, sigs, strict=True):
            counts, key, _, _ = doc[_PAYLOAD]
            doc[_PAYLOAD] = (counts, key, sig, band_keys(sig, cfg.near_dedup))
        timings["near_dedup"] += time.perf_counter() - t0
    return batch, timings


def _both_phases(batch: list[list], cfg: CleanConfig) -> tuple[list[list], Counter]:
    batch, t1 = _phase1(batch, cfg)
    batch, t2 = _phase2(batch, cfg)
    return batch, t1 + t2


def _ordered(pool: Any, fn: Callable, batches: Iterable[list[list]], ahead: int) -> Iterator[tuple[list[list], Counter]]:
    """Results of ``fn`` over ``batches`` in input order, at most ``ahead`` batches in flight.

    Submitting from the caller's thread (rather than ``Pool.imap``, whose single task-feeder
    thread would have to interleave two chained maps) lets phase 1, join and phase 2 be
    chained lazily without deadlock, and bounds memory.
    """
    if pool is None:
        yield from map(fn, batches)
        return
    pending: deque = deque()
    for batch in batches:
        pending.append(pool.apply_async(fn, (batch,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _batched(docs: Iterable[list], size: int) -> Iterator[list[list]]:
    batch: list[list] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _ShardWriter:
    """Deterministic gzip JSONL shards: no timestamp or file name in the gzip header."""

    def __init__(self, out_dir: Path, prefix: str, shard_docs: int) -> None:
        self.out_dir, self.prefix, self.shard_docs = out_dir, prefix, shard_docs
        self.paths: list[str] = []
        self._file: Any = None
        self._raw: Any = None
        self._count = 0

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None or self._count >= self.shard_docs:
            self.close()
            name = f"{self.prefix}-{len(self.paths):05d}.jsonl.gz"
            self._raw = open(self.out_dir / name, "wb")  # noqa: SIM115 (closed in close())
            self._file = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
            self.paths.append(name)
            self._count = 0
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        self._file.write(line.encode("utf-8"))
        self._count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._raw.close()
            self._file = self._raw = None


def clean_files(
    inputs: list[str | Path],
    out_dir: str | Path,
    config: CleanConfig | None = None,
    num_proc: int = 1,
    steps: list[str] | None = None,
    keep_rejects: bool = False,
    strict: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Clean ``inputs`` into ``out_dir``; returns the report (also written as report.json/.md).

    ``steps`` (names from ``STEP_NAMES``) runs only those steps, in pipeline order.
    ``strict`` raises ``StrictInputError`` at the first unreadable record instead of counting it.
    """
    cfg = config or CleanConfig()
    if steps is not None:
        cfg = cfg.with_steps(steps)
    paths = [Path(p) for p in inputs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("part-*.jsonl.gz")) + list(out.glob("rejects-*.jsonl.gz")):
        stale.unlink()

    start = time.perf_counter()
    per_file = [Counter() for _ in paths]
    bad_items: list[dict[str, Any]] = []
    chars_in = [0]
    text_bytes = [0]  # UTF-8 size of the input texts: MB/s is measured on this, not on gzip sizes

    def read_all() -> Iterator[list]:
        for i, path in enumerate(paths):
            for rec in read_records(path, i, cfg.text_field):
                per_file[i]["records"] += 1
                if isinstance(rec, BadInput):
                    where = f"{paths[rec.file]}:{rec.line}"
                    if strict:
                        raise StrictInputError(f"{where}: {rec.reason} ({rec.detail})")
                    per_file[i]["rejected"] += 1
                    bad_items.append(
                        {
                            "file": str(paths[rec.file]),
                            "line": rec.line,
                            "reason": rec.reason,
                            "detail": rec.detail,
                        }
                    )
                    continue
                assert isinstance(rec, Record)
                chars_in[0] += len(rec.text)
                text_bytes[0] += len(rec.text.encode("utf-8", "surrogatepass"))
                yield [rec.text, rec.extras, rec.file, rec.line, 1, None, None]

    dropped: Counter = Counter()
    pii_counts: Counter = Counter({t: 0 for t in PII_TYPES})
    timings: Counter = Counter()
    join_timings: Counter = Counter()
    kept_inputs = 0
    out_docs = 0
    chars_out = 0
    writer = _ShardWriter(out, "part", cfg.shard_docs)
    rejects = _ShardWriter(out, "rejects", cfg.shard_docs) if keep_rejects else None
    exact = ExactDeduper() if cfg.dedup.enabled else None
    near = NearDeduper(cfg.near_dedup) if cfg.near_dedup.enabled else None

    def reject(doc: list, reason: str) -> None:
        dropped[reason] += doc[_WEIGHT]
        if rejects is not None:
            rejects.write(
                {
                    "reason": reason,
                    "file": str(paths[doc[_FILE]]),
                    "line": doc[_LINE],
                    "text": doc[_TEXT],
                    **doc[_EXTRAS],
                }
            )

    def join(results: Iterator[tuple[list[list], Counter]]) -> Iterator[list]:
        """Drops filtered documents and merges runs of short ones that share the join key."""
        group: list[list] = []

        def flush() -> Iterator[list]:
            if not group:
                return
            first = group[0]
            if len(group) == 1:
                doc = first
            else:
                text = cfg.join.separator.join(d[_TEXT] for d in group)
                extras = {**first[_EXTRAS], "joined_docs": len(group)}
                doc = [text, extras, first[_FILE], first[_LINE], len(group), None, None]
            if cfg.filter.enabled:
                doc[_REASON] = quality_reason(doc[_TEXT], cfg.filter)
            group.clear()
            yield doc

        # Filtered documents are passed on unchanged; the writer loop rejects them in order.
        for batch, t in results:
            join_timings.update(t)
            for doc in batch:
                if doc[_REASON] is not None:
                    yield doc
                    continue
                if not _joinable(doc, cfg):
                    yield from flush()
                    yield doc
                    continue
                if group and (
                    group[0][_EXTRAS].get(cfg.join.key) != doc[_EXTRAS].get(cfg.join.key)
                    or sum(len(d[_TEXT]) for d in group) >= cfg.join.target_chars
                ):
                    yield from flush()
                group.append(doc)
        yield from flush()

    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    pool = ctx.Pool(num_proc) if num_proc > 1 else None
    ahead = 2 * max(1, num_proc) + 2
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="clean", unit="doc", smoothing=0.1)
    try:
        batches = _batched(read_all(), cfg.chunk_docs)
        if cfg.join.enabled and cfg.join.key:
            pre = _ordered(pool, partial(_phase1, cfg=cfg), batches, ahead)
            results = _ordered(pool, partial(_phase2, cfg=cfg), _batched(join(pre), cfg.chunk_docs), ahead)
        else:
            results = _ordered(pool, partial(_both_phases, cfg=cfg), batches, ahead)
        for batch, t in results:
            timings.update(t)
            t0 = time.perf_counter()
            for doc in batch:
                if doc[_REASON] is not None:
                    reject(doc, doc[_REASON])
                    continue
                counts, key, sig, bands = doc[_PAYLOAD] or (None, None, None, None)
                if exact is not None and exact.is_duplicate(key):
                    reject(doc, "duplicate")
                    continue
                if near is not None and near.is_duplicate(sig, bands):
                    reject(doc, "near_duplicate")
                    continue
                if counts:
                    pii_counts.update(counts)
                kept_inputs += doc[_WEIGHT]
                out_docs += 1
                chars_out += len(doc[_TEXT])
                writer.write({"text": doc[_TEXT], **doc[_EXTRAS]})
            timings["dedup+write"] += time.perf_counter() - t0
            if bar is not None:
                bar.update(sum(c["records"] for c in per_file) - bar.n)
    finally:
        if pool is not None:
            pool.terminate()
        writer.close()
        if rejects is not None:
            rejects.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    timings.update(join_timings)

    documents_in = sum(c["records"] for c in per_file)
    rejected = len(bad_items)
    report: dict[str, Any] = {
        "inputs": [
            {"path": str(p), "records": c["records"], "rejected": c["rejected"]}
            for p, c in zip(paths, per_file, strict=True)
        ],
        "documents_in": documents_in,
        "kept": kept_inputs,
        "dropped": {reason: dropped[reason] for reason in sorted(dropped)},
        "dropped_total": sum(dropped.values()),
        "rejected_input": rejected,
        "rejected_by_reason": dict(sorted(Counter(b["reason"] for b in bad_items).items())),
        "rejected_items": bad_items,
        "accounting_holds": documents_in == kept_inputs + sum(dropped.values()) + rejected,
        "output_documents": out_docs,
        "merged_by_join": kept_inputs - out_docs,
        "pii": dict(pii_counts),
        "chars_in": chars_in[0],
        "chars_out": chars_out,
        "text_bytes_in": text_bytes[0],
        "shards": writer.paths,
        "rejects": rejects.paths if rejects is not None else [],
        "steps": [name for name in STEP_NAMES if getattr(cfg, name).enabled],
        "num_proc": num_proc,
        "seconds": round(seconds, 3),
        "docs_per_s": round(documents_in / seconds, 1) if seconds else None,
        "mb_per_s": round(text_bytes[0] / 1e6 / seconds, 3) if seconds else None,
        "docs_per_s_per_core": round(documents_in / seconds / max(1, num_proc), 1) if seconds else None,
        "mb_per_s_per_core": round(text_bytes[0] / 1e6 / seconds / max(1, num_proc), 3) if seconds else None,
        "step_cpu_seconds": {k: round(v, 3) for k, v in sorted(timings.items())},
        "config": asdict(cfg),
    }
    write_report(report, out)
    return report
