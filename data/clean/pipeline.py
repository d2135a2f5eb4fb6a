"""The cleaning pipeline: read -> per-document work (workers) -> dedup (main) -> shards + report.

::

    inputs ──main: decompress, cut at line ends──> RawLines batches (bytes)
               ┌─────────────▼───────────────────┐
     workers:  │ parse JSON, unicode html markup │  pure functions of one document; a batch
               │ whitespace repeats filter,      │  comes back as flat arrays and one bytes
               │ special_tokens, pii, exact key, │  string (BatchResult), in input order
               │ MinHash, band keys, the ready-  │
               │ to-write JSON line              │
               └─────────────┬───────────────────┘
     main:       dedup + near_dedup in input order (first copy wins), counts, kept lines
                             │ cut into ~1 MB members (output.py)
     workers:            gzip member at cfg.compress_level
     main:       append in order to part-NNNNN.jsonl.gz.tmp, rename when full, _progress-NNNNN.json

With join on, the worker box stops after the filter, join merges runs of short documents in
the main process, and a second worker call does the rest. Everything order-dependent (join,
dedup, where members and shards end, writing) happens in the main process in input order, so
the shards are byte-identical for any ``num_proc``, and for a run resumed after a kill.

The main process does no per-document Python work besides dedup (~2 us per document), so one
main process keeps many workers busy (``benchmarks/scale_clean.py``).
"""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from data.clean import dedup, spool
from data.clean.batch import (
    _END,
    _EXTRAS,
    _REASON,
    _TEXT,
    BAD_INPUT,
    KEPT,
    OUTCOMES,
    BatchResult,
    Worker,
    compress,
    joinable,
    joined,
    reject_prefix,
)
from data.clean.config import STEP_NAMES, CleanConfig
from data.clean.io import RawLines, read_batches
from data.clean.output import (
    PROGRESS,
    Done,
    Pending,
    ShardOutput,
    completed_shards,
    fingerprint,
    remove_outputs,
    shard_name,
)
from data.clean.pii import PII_TYPES
from data.clean.report import write_report
from data.clean.specials import special_strings
from data.stage import clear_marker, mark_complete, read_marker, remove_temporaries

PRODUCER = "koneox clean"
_BATCH_BYTES = 4 << 20  # raw input per worker task, besides chunk_docs
_CODE_DUPLICATE, _CODE_NEAR = OUTCOMES.index("duplicate"), OUTCOMES.index("near_duplicate")
DEDUP_DIR = ".dedup"  # in the output directory: the dedup state beyond data.clean.dedup_memory_mb


class StrictInputError(ValueError):
    """Raised in strict mode at the first unreadable input record."""


class CleanInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped ``clean_files``: complete shards are kept and the same call
    resumes after them; nothing unfinished is left behind."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or signal.Signals(signum).name)
        self.signum = signum


class _ResumeMismatch(RuntimeError):
    """The kept shards do not reproduce a consistent dedup state: start over."""


# ---- worker processes -------------------------------------------------------------------------

_WORKER: Worker | None = None


def _init_worker(cfg: CleanConfig, paths: list[str], keep_rejects: bool, spool_dir: Path) -> None:
    # The main process handles SIGTERM/SIGINT and terminates the pool (with SIGTERM).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER
    _WORKER = Worker(cfg, paths, keep_rejects)
    spool.use(spool_dir)


def _task(method: str, arg: Any) -> str:
    return spool.put(getattr(_WORKER, method)(arg))


def _compress_task(data: bytes, level: int) -> str:
    return spool.put(compress(data, level), raw=True)


class _Spooled:
    """A compression job in the pool whose result is a spool file."""

    def __init__(self, job: Any) -> None:
        self.job = job

    def ready(self) -> bool:
        return self.job.ready()

    def get(self) -> bytes:
        return spool.take(self.job.get(), raw=True)


def _batched(docs: Iterable[list], size: int) -> Iterator[list[list]]:
    batch: list[list] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- the run ----------------------------------------------------------------------------------


class _Tally:
    """Running counts; a progress file holds them as of the end of its shard."""

    def __init__(self, n_files: int) -> None:
        self.counts = np.zeros(len(OUTCOMES), np.int64)  # input records by outcome
        self.pii = np.zeros(len(PII_TYPES), np.int64)
        self.specials: Counter = Counter()  # special-token strings escaped, in kept documents
        self.output_documents = self.chars_in = self.chars_out = self.text_bytes = 0
        self.file_records: list[int] = [0] * n_files  # filled in by the reader as files end
        self.bad_items: list[dict[str, Any]] = []
        self.bad_saved = 0  # bad_items already in a progress file
        self.timings: Counter = Counter()
        self.seconds = 0.0  # of earlier, interrupted runs

    def record(self, position: tuple[int, int], fp: str) -> dict[str, Any]:
        f, r = position
        record = {
            "fingerprint": fp,
            "position": [f, r],
            "records": [*self.file_records[:f], r] + [0] * (len(self.file_records) - f - 1),
            "counts": {OUTCOMES[i]: int(c) for i, c in enumerate(self.counts) if c},
            "pii": dict(zip(PII_TYPES, self.pii.tolist(), strict=True)),
            "special_tokens": dict(sorted(self.specials.items())),
            "output_documents": self.output_documents,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "text_bytes_in": self.text_bytes,
            "bad_items": self.bad_items[self.bad_saved :],
        }
        self.bad_saved = len(self.bad_items)
        return record

    def restore(self, records: list[dict[str, Any]]) -> None:
        last = records[-1]
        self.counts[:] = 0
        for name, count in last["counts"].items():
            self.counts[OUTCOMES.index(name)] = count
        self.pii[:] = [last["pii"][t] for t in PII_TYPES]
        self.specials = Counter(last["special_tokens"])
        self.output_documents, self.chars_in = last["output_documents"], last["chars_in"]
        self.chars_out, self.text_bytes = last["chars_out"], last["text_bytes_in"]
        self.file_records = list(last["records"])
        self.bad_items = [item for r in records for item in r["bad_items"]]
        self.bad_saved = len(self.bad_items)
        self.timings = Counter(last["step_cpu_seconds"])
        self.seconds = last["seconds"]


class _Run:
    def __init__(
        self,
        cfg: CleanConfig,
        paths: list[Path],
        out: Path,
        pool: Any,
        num_proc: int,
        keep_rejects: bool,
        strict: bool,
        fp: str,
        bar: Any,
        records: list[dict[str, Any]],
    ) -> None:
        self.cfg, self.paths, self.out, self.pool = cfg, paths, out, pool
        self.strict, self.fp, self.bar, self.records = strict, fp, bar, records
        self.num_proc = num_proc
        self.worker = None if pool is not None else Worker(cfg, [str(p) for p in paths], keep_rejects)
        self.ahead = 2 * max(1, num_proc) + 2
        self.start = time.perf_counter()
        self.tally = _Tally(len(paths))
        rejects_files = 0
        if records:
            self.tally.restore(records)
            rejects_files = records[-1].get("rejects_files", 0)
        self.output = ShardOutput(
            out,
            self._compress,
            part_index=len(records),
            rejects_index=rejects_files if keep_rejects else None,
            rejects_cap=cfg.shard_docs,
            max_pending=4 * self.ahead,
        )
        self.deduper = (
            dedup.CorpusDeduper(
                cfg.dedup.enabled,
                cfg.near_dedup if cfg.near_dedup.enabled else None,
                memory_mb=cfg.dedup_memory_mb,
                work_dir=out / DEDUP_DIR,
            )
            if cfg.dedup.enabled or cfg.near_dedup.enabled
            else None
        )
        self.prefixes = {code: reject_prefix(code) for code in range(len(OUTCOMES))}

    # ---- pool plumbing ----

    def _compress(self, data: bytes) -> Pending:
        level = self.cfg.compress_level
        if self.pool is None:
            return Done(compress(data, level))
        return _Spooled(self.pool.apply_async(_compress_task, (data, level)))

    def _ordered(self, method: str, items: Iterable[Any]) -> Iterator[Any]:
        """Results of ``Worker.<method>`` over ``items`` in input order, at most ``ahead`` in flight.

        Submitting from the caller's thread (rather than ``Pool.imap``, whose single task-feeder
        thread would have to interleave two chained maps) lets prepare, join and finish be
        chained lazily without deadlock, and bounds memory.
        """
        if self.pool is None:
            yield from map(getattr(self.worker, method), items)
            return
        pending: deque[Any] = deque()
        for item in items:
            pending.append(self.pool.apply_async(_task, (method, item)))
            if len(pending) >= self.ahead:
                yield spool.take(pending.popleft().get())
        while pending:
            yield spool.take(pending.popleft().get())

    # ---- input ----

    def _batches(self, start: tuple[int, int]) -> Iterator[RawLines | list]:
        first_file, skip = start
        for i in range(first_file, len(self.paths)):
            done = skip if i == first_file else 0
            for batch in read_batches(
                self.paths[i], i, self.cfg.text_field, done, self.cfg.chunk_docs, _BATCH_BYTES
            ):
                done += batch.count if isinstance(batch, RawLines) else len(batch)
                yield batch
            self.tally.file_records[i] = done

    def _join(self, prepared: Iterator[tuple[list[list], Counter]]) -> Iterator[list]:
        """Merges runs of consecutive short documents that share the join key; filtered and
        unreadable ones pass through (they do not break a run). A merged document accounts for
        the input up to the record before the one that closed its run."""
        cfg = self.cfg
        group: list[list] = []
        last_end = (0, 0)
        for docs, timings in prepared:
            self.tally.timings.update(timings)
            for doc in docs:
                if doc[_REASON] is not None:
                    last_end = doc[_END]
                    yield doc
                    continue
                if not joinable(doc, cfg):
                    if group:
                        yield joined(group, cfg, last_end)
                        group = []
                    last_end = doc[_END]
                    yield doc
                    continue
                if group and (
                    group[0][_EXTRAS].get(cfg.join.key) != doc[_EXTRAS].get(cfg.join.key)
                    or sum(len(d[_TEXT]) for d in group) >= cfg.join.target_chars
                ):
                    yield joined(group, cfg, last_end)
                    group = []
                group.append(doc)
                last_end = doc[_END]
        if group:
            yield joined(group, cfg, last_end)

    def _results(self, start: tuple[int, int]) -> Iterator[BatchResult]:
        batches = self._batches(start)
        if self.cfg.join.enabled and self.cfg.join.key:
            docs = self._join(self._ordered("prepare", batches))
            return self._ordered("finish", _batched(docs, self.cfg.chunk_docs))
        return self._ordered("clean", batches)

    # ---- main-process work per batch ----

    def _handle(self, res: BatchResult) -> None:
        tally = self.tally
        tally.timings.update(res.timings)
        t0 = time.perf_counter()
        if self.strict and res.bad:
            _, file, line, reason, detail = res.bad[0]
            raise StrictInputError(f"{self.paths[file]}:{line}: {reason} ({detail})")
        codes = res.status.copy()
        live = np.flatnonzero(codes == KEPT)
        kept = np.arange(len(live))  # indices into the live arrays
        if self.deduper is not None and len(live):
            dc = self.deduper.check(res.keys, res.signatures, res.bands)
            codes[live[dc == dedup.DUPLICATE]] = _CODE_DUPLICATE
            codes[live[dc == dedup.NEAR_DUPLICATE]] = _CODE_NEAR
            kept = np.flatnonzero(dc == dedup.KEEP)
        units = live[kept]
        a = c = 0
        while len(kept) - c >= (room := self.cfg.shard_docs - self.output.part.lines):
            u = int(units[c + room - 1])
            self._segment(res, codes, a, u + 1, kept[c : c + room])
            self._end_shard((int(res.end_file[u]), int(res.end_rec[u])), input_done=False)
            a, c = u + 1, c + room
        self._segment(res, codes, a, len(codes), kept[c:])
        tally.timings["dedup+write"] += time.perf_counter() - t0
        if self.bar is not None:
            self.bar.update(int(res.weight.sum()))

    def _segment(self, res: BatchResult, codes: np.ndarray, a: int, b: int, kept: np.ndarray) -> None:
        """Count units a..b-1 and send their output (``kept``: their kept live indices) on."""
        tally = self.tally
        tally.counts += np.bincount(codes[a:b], weights=res.weight[a:b], minlength=len(OUTCOMES)).astype(
            np.int64
        )
        tally.chars_in += int(res.raw_chars[a:b].sum())
        tally.text_bytes += int(res.raw_bytes[a:b].sum())
        for unit, file, line, reason, detail in res.bad:
            if a <= unit < b:
                tally.bad_items.append(
                    {"file": str(self.paths[file]), "line": line, "reason": reason, "detail": detail}
                )
        if len(kept):
            tally.output_documents += len(kept)
            tally.chars_out += int(res.out_chars[kept].sum())
            if res.pii is not None:
                tally.pii += res.pii[kept].sum(axis=0)
            if res.specials:
                mine = set(kept.tolist())
                for i, s, n in res.specials:
                    if i in mine:
                        tally.specials[s] += n
            ends = res.line_ends[kept]
            starts = np.where(kept > 0, res.line_ends[kept - 1], 0)
            # kept lines are mostly consecutive in res.lines: copy them run by run
            breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
            runs = zip(
                starts[np.r_[0, breaks]].tolist(),
                ends[np.r_[breaks - 1, len(ends) - 1]].tolist(),
                strict=True,
            )
            self.output.add(self.output.part, b"".join(res.lines[s:e] for s, e in runs), ends - starts)
        if self.output.rejects is not None:
            dropped = np.flatnonzero((codes[a:b] != KEPT) & (codes[a:b] != BAD_INPUT)) + a
            if len(dropped):
                parts, lengths = [], []
                for u in dropped.tolist():
                    s, e = int(res.reject_ends[u - 1]) if u else 0, int(res.reject_ends[u])
                    prefix = self.prefixes[int(codes[u])]
                    parts += [prefix, res.rejects[s:e]]
                    lengths.append(len(prefix) + e - s)
                self.output.add(self.output.rejects, b"".join(parts), np.asarray(lengths))

    def _end_shard(self, position: tuple[int, int], input_done: bool) -> None:
        record = self.tally.record(position, self.fp)
        record["input_done"] = input_done
        record["seconds"] = round(self.tally.seconds + time.perf_counter() - self.start, 3)
        record["step_cpu_seconds"] = dict(self.tally.timings)
        self.output.end_shard(record)

    def _rebuild(self) -> None:
        """Dedup state of the kept shards: their documents, checked again in order, must all be kept."""
        if self.deduper is None or not self.records:
            return
        t0 = time.perf_counter()

        def batches() -> Iterator[RawLines]:
            for record in self.records:
                for batch in read_batches(
                    self.out / record["shard"], 0, "text", 0, self.cfg.chunk_docs, _BATCH_BYTES
                ):
                    if not isinstance(batch, RawLines):
                        raise _ResumeMismatch(f"{record['shard']} is unreadable")
                    yield batch

        for keys, signatures, bands in self._ordered("signatures", batches()):
            if self.deduper.check(keys, signatures, bands).any():
                raise _ResumeMismatch("kept shards hold duplicates of each other")
        self.tally.timings["resume"] += time.perf_counter() - t0

    # ---- whole run ----

    def run(self) -> dict[str, Any]:
        last = self.records[-1] if self.records else None
        if last is None or not last["input_done"]:
            self._rebuild()
            start = tuple(last["position"]) if last else (0, 0)
            for res in self._results(start):
                self._handle(res)
                self.output.drain(self.output.max_pending)
            if self.output.part.lines:
                end = (len(self.paths) - 1, self.tally.file_records[-1])
                self._end_shard(end, input_done=True)
            self.output.finish()
        return self._report()

    def close(self) -> None:
        """Remove the dedup state written to disk."""
        if self.deduper is not None:
            self.deduper.close()

    def _report(self) -> dict[str, Any]:
        t, cfg = self.tally, self.cfg
        seconds = t.seconds + time.perf_counter() - self.start
        per_file_rejected = Counter(item["file"] for item in t.bad_items)
        documents_in = sum(t.file_records)
        dropped = {OUTCOMES[i]: int(c) for i, c in enumerate(t.counts) if c and i not in (KEPT, BAD_INPUT)}
        kept, rejected = int(t.counts[KEPT]), len(t.bad_items)
        report: dict[str, Any] = {
            "inputs": [
                {"path": str(p), "records": n, "rejected": per_file_rejected[str(p)]}
                for p, n in zip(self.paths, t.file_records, strict=True)
            ],
            "documents_in": documents_in,
            "kept": kept,
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "rejected_input": rejected,
            "rejected_by_reason": dict(sorted(Counter(b["reason"] for b in t.bad_items).items())),
            "rejected_items": t.bad_items,
            "accounting_holds": documents_in == kept + sum(dropped.values()) + rejected,
            "output_documents": t.output_documents,
            "merged_by_join": kept - t.output_documents,
            "pii": dict(zip(PII_TYPES, t.pii.tolist(), strict=True)),
            "special_tokens": dict(sorted(t.specials.items())),
            "chars_in": t.chars_in,
            "chars_out": t.chars_out,
            "text_bytes_in": t.text_bytes,
            "shards": [shard_name("part", i) for i in range(self.output.part.index)],
            "rejects": [shard_name("rejects", i) for i in range(self.output.rejects.index)]
            if self.output.rejects is not None
            else [],
            "steps": [name for name in STEP_NAMES if getattr(cfg, name).enabled],
            "num_proc": self.num_proc,
            "seconds": round(seconds, 3),
            "docs_per_s": round(documents_in / seconds, 1) if seconds else None,
            "mb_per_s": round(t.text_bytes / 1e6 / seconds, 3) if seconds else None,
            "step_cpu_seconds": {k: round(v, 3) for k, v in sorted(t.timings.items())},
            "config": asdict(cfg),
        }
        procs = max(1, self.num_proc)
        report["docs_per_s_per_core"] = round(documents_in / seconds / procs, 1) if seconds else None
        report["mb_per_s_per_core"] = round(t.text_bytes / 1e6 / seconds / procs, 3) if seconds else None
        return report


def _stderr(message: str) -> None:
    print(f"{PRODUCER}: {message}", file=sys.stderr, flush=True)


def _stop_on_signals() -> dict[int, Any]:
    """SIGTERM and SIGINT raise CleanInterrupted once (in the main thread); returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise CleanInterrupted(signum)

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def clean_files(
    inputs: list[str | Path],
    out_dir: str | Path,
    config: CleanConfig | None = None,
    num_proc: int = 1,
    steps: list[str] | None = None,
    keep_rejects: bool = False,
    strict: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Clean ``inputs`` into ``out_dir``; returns the report (also written as report.json/.md).

    ``steps`` (names from ``STEP_NAMES``) runs only those steps, in pipeline order.
    ``strict`` raises ``StrictInputError`` at the first unreadable record instead of counting it.
    Crash safety: shards appear under their names only when complete, the completion marker
    (``data/stage.py``) is written last, and a run of the same job into the same ``out_dir``
    that was killed (SIGKILL, SIGTERM: ``CleanInterrupted``) resumes after its last complete
    shard, giving the same bytes and report as an uninterrupted run. ``log`` gets the messages
    about resuming or starting over (default: stderr).
    """
    cfg = config or CleanConfig()
    if steps is not None:
        cfg = cfg.with_steps(steps)
    if not 0 <= cfg.compress_level <= 9:
        raise ValueError(f"data.clean.compress_level must be 0-9 (gzip levels), got {cfg.compress_level}")
    if cfg.dedup_memory_mb < 0:
        raise ValueError(
            f"data.clean.dedup_memory_mb must be 0 (no limit) or more, got {cfg.dedup_memory_mb}"
        )
    if cfg.special_tokens.enabled:
        special_strings(cfg.special_tokens, cfg.pii)  # a bad extra string fails here, not in a worker
    log = log or _stderr
    paths = [Path(p) for p in inputs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the dedup memory budget changes where the state lives, not the output: a run killed for
    # lack of memory resumes with a smaller one
    settings = {k: v for k, v in asdict(cfg).items() if k != "dedup_memory_mb"}
    fp = fingerprint(paths, {"config": settings, "keep_rejects": keep_rejects, "strict": strict})

    finished_before = read_marker(out) is not None
    clear_marker(out)
    remove_temporaries(out)
    shutil.rmtree(out / DEDUP_DIR, ignore_errors=True)  # a killed run's
    records, other_job = ([], False) if finished_before else completed_shards(out, fp)
    if other_job:
        log(f"{out} holds an unfinished run with another config, inputs or code: starting over")
    remove_outputs(out, len(records), records[-1].get("rejects_files", 0) if records else 0)
    if records:
        done = records[-1]["records"]
        log(f"resuming after {len(records)} complete shard(s) ({sum(done):,} input records done)")

    previous_handlers = _stop_on_signals()
    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    pool = bar = run = spool_dir = None
    try:
        if num_proc > 1:
            spool_dir = spool.create()
            pool = ctx.Pool(num_proc, _init_worker, (cfg, [str(p) for p in paths], keep_rejects, spool_dir))
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc="clean", unit="doc", smoothing=0.1)
        while True:
            run = _Run(cfg, paths, out, pool, num_proc, keep_rejects, strict, fp, bar, records)
            try:
                report = run.run()
                break
            except _ResumeMismatch as e:
                log(f"cannot resume ({e}): starting over")
                run.close()
                run.output.abort()
                remove_temporaries(out)
                remove_outputs(out)
                records = []
        run.close()  # before the marker: a finished directory holds no dedup state
        write_report(report, out)
        mark_complete(
            out,
            PRODUCER,
            {
                "shards": report["shards"],
                "rejects": report["rejects"],
                "documents": report["output_documents"],
                "documents_in": report["documents_in"],
            },
        )
        for stale in out.glob(f"{PROGRESS}*.json"):
            stale.unlink()
        return report
    except BaseException as e:
        if run is not None:
            run.output.abort()
        remove_temporaries(out)
        if isinstance(e, CleanInterrupted):
            kept = len(list(out.glob(f"{PROGRESS}*.json")))
            raise CleanInterrupted(
                e.signum,
                f"stopped by {signal.Signals(e.signum).name}; {kept} complete shard(s) kept in {out}: "
                "rerun the same command to resume",
            ) from None
        raise
    finally:
        if run is not None:
            run.close()
        if pool is not None:
            pool.terminate()
        if spool_dir is not None:
            spool.remove(spool_dir)
        if bar is not None:
            bar.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
