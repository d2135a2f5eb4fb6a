"""Train the morpheme-aware byte-level BPE tokenizer (30,003 entries).

Pipeline (every arrow streams; only the pruning sample and held-out text sit in memory)::

    inputs --sizes only--> plan: the same share from the start of every input, ~4x the sample
        --workers: read, check, hash u(seed, input, line) per document--> texts, hashes
        --smallest hashes: held-out docs, the next smallest up to sample_bytes: training sample
        --workers: MeCab marks, compact records--> heldout.rec, train.rec    (tokenizer.sample)
    train.rec --(policy: marked boundaries become split points)--> BPE trainer
        --> encode a part of the sample, drop tokens that mostly straddle morphemes
            (and the tokens built from them), cut to exactly 30,000 --> + 3 PII tokens
    tokenizer.json: plain ByteLevel (GPT-2 regex) pre-tokenizer, so encoding needs no MeCab

The sample is refused before anything is read when BPE learning on it would not fit in memory
(``tokenizer.memory``). The output directory is complete only once ``_COMPLETE.json`` is
written, last; every file in it is written under a temporary name and renamed.

Id layout (matches the released Polyglot-Ko ids where those are known)::

    0 <|bos|>   1 <|pad|>   2 <|endoftext|> (EOS, end of document)   3 <|sep|>
    4..259 the 256 byte symbols   260..29999 merges
    30000 <|acc|>   30001 <|tel|>   30002 <|rrn|>
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from data.stage import mark_complete, start_work_dir, write_text_atomic
from tokenizer.config import TokenizerConfig
from tokenizer.memory import check_sample_fits
from tokenizer.morph import POLICIES, MorphemeMarker, apply_policy, strip_markers
from tokenizer.quality import TokenStats, measure
from tokenizer.reader import InputError, expand_inputs, iter_documents, plan_sources
from tokenizer.sample import draw_and_mark, read_records

BOS, PAD, EOS, SEP = "<|bos|>", "<|pad|>", "<|endoftext|>", "<|sep|>"
SPECIAL_TOKENS = [BOS, PAD, EOS, SEP]
"""Learned-vocabulary specials, ids 0..3 in this order."""
PII_TOKENS = ["<|acc|>", "<|tel|>", "<|rrn|>"]
"""Placeholders the cleaner writes for bank accounts, phone numbers and resident numbers; ids 30000..30002."""
_SPLIT = "\x01"  # split point while learning merges; cleaned text never holds U+0001
REPORT_NAME = "tokenizer_report.json"
CROSS_TARGET = 0.2
"""Our cross-morpheme rate may be at most this multiple of the plain BPE's, on text neither saw."""
BYTES_TARGET = 0.8
"""Our bytes per token must be at least this multiple of the plain BPE's, on text neither saw."""
HELDOUT = "heldout"
"""Domain name of the held-out documents of the input in the report."""
PRODUCER = "koneox train-tokenizer"
_WORK_PREFIX = ".koneox-tok-"


def _learn(texts: Iterable[str], learned_size: int, split_points: bool) -> Tokenizer:
    """Byte-level BPE over ``texts``; with ``split_points`` no merge crosses U+0001."""
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_points:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(_SPLIT), behavior="removed"), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    trainer = trainers.BpeTrainer(
        vocab_size=learned_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _model_parts(tok: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _rebuild(
    base: dict[str, int],
    merges: list[tuple[str, str]],
    drop: set[str],
    size: int | None,
    demote: frozenset[str] = frozenset(),
) -> Tokenizer:
    """BPE model from ``base`` (specials and bytes) plus the merges that survive ``drop``.

    A merge survives when both parts survive and its result is not dropped; everything built
    on a dropped token is therefore unreachable and goes too. ``size`` cuts the vocabulary
    to exactly that many entries, keeping the earliest (most frequent) merges.
    """
    vocab = dict(base)
    kept: list[tuple[str, str]] = []
    for left, right in merges:
        token = left + right
        if left not in vocab or right not in vocab or token in drop:
            continue
        if token not in vocab:
            if size is not None and len(vocab) >= size:
                continue
            vocab[token] = len(vocab)
        kept.append((left, right))
    # Demoted merges keep their token but apply last: BPE takes the lowest-rank pair first,
    # so a demoted token only forms where no other merge competes for its pieces.
    kept = [m for m in kept if m[0] + m[1] not in demote] + [m for m in kept if m[0] + m[1] in demote]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=kept))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _reachable_size(base: dict[str, int], merges: list[tuple[str, str]], drop: set[str]) -> int:
    vocab = set(base)
    for left, right in merges:
        if left in vocab and right in vocab and left + right not in drop:
            vocab.add(left + right)
    return len(vocab)


def _subtree_sums(
    merges: list[tuple[str, str]], vocab: dict[str, int], values: list[np.ndarray]
) -> list[np.ndarray]:
    """For each token, ``values`` summed over the token and every token built from it.

    Merges come in creation order, so walking them backwards adds each result's total to
    both of its parts after the result's own total is complete. (A token reachable from
    another along two paths is counted twice; that is rare and only makes pruning a bit
    more cautious.)
    """
    sums = [v.astype(np.float64).copy() for v in values]
    for left, right in reversed(merges):
        t, lo, ro = vocab[left + right], vocab[left], vocab[right]
        for total in sums:
            total[lo] += total[t]
            total[ro] += total[t]
    return sums


def _prune(
    tok: Tokenizer, prune_docs: list[str], cfg: TokenizerConfig, learned_size: int
) -> tuple[Tokenizer, list[dict[str, float | int]]]:
    """Drop tokens that mostly straddle a morpheme boundary at encode time, and dead tokens.

    Merges were learned inside morphemes only, but at encode time a token learned from one
    morpheme (``하고`` the particle, as in 친구하고) still forms across a boundary elsewhere
    (``공부하|고``), because plain BPE applies every merge it knows. We encode part of the
    training sample, and for each token add up, over the token and everything built on it
    (which becomes unreachable with it), how many of its uses straddle a morpheme. Tokens
    above ``prune_threshold`` go, worst first. Tokens nothing is built on that never occur
    when encoding the training text itself are dead weight and go too. The spare merges
    learned beyond the target size then fill the freed entries.
    """
    vocab, merges = _model_parts(tok)
    n_base = len(SPECIAL_TOKENS) + 256
    base = {t: i for t, i in vocab.items() if i < n_base}
    drop: set[str] = set()
    history: list[dict[str, float | int]] = []
    current = _rebuild(base, merges, drop, None)
    for round_index in range(cfg.prune_rounds):
        stats = measure(current, prune_docs)
        cur_vocab = current.get_vocab()
        cur_merges = _model_parts(current)[1]
        cross, uses = _subtree_sums(cur_merges, cur_vocab, [stats.cross_count, stats.token_count])
        share = cross / np.maximum(uses, 1)
        parents = {left for left, _ in cur_merges} | {right for _, right in cur_merges}
        bad = sorted(
            (
                (float(share[i]), t)
                for t, i in cur_vocab.items()
                if i >= n_base and share[i] > cfg.prune_threshold and stats.cross_count[i] >= 2
            ),
            reverse=True,
        )  # worst first, so that a shortage of spare entries keeps the mildest
        dead = [
            t for t, i in cur_vocab.items() if i >= n_base and stats.token_count[i] == 0 and t not in parents
        ]
        candidates = [t for _, t in bad] + dead
        # largest prefix of candidates that still leaves enough entries (binary search)
        lo, hi = 0, len(candidates)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _reachable_size(base, merges, drop | set(candidates[:mid])) >= learned_size:
                lo = mid
            else:
                hi = mid - 1
        drop |= set(candidates[:lo])
        history.append(
            {
                "round": round_index,
                "bytes_per_token": round(stats.bytes_per_token, 4),
                "cross_morpheme_rate": round(stats.cross_morpheme_rate, 4),
                "straddling": len(bad),
                "dead": len(dead),
                "dropped_total": len(drop),
            }
        )
        current = _rebuild(base, merges, drop, None)
    return _rebuild(base, merges, drop, learned_size), history


def _add_words(
    tok: Tokenizer, plain: Tokenizer, docs: list[str], calibration: list[str], budget: float | str
) -> tuple[Tokenizer, dict[str, float | int | str]]:
    """Give some of the plain BPE's tokens to ours, in place of our least-used tokens.

    Pruning leaves our straddling rate well below the target while compression falls short.
    Each plain token we lack is a word (or word piece) that our encoder splits into k pieces;
    adding it saves about k-1 tokens per use and straddles a morpheme where it does in the
    plain BPE. Candidates are ranked by tokens saved per straddling use on ``docs`` (training
    text; word pieces that never straddle first, then long words). Each becomes a chain of
    merges applied after all of ours, so it only joins our finished pieces, and its new entries
    replace our least-used leaf tokens (nothing is built on those), so the size stays.

    How long a prefix of the ranking to keep is measured on ``calibration``: held-out documents
    that neither BPE learned from. (On its own training text the plain BPE straddles more, as
    it holds whole words of that text, so a budget met there is overspent on unseen text.) Both
    ratios to the plain BPE grow with the prefix. ``budget="auto"`` keeps the prefix where the
    two margins to the targets (``CROSS_TARGET`` - straddling ratio, bytes/token ratio -
    ``BYTES_TARGET``) are equal, so the smaller one is as large as it can be; a number keeps the
    longest prefix whose straddling ratio stays within it. Binary search either way.
    """
    vocab, merges = _model_parts(tok)
    ours, theirs = measure(tok, docs), measure(plain, docs)
    calib_plain = measure(plain, calibration)
    decoder = decoders.ByteLevel()
    candidates = []
    for token, i in plain.get_vocab().items():
        uses = int(theirs.token_count[i])
        if token in vocab or uses < 5:
            continue
        pieces = tok.encode(decoder.decode([token]), add_special_tokens=False).tokens
        if len(pieces) < 2 or "".join(pieces) != token:
            continue
        saved, cross = (len(pieces) - 1) * uses, int(theirs.cross_count[i])
        candidates.append((saved / max(cross, 1), saved, token, pieces))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))  # the token breaks ties: a stable order
    parts = {left for left, _ in merges} | {right for _, right in merges}
    leaves = [
        t
        for _, _, t in sorted(
            (int(ours.token_count[i]), -i, t)
            for t, i in vocab.items()
            if i >= len(SPECIAL_TOKENS) + 256 and t not in parts
        )
    ]

    def build(n: int) -> tuple[Tokenizer, int]:
        have, added, new, used = set(vocab), [], [], set()
        for _, _, _, pieces in candidates[:n]:
            current = pieces[0]
            used.add(current)
            for piece in pieces[1:]:
                if current + piece not in have:
                    have.add(current + piece)
                    new.append(current + piece)
                    added.append((current, piece))
                current += piece
                used |= {piece, current}  # every link of the chain must stay
        drop = set([t for t in leaves if t not in used][: len(new)])
        ids: dict[str, int] = {}
        for t, _ in sorted(vocab.items(), key=lambda item: item[1]):
            if t not in drop:
                ids[t] = len(ids)
        for t in new:
            ids[t] = len(ids)
        out = Tokenizer(models.BPE(vocab=ids, merges=[m for m in merges if m[0] + m[1] not in drop] + added))
        out.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        out.decoder = decoders.ByteLevel()
        return out, len(new)

    measured: dict[int, dict[str, float | bool]] = {}

    def ratios(n: int) -> dict[str, float | bool]:
        if n not in measured:
            measured[n] = _ratios(measure(build(n)[0], calibration), calib_plain)
        return measured[n]

    def keep(n: int) -> bool:  # true for a prefix of the ranking, false after it
        r = ratios(n)
        if budget == "auto":
            return r["cross_margin"] >= r["bytes_per_token_margin"]
        return r["cross_rate_ours_over_plain"] <= budget

    lo, hi = 0, len(candidates)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if keep(mid):
            lo = mid
        else:
            hi = mid - 1
    if budget == "auto" and lo < len(candidates):  # the balance point lies between lo and lo + 1

        def smaller(n: int) -> float:
            return min(ratios(n)["cross_margin"], ratios(n)["bytes_per_token_margin"])

        lo = max(lo, lo + 1, key=smaller)
    out, entries = build(lo)
    r = ratios(lo)
    info: dict[str, float | int | str] = {
        "budget": budget,
        "words_added": lo,
        "entries_added": entries,
        "calibration_docs": len(calibration),
        "calibration_cross_rate_ratio": r["cross_rate_ours_over_plain"],
        "calibration_bytes_per_token_ratio": r["bytes_per_token_ours_over_plain"],
    }
    return out, info


def _fill(tok: Tokenizer, plain: Tokenizer, size: int) -> tuple[Tokenizer, int]:
    """Append ``plain``'s merges (in its order) whose parts we have, up to ``size`` entries."""
    vocab, merges = _model_parts(tok)
    added = 0
    for left, right in _model_parts(plain)[1]:
        if len(vocab) >= size:
            break
        token = left + right
        if left in vocab and right in vocab and token not in vocab:
            vocab[token] = len(vocab)
            merges.append((left, right))
            added += 1
    filled = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    filled.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    filled.decoder = decoders.ByteLevel()
    return filled, added


def _finish(tok: Tokenizer) -> Tokenizer:
    """Encode-time form: plain ByteLevel, specials and PII placeholders as added tokens."""
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PII_TOKENS])
    return tok


def save_hf(tok: Tokenizer, out_dir: str | os.PathLike, model_max_length: int = 2048) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        sep_token=SEP,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # lossless decode: never touch spaces around punctuation
    )
    hf.save_pretrained(str(out_dir))
    special_map = Path(out_dir) / "special_tokens_map.json"
    if not special_map.exists():  # transformers 5 folds this into tokenizer_config.json
        special_map.write_text(
            json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "sep_token": SEP}, indent=2)
            + "\n"
        )


def train_tokenizer(
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    vocab_size: int = 30003,
    sample_bytes: int | None = None,
    num_proc: int | None = None,
    config: TokenizerConfig | None = None,
    eval_text: Iterable[str | os.PathLike] = (),
    plain_out: str | os.PathLike | None = None,
) -> dict:
    """Train the tokenizer on ``inputs`` and save it as a Hugging Face directory.

    Returns the quality report (also written to ``out_dir/tokenizer_report.json``). The report
    measures the held-out documents of the input and, separately, each of ``eval_text`` (files
    or directories of any input kind, read up to ``heldout_bytes`` each: text from other domains
    that must not be part of ``inputs``), with the targets checked on each.
    Explicit arguments override the same fields of ``config``; ``sample_bytes=None`` keeps the
    config's sample size (``0`` = the whole input). Raises ``SampleTooLargeError`` before
    reading anything when learning on the sample would not fit in memory.

    ``plain_out``: also save the plain byte-level BPE of the comparison (same sample, size, special
    and PII ids; its pre-tokenizer and decoder are ours too) as a Hugging Face directory there, to
    train the same model with both and compare bits per byte (benchmarks/tokenizer_bpb.py).
    """
    cfg = replace(config or TokenizerConfig(), vocab_size=vocab_size)
    if plain_out is not None:
        cfg.compare_plain = True
        if Path(plain_out).resolve() == Path(out_dir).resolve():
            raise ValueError(f"plain_out {plain_out}: must differ from the output directory")
    if sample_bytes is not None:
        cfg.sample_bytes = sample_bytes
    if num_proc is not None:
        cfg.num_proc = num_proc
    if cfg.boundary_policy not in POLICIES:
        raise ValueError(f"boundary_policy {cfg.boundary_policy!r}: choose from {', '.join(POLICIES)}")
    if isinstance(cfg.cross_budget, str) and cfg.cross_budget != "auto":
        raise ValueError(f"cross_budget {cfg.cross_budget!r}: use 'auto', a number such as 0.18, or None")
    if cfg.sample_bytes < 0:
        raise ValueError(f"sample_bytes {cfg.sample_bytes}: use a positive size, or 0 for the whole input")
    learned_size = cfg.vocab_size - len(PII_TOKENS)
    if learned_size <= len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size {cfg.vocab_size} leaves no room for merges")
    procs = cfg.num_proc or os.cpu_count() or 1
    inputs = [str(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    eval_names = _domain_names([str(p) for p in eval_text])
    for path in eval_names.values():
        expand_inputs([path])  # a missing or unsupported eval file fails before training
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    sources = plan_sources(inputs, cfg.text_field)
    estimated = sum(s.size for s in sources)
    sample_size = cfg.sample_bytes or None
    # no sample is larger than the input, whose size estimate (JSON lines as written, or
    # uncompressed columns) bounds its text from above
    memory = check_sample_fits(min(sample_size or estimated, estimated), cfg.memory_budget)
    out = Path(out_dir)
    work = start_work_dir(out, _WORK_PREFIX)
    try:
        t = time.perf_counter()
        drawn = draw_and_mark(
            sources,
            work,
            sample_bytes=sample_size,
            heldout_bytes=cfg.heldout_bytes,
            spread=cfg.sample_spread,
            seed=cfg.seed,
            text_field=cfg.text_field,
            num_proc=procs,
        )
        counts = drawn.counts
        timings["mecab_s"] = time.perf_counter() - t
        if counts["train_docs"] == 0:
            if counts["heldout_docs"] == 0:
                raise ValueError(f"no documents with a non-empty {cfg.text_field!r} field in {inputs}")
            raise ValueError("the sample selected no training documents; raise --sample-bytes")
        train_rec = drawn.train_path

        prune = cfg.prune_rounds > 0
        t = time.perf_counter()
        policy = cfg.boundary_policy
        oversize = int(learned_size * (1 + cfg.extra_merges)) if prune else learned_size
        tok = _learn(
            (apply_policy(m, policy, _SPLIT) for m in read_records(train_rec)),
            oversize,
            split_points=policy != "none",
        )
        timings["learn_s"] = time.perf_counter() - t
        learned = tok.get_vocab_size()
        t = time.perf_counter()
        history: list[dict[str, float | int]] = []
        if prune:
            prune_docs = list(read_records(train_rec, cfg.prune_bytes))
            tok, history = _prune(tok, prune_docs, cfg, learned_size)
        else:
            vocab, merges = _model_parts(tok)
            tok = _rebuild(vocab, merges, set(), learned_size)
        timings["prune_s"] = time.perf_counter() - t
        # The held-out documents: every other one calibrates the words step below, the rest
        # are the report's held-out domain. (Neither half is learned from by either BPE.)
        heldout = list(read_records(drawn.heldout_path))
        calibration, heldout = heldout[0::2], heldout[1::2]
        if not heldout:  # a single held-out document: the report needs it more
            calibration, heldout = [], calibration
        plain: Tokenizer | None = None
        filled = 0
        words: dict[str, float | int] = {}
        if prune and cfg.cross_budget is not None and tok.get_vocab_size() == learned_size:
            t = time.perf_counter()
            plain = _learn((strip_markers(m) for m in read_records(train_rec)), learned_size, False)
            timings["plain_learn_s"] = time.perf_counter() - t
            t = time.perf_counter()
            # every n-th document: the file is in input order, so its head is one source only
            step = max(1, counts["train_bytes"] // max(cfg.prune_bytes // 4, 1))
            sample = [m for k, m in enumerate(read_records(train_rec)) if k % step == 0]
            tok, words = _add_words(tok, plain, sample, calibration or sample, cfg.cross_budget)
            timings["words_s"] = time.perf_counter() - t
        if tok.get_vocab_size() < learned_size:
            # The sample is too small: every morpheme piece is already a single token. Fill
            # the rest with the plain BPE's merges (same sample, word-level pre-tokens), in
            # its order and after all of ours, so they only apply where ours are exhausted.
            if plain is None:
                t = time.perf_counter()
                plain = _learn((strip_markers(m) for m in read_records(train_rec)), learned_size, False)
                timings["plain_learn_s"] = time.perf_counter() - t
            tok, filled = _fill(tok, plain, learned_size)
        if tok.get_vocab_size() != learned_size:
            raise RuntimeError(
                f"the sample yields only {tok.get_vocab_size()} learnable entries (need {learned_size}): "
                f"every word is already one token. Train on more text (--sample-bytes) or lower --vocab-size."
            )
        tok = _finish(tok)
        staged = work / "hf"
        save_hf(tok, staged)
        timings["train_total_s"] = time.perf_counter() - t0

        t = time.perf_counter()
        domains = {HELDOUT: heldout}
        domains |= _read_eval(eval_names, cfg.text_field, cfg.heldout_bytes)
        timings["eval_mecab_s"] = time.perf_counter() - t
        report: dict = {
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "special_ids": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + PII_TOKENS},
            "input": counts,
            "config": asdict(cfg),
            "memory": memory,
            "learned_before_pruning": learned,
            "pruning": history,
            "filled_from_plain_bpe": filled,
            "words_from_plain_bpe": words,
            "calibration_docs": len(calibration),
        }
        if cfg.compare_plain and plain is None:
            t = time.perf_counter()
            plain = _learn((strip_markers(m) for m in read_records(train_rec)), learned_size, False)
            timings["plain_learn_s"] = time.perf_counter() - t
        plain = _finish(plain) if cfg.compare_plain and plain is not None else None
        report["targets"] = {
            "cross_rate_ours_over_plain_max": CROSS_TARGET,
            "bytes_per_token_ours_over_plain_min": BYTES_TARGET,
        }
        report["domains"] = {
            name: _measure_domain(tok, plain, docs, eval_names.get(name)) for name, docs in domains.items()
        }
        for name, seen in _seen_in_training(domains, train_rec, skip=HELDOUT).items():
            report["domains"][name]["docs_in_training_sample"] = seen
        # the held-out figures stay at the top level too (what older reports held)
        held = report["domains"][HELDOUT]
        report["ours"] = held.get("ours")
        if cfg.compare_plain:
            report["plain_bpe"] = held.get("plain_bpe")
            if "ratios" in held:
                report["ratios"] = held["ratios"]
        report["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
        files = sorted(p.name for p in staged.iterdir())
        for name in files:  # each rename is atomic; the marker below says they are all there
            os.replace(staged / name, out / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if plain_out is not None and plain is not None:
        _save_plain(plain, Path(plain_out), report)
    write_text_atomic(out / REPORT_NAME, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    mark_complete(
        out,
        PRODUCER,
        {
            "files": [*files, REPORT_NAME],
            "vocab_size": report["vocab_size"],
            "train_bytes": counts["train_bytes"],
        },
    )
    print(format_report(report))
    return report


def _save_plain(plain: Tokenizer, out: Path, report: dict) -> None:
    """The comparison BPE as a complete Hugging Face directory, marked like ours."""
    staged = start_work_dir(out, _WORK_PREFIX)
    try:
        save_hf(plain, staged)
        files = sorted(p.name for p in staged.iterdir())
        for name in files:
            os.replace(staged / name, out / name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    held = report["domains"][HELDOUT].get("plain_bpe")
    mark_complete(
        out,
        PRODUCER,
        {
            "files": files,
            "vocab_size": plain.get_vocab_size(with_added_tokens=True),
            "train_bytes": report["input"]["train_bytes"],
            "plain_bpe": True,
            "heldout": held,
        },
    )


def _ratios(ours: TokenStats, plain: TokenStats) -> dict[str, float | bool]:
    """Ours over plain on one text, the targets and by how much each is met (negative: missed)."""
    cross = ours.cross_morpheme_rate / max(plain.cross_morpheme_rate, 1e-12)
    per_token = ours.bytes_per_token / max(plain.bytes_per_token, 1e-12)
    return {
        "cross_rate_ours_over_plain": round(cross, 4),
        "bytes_per_token_ours_over_plain": round(per_token, 4),
        "cross_margin": round(CROSS_TARGET - cross, 4),
        "bytes_per_token_margin": round(per_token - BYTES_TARGET, 4),
        "targets_met": bool(cross <= CROSS_TARGET and per_token >= BYTES_TARGET),
    }


def _domain_names(paths: list[str]) -> dict[str, str]:
    """A report name per eval path: the file name without its input suffix, made unique."""
    names: dict[str, str] = {}
    for path in paths:
        name = Path(path).name
        for suffix in (".gz", ".jsonl", ".ndjson", ".parquet", ".txt"):
            name = name.removesuffix(suffix)
        name = name or path
        unique, k = name, 2
        while unique in names or unique == HELDOUT:
            unique, k = f"{name}-{k}", k + 1
        names[unique] = path
    return names


def _read_eval(names: dict[str, str], text_field: str, max_bytes: int) -> dict[str, list[str]]:
    """The first ``max_bytes`` of documents of each eval input, MeCab-marked."""
    marker = MorphemeMarker()
    out: dict[str, list[str]] = {}
    for name, path in names.items():
        docs, size = [], 0
        for text in iter_documents([path], text_field):
            if size >= max_bytes:
                break
            docs.append(marker.mark(text))
            size += len(text.encode("utf-8"))
        if not docs:
            raise InputError(f"--eval-text {path}: no documents with a non-empty {text_field!r} field")
        out[name] = docs
    return out


def _seen_in_training(domains: dict[str, list[str]], train_rec: Path, skip: str) -> dict[str, int]:
    """Per eval domain, how many of its documents have the exact text of a training document.

    Should be 0 for text from elsewhere; short reviews ("최고") may repeat verbatim, though.
    """
    owners: dict[str, list[str]] = {}
    for name, docs in domains.items():
        if name != skip:
            for doc in docs:
                owners.setdefault(strip_markers(doc), []).append(name)
    seen = {name: 0 for name in domains if name != skip}
    if not seen:
        return seen
    for marked in read_records(train_rec):
        for name in owners.pop(strip_markers(marked), []):
            seen[name] += 1
    return seen


def _measure_domain(tok: Tokenizer, plain: Tokenizer | None, docs: list[str], path: str | None) -> dict:
    entry: dict = {"path": path} if path else {}
    entry["docs"] = len(docs)
    if not docs:
        return entry
    ours = measure(tok, docs)
    entry["ours"] = ours.summary()
    if plain is not None:
        theirs = measure(plain, docs)
        entry["plain_bpe"] = theirs.summary()
        entry["ratios"] = _ratios(ours, theirs)
    return entry


def format_report(report: dict) -> str:
    """Human-readable summary of a quality report."""
    lines = [f"vocabulary: {report['vocab_size']} entries; special ids: {report['special_ids']}"]
    inp = report["input"]
    lines.append(
        f"trained on {inp['train_docs']} docs / {inp['train_bytes'] / 1e6:.1f} MB; "
        f"held out {inp['heldout_docs']} docs / {inp['heldout_bytes'] / 1e6:.2f} MB"
    )
    lines.append(
        f"targets, ours/plain on text neither saw: cross-morpheme rate <= {CROSS_TARGET}, "
        f"bytes/token >= {BYTES_TARGET}"
    )
    for domain, entry in report.get("domains", {}).items():
        for name in ("ours", "plain_bpe"):
            stats = entry.get(name)
            if stats:
                lines.append(
                    f"{domain:>12} {name:>9}: {stats['bytes_per_token']:.3f} bytes/token, cross-morpheme rate "
                    f"{stats['cross_morpheme_rate']:.4f} ({stats['hangul_tokens']} Hangul tokens)"
                )
        if "ratios" in entry:
            r = entry["ratios"]
            lines.append(
                f"{domain:>12} ours/plain: cross-morpheme rate x{r['cross_rate_ours_over_plain']:.3f} "
                f"(margin {r['cross_margin']:+.3f}), bytes/token x{r['bytes_per_token_ours_over_plain']:.3f} "
                f"(margin {r['bytes_per_token_margin']:+.3f}): {'met' if r['targets_met'] else 'MISSED'}"
            )
        if entry.get("docs_in_training_sample"):
            lines.append(
                f"{domain:>12}: {entry['docs_in_training_sample']} of {entry['docs']} documents have the text "
                f"of a training document: not unseen text"
            )
    lines.append(f"timings (s): {report['timings_s']}")
    return "\n".join(lines)
