"""What a cleaning worker does with one batch: pure functions of its documents, returned as
a few flat arrays and byte strings that cost the main process little to receive.

::

    RawLines / records ──prepare──> docs (text steps, filter)  ──finish──> BatchResult
      (worker: JSON parsing too)      join runs between the two in     status per unit, and for the
                                      the main process when it is on   live ones: special-token and
                                                                       PII counts, exact keys, MinHash
                                                                       signatures, band keys and the
                                                                       ready JSON line

A unit is what reaches dedup: one input record, or a run of records merged by join
(``weight`` records). ``end_file``/``end_rec`` say how far into the input the main process has
accounted for everything once it has handled the unit: a run that ended a shard is resumed
from there.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from data.clean.config import CleanConfig
from data.clean.dedup import band_key_matrix, exact_key, minhash_matrix
from data.clean.filters import REASONS, quality_reason
from data.clean.io import BadInput, RawLines, Record, parse_lines
from data.clean.pii import PII_TYPES, mask_pii
from data.clean.specials import SpecialTokenEscaper, special_strings
from data.clean.text import fix_unicode, html_to_text, normalize_whitespace, shorten_repeats, strip_markup

OUTCOMES: tuple[str, ...] = ("kept", *REASONS, "duplicate", "near_duplicate", "bad_input")
"""What became of a unit; ``BatchResult.status`` and the main process's codes index this."""
KEPT, DUPLICATE, NEAR_DUPLICATE, BAD_INPUT = 0, len(REASONS) + 1, len(REASONS) + 2, len(REASONS) + 3
_CODE = {name: i for i, name in enumerate(OUTCOMES)}

# A document in flight between prepare, join and finish. weight = input records it stands for
# (> 1 after join); reason = filter reason, "bad_input" or None; chars/bytes = raw input text
# size; bad = (reason, detail) of an unreadable record; end = (file, records of it accounted).
# Plain lists pickle faster than dataclasses between processes.
_TEXT, _EXTRAS, _FILE, _LINE, _WEIGHT, _REASON, _CHARS, _BYTES, _BAD, _END = range(10)


@dataclass
class BatchResult:
    """One batch, cleaned. ``n`` units; ``m`` of them live (not filtered, not bad), in order."""

    status: np.ndarray  # (n,) int8: KEPT for live units, else an index into OUTCOMES
    weight: np.ndarray  # (n,) int64 input records per unit
    raw_chars: np.ndarray  # (n,) int64 characters of the input text
    raw_bytes: np.ndarray  # (n,) int64 UTF-8 bytes of the input text
    end_file: np.ndarray  # (n,) int64
    end_rec: np.ndarray  # (n,) int64
    bad: list[tuple[int, int, int, str, str]]  # (unit, file, line, reason, detail) of unreadable records
    keys: np.ndarray | None  # (m, 16) uint8 exact keys (dedup on)
    signatures: np.ndarray | None  # (m, num_perm) uint32 (near_dedup on)
    bands: np.ndarray | None  # (m, bands) uint64 (near_dedup on)
    pii: np.ndarray | None  # (m, len(PII_TYPES)) int64 (pii on)
    out_chars: np.ndarray  # (m,) int64 characters of the cleaned text
    lines: bytes  # m JSON lines {"text": ..., <input fields>}, UTF-8
    line_ends: np.ndarray  # (m,) int64 offset after each line in ``lines``
    rejects: bytes | None = None  # keep_rejects: per unit the reject line after '{"reason": "...", '
    reject_ends: np.ndarray | None = None  # (n,) int64 offset after each unit's part (bad units: empty)
    specials: list[tuple[int, str, int]] = field(default_factory=list)  # (live index, string, count) escaped
    timings: Counter = field(default_factory=Counter)


def reject_prefix(code: int) -> bytes:
    """Start of a rejects line; the worker's part of the line (``BatchResult.rejects``) follows."""
    return ('{"reason": ' + json.dumps(OUTCOMES[code]) + ", ").encode("utf-8")


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


def joinable(doc: list, cfg: CleanConfig) -> bool:
    """A live document short enough, and with a key, for the join step to merge it."""
    j = cfg.join
    return bool(
        j.enabled
        and j.key
        and doc[_REASON] is None
        and doc[_EXTRAS].get(j.key) is not None
        and len(doc[_TEXT]) < j.max_chars
    )


def joined(group: list[list], cfg: CleanConfig, end: tuple[int, int]) -> list:
    """One document from a run of joinable ones (the first member's fields, ``joined_docs``)."""
    first = group[0]
    if len(group) == 1:
        doc = list(first)
    else:
        doc = [
            cfg.join.separator.join(d[_TEXT] for d in group),
            {**first[_EXTRAS], "joined_docs": len(group)},
            first[_FILE],
            first[_LINE],
            len(group),
            None,
            sum(d[_CHARS] for d in group),
            sum(d[_BYTES] for d in group),
            None,
            None,
        ]
    if cfg.filter.enabled:
        doc[_REASON] = quality_reason(doc[_TEXT], cfg.filter)
    doc[_END] = end
    return doc


class Worker:
    """The per-batch work, set up once per worker process (``num_proc == 1``: in the main one)."""

    def __init__(self, cfg: CleanConfig, paths: list[str], keep_rejects: bool) -> None:
        self.cfg, self.paths, self.keep_rejects = cfg, paths, keep_rejects
        self.steps = _pre_steps(cfg)
        self.escape = (
            SpecialTokenEscaper(special_strings(cfg.special_tokens, cfg.pii)) if cfg.special_tokens.enabled else None
        )

    def prepare(self, batch: RawLines | list[Record | BadInput]) -> tuple[list[list], Counter]:
        """Parse, run the text steps and the quality filter (short joinable documents are
        length-checked after join)."""
        cfg, timings = self.cfg, Counter()
        t0 = time.perf_counter()
        records = parse_lines(batch, cfg.text_field) if isinstance(batch, RawLines) else batch
        docs: list[list] = []
        for rec in records:
            if isinstance(rec, BadInput):
                docs.append(
                    [
                        "",
                        {},
                        rec.file,
                        rec.line,
                        1,
                        "bad_input",
                        0,
                        0,
                        (rec.reason, rec.detail),
                        (rec.file, rec.line),
                    ]
                )
                continue
            size = len(rec.text.encode("utf-8", "surrogatepass"))
            docs.append(
                [
                    rec.text,
                    rec.extras,
                    rec.file,
                    rec.line,
                    1,
                    None,
                    len(rec.text),
                    size,
                    None,
                    (rec.file, rec.line),
                ]
            )
        timings["read"] += time.perf_counter() - t0
        for doc in docs:
            if doc[_REASON] is not None:
                continue
            text = doc[_TEXT]
            for name, fn in self.steps:
                t0 = time.perf_counter()
                text = fn(text)
                timings[name] += time.perf_counter() - t0
            doc[_TEXT] = text
            if cfg.filter.enabled:
                t0 = time.perf_counter()
                doc[_REASON] = quality_reason(text, cfg.filter, check_length=not joinable(doc, cfg))
                timings["filter"] += time.perf_counter() - t0
        return docs, timings

    def finish(self, docs: list[list]) -> BatchResult:
        """Special-token strings, PII, keys, signatures and the output lines of the live
        documents; codes of the rest."""
        cfg, timings = self.cfg, Counter()
        live = [doc for doc in docs if doc[_REASON] is None]
        specials: list[tuple[int, str, int]] = []
        if self.escape is not None:
            # After join (two joined documents cannot complete a string) and right before pii,
            # so its placeholders are the only real ones.
            t0 = time.perf_counter()
            for i, doc in enumerate(live):
                doc[_TEXT], found = self.escape(doc[_TEXT])
                specials += [(i, s, n) for s, n in found.items()]
            timings["special_tokens"] += time.perf_counter() - t0
        pii = None
        if cfg.pii.enabled:
            t0 = time.perf_counter()
            pii = np.zeros((len(live), len(PII_TYPES)), np.int64)
            for i, doc in enumerate(live):
                doc[_TEXT], counts = mask_pii(doc[_TEXT], cfg.pii)
                pii[i] = [counts[t] for t in PII_TYPES]
            timings["pii"] += time.perf_counter() - t0
        texts = [doc[_TEXT] for doc in live]
        keys = signatures = bands = None
        if cfg.dedup.enabled:
            t0 = time.perf_counter()
            keys = np.frombuffer(b"".join(map(exact_key, texts)), np.uint8).reshape(len(texts), 16)
            timings["dedup"] += time.perf_counter() - t0
        if cfg.near_dedup.enabled:
            t0 = time.perf_counter()
            signatures = minhash_matrix(texts, cfg.near_dedup)
            bands = band_key_matrix(signatures, cfg.near_dedup)
            timings["near_dedup"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        encoded = [
            (json.dumps({"text": doc[_TEXT], **doc[_EXTRAS]}, ensure_ascii=False, default=str) + "\n").encode(
                "utf-8"
            )
            for doc in live
        ]
        rejects = reject_ends = None
        if self.keep_rejects:
            parts = [b"" if doc[_BAD] else self._reject_part(doc) for doc in docs]
            rejects, reject_ends = b"".join(parts), np.cumsum([len(p) for p in parts], dtype=np.int64)
        timings["json"] += time.perf_counter() - t0
        return BatchResult(
            status=np.array([_CODE[doc[_REASON] or "kept"] for doc in docs], np.int8),
            weight=np.array([doc[_WEIGHT] for doc in docs], np.int64),
            raw_chars=np.array([doc[_CHARS] for doc in docs], np.int64),
            raw_bytes=np.array([doc[_BYTES] for doc in docs], np.int64),
            end_file=np.array([doc[_END][0] for doc in docs], np.int64),
            end_rec=np.array([doc[_END][1] for doc in docs], np.int64),
            bad=[(i, d[_FILE], d[_LINE], *d[_BAD]) for i, d in enumerate(docs) if d[_BAD]],
            keys=keys,
            signatures=signatures,
            bands=bands,
            pii=pii,
            out_chars=np.array([len(t) for t in texts], np.int64),
            lines=b"".join(encoded),
            line_ends=np.cumsum([len(e) for e in encoded], dtype=np.int64),
            rejects=rejects,
            reject_ends=reject_ends,
            specials=specials,
            timings=timings,
        )

    def _reject_part(self, doc: list) -> bytes:
        # The pipeline's reason goes first (an input field named "reason" does not replace it),
        # then where the document came from, its text when dropped and its input fields.
        extras = {k: v for k, v in doc[_EXTRAS].items() if k != "reason"}
        record = {"file": self.paths[doc[_FILE]], "line": doc[_LINE], "text": doc[_TEXT], **extras}
        return (json.dumps(record, ensure_ascii=False, default=str)[1:] + "\n").encode("utf-8")

    def clean(self, batch: RawLines | list[Record | BadInput]) -> BatchResult:
        """Both halves in one call (join off)."""
        docs, timings = self.prepare(batch)
        result = self.finish(docs)
        result.timings.update(timings)
        return result

    def signatures(self, batch: RawLines) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Exact keys, signatures and band keys of the documents of an output shard (resume)."""
        texts = [json.loads(line)["text"] for line in batch.data.split(b"\n") if line]
        keys = signatures = bands = None
        if self.cfg.dedup.enabled:
            keys = np.frombuffer(b"".join(map(exact_key, texts)), np.uint8).reshape(len(texts), 16)
        if self.cfg.near_dedup.enabled:
            signatures = minhash_matrix(texts, self.cfg.near_dedup)
            bands = band_key_matrix(signatures, self.cfg.near_dedup)
        return keys, signatures, bands


def compress(data: bytes, level: int) -> bytes:
    """One gzip member of ``data`` (no timestamp or name in the header, so the bytes depend only
    on ``data`` and ``level``)."""
    return zlib.compress(data, level=level, wbits=31)
